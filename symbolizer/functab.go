package symbolizer

import (
	"debug/elf"
	"debug/gosym"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// readFuncs builds b.Funcs: from .symtab when present, else from the
// pclntab. Both sources are restricted to the functions the pclntab knows
// (the Go runtime's own view), so a stripped and an unstripped build of
// the same program yield the same table.
func (b *Binary) readFuncs() error {
	text := b.elf.Section(".text")
	if text == nil {
		return newError(b.Path, ErrNotGo, "no .text section")
	}
	if text.Type == elf.SHT_NOBITS {
		return newError(b.Path, ErrCorruptPclntab, "section .text has no file data")
	}
	if st, err := b.file.Stat(); err == nil && (text.Offset > uint64(st.Size()) || text.Size > uint64(st.Size())-text.Offset) {
		return newError(b.Path, ErrCorruptPclntab, "section .text extends past the end of the file; the file is truncated")
	}
	b.textAddr, b.textSize = text.Addr, text.Size

	pclnAddr, pcdata, err := b.locateTables()
	if err != nil {
		return err
	}
	textStart, err := b.findRuntimeText(pclnAddr)
	if err != nil {
		return err
	}
	b.runtimeText = textStart
	b.pclnAddr, b.pclnEnd = pclnAddr, pclnAddr+uint64(len(pcdata))
	funcs, err := parseFuncTable(pcdata, textStart)
	if err != nil {
		return &Error{Path: b.Path, Err: ErrCorruptPclntab, Detail: err.Error() + "; the binary may be damaged, rebuild it"}
	}
	if raw, err := newPclntab(pcdata, textStart); err == nil {
		b.pcln = raw
		raw.annotate(funcs)
	}
	if !b.Stripped {
		if err := b.applySymtab(funcs); err != nil {
			return err
		}
	}
	for _, f := range funcs {
		if f.End < f.Entry || f.Entry < b.textAddr || f.End-b.textAddr > b.textSize {
			return newError(b.Path, ErrCorruptPclntab, "function %s [%#x,%#x) lies outside .text [%#x,%#x); rebuild the binary", f.Name, f.Entry, f.End, b.textAddr, b.textAddr+b.textSize)
		}
	}
	sort.SliceStable(funcs, func(i, j int) bool { return funcs[i].Entry < funcs[j].Entry })
	b.Funcs = funcs
	b.byName = make(map[string]int, len(funcs))
	for i := len(funcs) - 1; i >= 0; i-- {
		b.byName[funcs[i].Name] = i
	}
	return nil
}

// findRuntimeText returns runtime.text, the address the pclntab's entry
// offsets count from. The Go linker puts it at the start of .text; an
// external linker puts C start-up code (crt1.o, crti.o) first. In order:
// the symbol; runtime.firstmoduledata.text; the pclntab header's text
// start (Go 1.21 – 1.25: a relocated pointer in a PIE; Go 1.26 dropped
// the field). Without any of them the function table cannot be placed.
func (b *Binary) findRuntimeText(pclnAddr uint64) (uint64, error) {
	if !b.Stripped {
		if syms, err := b.elf.Symbols(); err == nil {
			for _, s := range syms {
				if s.Name == "runtime.text" {
					return s.Value, nil
				}
			}
		}
	}
	if b.md != nil {
		return b.md.text, nil
	}
	textEnd := b.textAddr + b.textSize
	if v, err := b.pointerAt(pclnAddr + 8 + 2*8); err == nil && v != 0 {
		if v < b.textAddr || v >= textEnd {
			return 0, newError(b.Path, ErrCorruptPclntab, "the pclntab header puts the text start at %#x, outside .text [%#x,%#x); rebuild the binary", v, b.textAddr, textEnd)
		}
		return v, nil
	}
	return 0, newError(b.Path, ErrUnsupportedLayout,
		"cannot tell where the Go code starts in .text: no symbol table, runtime.firstmoduledata not found in %v and the pclntab header (Go 1.26+) does not record it; a binary linked with -ldflags=-s -w by an unusual linker? Keep its symbol table (drop -s) to trace it",
		b.moduledataSectionNames())
}

// parseFuncTable decodes a .gopclntab with debug/gosym. textStart is the
// address entry offsets are relative to (Go 1.18+ formats). debug/gosym
// panics on some corrupt tables; that is turned into an error here.
func parseFuncTable(data []byte, textStart uint64) (funcs []Func, err error) {
	defer func() {
		if r := recover(); r != nil {
			funcs, err = nil, fmt.Errorf("decode .gopclntab: %v", r)
		}
	}()
	if len(data) < 16 {
		return nil, fmt.Errorf("decode .gopclntab: %d bytes is too short for a header", len(data))
	}
	// debug/gosym sizes allocations by the header's function count before
	// checking it: reject counts the data cannot hold (every format's
	// function index takes at least 8 bytes per function).
	var order binary.ByteOrder = binary.LittleEndian
	if binary.BigEndian.Uint32(data)&0xfffffff0 == 0xfffffff0 {
		order = binary.BigEndian
	}
	if ptr := data[7]; ptr != 4 && ptr != 8 {
		return nil, fmt.Errorf("decode .gopclntab: pointer size %d", ptr)
	}
	nfunc := order.Uint64(data[8:])
	if data[7] == 4 {
		nfunc = uint64(order.Uint32(data[8:]))
	}
	if nfunc == 0 || nfunc > uint64(len(data))/8 {
		return nil, fmt.Errorf("decode .gopclntab: header claims %d functions in %d bytes", nfunc, len(data))
	}
	tab, err := gosym.NewTable(nil, gosym.NewLineTable(data, textStart))
	if err != nil {
		return nil, fmt.Errorf("decode .gopclntab: %w", err)
	}
	if len(tab.Funcs) == 0 {
		return nil, fmt.Errorf("decode .gopclntab: no functions (unknown table version or empty table)")
	}
	funcs = make([]Func, 0, len(tab.Funcs))
	for _, f := range tab.Funcs {
		if f.End < f.Entry {
			return nil, fmt.Errorf("decode .gopclntab: function %q ends (%#x) before it starts (%#x)", f.Name, f.End, f.Entry)
		}
		funcs = append(funcs, Func{Name: f.Name, Entry: f.Entry, End: f.End})
	}
	return funcs, nil
}

// applySymtab cross-checks the pclntab table against .symtab: every
// function must have a symbol at its entry with its name. .symtab spells
// the assembly bodies behind ABI wrappers "F.abi0" where the pclntab says
// "F" for both; the pclntab spelling is kept so that stripped and
// unstripped builds agree. A disagreement means a damaged or foreign table.
func (b *Binary) applySymtab(funcs []Func) error {
	syms, err := b.elf.Symbols()
	if err != nil {
		return newError(b.Path, ErrCorruptPclntab, "read .symtab: %v", err)
	}
	names := make(map[uint64][]string, len(syms))
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			names[s.Value] = append(names[s.Value], strings.TrimSuffix(s.Name, ".abi0"))
		}
	}
	for _, f := range funcs {
		// The linker writes '·' as '.' in .symtab only.
		if !slices.Contains(names[f.Entry], strings.ReplaceAll(f.Name, "·", ".")) {
			return newError(b.Path, ErrCorruptPclntab, ".gopclntab puts %s at %#x but .symtab has %q there", f.Name, f.Entry, names[f.Entry])
		}
	}
	return nil
}
