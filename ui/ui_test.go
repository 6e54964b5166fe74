package ui_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/metrics"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
	"github.com/latscope/latscope/ui"
)

func TestOverviewPage(t *testing.T) {
	e := newEnv(t, 200)
	code, body := e.get(t, "/")
	if code != 200 {
		t.Fatalf("/: %d %s", code, body)
	}
	contains(t, "overview", body, "catalog", "pricing", "GET /product/{id}", "demo.Pricing/GetPrice", `class="spark"`,
		"slow traces", "flame graph", "▲", "not recorded", "latscope.time.*")
	// Worst first: everything under pricing's slowdown got ~10× slower;
	// catalog's SELECT did not.
	rows := regexp.MustCompile(`data-service="([^"]+)" data-operation="([^"]+)"`).FindAllStringSubmatch(body, -1)
	if len(rows) != 6 {
		t.Fatalf("%d rows, want 6", len(rows))
	}
	if last := rows[len(rows)-1]; last[2] != "SELECT" {
		t.Errorf("last row %s %s, want catalog SELECT (it did not get worse)", last[1], last[2])
	}
	// Links carry the operation: its slow traces and its flame graph
	// against the hour before.
	contains(t, "overview links", body, `/traces?operation=GET&#43;%2Fproduct%2F%7Bid%7D&amp;service=catalog&amp;since=5m`,
		`/flame?baselineSince=1h5m&amp;normalize=true&amp;operation=GET&#43;%2Fproduct%2F%7Bid%7D&amp;service=catalog&amp;since=5m&amp;slowest=1%25`)

	for _, q := range []string{"?window=1h", "?window=15m&kind=server", "?sort=name", "?service=pricing", "?kind=internal&sort=p99"} {
		if code, body := e.get(t, "/"+q); code != 200 || !strings.Contains(body, "<table") {
			t.Errorf("/%s: %d %.300s", q, code, body)
		}
	}
	_, body = e.get(t, "/?service=pricing")
	if strings.Contains(body, "SELECT") {
		t.Errorf("service=pricing shows catalog's SELECT")
	}
}

func TestOverviewAttribution(t *testing.T) {
	e := newEnv(t, 0)
	now := time.Now()
	spans := product(1, now.Add(-time.Second-30*time.Millisecond), 20*time.Millisecond, false,
		span.Attr{Key: "latscope.time.blocked_net", Value: int64(18 * time.Millisecond)},
		span.Attr{Key: "latscope.time.on_cpu", Value: int64(5 * time.Millisecond)})
	e.store.Export(spans)
	e.history.Export(spans)
	_, body := e.get(t, "/")
	contains(t, "overview with attribution", body, `class="causebar"`, "blocked_net 78%")
	if strings.Contains(body, "is not recorded: no span") {
		t.Errorf("attribution present, yet the note says it is not recorded")
	}
	_, body = e.get(t, "/trace/ab000000000000000000000000000001")
	contains(t, "trace with attribution", body, "blocked_net", "on_cpu", `<table class="split">`)
	_, body = e.get(t, "/traces?service=catalog&operation=GET+/product/%7Bid%7D")
	contains(t, "traces with attribution", body, "blocked_net</span> 75%")
}

func TestTracesPage(t *testing.T) {
	e := newEnv(t, 200)
	code, body := e.get(t, "/traces?service=catalog&operation=GET+/product/%7Bid%7D&since=15m&slowest=10%25")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	contains(t, "traces", body, "slowest 10% of each operation", "of the critical path", "pricing GET", `class="chip s`,
		"/trace/ab00000000000000", "Flame graph of these requests", `data-src="/api/timeline?`, "✕ error")
	links := regexp.MustCompile(`class="trace-link" href="(/trace/[0-9a-f]+\?span=[0-9a-f]+)"`).FindAllStringSubmatch(body, -1)
	if len(links) != 20 {
		t.Fatalf("%d rows, want 20 (10%% of 200)", len(links))
	}
	// Deep links: the form shows what the URL asked.
	contains(t, "traces form", body, `<option selected>catalog</option>`, `value="GET /product/{id}"`, `<option selected>10%</option>`)

	code, body = e.get(t, "/traces?service=catalog&min=10s")
	if code != 200 {
		t.Fatalf("%d", code)
	}
	contains(t, "no match", body, "No request matched", "at least 10.0s", "Tracing 1 process(es): catalog (pid 4101)")
}

func TestTracePage(t *testing.T) {
	e := newEnv(t, 20, func(o *ui.Options) { o.JaegerQueryURL = "http://jaeger.example:16686/" })
	code, body := e.get(t, "/trace/ab000000000000000000000000000014?span=0000001400000005")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	contains(t, "trace", body, "Where the", "waiting on pricing demo.Pricing/GetPrice",
		`href="http://jaeger.example:16686/trace/ab000000000000000000000000000014"`,
		`selected" id="span-0000001400000005" data-service="pricing"`, // the linked span, marked
		`<span class="go-key">go</span> g11`,                          // the goroutine the go statement started
		"go</span> statement in g10", "db.query.text", "SELECT name FROM products WHERE id = ?",
		"Runtime attribution not recorded")
	// Spans of two services, five of six on the critical path (the
	// SELECT ran before the price call: it is on the path too; each
	// span has own time there).
	services := map[string]bool{}
	for _, m := range regexp.MustCompile(`<details class="span([^"]*)" id="span-[0-9a-f]+" data-service="([a-z]+)"`).FindAllStringSubmatch(body, -1) {
		services[m[2]] = true
	}
	if len(services) != 2 || strings.Count(body, `<details class="span cp`) < 4 {
		t.Errorf("services %v, %d spans on the path", services, strings.Count(body, `<details class="span cp`))
	}
	// An error trace: marked with ✕ and a class, not colour alone.
	_, body = e.get(t, "/trace/ab000000000000000000000000000004")
	contains(t, "error trace", body, `failed" id="span-`, "✕ error: NotFound")

	// Without a Jaeger URL, no Jaeger link.
	e2 := newEnv(t, 20)
	_, body = e2.get(t, "/trace/ab000000000000000000000000000001")
	if strings.Contains(body, "jaeger-link") {
		t.Errorf("a Jaeger link without a Jaeger URL")
	}
	code, body = e2.get(t, "/trace/ab0000000000000000000000000000ff")
	if code != 404 || !strings.Contains(body, "not in the agent&#39;s store") {
		t.Errorf("unknown trace: %d %.500s", code, body)
	}
}

func TestFlamePage(t *testing.T) {
	e := newEnv(t, 200)
	code, body := e.get(t, "/flame?service=catalog&operation=GET+/product/%7Bid%7D&since=5m&baselineSince=10m&normalize=true")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	contains(t, "flame", body, "What changed", "pricing GET", "▲ +", `id="flamegraph" src="/pprof/flamegraph?`,
		`href="/api/flame?`, "Download pprof", "Open in pprof", "compare with", "the 5m before")
	// The iframe's page is pprof's own, over the same query.
	src := regexp.MustCompile(`id="flamegraph" src="([^"]+)"`).FindStringSubmatch(body)[1]
	if !strings.Contains(src, "baselineSince=10m") || !strings.Contains(src, "si=critical_path") {
		t.Errorf("iframe src %s", src)
	}
	code, body = e.get(t, "/flame")
	if code != 200 || !strings.Contains(body, "Largest own times") || !strings.Contains(body, "no baseline") {
		t.Errorf("/flame: %d %.500s", code, body)
	}
	_, body = e.get(t, "/flame?service=nobody")
	contains(t, "empty flame", body, "No request matched", "requests of nobody")
}

func TestStatusPage(t *testing.T) {
	e := newEnv(t, 10)
	code, body := e.get(t, "/status")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	contains(t, "status", body, "catalog", "4101", "go1.26.0", "net/http", "cgo-thing", "not a Go binary",
		"✕ LOSS</span> lost_ringbuf_full", "events lost at a full ring buffer", "spans/s", "No OTLP export", `exe=&#34;/srv/*&#34;`)
	// No process traced: the empty state names the selectors and what
	// was skipped.
	e.status["processes"] = []any{}
	_, body = e.get(t, "/status")
	contains(t, "status, nothing traced", body, "No Go process matched your selectors", "Selectors: exe=&#34;/srv/*&#34;", "not a Go binary")
	_, body = e.get(t, "/?window=1h&service=nobody")
	contains(t, "overview, nothing traced", body, "No Go process matched your selectors")
}

// Every page answers a bad parameter with a 400 page naming it.
func TestBadParameters(t *testing.T) {
	e := newEnv(t, 5)
	for _, tt := range []struct{ path, want string }{
		{"/?window=7", "parameter window"},
		{"/?window=3h", "parameter window"},
		{"/?kind=x", "parameter kind"},
		{"/?sort=x", "parameter sort"},
		{"/traces?since=x", "parameter since"},
		{"/traces?min=x", "parameter min"},
		{"/traces?slowest=x", "parameter slowest"},
		{"/traces?error=x", "parameter error"},
		{"/traces?limit=0", "parameter limit"},
		{"/traces?slowest=1%", "escape"},
		{"/trace/xyz", "trace id"},
		{"/flame?since=x", "parameter since"},
		{"/flame?baselineSince=5m&since=10m", "parameter baselineSince"},
		{"/flame?minDuration=1s&slowest=1%25", "minDuration and slowest"},
	} {
		code, body := e.get(t, tt.path)
		if code != 400 || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s: %d, want 400 naming %q: %.400s", tt.path, code, tt.want, body)
		}
	}
	if code, _ := e.get(t, "/nope"); code != 404 {
		t.Errorf("/nope: %d", code)
	}
	resp, err := http.Post(e.srv.URL+"/", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("POST /: %d", resp.StatusCode)
	}
}

func TestStaticAndHeaders(t *testing.T) {
	e := newEnv(t, 1)
	for path, want := range map[string]string{
		"/static/app.css":                        "--cp",
		"/static/app.js":                         "sparklines",
		"/static/vendor/uplot/uPlot.iife.min.js": "uPlot",
		"/static/vendor/uplot/uPlot.min.css":     ".uplot",
	} {
		code, body := e.get(t, path)
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d", path, code)
		}
	}
	resp, err := http.Get(e.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	// Nothing loads from elsewhere: every src and href is local.
	for _, p := range []string{"/", "/traces", "/flame", "/status", "/trace/ab000000000000000000000000000001"} {
		_, body := e.get(t, p)
		for _, m := range regexp.MustCompile(`(?:src|href)="(https?:[^"]*)"`).FindAllStringSubmatch(body, -1) {
			t.Errorf("%s links outside: %s", p, m[1])
		}
	}
}

func TestNewNeedsStore(t *testing.T) {
	if _, err := ui.New(ui.Options{}); err == nil {
		t.Error("New without a store: no error")
	}
	u, err := ui.New(ui.Options{Store: store.New(1 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	u.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "No RED history") {
		t.Errorf("no history: %d %s", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	u.ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	if rec.Code != 503 {
		t.Errorf("status without Options.Status: %d", rec.Code)
	}
	_ = fmt.Sprint()
}

// The "counting for" note shows only while the agent's history is
// younger than the window.
func TestCoveredNote(t *testing.T) {
	e := newEnv(t, 10) // its history started an hour ago
	_, body := e.get(t, "/?window=1m")
	if strings.Contains(body, "has been counting for") {
		t.Errorf("an hour-old history says it covers only part of a 1m window")
	}
	young := newEnv(t, 0, func(o *ui.Options) { o.History = metrics.NewHistory(metrics.HistoryOptions{}) })
	_, body = young.get(t, "/?window=5m")
	contains(t, "young history", body, "has been counting for", "No previous window to compare yet")
}
