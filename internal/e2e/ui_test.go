package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/latscope/latscope/internal/fixture"
)

// screenshotDir is where TestUIInBrowser saves its screenshots (git
// ignores bin/); docs/ui.md shows copies of them.
func screenshotDir() string {
	if d := os.Getenv("LATSCOPE_UI_SCREENSHOTS"); d != "" {
		return d
	}
	return filepath.Join(repoRoot(), "bin", "ui-screenshots")
}

// chromium finds Debian's chromium; under CI=true its absence fails the
// test (.ci/run installs it).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but chromium is not installed (.ci/run installs it: apt-get install -y chromium)")
	}
	t.Skip("SKIP: chromium not installed: apt-get install -y chromium")
	return ""
}

// TestUIInBrowser: the agent traces the demo under load, and a real
// headless Chromium walks its web UI: the overview lists the demo's
// services and operations with non-zero rates; a click on catalog's
// request operation lists its slow traces; a click on the first opens
// the trace, whose waterfall holds spans of two services or more with
// the critical path marked, and a Jaeger link; its flame-graph link
// opens the flame page, whose embedded pprof flame graph draws frames;
// the status page lists the traced processes. No page logs a JavaScript
// error. Each page's screenshot goes to screenshotDir().
func TestUIInBrowser(t *testing.T) {
	fixture.RequireRoot(t)
	chrome := chromium(t)
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but redis-server is not installed (.ci/run installs it)")
		}
		t.Skip("SKIP: redis-server not installed: apt-get install -y redis-server")
	}
	bin := t.TempDir()
	build(t, filepath.Join(repoRoot(), "examples", "demo"), bin, "./gateway", "./catalog", "./pricing", "./reviews", "./inventory", "./loadgen")
	build(t, repoRoot(), bin, "./cmd/latscope")

	redisPort := freePort(t)
	redis := start(t, "redis", nil, redisBin, "--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	redis.await(t, "Ready to accept connections", 10*time.Second)

	// The agent first, as in make demo: it traces catalog, pricing and
	// inventory from their exec. Its config names a Jaeger UI for the
	// trace page's link.
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	const jaegerURL = "http://127.0.0.1:16686"
	if err := os.WriteFile(cfg, []byte("export:\n  jaegerQueryURL: "+jaegerURL+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	agentAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	agent := start(t, "latscope", nil, filepath.Join(bin, "latscope"), "agent", "--config", cfg,
		"--exe", filepath.Join(bin, "catalog"), "--exe", filepath.Join(bin, "pricing"), "--exe", filepath.Join(bin, "inventory"),
		"--funcs", "main.*", "--http", agentAddr)
	agent.await(t, "agent API listening", 60*time.Second)
	base := "http://" + agentAddr

	noOTLP := []string{"OTEL_TRACES_EXPORTER=none"}
	addr := func(p *proc) string {
		l := p.await(t, "msg=listening", 20*time.Second)
		_, a, _ := strings.Cut(l, "addr=")
		return strings.Fields(a)[0]
	}
	pricing := start(t, "pricing", nil, filepath.Join(bin, "pricing"), "-listen", "127.0.0.1:0", "-redis", "127.0.0.1:"+strconv.Itoa(redisPort))
	pricingAddr := addr(pricing)
	reviews := start(t, "reviews", noOTLP, filepath.Join(bin, "reviews"), "-listen", "127.0.0.1:0")
	reviewsAddr := addr(reviews)
	inventory := start(t, "inventory", nil, filepath.Join(bin, "inventory"), "-listen", "127.0.0.1:0", "-reviews", "http://"+reviewsAddr)
	inventoryAddr := addr(inventory)
	catalog := start(t, "catalog", nil, filepath.Join(bin, "catalog"), "-listen", "127.0.0.1:0", "-pricing", pricingAddr,
		"-reviews", "http://"+reviewsAddr, "-inventory", "http://"+inventoryAddr)
	catalogAddr := addr(catalog)
	gateway := start(t, "gateway", noOTLP, filepath.Join(bin, "gateway"), "-listen", "127.0.0.1:0", "-catalog", "http://"+catalogAddr)
	gatewayAddr := addr(gateway)
	waitForTraced(t, base, "catalog", "pricing", "inventory")

	// Load for the whole walk (bounded: loopback, 2 minutes at most).
	load := start(t, "loadgen", nil, filepath.Join(bin, "loadgen"), "-url", "http://"+gatewayAddr+"/product/%d", "-ids", "1-20",
		"-c", "2", "-n", "1000000", "-duration", "2m")
	_ = load
	waitForOverview(t, base, "catalog", "pricing", "inventory")

	dir := screenshotDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, chrome)

	// Overview: the demo's services and operations, non-zero rates.
	b.open(t, base+"/", "table#overview")
	b.screenshot(t, dir, "overview")
	rows := b.texts(t, `#overview tbody tr`)
	for _, want := range []string{"catalog GET /product/{id}", "pricing demo.Pricing/GetPrice", "inventory GET /stock/:id"} {
		svc, op, _ := strings.Cut(want, " ")
		found := false
		for _, r := range rows {
			if strings.HasPrefix(r, svc) && strings.Contains(r, op) {
				found = true
				if m := regexp.MustCompile(`(\d+(?:\.\d+)?)/(s|min)`).FindStringSubmatch(r); m == nil || m[1] == "0" || m[1] == "0.00" {
					t.Errorf("overview row %q: no non-zero rate", r)
				}
			}
		}
		if !found {
			t.Errorf("overview has no %s row; rows:\n%s", want, strings.Join(rows, "\n"))
		}
	}
	if b.count(t, `#overview .spark canvas`) == 0 {
		t.Errorf("no sparkline drawn")
	}

	// → its slow traces.
	b.click(t, `tr[data-service="catalog"][data-operation="GET /product/{id}"] a[href^="/traces"]`, "table#traces")
	b.screenshot(t, dir, "traces")
	tracesURL := eval[string](t, b, `location.href`)
	if n := b.count(t, `#traces tbody tr`); n == 0 {
		t.Fatalf("no slow traces listed")
	}
	b.waitCount(t, `.timeline canvas`, 1)

	// → the slowest trace: a waterfall across services, the critical
	// path marked, the Jaeger link.
	b.click(t, `#traces tbody tr a.trace-link`, "#waterfall")
	traceURL := eval[string](t, b, `location.href`)
	eval[bool](t, b, `window.scrollTo(0, 0), true`)
	b.screenshot(t, dir, "trace")
	services := eval[[]string](t, b, `[...new Set([...document.querySelectorAll('#waterfall details.span')].map(d => d.dataset.service))]`)
	if len(services) < 2 {
		t.Errorf("waterfall spans of %v, want at least two services", services)
	}
	if n := b.count(t, `#waterfall details.span.cp .cp-mark`); n == 0 {
		t.Errorf("no span marked on the critical path")
	}
	if n := b.count(t, `#waterfall .cpseg`); n == 0 {
		t.Errorf("no critical-path segment drawn")
	}
	jaeger := eval[string](t, b, `document.getElementById('jaeger-link') ? document.getElementById('jaeger-link').href : ''`)
	if !strings.HasPrefix(jaeger, jaegerURL+"/trace/") {
		t.Errorf("Jaeger link %q, want %s/trace/…", jaeger, jaegerURL)
	}

	// → the flame graph of its operation: pprof's, embedded, draws frames.
	b.click(t, `a[href^="/flame?"]`, "iframe#flamegraph")
	flameURL := eval[string](t, b, `location.href`)
	b.waitFrames(t)
	eval[bool](t, b, `document.querySelector('.flame-summary').scrollIntoView(), true`)
	b.screenshot(t, dir, "flame")

	// Status: the traced processes.
	b.open(t, base+"/status", "table#processes")
	b.screenshot(t, dir, "status")
	procs := strings.Join(b.texts(t, `#processes tbody tr`), "\n")
	for _, s := range []string{"catalog", "pricing", "inventory"} {
		if !strings.Contains(procs, s) {
			t.Errorf("status page lists no %s process:\n%s", s, procs)
		}
	}

	// A narrow window: the pages still lay out (no horizontal page
	// scroll beyond the tables' own).
	b.resize(t, 420, 900)
	for _, p := range []struct{ name, url, ready string }{
		{"overview", base + "/", "table#overview"},
		{"traces", tracesURL, "table#traces"},
		{"trace", traceURL, "#waterfall"},
		{"flame", flameURL, "iframe#flamegraph"},
		{"status", base + "/status", "table#processes"},
	} {
		b.open(t, p.url, p.ready)
		b.screenshot(t, dir, p.name+"-narrow")
		if eval[bool](t, b, `document.documentElement.scrollWidth > window.innerWidth + 1`) {
			t.Errorf("the %s page overflows a 420px window (%s)", p.name, p.url)
		}
	}

	if errs := b.errors(); len(errs) > 0 {
		t.Errorf("JavaScript errors:\n%s", strings.Join(errs, "\n"))
	}
	t.Logf("screenshots in %s", dir)
}

// waitForTraced waits until the agent's status lists a traced process of
// every service.
func waitForTraced(t *testing.T, base string, services ...string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct {
			Processes []struct {
				Service string `json:"service"`
			} `json:"processes"`
		}
		if resp, err := http.Get(base + "/api/status"); err == nil {
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		traced := map[string]bool{}
		for _, p := range st.Processes {
			traced[p.Service] = true
		}
		all := true
		for _, s := range services {
			all = all && traced[s]
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent traces %v after 60s, want %v", traced, services)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitForOverview waits until /api/overview lists requests of every
// service.
func waitForOverview(t *testing.T, base string, services ...string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/api/overview?window=5m")
		if err == nil {
			var ov struct {
				Operations []struct {
					Service string `json:"service"`
					Current struct {
						Count int `json:"count"`
					} `json:"current"`
				} `json:"operations"`
			}
			json.NewDecoder(resp.Body).Decode(&ov)
			resp.Body.Close()
			seen := map[string]bool{}
			for _, op := range ov.Operations {
				if op.Current.Count > 0 {
					seen[op.Service] = true
				}
			}
			all := true
			for _, s := range services {
				all = all && seen[s]
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the overview did not list spans of %v within 60s", services)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// browser is a headless Chromium driven by chromedp, collecting the
// JavaScript errors of every page it shows.
type browser struct {
	ctx  context.Context
	mu   sync.Mutex
	errs []string
}

func newBrowser(t *testing.T, chrome string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.WindowSize(1400, 1000), chromedp.Flag("hide-scrollbars", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{ctx: ctx}
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// Console: console.error calls, uncaught exceptions and the
	// browser's own error log (a failed load, a refused script).
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.mu.Lock()
				b.errs = append(b.errs, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s (at %s): %v", what, b.location(), err)
	}
}

func (b *browser) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	url, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("location.href"))
	return url
}

func (b *browser) open(t *testing.T, url, ready string) {
	t.Helper()
	b.do(t, "open "+url, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(ready)))
}

func (b *browser) click(t *testing.T, sel, ready string) {
	t.Helper()
	b.do(t, "click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible), chromedp.WaitVisible(chromedp.CSS(ready)))
}

// eval evaluates js and decodes its value into out.
func eval[T any](t *testing.T, b *browser, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %s (at %s): %v", js, b.location(), err)
	}
	return v
}

func (b *browser) count(t *testing.T, sel string) int {
	t.Helper()
	return eval[int](t, b, fmt.Sprintf("document.querySelectorAll(%q).length", sel))
}

func (b *browser) texts(t *testing.T, sel string) []string {
	t.Helper()
	return eval[[]string](t, b, fmt.Sprintf("[...document.querySelectorAll(%q)].map(e => e.innerText.replace(/\\s+/g, ' ').trim())", sel))
}

// waitCount waits until sel matches at least n elements.
func (b *browser) waitCount(t *testing.T, sel string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for b.count(t, sel) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d %s after 20s", n, sel)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitFrames waits until the flame page's embedded pprof flame graph has
// drawn frames (pprof's stack view: a box per frame in #stack-chart).
func (b *browser) waitFrames(t *testing.T) {
	t.Helper()
	const js = `(() => { const f = document.getElementById('flamegraph'); const d = f && f.contentDocument;
		return d ? [...d.querySelectorAll('#stack-chart .boxbg')].map(e => e.textContent).filter(s => s) : []; })()`
	deadline := time.Now().Add(30 * time.Second)
	for {
		frames := eval[[]string](t, b, js)
		if len(frames) > 0 && strings.Contains(strings.Join(frames, "\n"), "catalog") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flame graph drew no catalog frame within 30s (frames %q)", frames)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (b *browser) resize(t *testing.T, w, h int64) {
	t.Helper()
	b.do(t, "resize", chromedp.EmulateViewport(w, h))
}

func (b *browser) screenshot(t *testing.T, dir, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	img, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()) // the viewport, PNG
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), img, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (b *browser) errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}
