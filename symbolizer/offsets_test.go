package symbolizer

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"github.com/latscope/latscope/internal/fixture"
)

func TestOffsets(t *testing.T) {
	known := map[string][3]uint64{ // release: goid, parentGoid (measured, design.md), m.curg
		"go1.21": {152, 272, 192}, "go1.22": {152, 272, 192}, "go1.23": {160, 280, 192}, "go1.24": {160, 280, 192},
		"go1.25": {152, 272, 184}, "go1.26": {152, 280, 184}, "go1.27": {152, 280, 184},
	}
	for _, tc := range fixture.Matrix() {
		t.Run(tc, func(t *testing.T) {
			def := openFixture(t, tc, fixture.Default)
			fromDWARF, err := def.DWARFOffsets()
			if err != nil || fromDWARF.Source != "dwarf" {
				t.Fatalf("Offsets() = %+v, %v; want from DWARF", fromDWARF, err)
			}
			str := openFixture(t, tc, fixture.Stripped)
			fromTable, err := str.Offsets()
			if err != nil || !strings.HasPrefix(fromTable.Source, "table:go1.") {
				t.Fatalf("stripped Offsets() = %+v, %v; want from the table", fromTable, err)
			}
			fromDWARF.Source = fromTable.Source
			if fromDWARF != fromTable {
				t.Errorf("DWARF %+v != table %+v", fromDWARF, fromTable)
			}
			k := known[strings.TrimPrefix(fromTable.Source, "table:")]
			if fromTable.GoID != k[0] || fromTable.ParentGoID != k[1] || fromTable.StackHi != 8 || fromTable.M != 48 || fromTable.MCurG != k[2] {
				t.Errorf("%+v, want goid %d parentGoid %d stackHi 8 m 48 curg %d", fromTable, k[0], k[1], k[2])
			}
			// runtime.systemstack compares g with m.curg: its code must
			// use the same offsets (a check the table cannot make).
			gm, curg := systemstackOffsets(t, str)
			if fromTable.M != gm || fromTable.MCurG != curg {
				t.Errorf("table g.m %d m.curg %d; runtime.systemstack's code uses %d and %d", fromTable.M, fromTable.MCurG, gm, curg)
			}
		})
	}
}

func TestTableOffsetsVersions(t *testing.T) {
	tests := []struct {
		version string
		want    error
	}{
		{"go1.21.0", nil},
		{"go1.27rc1", nil},
		{"devel go1.26-abcdef", nil},
		{"go1.20.14", ErrUnsupportedGoVersion},
		{"go1.99.1", ErrUnsupportedGoVersion},
		{"gccgo", ErrUnsupportedGoVersion},
	}
	for _, tt := range tests {
		_, err := TableOffsets(tt.version)
		if !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
			t.Errorf("TableOffsets(%q) = %v, want %v", tt.version, err, tt.want)
		}
		if tt.want != nil && !strings.Contains(err.Error(), tt.version) {
			t.Errorf("TableOffsets(%q) error %q does not name the version", tt.version, err)
		}
	}
}

func TestFormatTableRoundTrip(t *testing.T) {
	tab, err := offsetsTable()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(FormatTable(tab)); got != string(offsetsJSON) {
		t.Errorf("offsets.json is not in canonical form; regenerate with go run ./scripts/genoffsets:\n%s", got)
	}
}

// systemstackOffsets reads g.m and m.curg from runtime.systemstack's
// `MOVQ g_m(AX), BX` … `CMPQ AX, m_curg(BX)`: the last memory operand
// compared with the g register before the first call.
func systemstackOffsets(t *testing.T, b *Binary) (gm, curg uint64) {
	t.Helper()
	f, err := b.Lookup("runtime.systemstack")
	if err != nil {
		t.Fatal(err)
	}
	code, err := b.code(f)
	if err != nil {
		t.Fatal(err)
	}
	var g x86asm.Reg
	for _, in := range decode(f.Entry, code) {
		if in.inst.Op == x86asm.CALL {
			break
		}
		m, ok := in.inst.Args[1].(x86asm.Mem)
		switch {
		case in.inst.Op == x86asm.MOV && ok && m.Segment == x86asm.FS:
			g = in.inst.Args[0].(x86asm.Reg)
		case in.inst.Op == x86asm.MOV && ok && g != 0 && m.Base == g && gm == 0:
			gm = uint64(m.Disp)
		case in.inst.Op == x86asm.CMP && in.inst.Args[0] == g:
			if m, ok := in.inst.Args[1].(x86asm.Mem); ok {
				curg = uint64(m.Disp)
			}
		}
	}
	if gm == 0 || curg == 0 {
		t.Fatalf("runtime.systemstack: g.m or m.curg not found in its code")
	}
	return gm, curg
}
