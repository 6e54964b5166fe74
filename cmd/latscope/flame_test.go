package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/internal/fixture"
)

// demoService is one of the demo's services running for a test.
type demoService struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// startDemoService runs a demo binary with args and waits for its
// "listening" line; it is killed when the test ends.
func startDemoService(t *testing.T, bin string, env []string, args ...string) *demoService {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &demoService{cmd: cmd, done: make(chan struct{})}
	addrs := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			if m := regexp.MustCompile(`msg=listening .*addr=(\S+)`).FindStringSubmatch(sc.Text()); m != nil {
				addrs <- m[1]
			}
		}
		cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-s.done })
	select {
	case s.addr = <-addrs:
	case <-s.done:
		t.Fatalf("%s exited before listening", bin)
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not listen", bin)
	}
	return s
}

func (s *demoService) stop(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("a demo service did not stop on SIGTERM")
	}
}

func repoRoot() string { return filepath.Join("..", "..") }

// requestsTraced lists the catalog product traces the agent holds whose
// request started in [start, end].
func requestsTraced(t *testing.T, agentURL string, start, end time.Time) []string {
	t.Helper()
	v := url.Values{"service": {"catalog"}, "operation": {"GET /product/{id}"}, "limit": {"0"},
		"start": {fmt.Sprint(start.UnixMicro())}, "end": {fmt.Sprint(end.UnixMicro())}}
	resp, err := http.Get(agentURL + "/api/traces?" + v.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	traces, err := api.DecodeTraces(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tr := range traces {
		ids = append(ids, tr[0].TraceID.String())
	}
	return ids
}

func window(start, end time.Time) string {
	return fmt.Sprintf("start=%d&end=%d", start.UnixMicro(), end.UnixMicro())
}

func getProfile(t *testing.T, u string) *profile.Profile {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", u, resp.Status, b)
	}
	p, err := profile.Parse(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return p
}

// byLeaf sums a profile's critical_path values by leaf frame.
func byLeaf(p *profile.Profile) map[string]int64 {
	out := map[string]int64{}
	for _, s := range p.Sample {
		out[s.Location[0].Line[0].Function.Name] += s.Value[0]
	}
	return out
}

// firstTopRow is the name in the first row of `go tool pprof -top`.
func firstTopRow(t *testing.T, out string) string {
	t.Helper()
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.Contains(l, "flat%") && i+1 < len(lines) {
			f := strings.Fields(lines[i+1])
			if len(f) >= 6 {
				return strings.Join(f[5:], " ")
			}
		}
	}
	t.Fatalf("no rows in pprof -top output:\n%s", out)
	return ""
}

// On real traces of the demo through the agent: profiles parse back,
// their totals are the requests' durations to the nanosecond, filters
// select exactly the expected requests, and a delay injected into pricing
// tops the diff of its window against the baseline — in the API, in
// `go tool pprof` (the real one) and in the embedded pprof UI.
func TestFlameDemo(t *testing.T) {
	fixture.RequireRoot(t)
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but redis-server is not installed")
		}
		t.Skip("SKIP: redis-server not installed: apt-get install -y redis-server")
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(filepath.Separator), "./catalog", "./pricing", "./reviews", "./inventory")
	build.Dir = filepath.Join(repoRoot(), "examples", "demo")
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the demo: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	redisPort := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	redis := exec.Command(redisBin, "--port", redisPort, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	redis.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := redis.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { redis.Process.Kill(); redis.Wait() })

	a := startAgent(t, "--exe", filepath.Join(bin, "*"), "--funcs", "main.*")
	var pricing *demoService
	waitUntil(t, 10*time.Second, "redis", func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+redisPort)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	pricing = startDemoService(t, filepath.Join(bin, "pricing"), nil, "-listen", "127.0.0.1:0", "-redis", "127.0.0.1:"+redisPort)
	reviews := startDemoService(t, filepath.Join(bin, "reviews"), []string{"OTEL_TRACES_EXPORTER=none"}, "-listen", "127.0.0.1:0")
	inventory := startDemoService(t, filepath.Join(bin, "inventory"), nil, "-listen", "127.0.0.1:0", "-reviews", "http://"+reviews.addr)
	catalog := startDemoService(t, filepath.Join(bin, "catalog"), nil, "-listen", "127.0.0.1:0", "-pricing", pricing.addr, "-reviews", "http://"+reviews.addr, "-inventory", "http://"+inventory.addr)
	for _, s := range []*demoService{pricing, reviews, inventory, catalog} {
		waitUntil(t, 20*time.Second, "the demo to be traced", func() bool { return a.traces(t, s.cmd.Process.Pid) })
	}
	get := func(id int) error {
		resp, err := http.Get(fmt.Sprintf("http://%s/product/%d", catalog.addr, id))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET /product/%d: %s", id, resp.Status)
		}
		return nil
	}
	// Each window's 40 requests, with 500 ms of quiet on either side so
	// that windows given relative to now (by the CLI, a little later)
	// select the same requests.
	const quiet = 500 * time.Millisecond
	load := func() (time.Time, time.Time) {
		time.Sleep(quiet)
		start := time.Now()
		for i := range 40 {
			if err := get(1 + i%20); err != nil {
				t.Fatal(err)
			}
		}
		end := time.Now()
		time.Sleep(quiet)
		return start, end
	}
	for i := range 5 { // warm the connections and the caches
		if err := get(1 + i); err != nil {
			t.Fatal(err)
		}
	}
	baseStart, baseEnd := load()

	// A deploy makes pricing slow: 30 ms more per call.
	pricing.stop(t)
	pricing = startDemoService(t, filepath.Join(bin, "pricing"), nil, "-listen", pricing.addr, "-redis", "127.0.0.1:"+redisPort, "-delay", "30ms")
	waitUntil(t, 20*time.Second, "the new pricing to be traced", func() bool { return a.traces(t, pricing.cmd.Process.Pid) })
	waitUntil(t, 20*time.Second, "catalog to reach the new pricing", func() bool { return get(1) == nil })
	spikeStart, spikeEnd := load()

	var base, spike, both []string
	waitUntil(t, 20*time.Second, "40 traces per window in the agent", func() bool {
		base, spike = requestsTraced(t, a.url, baseStart, baseEnd), requestsTraced(t, a.url, spikeStart, spikeEnd)
		return len(base) == 40 && len(spike) == 40
	})
	// From the baseline's start to the spike's end: the windows, and the
	// requests that found the new pricing between them.
	both = requestsTraced(t, a.url, baseStart, spikeEnd)
	// Each request's duration to the nanosecond, from its critical path.
	durations := map[string]int64{}
	for _, id := range both {
		out, stderr, code := run(t, "explain", id, "--agent", a.url, "--json")
		var cp api.CriticalPath
		if code != 0 || json.Unmarshal([]byte(out), &cp) != nil || cp.TotalNs <= 0 {
			t.Fatalf("explain %s --json (exit %d): %s%s", id, code, out, stderr)
		}
		durations[id] = cp.TotalNs
	}
	sum := func(ids []string, keep func(int64) bool) (n, total int64) {
		for _, id := range ids {
			if keep == nil || keep(durations[id]) {
				n++
				total += durations[id]
			}
		}
		return n, total
	}
	allDurs := make([]int64, 0, len(both))
	for _, id := range both {
		allDurs = append(allDurs, durations[id])
	}
	slices.Sort(allDurs)
	tenth := allDurs[len(allDurs)-int(math.Ceil(float64(len(allDurs))*0.1))]

	q := a.url + "/api/flame?service=catalog&"
	cases := []struct {
		name, query string
		ids         []string
		keep        func(int64) bool
	}{
		{"baseline window", window(baseStart, baseEnd), base, nil},
		{"spike window", window(spikeStart, spikeEnd), spike, nil},
		{"both, operation", window(baseStart, spikeEnd) + "&operation=GET+/product/{id}", both, nil},
		{"minDuration", window(baseStart, spikeEnd) + "&minDuration=25ms", both, func(d int64) bool { return d >= int64(25*time.Millisecond) }},
		{"slowest 10%", window(baseStart, spikeEnd) + "&slowest=10%25", both, func(d int64) bool { return d >= tenth }},
		{"errors", window(baseStart, spikeEnd) + "&error=true", both, func(int64) bool { return false }},
	}
	for _, tc := range cases {
		p := getProfile(t, q+tc.query)
		var ns, reqs int64
		for _, s := range p.Sample {
			ns += s.Value[0]
			reqs += s.Value[1]
		}
		wantN, wantNs := sum(tc.ids, tc.keep)
		if reqs != wantN || ns != wantNs {
			t.Errorf("%s: %d requests, %d ns; want %d requests, %d ns (the sum of their durations)", tc.name, reqs, ns, wantN, wantNs)
		}
	}

	// The diff of the spike against the baseline, per request: pricing's
	// frame gained the most.
	d := getProfile(t, q+window(spikeStart, spikeEnd)+fmt.Sprintf("&baselineStart=%d&baselineEnd=%d&normalize=true", baseStart.UnixMicro(), baseEnd.UnixMicro()))
	var top string
	var most int64
	for leaf, v := range byLeaf(d) {
		if v > most {
			top, most = leaf, v
		}
	}
	if !strings.HasPrefix(top, "pricing ") || most < int64(25*time.Millisecond) {
		t.Errorf("diff: the frame that gained most is %q (+%v per request), want pricing's (+30ms)", top, time.Duration(most))
	}

	// The real pprof reads the agent's URL.
	pprofEnv := append(os.Environ(), "PPROF_TMPDIR="+t.TempDir())
	top1 := exec.Command("go", "tool", "pprof", "-top", q+window(spikeStart, spikeEnd))
	top1.Env = pprofEnv
	out, err := top1.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "catalog GET /product/{id}") || !strings.HasPrefix(firstTopRow(t, string(out)), "pricing ") {
		t.Errorf("go tool pprof -top URL: %v\n%s", err, out)
	}
	// The CLI writes the diff and both windows; pprof's -diff_base on
	// them puts pricing first.
	dir := t.TempDir()
	file := filepath.Join(dir, "spike.pb.gz")
	// Relative windows, as a user gives them, reaching into the quiet
	// around each window.
	ago := func(t0 time.Time, by time.Duration) string {
		return (time.Since(t0).Truncate(time.Millisecond) + by).String()
	}
	_, stderr, code := run(t, "flame", "--agent", a.url, "--service", "catalog", "--since", ago(spikeStart, quiet/2),
		"--baseline-since", ago(baseStart, quiet/2), "--baseline-until", ago(baseEnd, -quiet/2),
		"--normalize", "-o", file)
	if code != 0 || !strings.Contains(stderr, "40 requests") {
		t.Fatalf("latscope flame (exit %d): %s", code, stderr)
	}
	diff := exec.Command("go", "tool", "pprof", "-top", "-diff_base", filepath.Join(dir, "spike.base.pb.gz"), filepath.Join(dir, "spike.spike.pb.gz"))
	diff.Env = pprofEnv
	if out, err := diff.CombinedOutput(); err != nil || !strings.HasPrefix(firstTopRow(t, string(out)), "pricing ") {
		t.Errorf("go tool pprof -diff_base: %v\n%s", err, out)
	}
	if p, err := os.Open(file); err != nil {
		t.Error(err)
	} else if _, err := profile.Parse(p); err != nil {
		t.Errorf("the diff file: %v", err)
	}
	// Fleet-wide: the same profile from the Jaeger query API (the agent
	// speaks it too).
	_, stderr, code = run(t, "flame", "--jaeger", a.url, "--service", "catalog", "--since", ago(spikeStart, quiet/2), "-o", filepath.Join(dir, "jaeger.pb.gz"))
	if code != 0 || !strings.Contains(stderr, "40 requests") {
		t.Errorf("latscope flame --jaeger (exit %d): %s", code, stderr)
	}

	// The embedded pprof UI, in a real HTTP client.
	for page, want := range map[string]string{"flamegraph": "pricing main.(*pricer).GetPrice", "top": "pricing main.(*pricer).GetPrice"} {
		resp, err := http.Get(a.url + "/pprof/" + page + "?service=catalog&" + window(spikeStart, spikeEnd))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("/pprof/%s: %s, has %q: %v", page, resp.Status, want, strings.Contains(string(body), want))
		}
	}
	out2, stderr, code := run(t, "explain", spike[0], "--agent", a.url)
	if code != 0 || !strings.Contains(out2, "waiting on pricing demo.Pricing/GetPrice") {
		t.Errorf("latscope explain (exit %d):\n%s%s", code, out2, stderr)
	}
}
