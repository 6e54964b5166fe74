package symbolizer

import (
	"debug/elf"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/latscope/latscope/internal/fixture"
)

// writeTemp writes data to a file in a test directory.
func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// patched returns a copy of the local stripped fixture with fn applied.
func patched(t *testing.T, name string, fn func(b []byte, f *elf.File)) string {
	t.Helper()
	src := fixture.Build(t, "calls", "local", fixture.Stripped)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fn(data, f)
	return writeTemp(t, name, data)
}

func cBinary(t *testing.T) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		if _, err := os.Stat("/bin/true"); err == nil {
			return "/bin/true"
		}
		t.Skip("no C compiler and no /bin/true")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "hello.c")
	if err := os.WriteFile(src, []byte("int main(void) { return 0; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "hello")
	if b, err := exec.Command(cc, "-o", out, src).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, b)
	}
	return out
}

func TestOpenErrors(t *testing.T) {
	random := make([]byte, 4096)
	rand.New(rand.NewSource(1)).Read(random)
	stripped := fixture.Build(t, "calls", "local", fixture.Stripped)
	whole, err := os.ReadFile(stripped)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path func(t *testing.T) string
		want error
	}{
		{"random bytes", func(t *testing.T) string { return writeTemp(t, "random", random) }, ErrNotELF},
		{"text file", func(t *testing.T) string { return writeTemp(t, "text", []byte("#!/bin/sh\necho hi\n")) }, ErrNotELF},
		{"empty file", func(t *testing.T) string { return writeTemp(t, "empty", nil) }, ErrNotELF},
		{"C binary", cBinary, ErrNotGo},
		{"truncated Go binary", func(t *testing.T) string { return writeTemp(t, "trunc", whole[:64<<10]) }, ErrNotELF},
		{"missing file", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, ErrProcessGone},
		{"corrupt pclntab", func(t *testing.T) string {
			return patched(t, "corrupt", func(b []byte, f *elf.File) {
				s := f.Section(".gopclntab")
				for i := uint64(8); i < 72; i++ { // nfunc, nfiles and table offsets
					b[s.Offset+i] = 0xff
				}
			})
		}, ErrCorruptPclntab},
		{"pclntab bad magic", func(t *testing.T) string {
			return patched(t, "magic", func(b []byte, f *elf.File) {
				copy(b[f.Section(".gopclntab").Offset:], []byte{1, 2, 3, 4})
			})
		}, ErrCorruptPclntab},
		{"386 machine", func(t *testing.T) string {
			return patched(t, "i386", func(b []byte, _ *elf.File) { le.PutUint16(b[18:], uint16(elf.EM_386)) })
		}, ErrUnsupportedArch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path(t)
			b, err := Open(path)
			if err == nil {
				b.Close()
				t.Fatalf("Open(%s) succeeded", path)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open: %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name %s", err, path)
			}
		})
	}
}

func TestUnsupportedArchSites(t *testing.T) {
	path := patched(t, "arm64", func(b []byte, _ *elf.File) { le.PutUint16(b[18:], uint16(elf.EM_AARCH64)) })
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Arch != "arm64" {
		t.Fatalf("Arch = %q", b.Arch)
	}
	f, err := b.Lookup("main.leaf")
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Sites(f)
	if !errors.Is(err, ErrUnsupportedArch) || !strings.Contains(err.Error(), path) {
		t.Errorf("Sites on arm64: %v, want ErrUnsupportedArch naming %s", err, path)
	}
}

func TestLookupNotFound(t *testing.T) {
	b := openFixture(t, "local", fixture.Default)
	_, err := b.Lookup("main.nosuch")
	if !errors.Is(err, ErrFuncNotFound) || !strings.Contains(err.Error(), "main.nosuch") || !strings.Contains(err.Error(), b.Path) {
		t.Errorf("Lookup: %v", err)
	}
}

func TestOpenPID(t *testing.T) {
	b, err := OpenPID(os.Getpid())
	if err != nil {
		t.Fatalf("OpenPID(self): %v", err)
	}
	defer b.Close()
	if _, err := b.Lookup("testing.tRunner"); err != nil {
		t.Error(err)
	}
	// PIDs above pid_max (at most 2^22) never exist.
	_, err = OpenPID(1 << 23)
	if !errors.Is(err, ErrProcessGone) || !strings.Contains(err.Error(), "8388608") {
		t.Errorf("OpenPID(gone) = %v, want ErrProcessGone naming the pid", err)
	}
}
