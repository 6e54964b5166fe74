package symbolizer

import (
	"errors"
	"testing"

	"github.com/latscope/latscope/internal/fixture"
)

func TestResumeSites(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		for _, mode := range fixture.Modes {
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
					if err != nil && mode == fixture.PIE && name == "main.(*circle).perimeter" {
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
