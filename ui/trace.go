package ui

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/latscope/latscope/analysis/criticalpath"
	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
)

// traceData is the trace page's.
type traceData struct {
	ID       string
	Start    time.Time
	Duration time.Duration
	Services []string
	Spans    int
	Errors   int
	// Explain is the critical path of the trace's root, in words.
	Explain criticalpath.Explanation
	// PathSpans is how many spans are on the critical path.
	PathSpans int
	Rows      []spanRow
	Ticks     []tick
	// JaegerURL links the trace in Jaeger's UI (with
	// export.jaegerQueryURL); JSONURL, PathURL the API's answers;
	// FlameURL the flame graph of the root's operation.
	JaegerURL, JSONURL, PathURL, FlameURL string
	// Attributed: some span carries runtime attribution.
	Attributed bool
	Missing    string
}

// spanRow is one span of the waterfall, in tree order.
type spanRow struct {
	ID, ParentID string
	Depth        int
	Indent       int // the depth drawn (capped, so deep trees stay readable)
	Service      string
	Name         string
	Kind         string
	Color        int
	// Left and Width place the bar, in % of the trace; LabelAt its
	// duration's label, after the bar's end or, near the right edge,
	// before it (LabelInside).
	Left, Width float64
	LabelAt     float64
	LabelInside bool
	Offset      time.Duration // start after the trace's start
	Duration    time.Duration
	Error       bool
	Status      string
	// OnPath: the span has time on the critical path (Self), Segments
	// where, in % of the trace.
	OnPath    bool
	Self      time.Duration
	SelfShare float64
	Segments  []segment
	// Shift is the clock-skew correction the critical path applied.
	Shift time.Duration
	// Goroutines: GoID is the span's; Spawned says a go statement put it
	// on a new goroutine (ParentGoID ran the statement, in the span
	// ParentID).
	GoID, ParentGoID uint64
	Spawned          bool
	ParentName       string
	RemoteParent     bool
	MissingParent    bool
	Attrs            []attrRow
	Attribution      []causeShare
	Process          *span.Process
	Selected         bool
}

type segment struct{ Left, Width float64 }

type attrRow struct{ Key, Value string }

type tick struct {
	Left  float64
	Label string
}

func (u *UI) trace(w http.ResponseWriter, r *http.Request, raw string) {
	id, err := api.ParseTraceID(raw)
	if err != nil {
		u.badRequest(w, r, fmt.Errorf("trace id: %w", err))
		return
	}
	v, err := queryValues(r)
	if err != nil {
		u.badRequest(w, r, err)
		return
	}
	t, ok := u.opts.Store.Trace(id)
	if !ok {
		st := u.opts.Store.Stats()
		hint := fmt.Sprintf("The agent's store holds %s traces within its budget (--store-size); older ones are evicted first.", fmtCount(st.Traces))
		if u.opts.JaegerQueryURL != "" {
			hint += " If it was exported, Jaeger may still have it: " + jaegerTraceURL(u.opts.JaegerQueryURL, api.FormatTraceID(id))
		}
		u.fail(w, r, http.StatusNotFound, "Trace not found", fmt.Sprintf("Trace %s is not in the agent's store (evicted, or never seen by this agent).", api.FormatTraceID(id)), hint)
		return
	}
	d := buildTrace(t, v.Get("span"))
	if u.opts.JaegerQueryURL != "" {
		d.JaegerURL = jaegerTraceURL(u.opts.JaegerQueryURL, d.ID)
	}
	p := page{Title: "Trace " + d.ID, Nav: "traces", Data: d}
	if !d.Attributed {
		p.Notes = append(p.Notes, attributionMissing)
	}
	u.render(w, "trace", http.StatusOK, p)
}

func jaegerTraceURL(base, id string) string {
	return strings.TrimSuffix(base, "/") + "/trace/" + id
}

// buildTrace lays out one trace; selected is a span id to open.
func buildTrace(t *store.Trace, selected string) *traceData {
	d := &traceData{ID: api.FormatTraceID(t.ID), Start: t.Start(), Duration: t.Duration(), Services: t.Services(), Spans: len(t.Spans)}
	d.JSONURL = "/api/traces/" + d.ID
	d.PathURL = d.JSONURL + "/critical-path"

	var tree criticalpath.Tree
	tree.Reset(t.Spans)
	root := tree.Root()
	path := tree.Path(root, criticalpath.Options{})
	d.Explain = criticalpath.Explain(path)
	d.PathSpans = len(path.Nodes)
	rs := tree.Span(root)
	d.FlameURL = "/flame?" + url.Values{"service": {serviceOf(rs)}, "operation": {rs.Name}, "since": {"15m"}}.Encode()

	type pathInfo struct {
		self, shift time.Duration
		segs        []criticalpath.Segment
	}
	onPath := map[*span.Span]*pathInfo{}
	for _, n := range path.Nodes {
		onPath[n.Span] = &pathInfo{self: n.Self, shift: n.Shift}
	}
	for _, s := range path.Segments {
		pi := onPath[path.Nodes[s.Node].Span]
		pi.segs = append(pi.segs, s)
	}

	total := float64(max(d.Duration, 1))
	pctOf := func(at time.Time) float64 { return 100 * float64(at.Sub(d.Start)) / total }
	byID := make(map[span.SpanID]*span.Span, len(t.Spans))
	kids := map[span.SpanID][]*span.Span{}
	for _, s := range t.Spans {
		byID[s.SpanID] = s
	}
	var roots []*span.Span
	for _, s := range t.Spans { // sorted by start: children stay in start order
		if _, ok := byID[s.ParentID]; s.ParentID.IsZero() || !ok || s.ParentID == s.SpanID {
			roots = append(roots, s)
			continue
		}
		kids[s.ParentID] = append(kids[s.ParentID], s)
	}
	var walk func(s *span.Span, depth int)
	seen := map[*span.Span]bool{}
	walk = func(s *span.Span, depth int) {
		if seen[s] {
			return
		}
		seen[s] = true
		row := spanRow{
			ID: s.SpanID.String(), Depth: depth, Indent: min(depth, 16), Service: serviceOf(s), Name: s.Name, Kind: store.KindName(s.Kind),
			Left: pctOf(s.Start), Width: 100 * float64(max(s.Duration(), 0)) / total,
			Offset: s.Start.Sub(d.Start), Duration: s.Duration(), Error: s.Status == span.StatusError, Status: s.StatusMessage,
			GoID: s.GoID, ParentGoID: s.ParentGoID, RemoteParent: s.RemoteParent, Process: s.Process,
			Selected: selected != "" && selected == s.SpanID.String(),
		}
		row.Color = serviceColor(row.Service)
		row.LabelAt = row.Left + row.Width
		if row.LabelAt > 80 {
			row.LabelAt, row.LabelInside = row.Left, row.Left > 20
			if !row.LabelInside {
				row.LabelAt = 0
			}
		}
		if !s.ParentID.IsZero() {
			row.ParentID = s.ParentID.String()
			if p, ok := byID[s.ParentID]; ok {
				row.ParentName = serviceOf(p) + " " + p.Name
			} else {
				row.MissingParent = !s.RemoteParent
			}
		}
		row.Spawned = s.ParentGoID != 0 && s.ParentGoID != s.GoID
		if pi := onPath[s]; pi != nil && pi.self > 0 {
			row.OnPath, row.Self, row.Shift = true, pi.self, pi.shift
			row.SelfShare = float64(pi.self) / float64(max(path.Total(), 1))
			for _, sg := range pi.segs {
				row.Segments = append(row.Segments, segment{Left: pctOf(sg.Start), Width: 100 * float64(sg.Duration()) / total})
			}
		}
		if row.Error {
			d.Errors++
		}
		for _, a := range s.Attributes() {
			row.Attrs = append(row.Attrs, attrRow{Key: a.Key, Value: fmt.Sprint(a.Value)})
		}
		if split := api.Attribution(s); len(split) > 0 {
			d.Attributed = true
			for _, c := range split {
				share := 0.0
				if s.Duration() > 0 {
					share = float64(c.Ns) / float64(s.Duration())
				}
				row.Attribution = append(row.Attribution, causeShare{Name: c.Name, Ns: c.Ns, Share: share, Index: causeIndex(c.Name)})
			}
		}
		d.Rows = append(d.Rows, row)
		for _, k := range kids[s.SpanID] {
			walk(k, depth+1)
		}
	}
	slices.SortStableFunc(roots, func(a, b *span.Span) int { return a.Start.Compare(b.Start) })
	for _, s := range roots {
		walk(s, 0)
	}
	for _, s := range t.Spans { // a parent cycle: never from the builder, still shown
		if !seen[s] {
			walk(s, 0)
		}
	}
	if len(roots) > 1 {
		d.Missing = fmt.Sprintf("This trace has %d local roots: spans whose parent is not in the agent's store (a process latscope does not trace, another node, or a lost span). The critical path is the earliest root's.", len(roots))
	}
	for i := 0; i <= 4; i++ {
		d.Ticks = append(d.Ticks, tick{Left: float64(i) * 25, Label: fmtDur(time.Duration(float64(d.Duration) * float64(i) / 4))})
	}
	return d
}

func serviceOf(s *span.Span) string {
	if s.Process == nil || s.Process.ServiceName == "" {
		return "unknown_service"
	}
	return s.Process.ServiceName
}
