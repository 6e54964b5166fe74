package api

import (
	"cmp"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/latscope/latscope/analysis/criticalpath"
	"github.com/latscope/latscope/analysis/flame"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
)

// RequestsRequest is what GET /api/requests (the web UI's slow-traces
// page) asks for: the requests flame.Query selects (the same as the
// flame graph of the same parameters), slowest first.
type RequestsRequest struct {
	// Query: service, operation, window (Start; End is now), min
	// (MinDuration), slowest (Slowest), error (Errors).
	Query flame.Query
	// NoErrors keeps only requests without an error span (error=false).
	NoErrors bool
	Since    time.Duration
	Limit    int
}

// DefaultRequestsSince and DefaultRequestsLimit apply without since and
// limit.
const (
	DefaultRequestsSince = 15 * time.Minute
	DefaultRequestsLimit = 50
	MaxRequestsLimit     = 1000
)

// ParseRequests reads GET /api/requests's parameters (the web UI's
// /traces takes the same):
//
//	service, operation  the requests: topmost spans of this service and operation
//	                    (neither: each trace's root)
//	since               requests that started this long ago at most (default 15m)
//	min (or minDuration) requests at least this long (250ms)
//	slowest             the slowest share of each operation's requests: 1% or 0.01
//	error               true: with an error span at or under the request; false: without
//	limit               rows at most, 1 … 1000 (default 50)
//
// The error names the parameter at fault.
func ParseRequests(v url.Values, now time.Time) (RequestsRequest, error) {
	r := RequestsRequest{Query: flame.Query{Service: v.Get("service"), Operation: v.Get("operation")}, Since: DefaultRequestsSince, Limit: DefaultRequestsLimit}
	var err error
	if s := v.Get("since"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return r, fmt.Errorf("parameter since: %q is not a duration > 0 (e.g. 15m, 1h)", s)
		}
		r.Since = d
	}
	r.Query.Start, r.Query.End = now.Add(-r.Since), now
	// min, as the URLs name it, or minDuration, as Jaeger's API
	// and /api/flame do: a user typing either gets the filter.
	minName := "min"
	if v.Has("minDuration") {
		if v.Has("min") {
			return r, fmt.Errorf("parameters min and minDuration: the same filter twice; give one")
		}
		minName = "minDuration"
	}
	if r.Query.MinDuration, err = durationParam(v, minName); err != nil {
		return r, err
	}
	if r.Query.Slowest, err = shareParam(v, "slowest"); err != nil {
		return r, err
	}
	if r.Query.MinDuration > 0 && r.Query.Slowest > 0 {
		return r, fmt.Errorf("parameters min and slowest: give one latency floor, not both")
	}
	if s := v.Get("error"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return r, fmt.Errorf("parameter error: %q is not true or false", s)
		}
		r.Query.Errors, r.NoErrors = b, !b
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxRequestsLimit {
			return r, fmt.Errorf("parameter limit: %q is not a whole number from 1 to %d", s, MaxRequestsLimit)
		}
		r.Limit = n
	}
	return r, nil
}

// Requests is the answer of GET /api/requests.
type Requests struct {
	// Matched is how many requests the filters kept (before Limit);
	// Rows the slowest Limit of them, slowest first.
	Matched int          `json:"matched"`
	Rows    []RequestRow `json:"rows"`
	// ThresholdsNs are the durations slowest computed, per operation
	// ("service operation"); absent without slowest.
	ThresholdsNs map[string]int64 `json:"thresholdsNs,omitempty"`
	// Traces is how many traces the store holds; Oldest the start of the
	// oldest (zero when empty): a window reaching further back sees only
	// what the store kept.
	Traces int       `json:"traces"`
	Oldest time.Time `json:"oldest,omitzero"`
}

// RequestRow is one request: a span (see flame.Query) and its trace.
type RequestRow struct {
	TraceID    string    `json:"traceID"`
	SpanID     string    `json:"spanID"`
	Service    string    `json:"service"`
	Operation  string    `json:"operation"`
	Start      time.Time `json:"start"`
	DurationNs int64     `json:"durationNs"`
	// Error: the request span or one under it has status error.
	Error bool `json:"error"`
	// Services are the trace's services, sorted; Spans its span count.
	Services []string `json:"services"`
	Spans    int      `json:"spans"`
	// Cause is where most of the request's time went.
	Cause Cause `json:"cause"`
}

// Cause is the dominant cause of a request's latency: from runtime
// attribution when the request span carries it (Source "attribution",
// Name a category such as "blocked_net"), else from its critical path
// (Source "critical path", Name the frame with the largest own time on
// it, "pricing main.(*pricer).GetPrice"). Share is its part of the
// request's duration, 0..1.
type Cause struct {
	Source string  `json:"source"`
	Name   string  `json:"name"`
	Share  float64 `json:"share"`
}

// RequestsOf selects the requests req asks for from s.
func RequestsOf(s *store.Store, req RequestsRequest) Requests {
	q := req.Query
	sq := store.Query{Service: q.Service, Operation: q.Operation, Start: q.Start, End: q.End, MinDuration: q.MinDuration, Error: q.Errors}
	type found struct {
		trace *store.Trace
		span  *span.Span
		err   bool
	}
	var all []found
	var tree criticalpath.Tree
	for _, t := range s.Search(sq) {
		tree.Reset(t.Spans)
		for _, i := range flame.Requests(&tree, q) {
			f := found{trace: t, span: tree.Span(i)}
			f.err = subtreeError(&tree, i)
			if req.NoErrors && f.err {
				continue
			}
			all = append(all, f)
		}
	}
	out := Requests{Rows: []RequestRow{}}
	if q.Slowest > 0 {
		durs := map[string][]time.Duration{}
		for _, f := range all {
			k := criticalpath.Frame(f.span)
			durs[k] = append(durs[k], f.span.Duration())
		}
		out.ThresholdsNs = map[string]int64{}
		for k, ds := range durs {
			slices.SortFunc(ds, func(a, b time.Duration) int { return cmp.Compare(b, a) })
			n := max(1, int(math.Ceil(float64(len(ds))*q.Slowest-1e-9)))
			out.ThresholdsNs[k] = int64(ds[min(n, len(ds))-1])
		}
		all = slices.DeleteFunc(all, func(f found) bool {
			return int64(f.span.Duration()) < out.ThresholdsNs[criticalpath.Frame(f.span)]
		})
	}
	out.Matched = len(all)
	slices.SortFunc(all, func(a, b found) int {
		return cmp.Or(cmp.Compare(b.span.Duration(), a.span.Duration()), b.span.Start.Compare(a.span.Start))
	})
	all = all[:min(len(all), req.Limit)]
	for _, f := range all {
		tree.Reset(f.trace.Spans)
		out.Rows = append(out.Rows, RequestRow{
			TraceID: formatTraceID(f.trace.ID), SpanID: f.span.SpanID.String(),
			Service: serviceName(f.span), Operation: f.span.Name,
			Start: f.span.Start, DurationNs: int64(f.span.Duration()), Error: f.err,
			Services: f.trace.Services(), Spans: len(f.trace.Spans),
			Cause: DominantCause(&tree, f.span),
		})
	}
	out.Traces = s.Stats().Traces
	out.Oldest, _ = s.Oldest()
	return out
}

// subtreeError reports whether span i or one under it failed.
func subtreeError(t *criticalpath.Tree, i int) bool {
	stack := []int{i}
	for n := 0; len(stack) > 0 && n <= t.Len(); n++ {
		j := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if t.Span(j).Status == span.StatusError {
			return true
		}
		for _, c := range t.Children(j) {
			stack = append(stack, int(c))
		}
	}
	return false
}

// DominantCause names where most of request span s's time went (see
// Cause); t holds s's trace.
func DominantCause(t *criticalpath.Tree, s *span.Span) Cause {
	if split := Attribution(s); len(split) > 0 && s.Duration() > 0 {
		top := split[0]
		return Cause{Source: "attribution", Name: top.Name, Share: float64(top.Ns) / float64(s.Duration())}
	}
	for i := range t.Len() {
		if t.Span(i) != s {
			continue
		}
		e := criticalpath.Explain(t.Path(i, criticalpath.Options{}))
		if len(e.Contributors) > 0 {
			c := e.Contributors[0]
			return Cause{Source: "critical path", Name: c.Frame, Share: c.Share}
		}
	}
	return Cause{}
}

// CauseTime is one runtime-attribution category of a span.
type CauseTime struct {
	Name string `json:"name"` // "on_cpu", "blocked_net", …
	Ns   int64  `json:"ns"`
}

// Attribution returns s's full runtime-attribution split (span.Time,
// written as latscope.time.* attributes), largest first; nil when s has
// none, or only the always-on GC time (which says nothing of the rest).
func Attribution(s *span.Span) []CauseTime {
	if s.Time == nil || !s.Time.Full {
		return nil
	}
	var out []CauseTime
	for i, v := range s.Time.NS {
		out = append(out, CauseTime{Name: span.TimeCategory(i).Name(), Ns: v})
	}
	slices.SortStableFunc(out, func(a, b CauseTime) int { return cmp.Compare(b.Ns, a.Ns) })
	return out
}

func serviceName(s *span.Span) string {
	if s.Process == nil {
		return ""
	}
	return s.Process.ServiceName
}

// requests answers GET /api/requests: Requests, or a 400 naming the
// parameter at fault.
func (q *query) requests(w http.ResponseWriter, r *http.Request) {
	v, err := queryValues(r)
	if err != nil {
		writeError(w, q.log, http.StatusBadRequest, err.Error())
		return
	}
	req, err := ParseRequests(v, q.now())
	if err != nil {
		writeError(w, q.log, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, q.log, http.StatusOK, RequestsOf(q.store, req))
}
