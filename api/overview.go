package api

import (
	"cmp"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/latscope/latscope/metrics"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
)

// Overview is the answer of GET /api/overview (and what the web UI's
// overview page shows): every operation's rate, errors and latency over a
// window ending now and over the window before it, from metrics.History.
// Durations are in nanoseconds, rates per second.
type Overview struct {
	Window   string    `json:"window"` // as asked, e.g. "5m"
	WindowNs int64     `json:"windowNs"`
	End      time.Time `json:"end"`
	// StepNs is the width of each sparkline point.
	StepNs int64 `json:"stepNs"`
	// CoveredNs is the time the window's buckets span up to now (the
	// last one is filling, so up to a step less than the window; less
	// still in the agent's first minutes), the rates' denominator;
	// PreviousCoveredNs the same for the window before (0: no previous
	// window to compare).
	CoveredNs         int64 `json:"coveredNs"`
	PreviousCoveredNs int64 `json:"previousCoveredNs"`
	// Sort is the order of Operations (see OverviewSorts).
	Sort       string              `json:"sort"`
	Operations []OperationOverview `json:"operations"`
	// Attributed says whether any operation's spans in the window carry
	// runtime attribution (latscope.time.*).
	Attributed bool `json:"attributed"`
}

// OperationOverview is one operation (service, span name, span kind).
type OperationOverview struct {
	Service   string      `json:"service"`
	Operation string      `json:"operation"`
	Kind      string      `json:"kind"` // store.KindName
	Current   WindowStats `json:"current"`
	Previous  WindowStats `json:"previous"`
	// P50Change and P99Change are current / previous p50 and p99, and
	// ErrorRateChange the error rate's change in percentage points; all
	// null when either window has fewer than MinCompare spans.
	P50Change       *float64 `json:"p50Change"`
	P99Change       *float64 `json:"p99Change"`
	ErrorRateChange *float64 `json:"errorRateChange"`
	// Worse is the sort key of "worse": the largest of the p50's and the
	// p99's growth (P50Change − 1, P99Change − 1: the bulk of the requests
	// or their tail) and the error rate's (ErrorRateChange / 10, so +10
	// points weigh as a doubled latency); 0 when not comparable, negative
	// when it got better.
	Worse float64 `json:"worse"`
	// Sparkline is the p99 of each step of the window, oldest first; null
	// for a step without spans. Counts are the spans of each step.
	Sparkline []*int64 `json:"sparkline"`
	Counts    []uint64 `json:"counts"`
}

// WindowStats are one operation's spans over one window.
type WindowStats struct {
	Count     uint64  `json:"count"`
	Errors    uint64  `json:"errors"`
	Rate      float64 `json:"rate"`      // spans per second over the covered time
	ErrorRate float64 `json:"errorRate"` // errors / count, 0..1
	P50Ns     int64   `json:"p50Ns"`
	P90Ns     int64   `json:"p90Ns"`
	P99Ns     int64   `json:"p99Ns"`
	// TotalNs is the sum of the spans' durations.
	TotalNs int64 `json:"totalNs"`
	// Attributed counts the spans with runtime attribution; Causes sums
	// their latscope.time.* attributes by category ("on_cpu", …), in ns;
	// absent without attribution.
	Attributed uint64           `json:"attributed"`
	Causes     map[string]int64 `json:"causes,omitempty"`
}

// MinCompare is the fewest spans each window needs for an operation's
// change to be computed: a p99 of three requests is noise.
const MinCompare = 10

// OverviewSorts are the orders GET /api/overview accepts.
var OverviewSorts = []string{"worse", "p99", "rate", "errors", "name"}

// OverviewRequest is what GET /api/overview asks for.
type OverviewRequest struct {
	Window  time.Duration
	Service string // "" for all
	Kind    string // store.KindName; "" for all
	Sort    string
}

// DefaultOverviewWindow is the overview's window without a window
// parameter.
const DefaultOverviewWindow = 5 * time.Minute

// ParseOverview reads GET /api/overview's parameters:
//
//	window   a duration from 20s to 1h (default 5m)
//	service  only this service's operations
//	kind     only spans of this kind: server, client, internal, producer, consumer
//	sort     worse (default), p99, rate, errors, name
//
// The error names the parameter at fault.
func ParseOverview(v url.Values) (OverviewRequest, error) {
	r := OverviewRequest{Window: DefaultOverviewWindow, Service: v.Get("service"), Kind: v.Get("kind"), Sort: v.Get("sort")}
	if s := v.Get("window"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return r, fmt.Errorf("parameter window: %q is not a duration (e.g. 5m, 1h)", s)
		}
		if d < 20*time.Second || d > metrics.MaxWindow {
			return r, fmt.Errorf("parameter window: %s is outside 20s … %s (the agent keeps %s of history: the window and the one before it)", s, metrics.MaxWindow, metrics.Retention)
		}
		r.Window = d
	}
	if err := checkKind(r.Kind); err != nil {
		return r, err
	}
	if r.Sort == "" {
		r.Sort = "worse"
	}
	if !slices.Contains(OverviewSorts, r.Sort) {
		return r, fmt.Errorf("parameter sort: %q is not one of %s", r.Sort, strings.Join(OverviewSorts, ", "))
	}
	return r, nil
}

func checkKind(kind string) error {
	switch kind {
	case "", "server", "client", "internal", "producer", "consumer":
		return nil
	}
	return fmt.Errorf("parameter kind: %q is not a span kind (server, client, internal, producer, consumer)", kind)
}

// OverviewOf answers req from h.
func OverviewOf(h *metrics.History, req OverviewRequest) (Overview, error) {
	ov, err := h.Overview(req.Window)
	if err != nil {
		return Overview{}, err
	}
	out := Overview{
		Window: formatWindow(req.Window), WindowNs: int64(ov.Window), End: ov.End, StepNs: int64(ov.Step),
		CoveredNs: int64(ov.Covered), PreviousCoveredNs: int64(ov.PreviousCovered), Sort: req.Sort,
		Operations: []OperationOverview{},
	}
	for _, op := range ov.Operations {
		kind := store.KindName(op.Kind)
		if (req.Service != "" && op.Service != req.Service) || (req.Kind != "" && kind != req.Kind) || op.Current.Count == 0 && op.Previous.Count == 0 {
			continue
		}
		o := OperationOverview{
			Service: op.Service, Operation: op.Name, Kind: kind,
			Current: windowStats(op.Current, ov.Covered), Previous: windowStats(op.Previous, ov.PreviousCovered),
		}
		if op.Current.Count >= MinCompare && op.Previous.Count >= MinCompare && op.Previous.P99 > 0 && op.Previous.P50 > 0 {
			p50 := float64(op.Current.P50) / float64(op.Previous.P50)
			p99 := float64(op.Current.P99) / float64(op.Previous.P99)
			errs := 100 * (o.Current.ErrorRate - o.Previous.ErrorRate)
			o.P50Change, o.P99Change, o.ErrorRateChange = &p50, &p99, &errs
			o.Worse = math.Max(math.Max(p50, p99)-1, errs/10)
		}
		for _, p := range op.Points {
			o.Counts = append(o.Counts, p.Count)
			if p.Count == 0 {
				o.Sparkline = append(o.Sparkline, nil)
				continue
			}
			v := int64(p.P99)
			o.Sparkline = append(o.Sparkline, &v)
		}
		out.Attributed = out.Attributed || op.Current.Attributed > 0
		out.Operations = append(out.Operations, o)
	}
	sortOverview(out.Operations, req.Sort)
	return out, nil
}

func windowStats(s metrics.Stats, covered time.Duration) WindowStats {
	w := WindowStats{Count: s.Count, Errors: s.Errors, P50Ns: int64(s.P50), P90Ns: int64(s.P90), P99Ns: int64(s.P99), TotalNs: int64(s.Total), Attributed: s.Attributed}
	if covered > 0 {
		w.Rate = float64(s.Count) / covered.Seconds()
	}
	if s.Count > 0 {
		w.ErrorRate = float64(s.Errors) / float64(s.Count)
	}
	if s.Attributed > 0 {
		w.Causes = make(map[string]int64, metrics.NumCauses)
		for i, c := range s.Causes {
			w.Causes[metrics.CauseName(i)] = int64(c)
		}
	}
	return w
}

// sortOverview orders ops by key, each order's ties by rate then name.
func sortOverview(ops []OperationOverview, key string) {
	slices.SortStableFunc(ops, func(a, b OperationOverview) int {
		var c int
		switch key {
		case "worse":
			c = cmp.Compare(b.Worse, a.Worse)
		case "p99":
			c = cmp.Compare(b.Current.P99Ns, a.Current.P99Ns)
		case "errors":
			c = cmp.Compare(b.Current.ErrorRate, a.Current.ErrorRate)
		case "name":
			return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Operation, b.Operation), cmp.Compare(a.Kind, b.Kind))
		}
		return cmp.Or(c, cmp.Compare(b.Current.Rate, a.Current.Rate), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Operation, b.Operation))
	})
}

// formatWindow writes a duration as the UI offers it: 5m, 1h, 90s.
func formatWindow(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

// historyAPI serves the endpoints that read metrics.History.
type historyAPI struct {
	h   *metrics.History
	log *slog.Logger
}

// overview answers GET /api/overview: an Overview, or a 400 naming the
// parameter at fault.
func (a *historyAPI) overview(w http.ResponseWriter, r *http.Request) {
	v, err := queryValues(r)
	if err != nil {
		writeError(w, a.log, http.StatusBadRequest, err.Error())
		return
	}
	req, err := ParseOverview(v)
	if err != nil {
		writeError(w, a.log, http.StatusBadRequest, err.Error())
		return
	}
	ov, err := OverviewOf(a.h, req)
	if err != nil {
		writeError(w, a.log, http.StatusBadRequest, "parameter window: "+err.Error())
		return
	}
	writeJSON(w, a.log, http.StatusOK, ov)
}

// Timeline is the answer of GET /api/timeline: one operation (or every
// operation of a service merged) over a window, step by step.
type Timeline struct {
	Service   string `json:"service"`
	Operation string `json:"operation"` // "" when several merged
	Kind      string `json:"kind"`
	WindowNs  int64  `json:"windowNs"`
	StepNs    int64  `json:"stepNs"`
	// Points are the window's steps, oldest first: start in ms since the
	// Unix epoch (for charting), count, errors and quantiles in ns (0 for
	// a step without spans).
	Points []TimelinePoint `json:"points"`
}

// TimelinePoint is one step of a Timeline.
type TimelinePoint struct {
	StartMs int64  `json:"startMs"`
	Count   uint64 `json:"count"`
	Errors  uint64 `json:"errors"`
	P50Ns   int64  `json:"p50Ns"`
	P90Ns   int64  `json:"p90Ns"`
	P99Ns   int64  `json:"p99Ns"`
}

// timeline answers GET /api/timeline?service=&operation=&kind=&window=:
// service is required; without operation every operation of the service
// (of kind, when given) is merged. window as for /api/overview (default
// 1h).
func (a *historyAPI) timeline(w http.ResponseWriter, r *http.Request) {
	v, err := queryValues(r)
	if err != nil {
		writeError(w, a.log, http.StatusBadRequest, err.Error())
		return
	}
	if v.Get("window") == "" {
		v.Set("window", "1h")
	}
	req, err := ParseOverview(v)
	if err != nil {
		writeError(w, a.log, http.StatusBadRequest, err.Error())
		return
	}
	if req.Service == "" {
		writeError(w, a.log, http.StatusBadRequest, "parameter service is required: the service whose timeline to show")
		return
	}
	operation := v.Get("operation")
	op, ov, err := a.h.Series(req.Window, func(service, name string, kind span.Kind) bool {
		return service == req.Service && (operation == "" || name == operation) && (req.Kind == "" || store.KindName(kind) == req.Kind)
	})
	if err != nil {
		writeError(w, a.log, http.StatusBadRequest, "parameter window: "+err.Error())
		return
	}
	t := Timeline{Service: req.Service, Operation: operation, Kind: req.Kind, WindowNs: int64(ov.Window), StepNs: int64(ov.Step), Points: []TimelinePoint{}}
	for _, p := range op.Points {
		t.Points = append(t.Points, TimelinePoint{StartMs: p.Start.UnixMilli(), Count: p.Count, Errors: p.Errors, P50Ns: int64(p.P50), P90Ns: int64(p.P90), P99Ns: int64(p.P99)})
	}
	writeJSON(w, a.log, http.StatusOK, t)
}
