package store

import (
	"slices"
	"time"

	"github.com/latscope/latscope/span"
)

// Trace is an immutable snapshot of one trace held by the store. Later
// spans of the same trace produce a new snapshot; a *Trace already handed
// out never changes. Neither the slice nor the spans may be modified.
type Trace struct {
	ID    span.TraceID
	Spans []*span.Span // sorted by Start, never empty

	end time.Time // latest span end
	sum summary
}

// summary is what Search reads of a trace before its spans. The store keeps
// a copy inline in its entry so a scan touches one cache line per trace;
// times are Unix nanoseconds for cheap comparison.
type summary struct {
	firstStart, lastStart int64 // earliest and latest span start
	maxDuration           time.Duration
	hasError              bool     // a span has status error
	services              []string // distinct service names, sorted
}

// newTrace builds the snapshot after batch was merged into spans, carrying
// over what prev (the previous snapshot, or nil) already summarised.
func newTrace(id span.TraceID, spans []*span.Span, prev *Trace, batch []*span.Span) *Trace {
	t := &Trace{ID: id, Spans: spans}
	if prev != nil {
		t.end, t.sum = prev.end, prev.sum
	}
	t.sum.firstStart = spans[0].Start.UnixNano()
	t.sum.lastStart = spans[len(spans)-1].Start.UnixNano()
	added := false
	for _, sp := range batch {
		if sp.End.After(t.end) {
			t.end = sp.End
		}
		t.sum.maxDuration = max(t.sum.maxDuration, sp.Duration())
		t.sum.hasError = t.sum.hasError || sp.Status == span.StatusError
		svc := serviceOf(sp)
		if i, found := slices.BinarySearch(t.sum.services, svc); !found {
			if !added {
				// Copy before the first insert: prev shares the slice.
				t.sum.services = slices.Clone(t.sum.services)
				added = true
			}
			t.sum.services = slices.Insert(t.sum.services, i, svc)
		}
	}
	return t
}

// Start is the earliest span start.
func (t *Trace) Start() time.Time { return t.Spans[0].Start }

// End is the latest span end.
func (t *Trace) End() time.Time { return t.end }

// Duration is End − Start.
func (t *Trace) Duration() time.Duration { return t.end.Sub(t.Start()) }

// HasError reports whether a span of the trace has status error.
func (t *Trace) HasError() bool { return t.sum.hasError }

// Services returns the distinct service names of the trace's processes,
// sorted. The slice is the caller's.
func (t *Trace) Services() []string { return slices.Clone(t.sum.services) }

// Root returns the span with no parent in the trace: a span without a
// parent, or whose parent is not among the trace's spans (a remote caller
// latscope does not trace, a lost parent). With several, the earliest;
// ties keep the stored order.
func (t *Trace) Root() *span.Span {
	ids := make(map[span.SpanID]struct{}, len(t.Spans))
	for _, sp := range t.Spans {
		ids[sp.SpanID] = struct{}{}
	}
	for _, sp := range t.Spans { // sorted by start: the first found is the earliest
		if sp.ParentID.IsZero() {
			return sp
		}
		if _, ok := ids[sp.ParentID]; !ok {
			return sp
		}
	}
	// Every span's parent is in the trace (a cycle, which rebuilt traces
	// never have): the earliest span stands in.
	return t.Spans[0]
}
