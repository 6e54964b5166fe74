package symbolizer

import (
	"errors"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"github.com/latscope/latscope/internal/fixture"
)

func TestResumeSites(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		for _, mode := range allModes {
			t.Run(tc+"/"+string(mode), func(t *testing.T) {
				b := openFixture(t, tc, mode)
				// Called in loops, never through a func value: their
				// returns are seen where the loops resume.
				// perimeter is in circle's method table, but no interface
				// declares it. (In PIE builds a word elsewhere holds its name
				// offset by chance: refused, which only costs speed.)
				for _, name := range []string{"main.benchTarget", "main.middle", "main.(*circle).perimeter"} {
					f, err := b.Lookup(name)
					if err != nil {
						t.Fatal(err)
					}
					rs, err := b.ResumeSites(f, 0)
					if err != nil && mode.PIE() && name == "main.(*circle).perimeter" {
						t.Logf("ResumeSites(%s): %v", name, err)
						continue
					}
					if err != nil {
						t.Errorf("ResumeSites(%s): %v", name, err)
						continue
					}
					for _, s := range rs {
						c := b.funcAt(s.Addr)
						t.Logf("%s: %#x in %s: %s SPDelta %d shared %v", name, s.Addr, c.Name, s.Insn, s.SPDelta, s.Shared)
						if !s.Emulated || s.SPDelta > -8 {
							t.Errorf("%s: resume site %+v: want an emulated site at least 8 above the entry SP", name, s)
						}
						if off, _ := b.FileOffset(s.Addr); off != s.Offset {
							t.Errorf("%s: Offset %#x, FileOffset %#x", name, s.Offset, off)
						}
					}
				}
				// Started by go statements (worker), stored in a func value
				// (tinyFn = tiny), or declared by an interface whose itab is
				// built at run time from the method table (area): some
				// calls return unseen by any caller's code.
				for _, name := range []string{"main.worker", "main.tiny", "main.(*circle).area"} {
					f, err := b.Lookup(name)
					if err != nil {
						t.Fatal(err)
					}
					if rs, err := b.ResumeSites(f, 0); !errors.Is(err, ErrNotResumable) {
						t.Errorf("ResumeSites(%s) = %+v, %v; want ErrNotResumable", name, rs, err)
					} else {
						t.Logf("%s: %v", name, err)
					}
				}
			})
		}
	}
}

// ResumeAt works from a return address, whatever the call: after
// learnRound's interface call, the first emulated instruction; after
// areaOf's, areaOf's own return (a tail call); elsewhere, an error.
func TestResumeAt(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		t.Run(tc, func(t *testing.T) {
			b := openFixture(t, tc, fixture.Stripped)
			indirectReturn := func(name string) uint64 {
				f, err := b.Lookup(name)
				if err != nil {
					t.Fatal(err)
				}
				code, err := b.code(f)
				if err != nil {
					t.Fatal(err)
				}
				for _, in := range decode(f.Entry, code) {
					if _, direct := in.target(); in.inst.Op == x86asm.CALL && !direct {
						return in.addr + uint64(in.inst.Len)
					}
				}
				t.Fatalf("%s: no indirect call", name)
				return 0
			}
			ret := indirectReturn("main.learnRound")
			site, caller, tail, err := b.ResumeAt(ret, 1)
			if err != nil || tail || caller.Name != "main.learnRound" || !site.Emulated || !site.Shared || site.SPDelta != -8 || site.Addr <= ret {
				t.Errorf("ResumeAt(learnRound's interface call) = %+v, %v, tail %v, %v", site, caller, tail, err)
			}
			ret = indirectReturn("main.areaOf")
			if _, caller, tail, err := b.ResumeAt(ret, 1); err != nil || !tail || caller.Name != "main.areaOf" {
				t.Errorf("ResumeAt(areaOf's interface call) = %v, tail %v, %v; want a tail call", caller, tail, err)
			}
			if _, _, _, err := b.ResumeAt(ret-1, 1); !errors.Is(err, ErrNotResumable) {
				t.Errorf("ResumeAt(inside a CALL) = %v, want ErrNotResumable", err)
			}
			// A goroutine's first function returns to goexit+1: refused.
			goexit, err := b.Lookup("runtime.goexit")
			if err != nil {
				t.Fatal(err)
			}
			if _, _, _, err := b.ResumeAt(goexit.Entry+1, 0); !errors.Is(err, ErrNotResumable) {
				t.Errorf("ResumeAt(goexit+1) = %v, want ErrNotResumable", err)
			}
		})
	}
}
