// Package criticalpath computes the critical path of a trace: the chain of
// span segments that determines its end-to-end latency, walked backwards
// from the root's end, at each point following the child that finished
// last (CRISP, Uber, USENIX ATC 2022; the algorithm of Jaeger's UI). It is
// pure Go over span.Span values and never modifies them.
//
// The walk, for a span S over its window [lo, hi] (its own interval,
// clipped to its parent's):
//
//   - Each child is placed on S's clock (see skew below) and clipped to
//     [lo, hi]. A child entirely outside the window is off the path: one
//     that starts at or after S's end is asynchronous work S did not wait
//     for. A child that outlives S counts only up to S's end.
//   - From t = hi backwards: the child with the latest end ≤ t is the one
//     S was waiting on at t (the "last-returning child"). [its end, t] is
//     S's own time; the walk descends into the child over its clipped
//     window, then continues at t = the child's start. A sibling still
//     running when that child started (end > t) did not gate it and is
//     skipped; one ending exactly at t (back-to-back work) is followed.
//     Equal ends: the longer child wins.
//   - When no child ends ≤ t, [lo, t] is S's own time.
//
// So the segments partition the root's interval: the exclusive
// critical-path times of the spans on the path sum to the root's duration
// exactly, with no negative segment. A missing span (lost, or in a process
// latscope does not trace) leaves its children without a parent in the
// trace: they are not under the root, and the time stays the root's (or
// the nearest present ancestor's) own.
//
// Clock skew: spans of one process share its clock, but a child in
// another process (a remote parent, or another service) may be shifted.
// Such a child is moved, with its whole subtree, onto its parent's clock
// when it does not fit: one that starts before its parent is moved to
// start with it (a child cannot start before its parent: always skew); one
// that ends after its parent by at most the tolerance (Options.SkewTolerance,
// at least 1% of the parent's window) is moved earlier until it ends with
// the parent (never before the parent's start). Beyond the tolerance it is
// left where it is and clipped (or, starting after its parent's end, off
// the path as asynchronous).
//
// A trace may hold several local roots (spans whose parent is not in it:
// this node's parts of a request that crossed other nodes, orphans). Path
// walks the earliest one, as store.Trace.Root picks it; Tree.Path walks
// any span's subtree, so callers can take each local root separately or
// the span of the service they ask about.
package criticalpath

import (
	"slices"
	"time"

	"github.com/latscope/latscope/span"
)

// Attribute keys Annotate sets on copies of the spans on the path.
const (
	// KeySelf is a span's exclusive critical-path time, int64 nanoseconds.
	KeySelf = "latscope.critical_path.self"
	// KeyTotal is the root's critical-path length (its duration), int64
	// nanoseconds, set on the root only.
	KeyTotal = "latscope.critical_path.total"
)

// DefaultSkewTolerance is how far a child in another process may overrun
// its parent's end and still be read as clock skew (moved back inside)
// rather than as work that outlived the parent, unless 1% of the parent
// is more. Same-host processes share a clock; NTP-synchronised hosts are
// usually within a millisecond of each other.
const DefaultSkewTolerance = time.Millisecond

// Options tunes the walk. The zero value uses the defaults.
type Options struct {
	// SkewTolerance: see the package comment. 0 means DefaultSkewTolerance;
	// negative disables the tolerance (only children starting before their
	// parent are moved).
	SkewTolerance time.Duration
}

// Node is a span on the critical path.
type Node struct {
	Span *span.Span
	// Parent is the index in Path.Nodes of the span's parent; -1 for the
	// root. Parents come before their children.
	Parent int
	// Self is the span's exclusive critical-path time: the sum of its
	// segments.
	Self time.Duration
	// Shift is how far the span was moved onto the root's clock (clock
	// skew between processes); 0 for spans of the root's process.
	Shift time.Duration
}

// Segment is a stretch of the critical path spent in one span's own work
// (not waiting on a child on the path). Times are on the root's clock.
type Segment struct {
	Node       int // index in Path.Nodes
	Start, End time.Time
}

// Duration is End − Start, never negative.
func (s Segment) Duration() time.Duration { return s.End.Sub(s.Start) }

// Path is the critical path of one root span.
type Path struct {
	// Nodes are the spans on the path, each once; Nodes[0] is the root.
	Nodes []Node
	// Segments cover the root's interval in time order, back to back,
	// without gaps or overlaps; zero-length stretches are left out.
	Segments []Segment
}

// Root returns the span the path was computed for (nil for an empty path).
func (p *Path) Root() *span.Span {
	if len(p.Nodes) == 0 {
		return nil
	}
	return p.Nodes[0].Span
}

// Total is the path's length: the root's duration (0 if negative), equal
// to the sum of every node's Self.
func (p *Path) Total() time.Duration {
	if len(p.Segments) == 0 {
		return 0
	}
	return p.Segments[len(p.Segments)-1].End.Sub(p.Segments[0].Start)
}

// Stack returns the spans from the root down to Nodes[node], root first.
func (p *Path) Stack(node int) []*span.Span {
	var out []*span.Span
	for i := node; i >= 0; i = p.Nodes[i].Parent {
		out = append(out, p.Nodes[i].Span)
	}
	slices.Reverse(out)
	return out
}

// Self returns the exclusive critical-path time of the span with the given
// id, and whether it is on the path.
func (p *Path) Self(id span.SpanID) (time.Duration, bool) {
	for _, n := range p.Nodes {
		if n.Span.SpanID == id {
			return n.Self, true
		}
	}
	return 0, false
}

// Compute returns the critical path of the trace spans (any order) from
// its earliest local root, with the default options; nil for no spans.
func Compute(spans []*span.Span) *Path {
	if len(spans) == 0 {
		return nil
	}
	var t Tree
	t.Reset(spans)
	return t.Path(t.Root(), Options{})
}

// Annotate returns spans with every span on p replaced by a copy carrying
// KeySelf (and, on the root, KeyTotal) appended to its attributes; the
// other spans are returned as they are. The spans given are not modified
// (stored spans are shared and immutable).
func Annotate(spans []*span.Span, p *Path) []*span.Span {
	out := slices.Clone(spans)
	if p == nil {
		return out
	}
	onPath := make(map[*span.Span]int, len(p.Nodes))
	for i, n := range p.Nodes {
		onPath[n.Span] = i
	}
	for i, s := range out {
		n, ok := onPath[s]
		if !ok {
			continue
		}
		c := *s
		c.Attrs = append(slices.Clip(s.Attrs), span.Attr{Key: KeySelf, Value: int64(p.Nodes[n].Self)})
		if n == 0 {
			c.Attrs = append(c.Attrs, span.Attr{Key: KeyTotal, Value: int64(p.Total())})
		}
		out[i] = &c
	}
	return out
}
