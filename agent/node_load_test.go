package agent

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latscope/latscope/agent/config"
	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/internal/fixture"
)

// sendLoad sends n GET requests to url over c keep-alive connections and
// returns how many answered 200.
func sendLoad(t *testing.T, url string, n, c int) int {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c}}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	ok := 0
	var wg sync.WaitGroup
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				resp, err := client.Get(url)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return ok
}

// scrape returns the agent's /metrics in the given exposition format.
func scrape(t *testing.T, n *Node, openMetrics bool) string {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+n.Addr()+"/metrics", nil)
	if openMetrics {
		req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue sums the samples of name whose labels include every one of
// labels (`key="value"`).
func metricValue(text, name string, labels ...string) float64 {
	sum := 0.0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(line, l)
		}
		if !match {
			continue
		}
		f := strings.Fields(strings.SplitN(line, " # ", 2)[0])
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// RED histograms count every request of a known load, exactly; their
// exemplars name traces the store holds.
func TestNodeMetrics(t *testing.T) {
	fixture.RequireRoot(t)
	dir := t.TempDir()
	bin := copyBinary(t, fixture.Build(t, "service", "local", fixture.Stripped), dir, "metrics-svc")
	n := testNode(t, func(c *config.Config) { c.Selectors = []discovery.Selector{{Name: "metrics-svc"}} })
	s := startService(t, bin)
	waitFor(t, 5*time.Second, "the service to be traced", func() bool { return n.traced(s.pid()) != nil })
	const requests = 500
	if ok := sendLoad(t, "http://"+s.addr+"/hello/m", requests, 8); ok != requests {
		t.Fatalf("%d of %d requests answered 200", ok, requests)
	}
	count := func() float64 {
		return metricValue(scrape(t, n, false), "http_server_request_duration_seconds_count", `service_name="metrics-svc"`, `http_response_status_code="200"`)
	}
	waitFor(t, 10*time.Second, "every request in the histogram", func() bool { return count() >= requests })
	time.Sleep(200 * time.Millisecond)
	if got := count(); got != requests {
		t.Errorf("http_server_request_duration_seconds_count = %v, want exactly %d", got, requests)
	}
	if got := serverSpans(t, n, "metrics-svc", "/hello/m"); got != requests {
		t.Errorf("store holds %d server spans, want %d", got, requests)
	}

	om := scrape(t, n, true)
	ex := regexp.MustCompile(`http_server_request_duration_seconds_bucket\{[^}]*service_name="metrics-svc"[^}]*\} \d+ # \{[^}]*trace_id="([0-9a-f]{32})"`).FindAllStringSubmatch(om, -1)
	if len(ex) == 0 {
		t.Fatalf("no exemplar with a trace id in:\n%s", om)
	}
	for _, m := range ex {
		if code := apiGet(t, n, "/api/traces/"+m[1], nil); code != http.StatusOK {
			t.Errorf("exemplar trace %s: the API answers %d", m[1], code)
		}
	}
	// Each request's server span came through the ring as at least one
	// call record (72 bytes) with its 8-byte header.
	if read := metricValue(om, "latscope_ringbuf_read_bytes_total"); read < requests*80 {
		t.Errorf("latscope_ringbuf_read_bytes_total = %v, want >= %d for %d requests", read, requests*80, requests)
	}
	if strings.Contains(om, `event="ringbuf_read_bytes"`) {
		t.Error("bytes counted among latscope_events_total")
	}
	for _, want := range []string{"latscope_events_total{event=\"calls_sent\"}", "latscope_processes_traced 1", "latscope_store_traces", "latscope_agent_process_cpu_seconds_total"} {
		if !strings.Contains(om, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// A ring buffer too small for the load loses calls, and says so.
func TestNodeRingTooSmall(t *testing.T) {
	fixture.RequireRoot(t)
	dir := t.TempDir()
	bin := copyBinary(t, fixture.Build(t, "service", "local", fixture.Stripped), dir, "ring-svc")
	n := testNode(t, func(c *config.Config) {
		c.Selectors = []discovery.Selector{{Name: "ring-svc"}}
		c.RingSize = 4096
		c.Funcs = []string{"main.*", "net/http.*"} // many spans per request
	})
	s := startService(t, bin)
	waitFor(t, 5*time.Second, "the service to be traced", func() bool { return n.traced(s.pid()) != nil })
	lost := func() float64 {
		return metricValue(scrape(t, n, false), "latscope_lost_total", `reason="lost_ringbuf_full"`)
	}
	for i := 0; i < 10 && lost() == 0; i++ {
		sendLoad(t, "http://"+s.addr+"/hello/r", 2000, 16)
	}
	if lost() == 0 {
		t.Fatal("no lost_ringbuf_full with a 4 KiB ring under load")
	}
	t.Logf("lost_ringbuf_full = %v", lost())
	// The ring filled: the high-water mark says so, within the ring.
	om := scrape(t, n, false)
	if hw, size := metricValue(om, "latscope_ringbuf_pending_bytes_highest"), metricValue(om, "latscope_ringbuf_size_bytes"); hw < size/2 || hw > size {
		t.Errorf("ringbuf_pending_bytes_highest = %v with a %v-byte ring that overflowed: want between half of it and all of it", hw, size)
	}
}

// SIGHUP's reload takes new selectors: a newly matching process is
// traced, traced ones stay attached.
func TestNodeReload(t *testing.T) {
	fixture.RequireRoot(t)
	dir := t.TempDir()
	base := fixture.Build(t, "service", "local", fixture.Stripped)
	a, b := copyBinary(t, base, dir, "reload-a"), copyBinary(t, base, dir, "reload-b")
	cfg := config.Default()
	n := testNode(t, func(c *config.Config) {
		c.Selectors = []discovery.Selector{{Name: "reload-a"}}
		*cfg = *c
	})
	sa, sb := startService(t, a), startService(t, b)
	waitFor(t, 5*time.Second, "reload-a to be traced", func() bool { return n.traced(sa.pid()) != nil })
	time.Sleep(200 * time.Millisecond)
	if n.traced(sb.pid()) != nil {
		t.Fatal("reload-b traced before it was selected")
	}
	before := n.traced(sa.pid())
	next := *cfg
	next.Selectors = []discovery.Selector{{Name: "reload-b"}}
	n.Reload(&next)
	waitFor(t, 5*time.Second, "reload-b to be traced after the reload", func() bool { return n.traced(sb.pid()) != nil })
	if n.traced(sa.pid()) != before {
		t.Error("reload-a was detached or re-attached by the reload")
	}
	sb.get(t, "/hello/b")
	waitFor(t, 5*time.Second, "a span of reload-b", func() bool { return serverSpans(t, n, "reload-b", "/hello/b") == 1 })
}

// 200 processes started and stopped leave nothing behind: no image, no
// kernel map entry, no builder state, no file descriptor or goroutine.
func TestNodeStartStopCycles(t *testing.T) {
	fixture.RequireRoot(t)
	dir := t.TempDir()
	bin := copyBinary(t, fixture.Build(t, "service", "local", fixture.Stripped), dir, "cycle-svc")
	n := testNode(t, func(c *config.Config) { c.Selectors = []discovery.Selector{{Name: "cycle-svc"}} })
	cycle := func(i int) {
		s := startService(t, bin)
		waitFor(t, 5*time.Second, fmt.Sprintf("cycle %d: traced", i), func() bool { return n.traced(s.pid()) != nil })
		if i%50 == 0 {
			s.get(t, "/hello/cycle")
		}
		s.stop()
		waitFor(t, 5*time.Second, fmt.Sprintf("cycle %d: detached", i), func() bool { return n.traced(s.pid()) == nil })
	}
	cycle(0)
	settle := func() {
		n.removeDrained(true)
		runtime.GC()
		time.Sleep(100 * time.Millisecond)
	}
	settle()
	fds, goroutines := openFDs(t), runtime.NumGoroutine()
	n.mu.Lock()
	skipped := len(n.procs.skipped) // the host's unreadable processes (pid 1 in some sandboxes)
	n.mu.Unlock()
	start := time.Now()
	for i := 1; i <= 200; i++ {
		cycle(i)
	}
	t.Logf("200 start/attach/stop/detach cycles in %s", time.Since(start).Round(time.Millisecond))
	settle()
	n.tracer.mu.Lock()
	images, procs := len(n.tracer.images), len(n.tracer.procs)
	n.tracer.mu.Unlock()
	if images != 0 || procs != 0 {
		t.Errorf("after the last exit the tracer holds %d images and %d processes", images, procs)
	}
	if c := countPID(t, n, 0); c != 0 {
		t.Errorf("%d kernel map entries left", c)
	}
	n.bmu.Lock()
	bp := n.builder.Processes()
	n.bmu.Unlock()
	if bp != 0 {
		t.Errorf("the builder holds %d processes", bp)
	}
	if now := openFDs(t); now > fds+2 {
		t.Errorf("open file descriptors grew from %d to %d", fds, now)
	}
	if now := runtime.NumGoroutine(); now > goroutines+5 {
		t.Errorf("goroutines grew from %d to %d", goroutines, now)
	}
	n.mu.Lock()
	ev, sk := len(n.procs.evaluated), len(n.procs.skipped)
	n.mu.Unlock()
	if ev > 50 || sk > skipped {
		t.Errorf("the node remembers %d evaluated and %d skipped processes (%d skipped before the cycles)", ev, sk, skipped)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
