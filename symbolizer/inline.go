package symbolizer

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"sort"
)

// InlineInfo says where a function's body was inlined. Calls through an
// inlined copy never hit a probe on the out-of-line function.
type InlineInfo struct {
	Known   bool     // false when the binary could not tell (see Reason)
	Callers []string // functions it was inlined into, sorted, deduplicated
	Reason  string   // why Known is false
}

// inlineIndex maps a function name to the functions it was inlined into.
type inlineIndex struct {
	callers map[string][]string
	err     error // why the index could not be built
}

// Inlined reports the functions f was inlined into. Only f.Name is used,
// so functions without an out-of-line copy can be asked about too. It
// uses the pclntab inline trees, else DWARF (the two agree:
// TestInlineSourcesAgree). It never claims "not inlined" when the binary
// could not tell: then Known is false and Reason says why.
//
// Limitation: an inlined call that compiled to no instruction of its own
// (e.g. folded into a constant, as `tiny(1)` is in the test fixture) is
// recorded neither in DWARF nor in the inline tree, so it cannot be
// reported; such a call also never runs the function's body.
func (b *Binary) Inlined(f *Func) (InlineInfo, error) {
	b.inlineOnce.Do(func() {
		// pclntab's inline tree first: every binary has it, it gives what
		// DWARF gives (TestInlineSourcesAgree) and costs a fraction of
		// reading DWARF, which delays attaching at exec.
		b.inline = b.pclntabInlineIndex()
		if b.inline.err != nil && b.HasDWARF {
			if d := b.dwarfInlineIndex(); d.err == nil {
				b.inline = d
			}
		}
	})
	if b.inline.err != nil {
		return InlineInfo{Reason: b.inline.err.Error()}, nil
	}
	return InlineInfo{Known: true, Callers: b.inline.callers[f.Name]}, nil
}

func (b *Binary) dwarfData() (*dwarf.Data, error) {
	b.dwarfOnce.Do(func() {
		b.dwarf, b.dwarfErr = b.elf.DWARF()
	})
	return b.dwarf, b.dwarfErr
}

// dwLangGo is DW_LANG_Go, a compile unit's DW_AT_language for Go code.
const dwLangGo = 0x16

// dwarfInlineIndex walks every DW_TAG_inlined_subroutine and records the
// enclosing (outermost, physical) subprogram as a caller of the abstract
// origin's function.
func (b *Binary) dwarfInlineIndex() inlineIndex {
	d, err := b.dwarfData()
	if err != nil {
		return inlineIndex{err: fmt.Errorf("read DWARF: %w", err)}
	}
	names := make(map[dwarf.Offset]string) // abstract subprograms
	type edge struct {
		origin       dwarf.Offset
		caller       string // name, or "" with callerOrigin set
		callerOrigin dwarf.Offset
	}
	var edges []edge
	var cur string             // current top-level subprogram's name
	var curOrigin dwarf.Offset // or its abstract origin
	r := d.Reader()
	depth := 0
	for {
		e, err := r.Next()
		if err != nil {
			return inlineIndex{err: fmt.Errorf("read DWARF: %w", err)}
		}
		if e == nil {
			break
		}
		if e.Tag == 0 {
			depth--
			continue
		}
		switch e.Tag {
		case dwarf.TagCompileUnit:
			depth = 0
			// The C of a cgo build (runtime/cgo's gcc-compiled code with
			// external linking) has inline trees of its own; latscope
			// probes Go functions only, and the pclntab knows only those.
			if lang, ok := e.Val(dwarf.AttrLanguage).(int64); ok && lang != dwLangGo {
				r.SkipChildren()
				continue
			}
		case dwarf.TagSubprogram:
			name, _ := e.Val(dwarf.AttrName).(string)
			if name != "" {
				names[e.Offset] = name
			}
			if depth == 1 {
				cur = name
				curOrigin, _ = e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset)
			}
		case dwarf.TagInlinedSubroutine:
			if o, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset); ok {
				edges = append(edges, edge{origin: o, caller: cur, callerOrigin: curOrigin})
			}
		}
		if e.Children {
			depth++
		}
	}
	callers := make(map[string][]string)
	for _, e := range edges {
		callee, caller := names[e.origin], e.caller
		if caller == "" {
			caller = names[e.callerOrigin]
		}
		if callee == "" || caller == "" {
			continue
		}
		callers[callee] = append(callers[callee], caller)
	}
	return inlineIndex{callers: sortDedupe(callers)}
}

func sortDedupe(m map[string][]string) map[string][]string {
	for k, v := range m {
		sort.Strings(v)
		out := v[:0]
		for i, s := range v {
			if i == 0 || s != v[i-1] {
				out = append(out, s)
			}
		}
		m[k] = out
	}
	return m
}

// pclntabInlineIndex reads every function's inline tree (FUNCDATA_InlTree,
// an array of runtime.inlinedCall in go:func.*) and records the function
// as a caller of each entry's function.
func (b *Binary) pclntabInlineIndex() inlineIndex {
	t := b.pcln
	if t == nil {
		return inlineIndex{err: errors.New("the .gopclntab format is not one latscope can read inline trees from")}
	}
	gofunc, err := b.gofunc()
	if err != nil {
		return inlineIndex{err: err}
	}
	callers := make(map[string][]string)
	for i := 0; i < t.nfunc; i++ {
		r, err := t.record(i)
		if err != nil {
			return inlineIndex{err: fmt.Errorf("read function %d: %w", i, err)}
		}
		if len(r.funcdata) <= funcdataInlTree || len(r.pcdata) <= pcdataInlTreeIndex ||
			r.funcdata[funcdataInlTree] == ^uint32(0) || r.pcdata[pcdataInlTreeIndex] == 0 {
			continue
		}
		caller, ok := t.funcName(r.nameOff)
		if !ok {
			return inlineIndex{err: fmt.Errorf("function %d has a bad name offset", i)}
		}
		n := int32(-1)
		err = t.pcvalue(r.pcdata[pcdataInlTreeIndex], r.entry, r.end, func(_, _ uint64, v int32) bool {
			n = max(n, v)
			return true
		})
		if err != nil {
			return inlineIndex{err: fmt.Errorf("inline index table of %s: %w", caller, err)}
		}
		if n < 0 {
			continue
		}
		if n >= maxInlineTreeLength {
			return inlineIndex{err: fmt.Errorf("inline tree of %s claims %d entries", caller, n+1)}
		}
		tree, err := b.readAt(gofunc+uint64(r.funcdata[funcdataInlTree]), int(n+1)*inlinedCallSize)
		if err != nil {
			return inlineIndex{err: fmt.Errorf("inline tree of %s: %w", caller, err)}
		}
		for k := 0; k <= int(n); k++ {
			nameOff := int32(le.Uint32(tree[k*inlinedCallSize+4:]))
			callee, ok := t.funcName(nameOff)
			if !ok {
				return inlineIndex{err: fmt.Errorf("inline tree of %s has a bad name offset", caller)}
			}
			callers[callee] = append(callers[callee], caller)
		}
	}
	return inlineIndex{callers: sortDedupe(callers)}
}
