package symbolizer

import (
	"slices"
	"testing"

	"github.com/latscope/latscope/internal/fixture"
)

func TestInlined(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		for _, mode := range allModes {
			t.Run(tc+"/"+string(mode), func(t *testing.T) {
				b := openFixture(t, tc, mode)
				check := func(name string, want []string) {
					t.Helper()
					// main.contains has no out-of-line copy: Inlined
					// needs only the name.
					in, err := b.Inlined(&Func{Name: name})
					if err != nil || !in.Known {
						t.Fatalf("Inlined(%s) = %+v, %v", name, in, err)
					}
					for _, c := range want {
						if !slices.Contains(in.Callers, c) {
							t.Errorf("Inlined(%s).Callers = %q, want %s among them", name, in.Callers, c)
						}
					}
					if len(want) == 0 && len(in.Callers) != 0 {
						t.Errorf("Inlined(%s).Callers = %q, want none", name, in.Callers)
					}
					if !slices.IsSorted(in.Callers) || len(slices.Compact(slices.Clone(in.Callers))) != len(in.Callers) {
						t.Errorf("Inlined(%s).Callers %q not sorted/deduplicated", name, in.Callers)
					}
				}
				// main.tiny is inlined into main.inlineUse and also has
				// an out-of-line copy (called through tinyFn);
				// main.contains is inlined into main.main only.
				check("main.tiny", []string{"main.inlineUse"})
				check("main.contains", []string{"main.main"})
				check("main.leaf", nil)
			})
		}
	}
}

// TestInlineSourcesAgree: DWARF and the pclntab inline trees give the same
// index, and the stripped-binary moduledata scan finds go:func.* where the
// symbol table says it is (for plain and PIE builds).
func TestInlineSourcesAgree(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		for _, mode := range []fixture.Mode{fixture.Default, fixture.PIE, fixture.External, fixture.ExternalPIE, fixture.StaticPIE} {
			t.Run(tc+"/"+string(mode), func(t *testing.T) {
				b := openFixture(t, tc, mode)
				fromSym, err := b.gofunc()
				if err != nil {
					t.Fatal(err)
				}
				b.Stripped = true // force the moduledata scan
				fromScan, err := b.gofunc()
				b.Stripped = false
				if err != nil || fromScan != fromSym {
					t.Fatalf("gofunc: scan %#x (%v), symbol %#x", fromScan, err, fromSym)
				}
				d, p := b.dwarfInlineIndex(), b.pclntabInlineIndex()
				if d.err != nil || p.err != nil {
					t.Fatalf("dwarf: %v, pclntab: %v", d.err, p.err)
				}
				if len(d.callers) < 100 || len(d.callers) != len(p.callers) {
					t.Fatalf("dwarf knows %d inlined functions, pclntab %d", len(d.callers), len(p.callers))
				}
				for k, v := range d.callers {
					if !slices.Equal(v, p.callers[k]) {
						t.Errorf("%s: dwarf %q, pclntab %q", k, v, p.callers[k])
					}
				}
			})
		}
	}
}
