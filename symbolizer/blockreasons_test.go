package symbolizer

import (
	"maps"
	"strings"
	"testing"

	"github.com/latscope/latscope/internal/fixture"
)

// The embedded table agrees with each release's DWARF, and the reasons
// latency attribution sorts by are there (Go 1.21 aliases them to the old
// tracer's events: design.md).
func TestBlockReasons(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		t.Run(tc, func(t *testing.T) {
			fromDWARF, err := openFixture(t, tc, fixture.Default).DWARFBlockReasons()
			if err != nil {
				t.Fatal(err)
			}
			fromTable, err := openFixture(t, tc, fixture.Stripped).BlockReasons()
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(fromDWARF, fromTable) {
				t.Errorf("DWARF %v != table %v", fromDWARF, fromTable)
			}
			want := map[string]uint8{"Net": 2, "Select": 3, "Sync": 5, "ChanRecv": 7, "GCMarkAssist": 8, "Sleep": 14}
			if tc == "go1.21.13" {
				want = map[string]uint8{"Net": 27, "Select": 24, "Sync": 25, "ChanRecv": 23, "GCMarkAssist": 42, "Sleep": 19}
			}
			for name, v := range want {
				if got, ok := fromTable[name]; !ok || got != v {
					t.Errorf("%s = %d (%v), want %d", name, got, ok, v)
				}
			}
		})
	}
}

func TestBlockReasonsTable(t *testing.T) {
	tab, err := blockReasonsTable()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(FormatBlockReasons(tab)); got != string(blockReasonsJSON) {
		t.Errorf("blockreasons.json is not in canonical form; regenerate with go run ./scripts/genoffsets:\n%s", got)
	}
	if _, err := TableBlockReasons("go1.20.14"); err == nil || !strings.Contains(err.Error(), "go1.20.14") {
		t.Errorf("go1.20: %v", err)
	}
}

// The runtime's stop-the-world entry is probed after its stack check
// (a //go:systemstack function: its check branches to morestackc), on
// an emulated instruction.
func TestSystemstackEntry(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		t.Run(tc, func(t *testing.T) {
			b := openFixture(t, tc, fixture.Stripped)
			f, err := b.Lookup("runtime.stopTheWorldWithSema")
			if err != nil {
				t.Fatal(err)
			}
			s, err := b.Sites(f)
			if err != nil {
				t.Fatal(err)
			}
			if !s.Entry.Emulated || s.Entry.Addr == f.Entry || s.Entry.Insn != "PUSHQ BP" {
				t.Errorf("entry %+v at +%#x", s.Entry, s.Entry.Addr-f.Entry)
			}
		})
	}
}
