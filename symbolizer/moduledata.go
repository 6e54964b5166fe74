package symbolizer

import (
	"bytes"
	"debug/elf"
	"fmt"
	"slices"
	"sort"
)

// runtime.moduledata field offsets (amd64). The table slices and
// text/etext have been at these offsets since Go 1.20; gofunc moved when
// Go 1.27 added typedesclen, itaboffset and itabsize. Checked against
// .symtab in unstripped builds by tests.
const (
	mdPcHeader    = 0
	mdFuncnametab = 8   // []byte, then cutab, filetab, pctab, pclntable: 24 bytes each
	mdPclntable   = 104 // []byte: the pclntab's last table
	mdText        = 176
	mdEtext       = 184
	mdGofuncOld   = 320 // Go 1.21 – 1.26
	mdGofunc127   = 344 // Go 1.27
)

// moduledata is what latscope reads of runtime.firstmoduledata, the
// runtime's own record of where the linker put the tables.
type moduledata struct {
	addr       uint64 // of runtime.firstmoduledata
	pcHeader   uint64 // the pclntab
	pclntabEnd uint64 // end of its last table (pclntable)
	text       uint64 // runtime.text: pclntab entries and method tables are relative to it
	etext      uint64
}

// pclnHeader is a Go 1.20+ pclntab header: where its tables start,
// relative to the header (funcnametab, cutab, filetab, pctab, pclntable).
type pclnHeader struct {
	addr uint64
	tabs [5]uint64
}

// parsePclnHeader reads the header at the start of d. ok is false unless
// it is a plausible Go 1.20+ 64-bit little-endian header.
func parsePclnHeader(d []byte) (h pclnHeader, ok bool) {
	if len(d) < pcHeaderSize || le.Uint32(d) != go120Magic || d[4] != 0 || d[5] != 0 || d[7] != 8 {
		return h, false
	}
	if minLC := d[6]; minLC != 1 && minLC != 2 && minLC != 4 {
		return h, false
	}
	prev := uint64(pcHeaderSize)
	for i := range h.tabs {
		h.tabs[i] = le.Uint64(d[8+8*(3+i):])
		if h.tabs[i] < prev || h.tabs[i] > 1<<40 {
			return h, false
		}
		prev = h.tabs[i]
	}
	return h, true
}

// locateTables finds the pclntab and runtime.firstmoduledata and returns
// the pclntab's address and contents; b.md is set when the moduledata was
// found. The Go linker gives the pclntab its own section (.gopclntab).
// An external linker does too for Go 1.26+ and for non-PIE builds, but a
// PIE (dynamic or static) of Go 1.21 – 1.25 has it inside .data.rel.ro,
// because its header holds a pointer (the text start) the dynamic linker
// relocates: there it is found by its header, confirmed by the moduledata
// that points at it, which also says where it ends.
func (b *Binary) locateTables() (addr uint64, data []byte, err error) {
	var cands []pclnHeader
	sec := b.pclntabSection()
	if sec != nil {
		data, err := b.sectionData(sec)
		if err != nil {
			return 0, nil, err
		}
		h, ok := parsePclnHeader(data)
		if !ok {
			// Let the table parser say what is wrong with it.
			_, perr := parseFuncTable(data, b.textAddr)
			if perr == nil {
				perr = fmt.Errorf("header is not a Go 1.20+ 64-bit little-endian pclntab header")
			}
			return 0, nil, newError(b.Path, ErrCorruptPclntab, "%v; the binary may be damaged, rebuild it", perr)
		}
		h.addr = sec.Addr
		b.md = b.findModuledata([]pclnHeader{h})
		return sec.Addr, data, nil
	}
	cands, err = b.pclntabCandidates()
	if err != nil {
		return 0, nil, err
	}
	if len(cands) == 0 {
		return 0, nil, newError(b.Path, ErrNotGo, "Go build info present but no Go 1.20+ pclntab: no .gopclntab section and no pclntab header in the data sections; the binary looks damaged")
	}
	md := b.findModuledata(cands)
	if md == nil {
		return 0, nil, newError(b.Path, ErrUnsupportedLayout,
			"no .gopclntab section, and none of the %d pclntab headers found in the data sections is the one runtime.firstmoduledata points at (searched %v); the function table cannot be bounded", len(cands), b.moduledataSectionNames())
	}
	b.md = md
	data, err = b.readAt(md.pcHeader, int(md.pclntabEnd-md.pcHeader))
	if err != nil {
		return 0, nil, err
	}
	return md.pcHeader, data, nil
}

// pclntabCandidates finds Go 1.20+ pclntab headers in the loaded,
// non-executable sections.
func (b *Binary) pclntabCandidates() ([]pclnHeader, error) {
	magic := []byte{0xf1, 0xff, 0xff, 0xff, 0, 0}
	var out []pclnHeader
	for _, s := range b.elf.Sections {
		if s.Type != elf.SHT_PROGBITS || s.Flags&elf.SHF_ALLOC == 0 || s.Flags&elf.SHF_EXECINSTR != 0 {
			continue
		}
		d, err := b.sectionData(s)
		if err != nil {
			return nil, err
		}
		for i := 0; i < len(d); {
			j := bytes.Index(d[i:], magic)
			if j < 0 {
				break
			}
			if h, ok := parsePclnHeader(d[i+j:]); ok && len(out) < 64 {
				h.addr = s.Addr + uint64(i+j)
				out = append(out, h)
			}
			i += j + 1
		}
	}
	return out, nil
}

// moduledataSections are where linkers put runtime.firstmoduledata: its
// own section since Go 1.26, .noptrdata before; the other writable
// sections are searched after them.
var moduledataSections = []string{".go.module", ".noptrdata", ".data.rel.ro", ".data"}

func (b *Binary) moduledataSectionNames() []string {
	var out []string
	for _, s := range b.moduledataSearch() {
		out = append(out, s.Name)
	}
	return out
}

func (b *Binary) moduledataSearch() []*elf.Section {
	var out []*elf.Section
	for _, name := range moduledataSections {
		if s := b.elf.Section(name); s != nil && s.Type == elf.SHT_PROGBITS {
			out = append(out, s)
		}
	}
	for _, s := range b.elf.Sections {
		if s.Type == elf.SHT_PROGBITS && s.Flags&elf.SHF_ALLOC != 0 && s.Flags&elf.SHF_WRITE != 0 && !slices.Contains(moduledataSections, s.Name) {
			out = append(out, s)
		}
	}
	return out
}

// findModuledata returns the runtime.firstmoduledata whose pcHeader is
// one of cands: its first word points at the header, the next five
// slices at the header's tables, and text/etext lie in .text. Pointers
// are read through PIE relocations. nil when there is none.
func (b *Binary) findModuledata(cands []pclnHeader) *moduledata {
	byAddr := make(map[uint64]pclnHeader, len(cands))
	for _, c := range cands {
		byAddr[c.addr] = c
	}
	for _, sec := range b.moduledataSearch() {
		data, err := b.sectionData(sec)
		if err != nil {
			continue
		}
		// A word pointing at a header: stored in place, or (PIE) the
		// addend of a relocation.
		var at []uint64
		for off := 0; off+8 <= len(data); off += 8 {
			if _, ok := byAddr[le.Uint64(data[off:])]; ok {
				at = append(at, sec.Addr+uint64(off))
			}
		}
		for _, r := range b.relocsIn(sec.Addr, sec.Addr+uint64(len(data))) {
			if _, ok := byAddr[r.val]; ok {
				at = append(at, r.off)
			}
		}
		for _, a := range at {
			if md, ok := b.checkModuledata(a, byAddr); ok {
				return md
			}
		}
	}
	return nil
}

func (b *Binary) checkModuledata(a uint64, byAddr map[uint64]pclnHeader) (*moduledata, bool) {
	p, err := b.pointerAt(a + mdPcHeader)
	if err != nil {
		return nil, false
	}
	h, ok := byAddr[p]
	if !ok {
		return nil, false
	}
	for i, off := range h.tabs {
		ptr, err := b.pointerAt(a + mdFuncnametab + 24*uint64(i))
		if err != nil || ptr != p+off {
			return nil, false
		}
	}
	n, err := b.pointerAt(a + mdPclntable + 8) // the slice's length
	if err != nil || n == 0 || n > 1<<40 {
		return nil, false
	}
	text, err1 := b.pointerAt(a + mdText)
	etext, err2 := b.pointerAt(a + mdEtext)
	// etext may stop short of the section end (trailing padding).
	textEnd := b.textAddr + b.textSize
	if err1 != nil || err2 != nil || text < b.textAddr || etext <= text || etext > textEnd {
		return nil, false
	}
	return &moduledata{addr: a, pcHeader: p, pclntabEnd: p + h.tabs[4] + n, text: text, etext: etext}, true
}

// gofunc returns the address of go:func.*, the base FUNCDATA offsets are
// relative to: from .symtab when present, else from runtime.firstmoduledata.
func (b *Binary) gofunc() (uint64, error) {
	if !b.Stripped {
		if syms, err := b.elf.Symbols(); err == nil {
			for _, s := range syms {
				if s.Name == "go:func.*" || s.Name == "go.func.*" {
					return s.Value, nil
				}
			}
		}
	}
	if b.md == nil {
		return 0, fmt.Errorf("runtime.firstmoduledata not found in %v", b.moduledataSectionNames())
	}
	off := uint64(mdGofuncOld)
	if minor, _ := goMinor(b.GoVersion); minor >= 27 {
		off = mdGofunc127
	}
	v, err := b.pointerAt(b.md.addr + off)
	if err != nil {
		return 0, fmt.Errorf("read moduledata.gofunc: %w", err)
	}
	if _, err := b.FileOffset(v); err != nil {
		return 0, fmt.Errorf("moduledata.gofunc %#x is not in the file image (Go %s layout unknown)", v, b.GoVersion)
	}
	return v, nil
}

// pointerAt reads a pointer-sized word at vaddr, applying a dynamic
// R_X86_64_RELATIVE relocation (PIE) when one targets it.
func (b *Binary) pointerAt(vaddr uint64) (uint64, error) {
	if rs := b.relocsIn(vaddr, vaddr+1); len(rs) == 1 {
		return rs[0].val, nil
	}
	w, err := b.readAt(vaddr, 8)
	if err != nil {
		return 0, err
	}
	return le.Uint64(w), nil
}

// reloc is a dynamic R_X86_64_RELATIVE relocation: at load, the word at
// off becomes the load bias plus val.
type reloc struct{ off, val uint64 }

// relativeRelocs returns the binary's R_X86_64_RELATIVE relocations,
// sorted by target: in a PIE, pointers are stored there, not (reliably)
// in place. Read once.
func (b *Binary) relativeRelocs() []reloc {
	b.relocsOnce.Do(func() {
		if !b.PIE || b.elf.Machine != elf.EM_X86_64 {
			return
		}
		for _, s := range b.elf.Sections {
			if s.Type != elf.SHT_RELA {
				continue
			}
			data, err := b.sectionData(s)
			if err != nil {
				continue
			}
			for i := 0; i+24 <= len(data); i += 24 {
				off, info, addend := le.Uint64(data[i:]), le.Uint64(data[i+8:]), le.Uint64(data[i+16:])
				if elf.R_X86_64(info&0xffffffff) == elf.R_X86_64_RELATIVE {
					b.relocs = append(b.relocs, reloc{off, addend})
				}
			}
		}
		sort.Slice(b.relocs, func(i, j int) bool { return b.relocs[i].off < b.relocs[j].off })
	})
	return b.relocs
}

// relocsIn returns the relocations targeting [lo, hi).
func (b *Binary) relocsIn(lo, hi uint64) []reloc {
	rs := b.relativeRelocs()
	i := sort.Search(len(rs), func(i int) bool { return rs[i].off >= lo })
	j := i
	for j < len(rs) && rs[j].off < hi {
		j++
	}
	return rs[i:j]
}
