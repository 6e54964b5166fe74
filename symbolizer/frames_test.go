package symbolizer

import (
	"debug/gosym"
	"slices"
	"testing"

	"github.com/latscope/latscope/internal/fixture"
)

// TestPCFrames checks PCFrames against debug/gosym (the outer function and
// the innermost line, which the pclntab line tables record), finds the
// inlined main.tiny inside main.inlineUse, and gets the same answers from
// a stripped build, which has no .symtab and no DWARF.
func TestPCFrames(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		t.Run(tc, func(t *testing.T) {
			b := openFixture(t, tc, fixture.Default)
			stripped := openFixture(t, tc, fixture.Stripped)
			data, err := b.sectionData(b.pclntabSection())
			if err != nil {
				t.Fatal(err)
			}
			ref, err := gosym.NewTable(nil, gosym.NewLineTable(data, b.textAddr))
			if err != nil {
				t.Fatal(err)
			}
			checked := 0
			for i := range b.Funcs {
				f := &b.Funcs[i]
				for pc := f.Entry; pc < f.End; pc += 7 {
					frames, ok := b.PCFrames(pc)
					if !ok || len(frames) == 0 {
						t.Fatalf("PCFrames(%#x) in %s: nothing", pc, f.Name)
					}
					file, line, fn := ref.PCToLine(pc)
					if line < 0 { // padding after the function's code: no line
						line = 0
					}
					if fn == nil || frames[len(frames)-1].Function != fn.Name {
						t.Fatalf("PCFrames(%#x) = %+v, gosym says function %v", pc, frames, fn)
					}
					if frames[0].File != file || frames[0].Line != line {
						t.Fatalf("PCFrames(%#x) = %+v, gosym says %s:%d", pc, frames, file, line)
					}
					if pc%(7*13) == 0 {
						if s, ok := stripped.PCFrames(pc); !ok || !slices.Equal(s, frames) {
							t.Fatalf("stripped PCFrames(%#x) = %+v, unstripped %+v", pc, s, frames)
						}
					}
					checked++
				}
			}
			if _, ok := b.PCFrames(b.textAddr + b.textSize + 4096); ok {
				t.Error("PCFrames past .text: ok")
			}
			use, err := b.Lookup("main.inlineUse")
			if err != nil {
				t.Fatal(err)
			}
			inlined := false
			for pc := use.Entry; pc < use.End; pc++ {
				frames, _ := b.PCFrames(pc)
				if len(frames) == 2 && frames[0].Function == "main.tiny" && frames[1].Function == "main.inlineUse" {
					inlined = frames[0].File == frames[1].File && frames[0].Line < frames[1].Line
					break
				}
			}
			if !inlined {
				t.Error("no PC of main.inlineUse resolves to main.tiny inlined there, at its own line")
			}
			t.Logf("%d PCs checked", checked)
		})
	}
}
