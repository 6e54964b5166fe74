package symbolizer

import (
	"errors"
	"strings"
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

// An instruction between a call and its resume site must leave the result
// registers the exit program reads as they are: RAX, RBX, RCX, RDI in
// ABI order (NewStream's exit reads its error, the 3rd and 4th).
func TestKeepsResults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		code  []byte
		keeps []bool // by results 0..4
	}{
		{"TESTQ CX, CX", []byte{0x48, 0x85, 0xc9}, []bool{true, true, true, true, true}},
		{"MOVQ AX, 0x48(SP)", []byte{0x48, 0x89, 0x44, 0x24, 0x48}, []bool{true, true, true, true, true}},
		{"MOVQ 0x10(SP), AX", []byte{0x48, 0x8b, 0x44, 0x24, 0x10}, []bool{true, false, false, false, false}},
		{"MOVQ 0x10(SP), BX", []byte{0x48, 0x8b, 0x5c, 0x24, 0x10}, []bool{true, true, false, false, false}},
		{"MOVQ SI, CX", []byte{0x48, 0x89, 0xf1}, []bool{true, true, true, false, false}},
		{"MOVL $0, DI", []byte{0xbf, 0, 0, 0, 0}, []bool{true, true, true, true, false}},
		{"MOVQ DI, SI", []byte{0x48, 0x89, 0xfe}, []bool{true, true, true, true, true}},
	} {
		ins := decode(0x1000, tc.code)
		if len(ins) != 1 {
			t.Fatalf("%s: decoded %d instructions", tc.name, len(ins))
		}
		for results, want := range tc.keeps {
			r := resumer{results: results}
			if got := r.keeps(ins[0]); got != want {
				t.Errorf("%s with %d results: keeps %v, want %v", tc.name, results, got, want)
			}
		}
	}
}

// A function another one jumps to (a tail call: its return goes to that
// function's caller, where no call of it was seen) is not resumable, nor
// are its calls its only entries. runtime.morestack_noctxt jumps to
// runtime.morestack in every release; a function's own morestack path
// jumping back to its entry is no such call.
func TestTailJumpRefused(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		t.Run(tc, func(t *testing.T) {
			b := openFixture(t, tc, fixture.Default)
			f, err := b.Lookup("runtime.morestack")
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.ResumeSites(f, 0)
			if !errors.Is(err, ErrNotResumable) || !strings.Contains(err.Error(), "runtime.morestack_noctxt jumps to it") {
				t.Errorf("ResumeSites(runtime.morestack) = %v, want refused for morestack_noctxt's jump", err)
			}
			if _, err := b.CallEntries(f); !errors.Is(err, ErrNotResumable) {
				t.Errorf("CallEntries(runtime.morestack) = %v, want ErrNotResumable", err)
			}
		})
	}
}
