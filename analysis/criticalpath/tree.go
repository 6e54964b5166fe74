package criticalpath

import (
	"cmp"
	"slices"
	"time"

	"github.com/latscope/latscope/span"
)

// Tree is one trace's spans indexed by parent. A Tree is reusable: Reset
// it with the next trace's spans, and a walk over many traces allocates
// next to nothing (the benchmark walks 100k traces). The zero value is an
// empty tree. A Tree is not safe for concurrent use.
type Tree struct {
	spans      []*span.Span
	start, end []int64 // Unix ns
	parent     []int32 // index of the parent span, -1 when absent
	first      []int32 // children of i are kids[first[i]:first[i+1]]
	kids       []int32
	ids        map[span.SpanID]int32
	cand       []candidate // walk scratch, a stack shared by the recursion
}

// candidate is a child placed and clipped in its parent's window.
type candidate struct {
	idx        int32
	start, end int64 // on the root's clock, clipped
	off        int64 // the child's subtree's shift onto the root's clock
}

// linearParents is the trace size up to which parents are found by a scan
// rather than a map: the demo's traces hold ~15 spans.
const linearParents = 24

// Reset indexes spans (one trace, any order) in place of what t held. The
// spans are not modified; t keeps the slice until the next Reset.
func (t *Tree) Reset(spans []*span.Span) {
	n := len(spans)
	t.spans = spans
	t.start, t.end = resize(t.start, n), resize(t.end, n)
	t.parent = resize(t.parent, n)
	t.first = resize(t.first, n+1)
	t.kids = resize(t.kids, n)
	for i, s := range spans {
		t.start[i] = s.Start.UnixNano()
		t.end[i] = max(s.End.UnixNano(), t.start[i]) // a negative duration counts as 0
	}
	if n > linearParents {
		if t.ids == nil {
			t.ids = make(map[span.SpanID]int32, n)
		}
		clear(t.ids)
		for i := n - 1; i >= 0; i-- { // the first of duplicate ids wins
			t.ids[spans[i].SpanID] = int32(i)
		}
	}
	clear(t.first)
	for i, s := range spans {
		p := int32(-1)
		if !s.ParentID.IsZero() && s.ParentID != s.SpanID {
			p = t.find(s.ParentID)
		}
		t.parent[i] = p
		if p >= 0 {
			t.first[p+1]++
		}
	}
	for i := 1; i <= n; i++ {
		t.first[i] += t.first[i-1]
	}
	// Fill children in span order (stable), using first[p] as a cursor,
	// then shift the cursors back.
	for i := range n {
		if p := t.parent[i]; p >= 0 {
			t.kids[t.first[p]] = int32(i)
			t.first[p]++
		}
	}
	for i := n; i > 0; i-- {
		t.first[i] = t.first[i-1]
	}
	t.first[0] = 0
}

func (t *Tree) find(id span.SpanID) int32 {
	if t.ids != nil && len(t.spans) > linearParents {
		if i, ok := t.ids[id]; ok {
			return i
		}
		return -1
	}
	for i, s := range t.spans {
		if s.SpanID == id {
			return int32(i)
		}
	}
	return -1
}

func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// Len is the number of spans.
func (t *Tree) Len() int { return len(t.spans) }

// Span returns span i (in the order given to Reset).
func (t *Tree) Span(i int) *span.Span { return t.spans[i] }

// Parent returns the index of span i's parent, or -1 when the trace does
// not hold it.
func (t *Tree) Parent(i int) int { return int(t.parent[i]) }

// Children returns the indexes of span i's children, in the order given to
// Reset. The slice is t's: do not modify it.
func (t *Tree) Children(i int) []int32 { return t.kids[t.first[i]:t.first[i+1]] }

// Roots returns the indexes of the local roots: spans whose parent is not
// in the trace (none, remote, or lost), in the order given to Reset.
func (t *Tree) Roots() []int {
	var out []int
	for i, p := range t.parent {
		if p < 0 {
			out = append(out, i)
		}
	}
	return out
}

// Root returns the index of the earliest local root (ties: the first
// given), as store.Trace.Root picks it; 0 when every span has its parent
// in the trace (a cycle), -1 for an empty tree.
func (t *Tree) Root() int {
	best := -1
	for i, p := range t.parent {
		if p < 0 && (best < 0 || t.start[i] < t.start[best]) {
			best = i
		}
	}
	if best < 0 && len(t.spans) > 0 {
		return 0
	}
	return best
}

// Path returns the critical path of span root's subtree (root: an index
// as Root returns), over root's own interval.
func (t *Tree) Path(root int, opts Options) *Path {
	p := &Path{}
	t.PathInto(p, root, opts)
	return p
}

// PathInto is Path writing into p, reusing its slices: what p held before
// is overwritten.
func (t *Tree) PathInto(p *Path, root int, opts Options) {
	p.Nodes, p.Segments = p.Nodes[:0], p.Segments[:0]
	if root < 0 || root >= len(t.spans) {
		return
	}
	tol := int64(opts.SkewTolerance)
	switch {
	case tol == 0:
		tol = int64(DefaultSkewTolerance)
	case tol < 0:
		tol = -1
	}
	t.cand = t.cand[:0]
	t.walk(p, int32(root), -1, t.start[root], t.end[root], 0, tol)
	slices.Reverse(p.Segments)
}

// walk attributes span i's window [lo, hi] (root clock; off: the shift of
// i's subtree) to i and the children it waited on, emitting segments from
// hi backwards.
func (t *Tree) walk(p *Path, i int32, parent int, lo, hi, off, tol int64) {
	node := len(p.Nodes)
	p.Nodes = append(p.Nodes, Node{Span: t.spans[i], Parent: parent, Shift: time.Duration(off)})

	base := len(t.cand)
	ptol := tol
	if tol >= 0 {
		ptol = max(tol, (hi-lo)/100)
	}
	for _, c := range t.Children(int(i)) {
		cs, ce, coff := t.start[c]+off, t.end[c]+off, off
		if t.crossProcess(i, c) {
			d := skewShift(cs, ce, lo, hi, ptol)
			cs, ce, coff = cs+d, ce+d, coff+d
		}
		if cs >= hi || ce <= lo {
			continue // outside the window: asynchronous, off the path
		}
		cs, ce = max(cs, lo), min(ce, hi)
		if ce > cs {
			t.cand = append(t.cand, candidate{idx: c, start: cs, end: ce, off: coff})
		}
	}
	end := len(t.cand)
	slices.SortFunc(t.cand[base:end], func(a, b candidate) int {
		return cmp.Or(cmp.Compare(b.end, a.end), cmp.Compare(a.start, b.start), cmp.Compare(a.idx, b.idx))
	})

	cur := hi
	for k := base; k < end && cur > lo; k++ {
		c := t.cand[k] // by value: the recursion may grow t.cand
		if c.end > cur {
			continue // still running when the followed sibling started
		}
		if c.end < cur {
			emit(p, node, c.end, cur)
		}
		t.walk(p, c.idx, node, c.start, c.end, c.off, tol)
		cur = c.start
	}
	if cur > lo {
		emit(p, node, lo, cur)
	}
	t.cand = t.cand[:base]
}

func emit(p *Path, node int, start, end int64) {
	p.Segments = append(p.Segments, Segment{Node: node, Start: time.Unix(0, start), End: time.Unix(0, end)})
	p.Nodes[node].Self += time.Duration(end - start)
}

// skewShift is how far to move a child in another process, [cs, ce], onto
// its parent's window [lo, hi]: see the package comment.
func skewShift(cs, ce, lo, hi, tol int64) int64 {
	if cs < lo {
		return lo - cs
	}
	if over := ce - hi; over > 0 && over <= tol {
		return -min(over, cs-lo)
	}
	return 0
}

// crossProcess reports whether child c runs in another process than its
// parent i: its clock may be skewed.
func (t *Tree) crossProcess(i, c int32) bool {
	ps, cs := t.spans[i], t.spans[c]
	if cs.RemoteParent {
		return true
	}
	a, b := ps.Process, cs.Process
	if a == b {
		return false
	}
	if a == nil || b == nil {
		return true
	}
	return a.ServiceName != b.ServiceName || a.PID != b.PID
}
