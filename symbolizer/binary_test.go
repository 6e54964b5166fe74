package symbolizer

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/latscope/latscope/internal/fixture"
)

// openFixture builds (or reuses) the calls fixture and opens it.
func openFixture(t *testing.T, toolchain string, mode fixture.Mode) *Binary {
	t.Helper()
	path := fixture.Build(t, "calls", toolchain, mode)
	b, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// allModes are the Go linker's modes and the external linker's.
var allModes = append(append(slices.Clone(fixture.Modes), fixture.StrippedPIE), fixture.ExternalModes...)

func TestOpenMetadata(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		for _, mode := range allModes {
			t.Run(tc+"/"+string(mode), func(t *testing.T) {
				b := openFixture(t, tc, mode)
				if b.Arch != "amd64" {
					t.Errorf("Arch = %q", b.Arch)
				}
				if tc != "local" && b.GoVersion != tc {
					t.Errorf("GoVersion = %q, want %q", b.GoVersion, tc)
				}
				if b.Build == nil || b.Build.Path != "latscope.test/calls" {
					t.Errorf("Build = %+v, want module latscope.test/calls", b.Build)
				}
				if want := mode.PIE(); b.PIE != want {
					t.Errorf("PIE = %v, want %v", b.PIE, want)
				}
				if want := mode.Stripped(); b.Stripped != want || b.HasDWARF == want {
					t.Errorf("Stripped = %v, HasDWARF = %v for mode %s", b.Stripped, b.HasDWARF, mode)
				}
				f, err := b.Lookup("main.leaf")
				if err != nil {
					t.Fatal(err)
				}
				if f.File != "latscope.test/calls/main.go" || f.Line != leafLine {
					t.Errorf("main.leaf declared at %s:%d, want latscope.test/calls/main.go:%d", f.File, f.Line, leafLine)
				}
				for i := 1; i < len(b.Funcs); i++ {
					if b.Funcs[i].Entry < b.Funcs[i-1].Entry {
						t.Fatalf("Funcs not sorted at %d", i)
					}
				}
			})
		}
	}
}

// TestFuncTableStrippedMatchesDefault: the stripped build (pclntab only)
// and the default build (.symtab cross-checked) give the same table. On
// Go 1.26+ this also proves the text start is taken from .text.
func TestFuncTableStrippedMatchesDefault(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		t.Run(tc, func(t *testing.T) {
			def := openFixture(t, tc, fixture.Default)
			str := openFixture(t, tc, fixture.Stripped)
			if len(def.Funcs) != len(str.Funcs) {
				t.Fatalf("%d functions unstripped, %d stripped", len(def.Funcs), len(str.Funcs))
			}
			for i := range def.Funcs {
				if def.Funcs[i] != str.Funcs[i] {
					t.Fatalf("function %d: unstripped %+v, stripped %+v", i, def.Funcs[i], str.Funcs[i])
				}
			}
		})
	}
}

func TestFileOffset(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		for _, mode := range []fixture.Mode{fixture.Default, fixture.PIE, fixture.ExternalPIE, fixture.StaticPIE} {
			t.Run(tc+"/"+string(mode), func(t *testing.T) {
				b := openFixture(t, tc, mode)
				file, err := os.ReadFile(b.Path)
				if err != nil {
					t.Fatal(err)
				}
				text := b.elf.Section(".text")
				for _, name := range []string{"main.leaf", "main.middle", "main.catcher", "runtime.newproc1"} {
					f, err := b.Lookup(name)
					if err != nil {
						t.Fatal(err)
					}
					off, err := b.FileOffset(f.Entry)
					if err != nil {
						t.Fatal(err)
					}
					want := file[text.Offset+(f.Entry-text.Addr):][:f.End-f.Entry]
					if !bytes.Equal(file[off:off+f.End-f.Entry], want) {
						t.Errorf("%s: bytes at FileOffset %#x differ from .text mapping", name, off)
					}
				}
				// (An external linker's PIE maps its ELF header at 0.)
				if _, err := b.FileOffset(1 << 62); err == nil {
					t.Error("FileOffset(1<<62) succeeded")
				}
			})
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, mode := range fixture.Modes {
		path := fixture.Build(b, "calls", "local", mode)
		b.Run(string(mode), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				bin, err := Open(path)
				if err != nil {
					b.Fatal(err)
				}
				bin.Close()
			}
		})
	}
}

func BenchmarkInlineIndex(b *testing.B) {
	for _, mode := range []fixture.Mode{fixture.Default, fixture.Stripped} {
		path := fixture.Build(b, "calls", "local", mode)
		b.Run(string(mode), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				bin, err := Open(path)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := bin.Inlined(&Func{Name: "main.contains"}); err != nil {
					b.Fatal(err)
				}
				bin.Close()
			}
		})
	}
}

// leafLine is where the calls fixture declares leaf.
var leafLine = func() int {
	src, err := os.ReadFile("../internal/fixture/src/calls/main.go")
	if err != nil {
		panic(err)
	}
	for i, line := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(line, "func leaf(") {
			return i + 1
		}
	}
	panic("calls fixture: no func leaf")
}()
