package symbolizer

import (
	"sort"
)

// Frame is one call a program counter was executing: the function and the
// file and line it was at. One PC stands for several frames where calls
// were inlined into its function.
type Frame struct {
	Function string
	File     string
	Line     int
}

// PCFrames returns the calls the instruction at pc (a link-time address:
// subtract a PIE's load bias first) belongs to, innermost first: the
// functions inlined there, then the function whose code holds it, each
// with its file and line, as the Go runtime's own traceback reports them
// (pclntab line tables and inline trees, so stripped binaries work). For
// a return address in a stack, pass the address minus one: the call
// instruction's line and inlining, not the next one's. ok is false when
// pc is in no function of the table (assembly without a pclntab entry,
// another mapping). Safe for concurrent use.
func (b *Binary) PCFrames(pc uint64) (frames []Frame, ok bool) {
	t := b.pcln
	if t == nil {
		return nil, false
	}
	i, ok := t.findFunc(pc)
	if !ok {
		return nil, false
	}
	r, err := t.record(i)
	if err != nil || pc < r.entry || pc >= r.end {
		return nil, false
	}
	outer, ok := t.funcName(r.nameOff)
	if !ok {
		return nil, false
	}
	var tree []byte // the function's inline tree, read when first needed
	for range maxInlineDepth {
		file, line := t.fileLine(r, pc)
		idx := int32(-1)
		if len(r.pcdata) > pcdataInlTreeIndex && len(r.funcdata) > funcdataInlTree && r.funcdata[funcdataInlTree] != ^uint32(0) {
			idx, _ = t.valueAt(r.pcdata[pcdataInlTreeIndex], r, pc)
		}
		if idx < 0 {
			return append(frames, Frame{Function: outer, File: file, Line: line}), true
		}
		if tree == nil {
			if tree, err = b.inlineTree(r); err != nil {
				return append(frames, Frame{Function: outer, File: file, Line: line}), true
			}
		}
		if int(idx+1)*inlinedCallSize > len(tree) {
			return append(frames, Frame{Function: outer, File: file, Line: line}), true
		}
		call := tree[int(idx)*inlinedCallSize:]
		name, _ := t.funcName(int32(le.Uint32(call[4:])))
		frames = append(frames, Frame{Function: name, File: file, Line: line})
		// The inlined call's own site, in its caller.
		pc = r.entry + uint64(int64(int32(le.Uint32(call[8:]))))
		if pc < r.entry || pc >= r.end {
			return frames, true
		}
	}
	return frames, true
}

// maxInlineDepth bounds the walk up an inline tree against corrupt ones
// (the compiler inlines far less deep).
const maxInlineDepth = 64

// inlineTree reads the whole inline tree of function record r: entries up
// to the largest index its PCDATA names.
func (b *Binary) inlineTree(r funcRecord) ([]byte, error) {
	b.gofuncOnce.Do(func() { b.gofuncAddr, b.gofuncErr = b.gofunc() })
	if b.gofuncErr != nil {
		return nil, b.gofuncErr
	}
	n := int32(-1)
	err := b.pcln.pcvalue(r.pcdata[pcdataInlTreeIndex], r.entry, r.end, func(_, _ uint64, v int32) bool {
		n = max(n, v)
		return true
	})
	if err != nil {
		return nil, err
	}
	if n < 0 || n >= maxInlineTreeLength {
		return nil, newError(b.Path, ErrCorruptPclntab, "inline tree of %d entries", n+1)
	}
	return b.readAt(b.gofuncAddr+uint64(r.funcdata[funcdataInlTree]), int(n+1)*inlinedCallSize)
}

// findFunc returns the index of the function whose code holds pc.
func (t *pclntab) findFunc(pc uint64) (int, bool) {
	if pc < t.textStart || t.nfunc == 0 {
		return 0, false
	}
	off := pc - t.textStart
	if off > 0xffffffff {
		return 0, false
	}
	entry := func(i int) uint64 { return uint64(le.Uint32(t.pclntable[8*i:])) }
	// The first function whose entry is past pc, minus one.
	i := sort.Search(t.nfunc, func(i int) bool { return entry(i) > off }) - 1
	if i < 0 || off >= entry(i+1) { // ftab holds nfunc+1 entries: the last is the end of text
		return 0, false
	}
	return i, true
}

// valueAt returns the value the pc/value table at off gives pc in the
// function of record r.
func (t *pclntab) valueAt(off uint32, r funcRecord, pc uint64) (int32, bool) {
	val, found := int32(-1), false
	_ = t.pcvalue(off, r.entry, r.end, func(lo, hi uint64, v int32) bool {
		if pc >= lo && pc < hi {
			val, found = v, true
			return false
		}
		return pc >= hi
	})
	return val, found
}

// fileLine returns the file and line of pc in the function of record r
// ("", 0 where the tables do not say).
func (t *pclntab) fileLine(r funcRecord, pc uint64) (string, int) {
	fileno, ok := t.valueAt(r.pcfile, r, pc)
	var file string
	if ok {
		file, _ = t.fileName(r, fileno)
	}
	line, ok := t.valueAt(r.pcln, r, pc)
	if !ok || line < 0 {
		line = 0
	}
	return file, int(line)
}
