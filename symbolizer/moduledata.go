package symbolizer

import (
	"debug/elf"
	"fmt"
)

// runtime.moduledata field offsets (amd64). text/etext have been at 176
// since Go 1.20; gofunc moved when Go 1.27 added typedesclen, itaboffset
// and itabsize. Checked against go:func.* in unstripped builds by tests.
const (
	mdPcHeader  = 0
	mdText      = 176
	mdEtext     = 184
	mdGofuncOld = 320 // Go 1.21 – 1.26
	mdGofunc127 = 344 // Go 1.27
)

// gofunc returns the address of go:func.*, the base FUNCDATA offsets are
// relative to: from .symtab when present, else from runtime.firstmoduledata,
// found by its first word pointing at .gopclntab.
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
	md, err := b.findModuledata()
	if err != nil {
		return 0, err
	}
	off := uint64(mdGofuncOld)
	if minor, _ := goMinor(b.GoVersion); minor >= 27 {
		off = mdGofunc127
	}
	v, err := b.pointerAt(md + off)
	if err != nil {
		return 0, fmt.Errorf("read moduledata.gofunc: %w", err)
	}
	if _, err := b.FileOffset(v); err != nil {
		return 0, fmt.Errorf("moduledata.gofunc %#x is not in the file image (Go %s layout unknown)", v, b.GoVersion)
	}
	return v, nil
}

// moduledataSections are where the linker puts runtime.firstmoduledata:
// its own section since Go 1.26, .noptrdata before.
var moduledataSections = []string{".go.module", ".noptrdata", ".data.rel.ro", ".data"}

// findModuledata locates runtime.firstmoduledata in a stripped binary: a
// word equal to the .gopclntab address (moduledata.pcHeader), followed at
// fixed offsets by the .text bounds.
func (b *Binary) findModuledata() (uint64, error) {
	pcln := b.pclntabSection()
	if pcln == nil {
		return 0, fmt.Errorf("no .gopclntab")
	}
	for _, name := range moduledataSections {
		sec := b.elf.Section(name)
		if sec == nil || sec.Type == elf.SHT_NOBITS {
			continue
		}
		if a, ok := b.scanModuledata(sec, pcln.Addr); ok {
			return a, nil
		}
	}
	return 0, fmt.Errorf("runtime.firstmoduledata not found in %v", moduledataSections)
}

func (b *Binary) scanModuledata(sec *elf.Section, pcHeader uint64) (uint64, bool) {
	data, err := b.sectionData(sec)
	if err != nil {
		return 0, false
	}
	rel := b.relativeRelocs(sec.Addr, sec.Addr+uint64(len(data)))
	word := func(addr uint64) uint64 {
		if v, ok := rel[addr]; ok {
			return v
		}
		if addr < sec.Addr || addr+8 > sec.Addr+uint64(len(data)) {
			return 0
		}
		return le.Uint64(data[addr-sec.Addr:])
	}
	textEnd := b.textAddr + uint64(len(b.text))
	for off := uint64(0); off+8 <= uint64(len(data)); off += 8 {
		a := sec.Addr + off
		if word(a+mdPcHeader) != pcHeader {
			continue
		}
		text, etext := word(a+mdText), word(a+mdEtext)
		// etext may stop short of the section end (trailing padding).
		if text == b.textAddr && etext > text && etext <= textEnd {
			return a, true
		}
	}
	return 0, false
}

// pointerAt reads a pointer-sized word at vaddr, applying a dynamic
// R_X86_64_RELATIVE relocation (PIE) when one targets it.
func (b *Binary) pointerAt(vaddr uint64) (uint64, error) {
	if v, ok := b.relativeRelocs(vaddr, vaddr+8)[vaddr]; ok {
		return v, nil
	}
	w, err := b.readAt(vaddr, 8)
	if err != nil {
		return 0, err
	}
	return le.Uint64(w), nil
}

// relativeRelocs returns the R_X86_64_RELATIVE addends targeting
// [lo, hi): in PIE binaries pointers are stored there, not in place.
func (b *Binary) relativeRelocs(lo, hi uint64) map[uint64]uint64 {
	out := make(map[uint64]uint64)
	if !b.PIE || b.elf.Machine != elf.EM_X86_64 {
		return out
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
			if elf.R_X86_64(info&0xffffffff) == elf.R_X86_64_RELATIVE && off >= lo && off < hi {
				out[off] = addend
			}
		}
	}
	return out
}
