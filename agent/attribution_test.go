package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latscope/latscope/agent/config"
	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/attribution"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
)

// attrApp is a running attrapp fixture (internal/fixture/src/attrapp).
type attrApp struct {
	cmd  *exec.Cmd
	addr string
}

// startAttrApp runs bin with env and args until the test ends.
func startAttrApp(t *testing.T, bin string, env []string, args ...string) *attrApp {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("%s did not start: %v", bin, err)
	}
	return &attrApp{cmd: cmd, addr: strings.TrimSpace(strings.TrimPrefix(line, "listening "))}
}

// known GETs path and returns the delay the handler measured (known_ns).
func (a *attrApp) known(c *http.Client, path string) (time.Duration, error) {
	resp, err := c.Get("http://" + a.addr + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "known_ns=")
	n, err := strconv.ParseInt(v, 10, 64)
	if !ok || err != nil {
		return 0, fmt.Errorf("GET %s answered %d %q", path, resp.StatusCode, b)
	}
	return time.Duration(n), nil
}

// groundTruth is one endpoint of attrapp and the category its delay
// must be filed under.
type groundTruth struct {
	endpoint string
	want     span.TimeCategory
}

// Tier 3, the ground truth: a service with one endpoint per
// known cause, built stripped with the oldest and the newest supported
// Go, under a steady load (each endpoint's requests back to back), with
// deep attribution on: for at least
// 95% of the requests of each endpoint the largest category of the
// server span is the known cause, within ±20% of the delay the handler
// measured, and the categories sum to the span's duration within 2%.
func TestAttributionGroundTruth(t *testing.T) {
	fixture.RequireRoot(t)
	const perEndpoint = 40
	for _, tc := range []string{fixture.Matrix()[0], "go1.27.3"} {
		t.Run(tc, func(t *testing.T) {
			bin := fixture.Build(t, "attrapp", tc, fixture.Stripped)
			main := startAttrApp(t, bin, []string{"GOMAXPROCS=2"})
			starved := startAttrApp(t, bin, []string{"GOMAXPROCS=1"})
			alloc := startAttrApp(t, bin, []string{"GOMAXPROCS=1", "GOGC=10"}, "-live-mb", "4", "-alloc-kb", "1024")

			col := &spanCollector{}
			var mu sync.Mutex
			ready := 0
			s := &Session{
				PIDs:      []int{main.cmd.Process.Pid, starved.cmd.Process.Pid, alloc.cmd.Process.Pid},
				Exporters: []span.Exporter{col},
				Deep:      10 * time.Minute,
				Tracer:    Config{SettleReturns: -1},
				Ready:     func(*Process) { mu.Lock(); ready++; mu.Unlock() },
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			var res *Result
			go func() {
				var err error
				res, err = s.Run(ctx)
				done <- err
			}()
			waitFor(t, 30*time.Second, "the fixtures to be traced", func() bool { mu.Lock(); defer mu.Unlock(); return ready == 3 })
			time.Sleep(time.Second) // deep mode goes on once every process is attached

			loads := []struct {
				app *attrApp
				eps []groundTruth
			}{
				{main, []groundTruth{{"cpu", span.TimeOnCPU}, {"sleep", span.TimeBlockedSleep}, {"mutex", span.TimeBlockedSync},
					{"chan", span.TimeBlockedChan}, {"syscall", span.TimeSyscall}, {"stw", span.TimeGCSTW}, {"downstream", span.TimeDownstream}}},
				{starved, []groundTruth{{"runnable", span.TimeRunnable}}},
				{alloc, []groundTruth{{"alloc", span.TimeGCAssist}}},
			}
			// One endpoint at a time, its requests back to back on one
			// connection: endpoints run together would add each other's
			// CPU to every delay on two cores (rightly filed as runnable).
			known := map[string]time.Duration{} // url.path → the handler's measure
			c := &http.Client{Timeout: 10 * time.Second}
			for _, l := range loads {
				for _, ep := range l.eps {
					for i := 0; i < perEndpoint; i++ {
						path := fmt.Sprintf("/%s/%d", ep.endpoint, i)
						d, err := l.app.known(c, path)
						if err != nil {
							t.Fatal(err)
						}
						known[path] = d
					}
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if lost := res.Lost(); lost > 0 {
				t.Errorf("lost %d: %+v", lost, res.Counters)
			}

			server := map[string]*span.Span{}
			for _, sp := range col.spans {
				if p := pathOf(sp); sp.Kind == span.KindServer && known[p] != 0 {
					server[p] = sp
				}
			}
			for _, l := range loads {
				for _, ep := range l.eps {
					var ok int
					var bad []string
					for i := 0; i < perEndpoint; i++ {
						path := fmt.Sprintf("/%s/%d", ep.endpoint, i)
						if why := checkGroundTruth(server[path], ep.want, known[path]); why != "" {
							bad = append(bad, path+": "+why)
						} else {
							ok++
						}
					}
					t.Logf("%-10s %d/%d requests: %s the largest, within ±20%% of the handler's measure", ep.endpoint, ok, perEndpoint, ep.want.Name())
					if ok*100 < 95*perEndpoint {
						sort.Strings(bad)
						t.Errorf("%s: only %d of %d requests right:\n  %s", ep.endpoint, ok, perEndpoint, strings.Join(bad, "\n  "))
					}
				}
			}
		})
	}
}

// checkGroundTruth says what is wrong with s's split, "" if nothing.
func checkGroundTruth(s *span.Span, want span.TimeCategory, known time.Duration) string {
	switch {
	case s == nil:
		return "no server span"
	case s.Time == nil || !s.Time.Full:
		return fmt.Sprintf("no full time split: %+v", s.Time)
	}
	dur := s.Duration().Nanoseconds()
	if diff := math.Abs(float64(s.Time.Total() - dur)); diff > 0.02*float64(dur) {
		return fmt.Sprintf("categories sum to %d, duration %d", s.Time.Total(), dur)
	}
	if got := s.Time.Largest(); got != want {
		return fmt.Sprintf("largest %s (%s), want %s; known %s; %s", got.Name(), time.Duration(s.Time.NS[got]), want.Name(), known, describeSplit(s))
	}
	if v := s.Time.NS[want]; math.Abs(float64(v)-float64(known)) > 0.2*float64(known) {
		return fmt.Sprintf("%s %s, known %s; %s", want.Name(), time.Duration(v), known, describeSplit(s))
	}
	return ""
}

func describeSplit(s *span.Span) string {
	var parts []string
	for c := span.TimeCategory(0); c < span.NumTimeCategories; c++ {
		if v := s.Time.NS[c]; v != 0 {
			parts = append(parts, fmt.Sprintf("%s=%s", c.Name(), time.Duration(v)))
		}
	}
	return fmt.Sprintf("duration %s: %s", s.Duration(), strings.Join(parts, " "))
}

func pathOf(s *span.Span) string {
	for _, a := range s.Attrs {
		if a.Key == "url.path" {
			v, _ := a.Value.(string)
			return v
		}
	}
	return ""
}

// spanCollector is an in-memory span.Exporter.
type spanCollector struct {
	mu    sync.Mutex
	spans []*span.Span
}

func (c *spanCollector) Export(s []*span.Span) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.spans = append(c.spans, s...)
	return nil
}

func (c *spanCollector) Close() error { return nil }

// Always on: a stop-the-world prolonged by a goroutine the scheduler
// cannot stop is on the server spans it overlaps, within ±20% of the
// pause the runtime reports, and nothing else is: read back through the
// agent's Jaeger API.
func TestAttributionAlwaysOn(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range []string{fixture.Matrix()[0], "go1.27.3"} {
		t.Run(tc, func(t *testing.T) {
			dir := t.TempDir()
			exe := copyBinary(t, fixture.Build(t, "attrapp", tc, fixture.Stripped), dir, "attrapp")
			n := testNode(t, func(c *config.Config) { c.Selectors = []discovery.Selector{{Exe: exe}} })
			app := startAttrApp(t, exe, []string{"GOMAXPROCS=2"})
			waitFor(t, 10*time.Second, "the fixture to be traced", func() bool { return n.traced(app.cmd.Process.Pid) != nil })
			c := &http.Client{Timeout: 10 * time.Second}
			const requests = 20
			stw := map[string]time.Duration{}
			for i := 0; i < requests; i++ {
				path := fmt.Sprintf("/stw/%d", i)
				d, err := app.known(c, path)
				if err != nil {
					t.Fatal(err)
				}
				stw[path] = d
			}
			var got map[string]*span.Span
			waitFor(t, 10*time.Second, "the /stw spans", func() bool {
				traces, err := api.FetchTraces(context.Background(), c, "http://"+n.Addr()+"/api/traces?limit=0&service=attrapp")
				if err != nil {
					t.Fatal(err)
				}
				got = map[string]*span.Span{}
				for _, tr := range traces {
					for _, s := range tr {
						if p := pathOf(s); stw[p] != 0 && s.Kind == span.KindServer {
							got[p] = s
						}
					}
				}
				return len(got) == len(stw)
			})
			ok := 0
			for path, known := range stw {
				s := got[path]
				if s.Time == nil || s.Time.Full {
					t.Errorf("%s: time split %+v, want the always-on one", path, s.Time)
					continue
				}
				for c, v := range s.Time.NS {
					if c := span.TimeCategory(c); v != 0 && c != span.TimeGCSTW && c != span.TimeGCAssist {
						t.Errorf("%s: %s = %d outside deep mode", path, c.Name(), v)
					}
				}
				if v := s.Time.NS[span.TimeGCSTW]; math.Abs(float64(v)-float64(known)) > 0.2*float64(known) {
					t.Logf("%s: gc_stw %s, the GC paused %s", path, time.Duration(v), known)
				} else {
					ok++
				}
			}
			t.Logf("%d/%d requests: gc_stw within ±20%% of the runtime's pause", ok, requests)
			if ok*100 < 95*requests {
				t.Errorf("only %d of %d requests right", ok, requests)
			}
		})
	}
}

// Deep mode from the agent's p99 trigger and from its API: it turns
// itself off after its time box, every probe link it attached detached
// (counted) and no more of its records arriving; a bad duration is a 400
// that says what to give.
func TestDeepTimeBox(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "attrapp", "local", fixture.Stripped)
	dir := t.TempDir()
	exe := copyBinary(t, bin, dir, "attrapp")
	n := testNode(t, func(c *config.Config) {
		c.Selectors = []discovery.Selector{{Exe: exe}}
		c.Attribution.Auto = attribution.TriggerConfig{P99Above: time.Millisecond, For: 2 * time.Second}
	})
	app := startAttrApp(t, exe, nil)
	waitFor(t, 10*time.Second, "the fixture to be traced", func() bool { return n.traced(app.cmd.Process.Pid) != nil })
	c := &http.Client{Timeout: 10 * time.Second}
	load := func(count int) {
		for i := 0; i < count; i++ {
			if _, err := app.known(c, fmt.Sprintf("/sleep/%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	base := "http://" + n.Addr() + "/api/attribution"
	state := func() attribution.Deep {
		t.Helper()
		var st api.AttributionState
		getJSON(t, c, base, &st)
		return st.Deep
	}

	// The trigger: 5 ms requests against a 1 ms threshold, once the
	// window holds enough of them.
	load(110)
	waitFor(t, 10*time.Second, "the p99 trigger", func() bool { return state().Periods == 1 })
	if d := state(); !strings.HasPrefix(d.Reason, "p99 of attrapp GET") || !strings.HasSuffix(d.Reason, "above 1ms") {
		t.Errorf("triggered period's reason %q", d.Reason)
	}
	waitFor(t, 10*time.Second, "the triggered period to end", func() bool { return !state().On })

	// The API: on for 2 s, then off by itself.
	resp, err := c.Post(base+"/deep?for=2s", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st api.AttributionState
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !st.Deep.On || st.Deep.Reason != "api" || st.Deep.Until.Sub(st.Deep.Since) != 2*time.Second {
		t.Fatalf("POST deep: %s %+v", resp.Status, st.Deep)
	}
	load(20)
	waitFor(t, 10*time.Second, "the API's period to end", func() bool { return !state().On })
	d := state()
	if d.Periods != 2 || d.Ended != 2 || d.LinksAttached == 0 || d.LinksDetached != d.LinksAttached {
		t.Errorf("after two periods: %+v", d)
	}
	// uprobe_multi: casgstatus's link in the executable and the
	// sched_switch tracepoint, per period.
	if n.tracer.multi && d.LinksAttached != 4 {
		t.Errorf("%d links attached in two periods, want 2 each", d.LinksAttached)
	}
	full := n.tracer.AttributionStats()
	if full.SpansFull == 0 || full.Off == 0 {
		t.Fatalf("no full splits while deep mode was on: %+v", full)
	}

	// Off means off: no deep record comes any more, new spans get no full
	// split.
	load(20)
	time.Sleep(200 * time.Millisecond) // the ring is drained every 20 ms
	after := n.tracer.AttributionStats()
	if after.Off != full.Off || after.OSBlocked != full.OSBlocked || after.OSRunnable != full.OSRunnable || after.SpansFull != full.SpansFull {
		t.Errorf("deep records after the period: before %+v, after %+v", full, after)
	}
	for _, name := range []string{"attribution_deep_periods_ended", "attribution_deep_links_detached"} {
		if v := counter(t, n, name); v == 0 {
			t.Errorf("counter %s = 0", name)
		}
	}

	resp, err = c.Post(base+"/deep?for=2h", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "for=2h: give a duration from 1s to 1h0m0s") {
		t.Errorf("for=2h: %s %s", resp.Status, b)
	}
}

func getJSON(t *testing.T, c *http.Client, url string, v any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func counter(t *testing.T, n *Node, name string) uint64 {
	t.Helper()
	for _, c := range n.Status().Counters {
		if c.Name == name {
			return c.Value
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}
