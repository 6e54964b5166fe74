package store

import (
	"slices"
	"time"

	"github.com/latscope/latscope/span"
)

// Trace is one trace as the store held it when a query decoded it: a
// snapshot of the caller's own, which later spans of the trace do not
// change. Build one by hand (ID and Spans) to hand spans from elsewhere to
// code that reads traces.
type Trace struct {
	ID    span.TraceID
	Spans []*span.Span // sorted by Start, never empty

	end time.Time // latest span end; zero: compute it from Spans
}

func sortByStart(spans []*span.Span) {
	slices.SortStableFunc(spans, func(a, b *span.Span) int { return a.Start.Compare(b.Start) })
}

// Start is the earliest span start.
func (t *Trace) Start() time.Time { return t.Spans[0].Start }

// End is the latest span end.
func (t *Trace) End() time.Time {
	end := t.end
	if end.IsZero() {
		for _, sp := range t.Spans {
			if sp.End.After(end) {
				end = sp.End
			}
		}
	}
	return end
}

// Duration is End − Start.
func (t *Trace) Duration() time.Duration { return t.End().Sub(t.Start()) }

// HasError reports whether a span of the trace has status error.
func (t *Trace) HasError() bool {
	return slices.ContainsFunc(t.Spans, func(sp *span.Span) bool { return sp.Status == span.StatusError })
}

// Services returns the distinct service names of the trace's processes,
// sorted. The slice is the caller's.
func (t *Trace) Services() []string {
	out := make([]string, 0, 2)
	for _, sp := range t.Spans {
		out = append(out, serviceOf(sp))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

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
