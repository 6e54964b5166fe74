package symbolizer

import (
	"debug/elf"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/latscope/latscope/internal/fixture"
)

// unstrippedSibling is the build whose symbol table tells where things are
// in a build of mode: the same build with symbols (same layout), or for
// musl, which has no unstripped mode, glibc's non-PIE external build: a
// different C library around the same Go code, so only addresses relative
// to runtime.text agree.
func unstrippedSibling(mode fixture.Mode) (ref fixture.Mode, sameLayout bool) {
	switch mode {
	case fixture.External, fixture.ExternalStripped:
		return fixture.External, true
	case fixture.ExternalPIE, fixture.ExternalPIEStripped:
		return fixture.ExternalPIE, true
	case fixture.StaticPIE, fixture.StaticPIEStripped:
		return fixture.StaticPIE, true
	case fixture.MuslStatic:
		return fixture.External, false
	}
	panic("no sibling for " + mode)
}

func symbolTable(t *testing.T, b *Binary) map[string]uint64 {
	t.Helper()
	syms, err := b.elf.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]uint64, len(syms))
	for _, s := range syms {
		out[s.Name] = s.Value
	}
	return out
}

// TestExternalLinkTables: a binary linked by the system's C linker has C
// start-up code before runtime.text, and (a PIE of Go < 1.26) its pclntab
// inside .data.rel.ro. Without symbols, the pclntab, moduledata and
// runtime.text are found where the symbol table of the same build says
// they are, and the function table is the unstripped build's.
func TestExternalLinkTables(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		for _, mode := range fixture.ExternalModes {
			t.Run(tc+"/"+string(mode), func(t *testing.T) {
				b := openFixture(t, tc, mode)
				if b.md == nil {
					t.Fatal("runtime.firstmoduledata not found")
				}
				if b.runtimeText <= b.textAddr {
					t.Errorf("runtime.text %#x at or before .text %#x: expected C start-up code first", b.runtimeText, b.textAddr)
				}
				refMode, same := unstrippedSibling(mode)
				ref := b
				if refMode != mode {
					ref = openFixture(t, tc, refMode)
				}
				syms := symbolTable(t, ref)
				gofunc, err := b.gofunc()
				if err != nil {
					t.Fatal(err)
				}
				if same {
					for _, c := range []struct {
						name      string
						got, want uint64
					}{
						{"runtime.text", b.runtimeText, syms["runtime.text"]},
						{"moduledata.text", b.md.text, syms["runtime.text"]},
						{"moduledata.etext", b.md.etext, syms["runtime.etext"]},
						{"runtime.firstmoduledata", b.md.addr, syms["runtime.firstmoduledata"]},
						{"runtime.pclntab", b.pclnAddr, syms["runtime.pclntab"]},
						{"go:func.*", gofunc, syms["go:func.*"]},
					} {
						if c.got != c.want || c.want == 0 {
							t.Errorf("%s at %#x, symbol table says %#x", c.name, c.got, c.want)
						}
					}
				}
				if len(b.Funcs) != len(ref.Funcs) {
					t.Fatalf("%d functions, %s build has %d", len(b.Funcs), refMode, len(ref.Funcs))
				}
				for i, f := range b.Funcs {
					r := ref.Funcs[i]
					if f.Name != r.Name || f.Entry-b.runtimeText != r.Entry-ref.runtimeText || f.End-f.Entry != r.End-r.Entry || f.File != r.File || f.Line != r.Line {
						t.Fatalf("function %d: %+v (runtime.text %#x); %s build: %+v (runtime.text %#x)", i, f, b.runtimeText, refMode, r, ref.runtimeText)
					}
				}
			})
		}
	}
}

// patchedFrom returns a copy of fixture build (tc, mode) with fn applied.
func patchedFrom(t *testing.T, tc string, mode fixture.Mode, fn func(data []byte, f *elf.File, b *Binary)) string {
	t.Helper()
	b := openFixture(t, tc, mode)
	data, err := os.ReadFile(b.Path)
	if err != nil {
		t.Fatal(err)
	}
	fn(data, b.elf, b)
	return writeTemp(t, string(mode), data)
}

// breakModuledata makes runtime.firstmoduledata unrecognisable: its
// pcHeader word, in place and in the relocation that sets it in a PIE.
func breakModuledata(t *testing.T, data []byte, f *elf.File, b *Binary) {
	t.Helper()
	off, err := b.FileOffset(b.md.addr)
	if err != nil {
		t.Fatal(err)
	}
	le.PutUint64(data[off:], 0)
	for _, s := range f.Sections {
		if s.Type != elf.SHT_RELA {
			continue
		}
		for i := s.Offset; i+24 <= s.Offset+s.Size; i += 24 {
			if le.Uint64(data[i:]) == b.md.addr {
				le.PutUint64(data[i+16:], 0)
			}
		}
	}
}

// A layout that cannot be read is one error naming the binary and why,
// never a function table at wrong addresses.
func TestExternalLinkUnreadable(t *testing.T) {
	tests := []struct {
		name string
		tc   string
		mode fixture.Mode
		want error
		says string
	}{
		// Go 1.26+ has no text start in the pclntab header: without
		// the moduledata nothing says where the Go code starts.
		{"no moduledata, Go 1.26+", "local", fixture.ExternalStripped, ErrUnsupportedLayout, "cannot tell where the Go code starts"},
		// A Go 1.21 PIE has no .gopclntab: the header found in
		// .data.rel.ro is only trusted when the moduledata confirms it.
		{"no moduledata, pclntab in .data.rel.ro", "go1.21.13", fixture.ExternalPIEStripped, ErrUnsupportedLayout, "runtime.firstmoduledata points at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := patchedFrom(t, tt.tc, tt.mode, func(data []byte, f *elf.File, b *Binary) { breakModuledata(t, data, f, b) })
			b, err := Open(path)
			if err == nil {
				b.Close()
				t.Fatalf("Open(%s) succeeded", path)
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("Open: %v; want %v naming %s and saying %q", err, tt.want, path, tt.says)
			}
		})
	}
	// Go 1.21 – 1.25 record the text start in the pclntab header: a
	// damaged moduledata costs only the inline trees.
	path := patchedFrom(t, "go1.21.13", fixture.ExternalStripped, func(data []byte, f *elf.File, b *Binary) { breakModuledata(t, data, f, b) })
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ref := openFixture(t, "go1.21.13", fixture.External)
	if b.runtimeText != symbolTable(t, ref)["runtime.text"] {
		t.Errorf("runtime.text from the pclntab header %#x, symbol table says %#x", b.runtimeText, symbolTable(t, ref)["runtime.text"])
	}
	if in, err := b.Inlined(&Func{Name: "main.tiny"}); err != nil || in.Known {
		t.Errorf("Inlined without moduledata = %+v, %v; want unknown", in, err)
	}
}
