package api

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/analysis/criticalpath"
	"github.com/latscope/latscope/analysis/flame"
	"github.com/latscope/latscope/cpuprofile"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
)

// FlameResult is a built flame profile and what it was made of.
type FlameResult struct {
	// Profile is what GET /api/flame serves: the window's profile, or its
	// diff against the baseline (normalized when asked).
	Profile *profile.Profile
	// Window and Base are the two windows' profiles (Base nil without a
	// baseline), normalized when asked: the inputs of `go tool pprof
	// -diff_base`.
	Window, Base *flame.Result
}

// TraceSource returns the traces that may hold requests q selects (a
// superset is fine: flame.Build filters).
type TraceSource func(q flame.Query) ([][]*span.Span, error)

// Flame builds the profile req asks for from the traces src returns: the
// window's, or with a baseline the diff pprof's -diff_base would show.
// The agent serves it from its store; the CLI builds it from a Jaeger
// query API (FetchTraces), so both read the same. split (nil: none)
// splits segments by cause (flame.SelfSplit): the agent's CPU samples
// give [on cpu] code frames.
func Flame(req FlameRequest, src TraceSource, split flame.SelfSplit) (*FlameResult, error) {
	build := func(q flame.Query, what string) (*flame.Result, error) {
		traces, err := src(q)
		if err != nil {
			return nil, err
		}
		res, err := flame.Build(traces, q, split, describe(q, what))
		if err != nil {
			return nil, err
		}
		if req.Normalize {
			res.Profile = flame.Normalize(res.Profile, res.Requests)
		}
		return res, nil
	}
	out := &FlameResult{}
	var err error
	if out.Window, err = build(req.Query, "window"); err != nil {
		return nil, err
	}
	out.Profile = out.Window.Profile
	if !req.HasBaseline() {
		return out, nil
	}
	if out.Base, err = build(req.Baseline(), "baseline"); err != nil {
		return nil, err
	}
	if out.Profile, err = flame.Diff(out.Window.Profile, out.Base.Profile); err != nil {
		return nil, err
	}
	return out, nil
}

// describe is the profile comment naming what it holds.
func describe(q flame.Query, what string) string {
	return describeQuery("latscope critical path, "+what, q)
}

// describeQuery is a comment naming the profile (title) and its query.
func describeQuery(title string, q flame.Query) string {
	parts := []string{title}
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("service", q.Service)
	add("operation", q.Operation)
	if !q.Start.IsZero() {
		add("start", q.Start.UTC().Format(time.RFC3339Nano))
	}
	if !q.End.IsZero() {
		add("end", q.End.UTC().Format(time.RFC3339Nano))
	}
	if q.MinDuration > 0 {
		add("minDuration", q.MinDuration.String())
	}
	if q.Slowest > 0 {
		add("slowest", fmt.Sprintf("%g%%", q.Slowest*100))
	}
	if q.Errors {
		add("error", "true")
	}
	return strings.Join(parts, " ")
}

// StoreSource reads traces from the agent's store: those with a span of
// q's service and operation starting in q's window (Store.Search, no
// limit).
func StoreSource(s *store.Store) TraceSource {
	return func(q flame.Query) ([][]*span.Span, error) {
		sq := store.Query{Service: q.Service, Operation: q.Operation, Start: q.Start, End: q.End, MinDuration: q.MinDuration, Error: q.Errors}
		found := s.Search(sq)
		out := make([][]*span.Span, len(found))
		for i, t := range found {
			out[i] = t.Spans
		}
		return out, nil
	}
}

// flameAPI serves the flame profiles, critical paths and CPU profiles
// from the stores.
type flameAPI struct {
	q       *query
	samples *cpuprofile.Store // nil: CPU sampling is off
	split   flame.SelfSplit   // code frames from samples; nil without
}

// profile answers GET /api/flame: the gzipped profile.proto FlameRequest
// asks for (see ParseFlame), application/octet-stream, or a 400 naming
// the parameter at fault.
func (f *flameAPI) profile(w http.ResponseWriter, r *http.Request) {
	v, err := queryValues(r)
	if err != nil {
		writeError(w, f.q.log, http.StatusBadRequest, err.Error())
		return
	}
	req, err := ParseFlame(v, f.q.now())
	if err != nil {
		writeError(w, f.q.log, http.StatusBadRequest, err.Error())
		return
	}
	res, err := Flame(req, StoreSource(f.q.store), f.split)
	if err != nil {
		writeError(w, f.q.log, http.StatusBadRequest, err.Error())
		return
	}
	var buf bytes.Buffer
	if err := res.Profile.Write(&buf); err != nil {
		writeError(w, f.q.log, http.StatusInternalServerError, "write profile: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="critical-path.pb.gz"`)
	w.Header().Set("X-Latscope-Requests", fmt.Sprint(res.Window.Requests))
	w.Write(buf.Bytes())
}

// CriticalPath is the answer of GET /api/traces/{traceID}/critical-path.
type CriticalPath struct {
	TraceID string `json:"traceID"`
	// Root is the span the path is computed for (the trace's earliest
	// local root); TotalNs its duration, the path's length.
	Root    string `json:"rootSpanID"`
	TotalNs int64  `json:"totalNs"`
	// Segments are the path's stretches in time order.
	Segments []CriticalSegment `json:"segments"`
	// Spans are the spans on the path with their exclusive time.
	Spans []CriticalSpan `json:"spans"`
	// Summary is the path in plain words (Explanation.String), Explanation
	// the same as data.
	Summary     string                   `json:"summary"`
	Explanation criticalpath.Explanation `json:"explanation"`
	// Trace is the whole trace in Jaeger's shape, the spans on the path
	// carrying latscope.critical_path.self (and the root
	// latscope.critical_path.total), in ns.
	Trace jaegerTrace `json:"trace"`
}

// CriticalSegment is one stretch of a critical path; times in µs since the
// Unix epoch (as Jaeger's), durations in ns.
type CriticalSegment struct {
	SpanID     string `json:"spanID"`
	StartTime  int64  `json:"startTime"`
	DurationNs int64  `json:"durationNs"`
}

// CriticalSpan is a span on a critical path.
type CriticalSpan struct {
	SpanID string `json:"spanID"`
	Frame  string `json:"frame"` // "service operation"
	SelfNs int64  `json:"selfNs"`
	// ShiftNs is how far clock skew correction moved the span.
	ShiftNs int64 `json:"shiftNs,omitempty"`
}

// CriticalPathOf computes the critical path of one trace's spans (its
// earliest local root) in the shape the API answers.
func CriticalPathOf(id span.TraceID, spans []*span.Span) CriticalPath {
	var tree criticalpath.Tree
	tree.Reset(spans)
	p := tree.Path(tree.Root(), criticalpath.Options{})
	e := criticalpath.Explain(p)
	out := CriticalPath{
		TraceID: formatTraceID(id), Root: p.Root().SpanID.String(), TotalNs: int64(p.Total()),
		Summary: e.String(), Explanation: e,
		Trace: jaegerTraceOf(&store.Trace{ID: id, Spans: criticalpath.Annotate(spans, p)}),
	}
	for _, s := range p.Segments {
		out.Segments = append(out.Segments, CriticalSegment{
			SpanID: p.Nodes[s.Node].Span.SpanID.String(), StartTime: s.Start.UnixMicro(), DurationNs: int64(s.Duration()),
		})
	}
	for _, n := range p.Nodes {
		out.Spans = append(out.Spans, CriticalSpan{SpanID: n.Span.SpanID.String(), Frame: criticalpath.Frame(n.Span), SelfNs: int64(n.Self), ShiftNs: int64(n.Shift)})
	}
	return out
}

// criticalPath answers GET /api/traces/{traceID}/critical-path: a
// CriticalPath as JSON, 404 when the store does not hold the trace.
func (f *flameAPI) criticalPath(w http.ResponseWriter, r *http.Request) {
	id, err := parseTraceID(r.PathValue("traceID"))
	if err != nil {
		writeError(w, f.q.log, http.StatusBadRequest, err.Error())
		return
	}
	t, ok := f.q.store.Trace(id)
	if !ok {
		writeError(w, f.q.log, http.StatusNotFound, "trace not found")
		return
	}
	writeJSON(w, f.q.log, http.StatusOK, CriticalPathOf(t.ID, t.Spans))
}
