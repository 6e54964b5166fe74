package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/analysis/criticalpath"
	"github.com/latscope/latscope/api"
)

// fetchProfile GETs a profile and parses it back with pprof.
func fetchProfile(t *testing.T, u string) *profile.Profile {
	t.Helper()
	code, h, body := fetch(t, "GET", u)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", u, code, body)
	}
	if ct := h.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	p, err := profile.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return p
}

func sums(p *profile.Profile) (ns, requests int64) {
	for _, s := range p.Sample {
		ns += s.Value[0]
		requests += s.Value[1]
	}
	return ns, requests
}

// The profile's requests and totals follow the filters: a checkout
// request's frontend span lasts charge+3ms (fixture: 5, 50, 200, 1 ms).
func TestFlameProfile(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		query    string
		requests int64
		total    time.Duration
	}{
		{"service=frontend", 4, ms(8 + 53 + 203 + 4)},
		{"", 5, ms(8+53+203+4) + ms(10)}, // every trace from its root, restock too
		{"service=frontend&since=1h", 2, ms(203 + 4)},
		{"service=frontend&start=" + micros(f.start[2]) + "&end=" + micros(f.start[3]), 2, ms(53 + 203)},
		{"service=frontend&until=1h", 2, ms(8 + 53)},
		{"service=frontend&error=true", 1, ms(53)},
		{"service=frontend&minDuration=50ms", 2, ms(53 + 203)},
		{"service=frontend&slowest=50%25", 2, ms(53 + 203)},
		{"service=frontend&slowest=0.25", 1, ms(203)},
		{"service=payments", 4, ms(256) + 4*ms(0.6)},
		{"service=payments&operation=POST+/charge&since=40m", 2, ms(201) + 2*ms(0.6)},
		{"service=nobody", 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			p := fetchProfile(t, f.url+"/api/flame?"+tc.query)
			ns, n := sums(p)
			if n != tc.requests || ns != int64(tc.total) {
				t.Errorf("%d requests, %v: want %d, %v", n, time.Duration(ns), tc.requests, tc.total)
			}
		})
	}
	// The stack runs from frontend's server span through payments.
	p := fetchProfile(t, f.url+"/api/flame?service=frontend&since=40m&slowest=50%25")
	var leaf string
	var most int64
	for _, s := range p.Sample {
		if s.Value[0] > most {
			most, leaf = s.Value[0], s.Location[0].Line[0].Function.Name
		}
	}
	if leaf != "payments main.charge" || len(p.Comments) == 0 || !strings.Contains(p.Comments[0], "service=frontend") {
		t.Errorf("widest leaf %q, comments %q", leaf, p.Comments)
	}
}

func micros(t time.Time) string { return strconv.FormatInt(t.UnixMicro(), 10) }

// A baseline makes a diff (pprof's base label on the baseline's samples,
// negated); normalize divides by the requests.
func TestFlameDiff(t *testing.T) {
	f := newFixture(t)
	p := fetchProfile(t, f.url+"/api/flame?service=frontend&since=1h&baselineSince=4h")
	var spike, base int64
	for _, s := range p.Sample {
		if s.DiffBaseSample() {
			base += s.Value[0]
		} else {
			spike += s.Value[0]
		}
	}
	if spike != int64(ms(207)) || base != -int64(ms(61)) {
		t.Errorf("spike %v base %v: want 207ms and -61ms", time.Duration(spike), time.Duration(base))
	}
	n := fetchProfile(t, f.url+"/api/flame?service=frontend&since=1h&normalize=true")
	if ns, reqs := sums(n); ns != int64(ms(207))/2 || reqs != 1 {
		t.Errorf("normalized: %v over %d requests, want 103.5ms and 1", time.Duration(ns), reqs)
	}
}

// A bad parameter is a 400 naming it.
func TestFlameBadParameters(t *testing.T) {
	f := newFixture(t)
	for q, want := range map[string]string{
		"since=yesterday":                "parameter since",
		"since=1h&start=5":               "parameters since and start",
		"slowest=200%25":                 "parameter slowest",
		"slowest=0":                      "parameter slowest",
		"slowest=1%25&minDuration=1s":    "minDuration and slowest",
		"minDuration=-1s":                "parameter minDuration",
		"error=maybe":                    "parameter error",
		"normalize=please":               "parameter normalize",
		"since=1h&until=2h":              "parameters since and until",
		"baselineUntil=1h":               "parameter baselineSince",
		"baselineSince=1h":               "parameter baselineUntil",
		"since=2h&baselineSince=1h":      "parameter baselineSince",
		"end=x":                          "parameter end",
		"baselineSince=2h&baselineEnd=y": "parameter baselineEnd",
	} {
		code, _, body := fetch(t, "GET", f.url+"/api/flame?"+q)
		if code != 400 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %s, want 400 naming %q", q, code, body, want)
		}
	}
}

func TestCriticalPathEndpoint(t *testing.T) {
	f := newFixture(t)
	code, _, body := fetch(t, "GET", f.url+"/api/traces/"+fixtureIDs[3].String()+"/critical-path")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var cp api.CriticalPath
	if err := json.Unmarshal([]byte(body), &cp); err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, s := range cp.Spans {
		sum += s.SelfNs
	}
	if cp.TotalNs != int64(ms(203)) || sum != cp.TotalNs || len(cp.Spans) != 4 || len(cp.Segments) != 7 {
		t.Errorf("total %d, self sum %d, %d spans, %d segments", cp.TotalNs, sum, len(cp.Spans), len(cp.Segments))
	}
	if !strings.Contains(cp.Summary, "99% (201ms) waiting on payments POST /charge; inside it 100% payments main.charge") {
		t.Errorf("summary:\n%s", cp.Summary)
	}
	var total, selfs int
	for _, s := range cp.Trace.Spans {
		for _, kv := range s.Tags {
			switch kv.Key {
			case criticalpath.KeyTotal:
				total++
			case criticalpath.KeySelf:
				selfs++
			}
		}
	}
	if total != 1 || selfs != 4 {
		t.Errorf("trace tags: %d totals, %d self times", total, selfs)
	}
	// The stored spans are not annotated.
	if tr, _ := f.store.Trace(fixtureIDs[3]); len(tr.Spans[0].Attrs) > 0 && tr.Spans[0].Attrs[len(tr.Spans[0].Attrs)-1].Key == criticalpath.KeySelf {
		t.Error("stored span modified")
	}
	if code, _, _ := fetch(t, "GET", f.url+"/api/traces/"+strings.Repeat("0", 31)+"9/critical-path"); code != 404 {
		t.Errorf("unknown trace: %d", code)
	}
	if code, _, _ := fetch(t, "GET", f.url+"/api/traces/xyz/critical-path"); code != 400 {
		t.Errorf("bad id: %d", code)
	}
}

// pprof's web UI answers under /pprof/ for the same query.
func TestFlameUI(t *testing.T) {
	f := newFixture(t)
	resp, err := http.Get(f.url + "/pprof/?service=frontend&since=1h")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/pprof/flamegraph" || resp.Request.URL.Query().Get("service") != "frontend" {
		t.Fatalf("/pprof/ → %s %s", resp.Request.URL, resp.Status)
	}
	for page, want := range map[string]string{
		"flamegraph": "payments main.charge",
		"top":        "payments main.charge",
	} {
		code, _, body := fetch(t, "GET", f.url+"/pprof/"+page+"?service=frontend&since=1h&si=critical_path")
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d, has %q: %v", page, code, want, strings.Contains(body, want))
		}
	}
	// The graph view needs Graphviz's dot: with it, the page; without it,
	// pprof's 501 naming graphviz.
	code, _, body := fetch(t, "GET", f.url+"/pprof/graph?service=frontend")
	if _, err := exec.LookPath("dot"); err == nil {
		if code != 200 || !strings.Contains(body, "<svg") {
			t.Errorf("graph: %d", code)
		}
	} else if code != 501 || !strings.Contains(body, "graphviz") {
		t.Errorf("graph without dot: %d %s", code, body)
	}
	if code, _, body := fetch(t, "GET", f.url+"/pprof/top?slowest=x"); code != 400 || !strings.Contains(body, "parameter slowest") {
		t.Errorf("bad parameter: %d %s", code, body)
	}
	if code, _, _ := fetch(t, "GET", f.url+"/pprof/saveconfig?config=x"); code != 404 {
		t.Errorf("saveconfig: %d, want 404 (not mounted)", code)
	}
	// The download is the profile itself.
	code, _, body = fetch(t, "GET", f.url+"/pprof/download?service=frontend&since=1h")
	if p, err := profile.Parse(bytes.NewReader([]byte(body))); code != 200 || err != nil || len(p.Sample) == 0 {
		t.Errorf("download: %d %v", code, err)
	}
}

func TestParseFlame(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	v, _ := url.ParseQuery("service=catalog&since=5m&slowest=1%25&baselineSince=1h&normalize=true&error=true")
	r, err := api.ParseFlame(v, now)
	if err != nil {
		t.Fatal(err)
	}
	q := r.Query
	if q.Service != "catalog" || !q.Start.Equal(now.Add(-5*time.Minute)) || !q.End.IsZero() || q.Slowest != 0.01 || !q.Errors || !r.Normalize {
		t.Errorf("query %+v", q)
	}
	if !r.HasBaseline() || !r.BaselineStart.Equal(now.Add(-time.Hour)) || !r.BaselineEnd.Equal(q.Start) {
		t.Errorf("baseline %v..%v", r.BaselineStart, r.BaselineEnd)
	}
	if b := r.Baseline(); !b.Start.Equal(r.BaselineStart) || b.Service != "catalog" || b.Slowest != 0.01 {
		t.Errorf("baseline query %+v", b)
	}
}
