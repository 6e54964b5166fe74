package api_test

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/metrics"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
)

// historyServer serves a store and a History fed the same spans: 20
// checkouts 7–6 minutes ago (charge 5 ms) and 20 in the last minute
// (charge 50 ms, every fourth failing), and a restock.
func historyServer(t *testing.T) (string, time.Time) {
	t.Helper()
	now := time.Now()
	// History counts from its creation: it has run for an hour.
	clock := now.Add(-time.Hour)
	h := metrics.NewHistory(metrics.HistoryOptions{Now: func() time.Time { return clock }})
	clock = now
	s := store.New(64 << 20)
	export := func(spans []*span.Span) {
		s.Export(spans)
		h.Export(spans)
	}
	for i := range 20 {
		export(checkout(uint64(100+i), now.Add(-7*time.Minute).Add(time.Duration(i)*time.Second), 200, ms(5)))
		status := int64(200)
		if i%4 == 0 {
			status = 500
		}
		export(checkout(uint64(200+i), now.Add(-time.Minute).Add(time.Duration(i)*time.Second), status, ms(50)))
	}
	export(restock(300, now.Add(-30*time.Second)))
	srv := httptest.NewServer(api.New(api.Options{Store: s, History: h}))
	t.Cleanup(srv.Close)
	return srv.URL, now
}

func TestOverviewEndpoint(t *testing.T) {
	u, _ := historyServer(t)
	code, _, body := fetch(t, "GET", u+"/api/overview?window=5m")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var ov api.Overview
	strict(t, []byte(body), &ov)
	if ov.Window != "5m" || ov.WindowNs != int64(5*time.Minute) || ov.StepNs != int64(10*time.Second) || ov.Sort != "worse" {
		t.Errorf("window %s %d step %d sort %s", ov.Window, ov.WindowNs, ov.StepNs, ov.Sort)
	}
	// Worst first: frontend's and payments' spans all got 10× slower
	// (and the server and client spans failed a quarter of the time).
	byName := map[string]api.OperationOverview{}
	for _, op := range ov.Operations {
		byName[op.Service+" "+op.Operation] = op
	}
	srv := byName["frontend GET /checkout/{id}"]
	if srv.Kind != "server" || srv.Current.Count != 20 || srv.Previous.Count != 20 || srv.Current.Errors != 5 {
		t.Fatalf("frontend server: %+v", srv)
	}
	if srv.P99Change == nil || *srv.P99Change < 5 || srv.P50Change == nil || *srv.P50Change < 5 || srv.ErrorRateChange == nil || *srv.ErrorRateChange != 25 {
		t.Errorf("p99 change %v, p50 change %v, error rate change %v; want ~10×, ~10×, +25 points", srv.P99Change, srv.P50Change, srv.ErrorRateChange)
	}
	if want := max(*srv.P50Change, *srv.P99Change) - 1; srv.Worse != want {
		t.Errorf("worse %v, want the larger latency growth %v", srv.Worse, want)
	}
	if srv.Current.Rate <= 0 || len(srv.Sparkline) != 30 || len(srv.Counts) != 30 {
		t.Errorf("rate %v, sparkline %d points", srv.Current.Rate, len(srv.Sparkline))
	}
	var sparkCount uint64
	for i, c := range srv.Counts {
		sparkCount += c
		if (c == 0) != (srv.Sparkline[i] == nil) || c > 0 && *srv.Sparkline[i] < int64(ms(50)) {
			t.Errorf("step %d: %d spans, p99 %v", i, c, srv.Sparkline[i])
		}
	}
	if sparkCount != 20 {
		t.Errorf("sparkline counts %d spans, want 20", sparkCount)
	}
	if ov.Operations[0].Worse < ov.Operations[len(ov.Operations)-1].Worse {
		t.Errorf("not sorted by worse: %v first, %v last", ov.Operations[0].Worse, ov.Operations[len(ov.Operations)-1].Worse)
	}
	restock := byName["inventory main.restock"]
	if restock.Current.Count != 1 || restock.P99Change != nil {
		t.Errorf("restock (too few to compare): %+v", restock)
	}
	if ov.Attributed {
		t.Errorf("attributed without latscope.time.* attributes")
	}

	// Filters and orders.
	for _, tt := range []struct {
		query string
		check func(api.Overview) bool
	}{
		{"kind=server", func(o api.Overview) bool { return len(o.Operations) == 2 }},
		{"service=payments", func(o api.Overview) bool { return len(o.Operations) == 2 && o.Operations[0].Service == "payments" }},
		{"sort=name", func(o api.Overview) bool {
			return o.Operations[0].Service == "frontend" && o.Operations[0].Operation == "GET /checkout/{id}"
		}},
		{"sort=rate&window=1h", func(o api.Overview) bool {
			return o.StepNs == int64(time.Minute) && o.Operations[0].Current.Count == 40
		}},
		{"sort=p99", func(o api.Overview) bool { return o.Operations[0].Current.P99Ns >= o.Operations[1].Current.P99Ns }},
		{"sort=errors", func(o api.Overview) bool { return o.Operations[0].Current.ErrorRate == 0.25 }},
	} {
		code, _, body := fetch(t, "GET", u+"/api/overview?"+tt.query)
		var o api.Overview
		if code != 200 || json.Unmarshal([]byte(body), &o) != nil || !tt.check(o) {
			t.Errorf("?%s: %d %.300s", tt.query, code, body)
		}
	}
}

func TestTimelineEndpoint(t *testing.T) {
	u, now := historyServer(t)
	code, _, body := fetch(t, "GET", u+"/api/timeline?service=frontend&operation=GET+/checkout/%7Bid%7D&window=15m")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var tl api.Timeline
	strict(t, []byte(body), &tl)
	if tl.StepNs != int64(time.Minute) || len(tl.Points) != 15 || tl.Operation != "GET /checkout/{id}" {
		t.Fatalf("step %d, %d points, operation %q", tl.StepNs, len(tl.Points), tl.Operation)
	}
	var count, errors uint64
	for _, p := range tl.Points {
		count += p.Count
		errors += p.Errors
		if p.StartMs > now.UnixMilli() {
			t.Errorf("point at %d after now %d", p.StartMs, now.UnixMilli())
		}
	}
	if count != 40 || errors != 5 {
		t.Errorf("timeline counts %d spans, %d errors; want 40, 5", count, errors)
	}
	// A whole service, merged; an unknown one: empty steps.
	code, _, body = fetch(t, "GET", u+"/api/timeline?service=payments")
	strict(t, []byte(body), &tl)
	if code != 200 || tl.Operation != "" || len(tl.Points) != 60 {
		t.Errorf("service=payments: %d, operation %q, %d points", code, tl.Operation, len(tl.Points))
	}
	code, _, body = fetch(t, "GET", u+"/api/timeline?service=nobody&window=5m")
	strict(t, []byte(body), &tl)
	if code != 200 || len(tl.Points) != 30 || tl.Points[0].Count != 0 {
		t.Errorf("service=nobody: %d, %d points", code, len(tl.Points))
	}
}

func TestRequestsEndpoint(t *testing.T) {
	u, _ := historyServer(t)
	code, _, body := fetch(t, "GET", u+"/api/requests?service=frontend&since=10m&limit=5")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var rs api.Requests
	strict(t, []byte(body), &rs)
	if rs.Matched != 40 || len(rs.Rows) != 5 || rs.Traces != 41 {
		t.Fatalf("matched %d, %d rows, %d traces; want 40, 5, 41", rs.Matched, len(rs.Rows), rs.Traces)
	}
	r := rs.Rows[0]
	if r.Service != "frontend" || r.Operation != "GET /checkout/{id}" || r.DurationNs != int64(ms(53)) || r.Spans != 4 ||
		strings.Join(r.Services, ",") != "frontend,payments" || len(r.TraceID) != 32 {
		t.Errorf("row %+v", r)
	}
	// No attribution: the cause comes from the critical path, payments'
	// main.charge (50 of 53 ms).
	if r.Cause.Source != "critical path" || r.Cause.Name != "payments main.charge" || r.Cause.Share < 0.9 {
		t.Errorf("cause %+v", r.Cause)
	}
	for i := 1; i < len(rs.Rows); i++ {
		if rs.Rows[i].DurationNs > rs.Rows[i-1].DurationNs {
			t.Errorf("rows not slowest first")
		}
	}
	for _, tt := range []struct {
		query   string
		matched int
	}{
		{"service=frontend&since=10m&error=true", 5},
		{"service=frontend&since=10m&error=false", 35},
		{"service=frontend&since=10m&min=20ms", 20},
		{"service=frontend&since=10m&minDuration=20ms", 20}, // Jaeger's name for it
		{"service=frontend&since=3m", 20},
		{"service=frontend&since=10m&slowest=10%25", 20}, // ties at 53 ms are all kept
		{"service=payments&operation=main.charge&since=10m", 40},
		{"since=10m", 41}, // every trace's root
	} {
		code, _, body := fetch(t, "GET", u+"/api/requests?"+tt.query)
		var rs api.Requests
		if code != 200 || json.Unmarshal([]byte(body), &rs) != nil || rs.Matched != tt.matched {
			t.Errorf("?%s: %d, matched %d, want %d: %.200s", tt.query, code, rs.Matched, tt.matched, body)
		}
	}
}

// Every endpoint the web UI calls answers a bad parameter with a 400
// naming it.
func TestUIEndpointsBadParameters(t *testing.T) {
	u, _ := historyServer(t)
	for _, tt := range []struct{ path, param string }{
		{"/api/overview?window=5", "parameter window"},
		{"/api/overview?window=2h", "parameter window"},
		{"/api/overview?window=1s", "parameter window"},
		{"/api/overview?kind=servers", "parameter kind"},
		{"/api/overview?sort=best", "parameter sort"},
		{"/api/overview?window=%zz", "escape"},
		{"/api/timeline?window=5m", "parameter service"},
		{"/api/timeline?service=a&window=3h", "parameter window"},
		{"/api/timeline?service=a&kind=x", "parameter kind"},
		{"/api/requests?since=-5m", "parameter since"},
		{"/api/requests?since=soon", "parameter since"},
		{"/api/requests?min=fast", "parameter min"},
		{"/api/requests?minDuration=fast", "parameter minDuration"},
		{"/api/requests?min=1ms&minDuration=2ms", "parameters min and minDuration"},
		{"/api/requests?slowest=1%", "escape"},
		{"/api/requests?slowest=200%25", "parameter slowest"},
		{"/api/requests?min=1s&slowest=1%25", "parameters min and slowest"},
		{"/api/requests?error=maybe", "parameter error"},
		{"/api/requests?limit=0", "parameter limit"},
		{"/api/requests?limit=5000", "parameter limit"},
		{"/api/flame?slowest=x", "parameter slowest"},
		{"/api/flame?since=x", "parameter since"},
		{"/api/traces/xyz/critical-path", "trace"},
	} {
		code, _, body := fetch(t, "GET", u+tt.path)
		if code != 400 || !strings.Contains(body, tt.param) {
			t.Errorf("GET %s: %d %s, want 400 naming %q", tt.path, code, body, tt.param)
		}
	}
}

func TestHistoryRoutesOptional(t *testing.T) {
	srv := httptest.NewServer(api.New(api.Options{Store: store.New(1 << 20)}))
	defer srv.Close()
	for _, p := range []string{"/api/overview", "/api/timeline?service=a"} {
		if code, _, _ := fetch(t, "GET", srv.URL+p); code != 404 {
			t.Errorf("%s without History: %d, want 404", p, code)
		}
	}
}
