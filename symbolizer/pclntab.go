package symbolizer

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// pclntab is a bounds-checked view of a Go 1.20+ (magic 0xfffffff1)
// .gopclntab, used for what debug/gosym does not expose: declaration
// lines, PCDATA tables and FUNCDATA offsets (inline trees).
type pclntab struct {
	textStart   uint64
	minLC       uint64
	nfunc       int
	funcnametab []byte
	cutab       []byte
	filetab     []byte
	pctab       []byte
	pclntable   []byte // starts with the ftab
}

const (
	go120Magic          = 0xfffffff1
	pcHeaderSize        = 8 + 8*8
	funcRecordSize      = 44 // fixed part of runtime._func
	pcdataInlTreeIndex  = 2
	funcdataInlTree     = 3
	inlinedCallSize     = 16
	maxInlineTreeLength = 1 << 16
)

var le = binary.LittleEndian

func newPclntab(data []byte, textStart uint64) (*pclntab, error) {
	if len(data) < pcHeaderSize {
		return nil, fmt.Errorf("pclntab header truncated (%d bytes)", len(data))
	}
	if le.Uint32(data) != go120Magic || data[4] != 0 || data[5] != 0 || data[7] != 8 {
		return nil, fmt.Errorf("pclntab magic %#x / pointer size %d: want Go 1.20+ 64-bit little-endian", le.Uint32(data), data[7])
	}
	t := &pclntab{textStart: textStart, minLC: uint64(data[6])}
	if t.minLC == 0 {
		return nil, fmt.Errorf("pclntab minimum instruction size is 0")
	}
	nfunc := le.Uint64(data[8:])
	if nfunc > uint64(len(data)/8) {
		return nil, fmt.Errorf("pclntab claims %d functions in %d bytes", nfunc, len(data))
	}
	t.nfunc = int(nfunc)
	off := func(i int) uint64 { return le.Uint64(data[8+8*i:]) }
	sub := func(start, end uint64) ([]byte, error) {
		if start > end || end > uint64(len(data)) {
			return nil, fmt.Errorf("pclntab table [%d,%d) outside %d bytes", start, end, len(data))
		}
		return data[start:end], nil
	}
	// Header offsets in order: funcname, cu, file, pc, pcln; each table
	// ends where the next begins.
	bounds := []uint64{off(3), off(4), off(5), off(6), off(7), uint64(len(data))}
	tabs := make([][]byte, 5)
	for i := range tabs {
		s, err := sub(bounds[i], bounds[i+1])
		if err != nil {
			return nil, err
		}
		tabs[i] = s
	}
	t.funcnametab, t.cutab, t.filetab, t.pctab, t.pclntable = tabs[0], tabs[1], tabs[2], tabs[3], tabs[4]
	if uint64(len(t.pclntable)) < (nfunc+1)*8 {
		return nil, fmt.Errorf("pclntab function index truncated")
	}
	return t, nil
}

// funcRecord is the part of runtime._func latscope reads.
type funcRecord struct {
	entry     uint64
	end       uint64 // next function's entry
	nameOff   int32
	pcfile    uint32
	pcln      uint32
	cuOffset  uint32
	startLine int32
	pcdata    []uint32
	funcdata  []uint32
}

func (t *pclntab) record(i int) (funcRecord, error) {
	var r funcRecord
	if i < 0 || i >= t.nfunc {
		return r, fmt.Errorf("function index %d out of range", i)
	}
	foff := uint64(le.Uint32(t.pclntable[8*i+4:]))
	if foff+funcRecordSize > uint64(len(t.pclntable)) {
		return r, fmt.Errorf("function record %d at %d outside table", i, foff)
	}
	d := t.pclntable[foff:]
	r.entry = t.textStart + uint64(le.Uint32(d))
	r.end = t.textStart + uint64(le.Uint32(t.pclntable[8*(i+1):]))
	if r.end < r.entry {
		return r, fmt.Errorf("function record %d ends before it starts", i)
	}
	r.nameOff = int32(le.Uint32(d[4:]))
	r.pcfile = le.Uint32(d[20:])
	r.pcln = le.Uint32(d[24:])
	npcdata := uint64(le.Uint32(d[28:]))
	r.cuOffset = le.Uint32(d[32:])
	r.startLine = int32(le.Uint32(d[36:]))
	nfuncdata := uint64(d[43])
	need := funcRecordSize + 4*(npcdata+nfuncdata)
	if npcdata > 1<<10 || need > uint64(len(d)) {
		return r, fmt.Errorf("function record %d: %d pcdata/%d funcdata entries outside table", i, npcdata, nfuncdata)
	}
	r.pcdata = make([]uint32, npcdata)
	for j := range r.pcdata {
		r.pcdata[j] = le.Uint32(d[funcRecordSize+4*j:])
	}
	r.funcdata = make([]uint32, nfuncdata)
	base := funcRecordSize + 4*int(npcdata)
	for j := range r.funcdata {
		r.funcdata[j] = le.Uint32(d[base+4*j:])
	}
	return r, nil
}

// cstring returns the NUL-terminated string at off in tab.
func cstring(tab []byte, off int64) (string, bool) {
	if off < 0 || off >= int64(len(tab)) {
		return "", false
	}
	s := tab[off:]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	return string(s), true
}

func (t *pclntab) funcName(nameOff int32) (string, bool) {
	return cstring(t.funcnametab, int64(nameOff))
}

// pcvalue decodes the pc/value table at off (relative to pctab) for the
// function [entry, end) and calls fn for each run [pc, nextPC) with its
// value. It stops at the end of the table, at end, or when fn returns
// false. Every run covers at least one instruction, so the work is bounded
// by the function's size even on hostile input.
func (t *pclntab) pcvalue(off uint32, entry, end uint64, fn func(pc, next uint64, val int32) bool) error {
	if off == 0 {
		return nil
	}
	if uint64(off) >= uint64(len(t.pctab)) {
		return fmt.Errorf("pc/value table offset %d outside pctab", off)
	}
	p := t.pctab[off:]
	pc, val := entry, int32(-1)
	for first := true; ; first = false {
		uvdelta, n := binary.Uvarint(p)
		if n <= 0 {
			return fmt.Errorf("pc/value table at %d truncated", off)
		}
		p = p[n:]
		if uvdelta == 0 && !first {
			return nil
		}
		// Zig-zag decoding of the value delta.
		val += int32(-(uvdelta & 1) ^ (uvdelta >> 1))
		pcdelta, n := binary.Uvarint(p)
		if n <= 0 {
			return fmt.Errorf("pc/value table at %d truncated", off)
		}
		p = p[n:]
		if pcdelta == 0 || pc >= end || pcdelta > (end-pc)/t.minLC {
			return fmt.Errorf("pc/value table at %d: run of %d outside the function", off, pcdelta)
		}
		next := pc + pcdelta*t.minLC
		if !fn(pc, next, val) || next >= end {
			return nil
		}
		pc = next
	}
}

// fileName resolves a file number of function record r.
func (t *pclntab) fileName(r funcRecord, fileno int32) (string, bool) {
	if fileno < 0 {
		return "", false
	}
	i := uint64(r.cuOffset) + uint64(fileno)
	if 4*i+4 > uint64(len(t.cutab)) {
		return "", false
	}
	return cstring(t.filetab, int64(le.Uint32(t.cutab[4*i:])))
}

// annotate fills declaration File and Line of funcs from the table.
// Functions are matched by entry address; failures leave them empty.
func (t *pclntab) annotate(funcs []Func) {
	byEntry := make(map[uint64]int, len(funcs))
	for i, f := range funcs {
		byEntry[f.Entry] = i
	}
	for i := 0; i < t.nfunc; i++ {
		r, err := t.record(i)
		if err != nil {
			return
		}
		j, ok := byEntry[r.entry]
		if !ok {
			continue
		}
		funcs[j].Line = int(r.startLine)
		fileno := int32(-1)
		_ = t.pcvalue(r.pcfile, r.entry, r.end, func(_, _ uint64, v int32) bool {
			fileno = v
			return false
		})
		if name, ok := t.fileName(r, fileno); ok {
			funcs[j].File = name
		}
	}
}
