package flame

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/analysis/criticalpath"
	"github.com/latscope/latscope/span"
)

// Query selects the requests a profile is made of. A request is a span:
// with Service and/or Operation, each topmost span of that service and
// operation in a trace (one none of whose ancestors matches: a call
// from gateway to catalog is one catalog request, however many catalog
// spans it holds); without either, each trace's earliest local root.
// Zero fields do not filter.
type Query struct {
	Service   string // the span's service.name
	Operation string // the span's name

	Start, End time.Time // the request started within [Start, End]

	// MinDuration keeps requests that took at least this long.
	MinDuration time.Duration
	// Slowest keeps the slowest share (0 < Slowest ≤ 1; 0.01 = the
	// slowest 1%) of the requests of each operation (service and span
	// name) that the other filters keep: those at least as slow as the
	// ⌈n·Slowest⌉-th slowest (ties are all kept).
	Slowest float64

	// Errors keeps requests with an error span at or under them.
	Errors bool

	// Options are the critical-path options.
	Options criticalpath.Options
}

// Check reports a query whose fields contradict themselves.
func (q Query) Check() error {
	if q.Slowest < 0 || q.Slowest > 1 || math.IsNaN(q.Slowest) {
		return fmt.Errorf("slowest %g: give a share in (0, 1], e.g. 0.01 for the slowest 1%%", q.Slowest)
	}
	if !q.Start.IsZero() && !q.End.IsZero() && q.End.Before(q.Start) {
		return fmt.Errorf("window: end %s is before start %s", q.End.Format(time.RFC3339Nano), q.Start.Format(time.RFC3339Nano))
	}
	if q.MinDuration < 0 {
		return fmt.Errorf("minimum duration %s is negative", q.MinDuration)
	}
	return nil
}

// Result is a profile with what it was made of.
type Result struct {
	Profile  *profile.Profile
	Requests int64         // requests aggregated
	Total    time.Duration // the sum of their durations: the profile's critical_path total
	// Thresholds are the durations Slowest computed, per operation
	// ("service operation"); nil without Slowest.
	Thresholds map[string]time.Duration
}

// Build selects the requests of traces (each one trace's spans, any
// order) that q keeps and aggregates their critical paths. split may be
// nil (see SelfSplit). comments are written into the profile.
func Build(traces [][]*span.Span, q Query, split SelfSplit, comments ...string) (*Result, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	res := &Result{}
	b := NewBuilder(split)
	var path criticalpath.Path
	var err error
	res.Thresholds, err = Each(traces, q, func(tree *criticalpath.Tree, i int) {
		tree.PathInto(&path, i, q.Options)
		b.Add(&path)
	})
	if err != nil {
		return nil, err
	}
	res.Requests, res.Total = b.Requests(), b.Total()
	res.Profile = b.Profile(q.Start, q.End, comments...)
	return res, nil
}

// Each calls fn with every request of traces (each one trace's spans,
// any order) that q keeps, Slowest included: the trace's tree and the
// request span's index in it, valid only during the call. It returns the
// thresholds Slowest computed, per operation (nil without Slowest).
// Build aggregates what Each selects; other profiles of the same
// requests (CPU profiles of spans) select them here.
func Each(traces [][]*span.Span, q Query, fn func(tree *criticalpath.Tree, i int)) (map[string]time.Duration, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	var tree criticalpath.Tree
	var th map[string]time.Duration
	if q.Slowest > 0 {
		th = thresholds(traces, q, &tree)
	}
	for _, spans := range traces {
		if len(spans) == 0 {
			continue
		}
		tree.Reset(spans)
		for _, i := range Requests(&tree, q) {
			if th != nil && duration(tree.Span(i)) < th[criticalpath.Frame(tree.Span(i))] {
				continue
			}
			fn(&tree, i)
		}
	}
	return th, nil
}

// thresholds returns, per operation, the duration of its ⌈n·q.Slowest⌉-th
// slowest request among those the other filters keep.
func thresholds(traces [][]*span.Span, q Query, tree *criticalpath.Tree) map[string]time.Duration {
	durs := make(map[string][]time.Duration)
	for _, spans := range traces {
		if len(spans) == 0 {
			continue
		}
		tree.Reset(spans)
		for _, i := range Requests(tree, q) {
			k := criticalpath.Frame(tree.Span(i))
			durs[k] = append(durs[k], duration(tree.Span(i)))
		}
	}
	out := make(map[string]time.Duration, len(durs))
	for k, ds := range durs {
		slices.SortFunc(ds, func(a, b time.Duration) int { return cmp.Compare(b, a) })
		n := max(1, int(math.Ceil(float64(len(ds))*q.Slowest-1e-9)))
		out[k] = ds[min(n, len(ds))-1]
	}
	return out
}

// Requests returns the indexes of the request spans of the tree that q
// keeps, before Slowest (see Query: the topmost spans of q's service and
// operation, or the tree's root), in span order. The trace list of the
// web UI selects its requests with it, so its rows are the requests a
// flame graph of the same query aggregates.
func Requests(t *criticalpath.Tree, q Query) []int {
	var out []int
	if q.Service == "" && q.Operation == "" {
		if r := t.Root(); r >= 0 && keep(t, r, q) {
			out = append(out, r)
		}
		return out
	}
	for i := range t.Len() {
		if !matches(t.Span(i), q) {
			continue
		}
		top := true
		for a, depth := t.Parent(i), 0; a >= 0 && depth < t.Len(); a, depth = t.Parent(a), depth+1 {
			if matches(t.Span(a), q) {
				top = false
				break
			}
		}
		if top && keep(t, i, q) {
			out = append(out, i)
		}
	}
	return out
}

func matches(s *span.Span, q Query) bool {
	if q.Operation != "" && s.Name != q.Operation {
		return false
	}
	if q.Service != "" && (s.Process == nil || s.Process.ServiceName != q.Service) {
		return false
	}
	return true
}

// keep applies the window, the latency floor and the error filter to
// request span i.
func keep(t *criticalpath.Tree, i int, q Query) bool {
	s := t.Span(i)
	if (!q.Start.IsZero() && s.Start.Before(q.Start)) || (!q.End.IsZero() && s.Start.After(q.End)) {
		return false
	}
	if q.MinDuration > 0 && duration(s) < q.MinDuration {
		return false
	}
	return !q.Errors || hasError(t, i, t.Len())
}

// hasError reports whether span i or a span under it has status error
// (depth bounds the walk against malformed trees).
func hasError(t *criticalpath.Tree, i, depth int) bool {
	if t.Span(i).Status == span.StatusError {
		return true
	}
	if depth <= 0 {
		return false
	}
	for _, c := range t.Children(i) {
		if hasError(t, int(c), depth-1) {
			return true
		}
	}
	return false
}

// duration is the span's length as the critical path measures it (wall
// clock nanoseconds, never negative).
func duration(s *span.Span) time.Duration {
	return time.Duration(max(s.End.UnixNano()-s.Start.UnixNano(), 0))
}
