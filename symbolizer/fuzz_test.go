package symbolizer

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen: arbitrary files must yield an error or a usable Binary,
// never a panic; Funcs, Sites, Inlined and Offsets must survive too.
func FuzzOpen(f *testing.F) {
	f.Add([]byte("\x7fELF"))
	f.Add([]byte("#!/bin/sh\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "bin")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := Open(p)
		if err != nil {
			return
		}
		defer b.Close()
		for i := range b.Funcs {
			if i >= 8 {
				break
			}
			_, _ = b.Sites(&b.Funcs[i])
			_, _ = b.Inlined(&b.Funcs[i])
		}
		_, _ = b.Offsets()
		_, _ = b.Match([]string{"main.*"})
	})
}

// FuzzPclntab: arbitrary bytes as .gopclntab for the function-table
// parser and the raw record reader.
func FuzzPclntab(f *testing.F) {
	for _, magic := range []uint32{0xfffffff1, 0xfffffff0, 0xfffffffa, 0xfffffffb} {
		h := make([]byte, 80)
		le.PutUint32(h, magic)
		h[6], h[7] = 1, 8
		le.PutUint64(h[8:], 1)
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		funcs, err := parseFuncTable(data, 0x401000)
		if err == nil && len(funcs) == 0 {
			t.Fatal("no error and no functions")
		}
		tab, err := newPclntab(data, 0x401000)
		if err != nil {
			return
		}
		if funcs != nil {
			tab.annotate(funcs)
		}
		for i := 0; i < tab.nfunc && i < 64; i++ {
			r, err := tab.record(i)
			if err != nil {
				continue
			}
			tab.funcName(r.nameOff)
			for _, off := range r.pcdata {
				_ = tab.pcvalue(off, r.entry, r.end, func(_, _ uint64, _ int32) bool { return true })
			}
		}
	})
}
