package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/latscope/latscope/agent/config"
	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/internal/fixture"
)

// testNode runs a node agent in the test's process until the test ends.
func testNode(t *testing.T, mutate func(*config.Config)) *Node {
	t.Helper()
	return testNodeWith(t, NodeOptions{}, mutate)
}

// testNodeWith is testNode with options (a Kubernetes client); its log
// goes to the test's.
func testNodeWith(t *testing.T, opts NodeOptions, mutate func(*config.Config)) *Node {
	t.Helper()
	fixture.RequireRoot(t)
	cfg := config.Default()
	cfg.HTTP = "127.0.0.1:0"
	cfg.SettleReturns = -1
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	opts.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n, err := StartNodeWith(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node: %v", err)
		}
	})
	waitFor(t, 10*time.Second, "the node to be ready", func() bool { return n.ready() == nil })
	return n
}

// testWriter sends log lines to t.Log while the test runs.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// service is a running service fixture.
type service struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// startService runs the service fixture binary bin and waits until it
// listens; it is killed when the test ends.
func startService(t *testing.T, bin string, args ...string) *service {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &service{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("%s did not start: %v", bin, err)
	}
	s.addr = strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	return s
}

func (s *service) pid() int { return s.cmd.Process.Pid }

func (s *service) stop() {
	s.cmd.Process.Kill()
	<-s.done
}

func (s *service) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + s.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// copyBinary copies bin to dir/name: another file (inode), same program.
func copyBinary(t *testing.T, bin, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	if err := os.WriteFile(out, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

// apiGet decodes the agent's JSON answer to path into v.
func apiGet(t *testing.T, n *Node, path string, v any) int {
	t.Helper()
	resp, err := http.Get("http://" + n.Addr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	return resp.StatusCode
}

// jaegerTraces are the traces /api/traces answers, as far as tests read them.
type jaegerTraces struct {
	Data []struct {
		TraceID string `json:"traceID"`
		Spans   []struct {
			SpanID        string `json:"spanID"`
			OperationName string `json:"operationName"`
			ProcessID     string `json:"processID"`
			Tags          []struct {
				Key   string `json:"key"`
				Value any    `json:"value"`
			} `json:"tags"`
		} `json:"spans"`
		Processes map[string]struct {
			ServiceName string `json:"serviceName"`
		} `json:"processes"`
	} `json:"data"`
}

// serverSpans counts the server spans of service whose url.path is path.
func serverSpans(t *testing.T, n *Node, service, path string) int {
	t.Helper()
	var tr jaegerTraces
	apiGet(t, n, "/api/traces?limit=0&service="+service, &tr)
	count := 0
	for _, trace := range tr.Data {
		for _, s := range trace.Spans {
			for _, tag := range s.Tags {
				if tag.Key == "url.path" && tag.Value == path {
					count++
				}
			}
		}
	}
	return count
}

func (n *Node) traced(pid int) *nodeProc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.procs.traced[pid]
}

func (n *Node) skippedReason(pid int) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.procs.skipped[pid].Reason
}

// A node traces what its selectors pick from each process's exec:
// replicas share one executable's probes, a stripped PIE is traced too,
// what is not selected is left alone, a selected process latscope cannot
// read is reported with the reason, and an exit frees the process's
// state (and the executable's probes with its last process).
func TestNodeDiscovery(t *testing.T) {
	fixture.RequireRoot(t)
	dir := t.TempDir()
	svc := copyBinary(t, fixture.Build(t, "service", "local", fixture.Default), dir, "svc-a")
	pie := copyBinary(t, fixture.Build(t, "service", fixture.Matrix()[0], fixture.StrippedPIE), dir, "svc-pie")
	other := copyBinary(t, svc, dir, "other")
	notGo := copyBinary(t, "/bin/sleep", dir, "svc-sleep")
	i386 := filepath.Join(dir, "svc-386")
	build := exec.Command("go", "build", "-o", i386, ".")
	build.Dir = fixture.SourceDir("service")
	build.Env = append(os.Environ(), "GOARCH=386", "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a 386 service: %v\n%s", err, out)
	}

	n := testNode(t, func(c *config.Config) {
		c.Selectors = []discovery.Selector{{Exe: dir + "/svc-*"}}
	})

	a1 := startService(t, svc)
	a2 := startService(t, svc)
	p := startService(t, pie)
	o := startService(t, other)
	sleeper := exec.Command(notGo, "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	s386 := startService(t, i386)

	var latencies []time.Duration
	for _, s := range []*service{a1, a2, p} {
		waitFor(t, 5*time.Second, fmt.Sprintf("pid %d to be traced", s.pid()), func() bool { return n.traced(s.pid()) != nil })
		np := n.traced(s.pid())
		if np.execToAttached <= 0 || np.execToAttached > time.Second {
			t.Errorf("pid %d: attached %s after its exec, want (0, 1s]", s.pid(), np.execToAttached)
		}
		latencies = append(latencies, np.execToAttached)
	}
	slices.Sort(latencies)
	t.Logf("exec to attached: %v (median %v)", latencies, latencies[len(latencies)/2])
	waitFor(t, 5*time.Second, "the non-Go and 386 processes to be reported", func() bool {
		return n.skippedReason(sleeper.Process.Pid) != "" && n.skippedReason(s386.pid()) != ""
	})
	for pid, want := range map[int]string{sleeper.Process.Pid: "Go", s386.pid(): "386"} {
		if r := n.skippedReason(pid); !strings.Contains(r, want) {
			t.Errorf("pid %d skipped with reason %q, want it to mention %q", pid, r, want)
		}
	}
	if n.traced(o.pid()) != nil {
		t.Errorf("unselected pid %d is traced", o.pid())
	}

	// Replicas share one image: same links, one executable.
	ta1, ta2, tp := n.traced(a1.pid()), n.traced(a2.pid()), n.traced(p.pid())
	if ta1.img != ta2.img || ta1.img == tp.img {
		t.Fatalf("images: replicas %p %p, other binary %p: replicas must share theirs, and only theirs", ta1.img, ta2.img, tp.img)
	}
	// One uprobe_multi link per program, not per probe site: fewer links
	// than sites (a fixed bound broke each time a library gained a program).
	links, sites := ta1.Links(), ta1.Probes()
	if n.tracer.multi && links >= sites {
		t.Errorf("%d links for %d probe sites of one executable with uprobe_multi: want one per program", links, sites)
	}

	for _, s := range []*service{a1, a2, p} {
		if got := s.get(t, "/hello/x"); got != "hello X\n" {
			t.Fatalf("pid %d answered %q", s.pid(), got)
		}
	}
	for _, svc := range []string{"svc-a", "svc-pie"} {
		waitFor(t, 5*time.Second, "server spans of "+svc, func() bool {
			return serverSpans(t, n, svc, "/hello/x") >= map[string]int{"svc-a": 2, "svc-pie": 1}[svc]
		})
	}

	// An exit frees the process's state; the executable's probes stay
	// while a replica runs, and go with the last one.
	a1.stop()
	waitFor(t, 5*time.Second, "pid to be detached", func() bool { return n.traced(a1.pid()) == nil })
	if ta2.Links() != links {
		t.Errorf("replica's links went from %d to %d when the other replica exited", links, ta2.Links())
	}
	assertNoKernelState(t, n, a1.pid())
	a2.stop()
	waitFor(t, 5*time.Second, "pid to be detached", func() bool { return n.traced(a2.pid()) == nil })
	n.tracer.mu.Lock()
	_, still := n.tracer.images[ta1.img.id]
	n.tracer.mu.Unlock()
	if still {
		t.Error("the executable's image outlived its last process")
	}
	assertNoKernelState(t, n, a2.pid())

	// A restart is traced again.
	a3 := startService(t, svc)
	waitFor(t, 5*time.Second, "the restarted service to be traced", func() bool { return n.traced(a3.pid()) != nil })
	a3.get(t, "/hello/again")
	waitFor(t, 5*time.Second, "a span of the restarted service", func() bool { return serverSpans(t, n, "svc-a", "/hello/again") == 1 })
}

// assertNoKernelState checks that no kernel map holds an entry of pid.
func assertNoKernelState(t *testing.T, n *Node, pid int) {
	t.Helper()
	if n := countPID(t, n, uint32(pid)); n > 0 {
		t.Errorf("pid %d still has %d kernel map entries after its exit", pid, n)
	}
}

// countPID counts the entries of pid (0: of every pid) in the kernel's
// per-process maps: procs, lib_offsets, goroutines, links, ret_sites.
func countPID(t *testing.T, n *Node, pid uint32) int {
	t.Helper()
	objs := n.tracer.objs
	count := 0
	var val []byte
	var p uint32
	count += countKeys(t, objs.Procs.Iterate(), &p, &val, func() uint32 { return p }, pid)
	var lk calltracer.LibKey
	count += countKeys(t, objs.LibOffsets.Iterate(), &lk, &val, func() uint32 { return lk.Pid }, pid)
	var gk calltracer.TracerGkey
	count += countKeys(t, objs.Goroutines.Iterate(), &gk, &val, func() uint32 { return gk.Pid }, pid)
	count += countKeys(t, objs.Links.Iterate(), &gk, &val, func() uint32 { return gk.Pid }, pid)
	var rk calltracer.RetKey
	count += countKeys(t, objs.RetSites.Iterate(), &rk, &val, func() uint32 { return rk.Pid }, pid)
	return count
}

func countKeys(t *testing.T, it *ebpf.MapIterator, key any, val *[]byte, pidOf func() uint32, pid uint32) int {
	t.Helper()
	n := 0
	for it.Next(key, val) {
		if pid == 0 || pidOf() == pid {
			n++
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// A service's first request, a second after its exec, is traced: the
// probes went in at its exec, not at a later poll.
func TestNodeFirstRequest(t *testing.T) {
	fixture.RequireRoot(t)
	dir := t.TempDir()
	svc := copyBinary(t, fixture.Build(t, "service", "local", fixture.Stripped), dir, "first")
	n := testNode(t, func(c *config.Config) {
		c.Selectors = []discovery.Selector{{Name: "first"}}
		c.RescanInterval = time.Hour // only the exec event can find it
	})
	started := time.Now()
	s := startService(t, svc)
	time.Sleep(time.Until(started.Add(time.Second)))
	if got := s.get(t, "/hello/first"); got != "hello FIRST\n" {
		t.Fatalf("answered %q", got)
	}
	waitFor(t, 5*time.Second, "the first request's server span", func() bool { return serverSpans(t, n, "first", "/hello/first") == 1 })
}
