// Package e2e runs the demo system end to end: Jaeger v2, redis, the four
// demo services, and the latscope binary tracing catalog and pricing, and
// checks in Jaeger that every request is one trace across all of them.
package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/internal/jaegertest"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func build(t *testing.T, dir string, out string, pkgs ...string) {
	t.Helper()
	args := append([]string{"build", "-o", out + string(os.PathSeparator)}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build in %s: %v\n%s", dir, err, b)
	}
}

// proc is a started process whose output is kept and scanned for lines.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	line chan string
	done chan struct{}
}

func start(t *testing.T, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	return startProc(t, name, env, &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}, bin, args...)
}

// startGroup starts a process in a process group of its own, as a shell
// job is: a signal to the group reaches it and its children. Cleanup
// kills the group.
func startGroup(t *testing.T, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := startProc(t, name, env, &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}, bin, args...)
	t.Cleanup(func() { syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) })
	return p
}

func startProc(t *testing.T, name string, env []string, attr *syscall.SysProcAttr, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, line: make(chan string, 1024), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.SysProcAttr = attr
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.line <- sc.Text():
			default:
			}
		}
	}()
	go func() { p.cmd.Wait(); w.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// await waits for a line containing s and returns it.
func (p *proc) await(t *testing.T, s string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-p.line:
			if strings.Contains(l, s) {
				return l
			}
		case <-p.done:
			t.Fatalf("%s exited waiting for %q:\n%s", p.name, s, p.output())
		case <-deadline:
			t.Fatalf("%s: no %q after %v:\n%s", p.name, s, timeout, p.output())
		}
	}
}

// interrupt sends SIGINT and waits for a clean exit.
func (p *proc) interrupt(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit on SIGINT", p.name)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("%s exited %d:\n%s", p.name, code, p.output())
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestDemoInJaeger: requests through gateway (OTel SDK) to catalog
// (traced by latscope, no tracing code), which queries SQLite and calls
// pricing (gRPC), reviews (OTel SDK) and inventory (CloudWeGo Hertz,
// traced by latscope, which calls reviews too) over HTTP, are each one
// trace in Jaeger, with catalog's and inventory's spans between the SDKs'
// spans.
func TestDemoInJaeger(t *testing.T) {
	fixture.RequireRoot(t)
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but redis-server is not installed (.ci/run installs it)")
		}
		t.Skip("SKIP: redis-server not installed: apt-get install -y redis-server")
	}
	bin := t.TempDir()
	build(t, filepath.Join(repoRoot(), "examples", "demo"), bin, "./gateway", "./catalog", "./pricing", "./reviews", "./inventory")
	build(t, repoRoot(), bin, "./cmd/latscope")
	j := jaegertest.Start(t)

	redisPort := freePort(t)
	redis := start(t, "redis", nil, redisBin, "--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	redis.await(t, "Ready to accept connections", 10*time.Second)

	otlp := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + j.OTLPHTTP, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "OTEL_BSP_SCHEDULE_DELAY=100"}
	addr := func(p *proc) string {
		l := p.await(t, "msg=listening", 20*time.Second)
		_, a, _ := strings.Cut(l, "addr=")
		return strings.Fields(a)[0]
	}
	pricing := start(t, "pricing", nil, filepath.Join(bin, "pricing"), "-listen", "127.0.0.1:0", "-redis", "127.0.0.1:"+strconv.Itoa(redisPort))
	pricingAddr := addr(pricing)
	reviews := start(t, "reviews", otlp, filepath.Join(bin, "reviews"), "-listen", "127.0.0.1:0")
	reviewsAddr := addr(reviews)
	inventory := start(t, "inventory", nil, filepath.Join(bin, "inventory"), "-listen", "127.0.0.1:0", "-reviews", "http://"+reviewsAddr)
	inventoryAddr := addr(inventory)
	catalog := start(t, "catalog", nil, filepath.Join(bin, "catalog"), "-listen", "127.0.0.1:0", "-pricing", pricingAddr, "-reviews", "http://"+reviewsAddr,
		"-inventory", "http://"+inventoryAddr)
	catalogAddr := addr(catalog)
	gateway := start(t, "gateway", otlp, filepath.Join(bin, "gateway"), "-listen", "127.0.0.1:0", "-catalog", "http://"+catalogAddr)
	gatewayAddr := addr(gateway)

	// As on a running system, catalog's connections to pricing (a gRPC
	// channel), reviews and inventory (keep-alive connections), and
	// inventory's to reviews, are open before latscope attaches: one
	// request straight to catalog opens them.
	warm, err := http.Get("http://" + catalogAddr + "/product/1")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, warm.Body)
	warm.Body.Close()

	// latscope exports over OTLP/gRPC, configured as any OTel component.
	lsEnv := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + j.OTLPGRPC, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"}
	// One latscope traces all three: a node runs one (two would contend
	// for the socket programs that carry trace context).
	tracer := start(t, "latscope", lsEnv, filepath.Join(bin, "latscope"), "trace",
		"--pid", strconv.Itoa(catalog.cmd.Process.Pid)+","+strconv.Itoa(pricing.cmd.Process.Pid)+","+strconv.Itoa(inventory.cmd.Process.Pid),
		"--funcs", "main.*", "--tree", "/dev/null", "--settle-returns", "1s")
	for range 3 {
		tracer.await(t, "msg=tracing", 60*time.Second)
	}

	const requests = 40
	get := func(i int) {
		resp, err := http.Get(fmt.Sprintf("http://%s/product/%d", gatewayAddr, i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
	}
	for i := 1; i <= requests/2; i++ {
		get(i)
	}
	// The client calls' entry points are reached through interfaces and
	// tail callers: their returns are learned per call site, and once
	// settled their own RET probes go. The second half of the requests
	// is traced that way.
	for missing := map[string]bool{
		"net/http.(*Transport).roundTrip": true, "database/sql.(*DB).queryDC": true, "google.golang.org/grpc.(*ClientConn).Invoke": true,
		"github.com/cloudwego/hertz/pkg/route.(*Engine).ServeHTTP": true, "github.com/cloudwego/hertz/pkg/protocol/http1.(*HostClient).Do": true,
	}; len(missing) > 0; {
		l := tracer.await(t, `msg="returns now seen only where callers resume"`, 30*time.Second)
		for fn := range missing {
			if strings.Contains(l, "func="+fn+" ") {
				delete(missing, fn)
			}
		}
	}
	for i := requests/2 + 1; i <= requests; i++ {
		get(i)
	}
	tracer.interrupt(t)
	if out := tracer.output(); strings.Contains(out, "LOSS") {
		t.Errorf("latscope lost events:\n%s", out)
	}

	traces := j.WaitForTraces(t, "gateway", requests, 30*time.Second)
	if len(traces) != requests {
		t.Fatalf("%d gateway traces, want %d", len(traces), requests)
	}
	for i, tr := range traces {
		full := j.Trace(t, tr.TraceID)
		if i == 0 {
			t.Logf("trace %s: %v", full.TraceID, names(full.Spans))
		}
		checkTrace(t, full)
	}

	// Every pricing span is in one of those traces: none started its own.
	if extra := j.Traces(t, "pricing", 10*requests, time.Hour); len(extra) != requests {
		t.Errorf("%d traces hold pricing spans, want %d (one per request)", len(extra), requests)
	}
}

// checkTrace: one request's trace, rooted at gateway's server span.
func checkTrace(t *testing.T, tr jaegertest.Trace) {
	t.Helper()
	byID := map[string]jaegertest.Span{}
	for _, s := range tr.Spans {
		byID[s.SpanID] = s
	}
	var roots []jaegertest.Span
	for _, s := range tr.Spans {
		p := s.Parent()
		if p == "" {
			roots = append(roots, s)
			continue
		}
		parent, ok := byID[p]
		if !ok {
			t.Errorf("trace %s: orphan span %s/%s (parent %s missing)", tr.TraceID, s.ServiceName, s.OperationName, p)
			continue
		}
		// Child inside parent, allowing 2ms of clock skew between processes.
		const skew = 2000
		if s.StartTime < parent.StartTime-skew || s.StartTime+s.Duration > parent.StartTime+parent.Duration+skew {
			t.Errorf("trace %s: %s/%s [%d+%d] outside parent %s/%s [%d+%d]", tr.TraceID, s.ServiceName, s.OperationName, s.StartTime, s.Duration,
				parent.ServiceName, parent.OperationName, parent.StartTime, parent.Duration)
		}
	}
	if len(roots) != 1 || roots[0].ServiceName != "gateway" || roots[0].Tags["span.kind"] != "server" {
		t.Fatalf("trace %s: roots %v, want gateway's server span", tr.TraceID, names(roots))
	}
	find := func(service, kind string, match func(jaegertest.Span) bool) jaegertest.Span {
		for _, s := range tr.Spans {
			if s.ServiceName == service && s.Tags["span.kind"] == kind && (match == nil || match(s)) {
				return s
			}
		}
		t.Fatalf("trace %s: no %s %s span among %v", tr.TraceID, service, kind, names(tr.Spans))
		return jaegertest.Span{}
	}
	gwClient := find("gateway", "client", nil)
	catServer := find("catalog", "server", nil)
	if catServer.Parent() != gwClient.SpanID {
		t.Errorf("catalog's server span is not a child of gateway's client span")
	}
	db := find("catalog", "client", func(s jaegertest.Span) bool { return s.Tags["db.system.name"] == "sqlite" })
	if q := fmt.Sprint(db.Tags["db.query.text"]); !strings.Contains(q, "FROM products WHERE id = ?") {
		t.Errorf("query text %q", q)
	}
	rpc := find("catalog", "client", func(s jaegertest.Span) bool { return s.Tags["rpc.system"] == "grpc" })
	if rpc.OperationName != "demo.Pricing/GetPrice" || rpc.Tags["rpc.grpc.status_code"] != int64(0) {
		t.Errorf("gRPC client span %s, status %v", rpc.OperationName, rpc.Tags["rpc.grpc.status_code"])
	}
	// Pricing's gRPC server span continues catalog's client span (the
	// traceparent latscope put in the HEADERS frame); its redis calls
	// are under it.
	priceServer := find("pricing", "server", nil)
	if priceServer.OperationName != "demo.Pricing/GetPrice" || priceServer.Parent() != rpc.SpanID {
		t.Errorf("pricing's server span %s (parent %s) is not a child of catalog's gRPC client span %s", priceServer.OperationName, priceServer.Parent(), rpc.SpanID)
	}
	redisCalls := 0
	for _, s := range tr.Spans {
		if s.Tags["db.system.name"] == "redis" {
			redisCalls++
			if s.ServiceName != "pricing" || !isDescendant(byID, s, priceServer.SpanID) {
				t.Errorf("redis %s/%s not under pricing's server span", s.ServiceName, s.OperationName)
			}
		}
	}
	if redisCalls == 0 {
		t.Errorf("trace %s has no redis span: %v", tr.TraceID, names(tr.Spans))
	}
	revClient := find("catalog", "client", func(s jaegertest.Span) bool { return strings.Contains(fmt.Sprint(s.Tags["url.full"]), "/reviews/") })
	if code := revClient.Tags["http.response.status_code"]; code != int64(200) {
		t.Errorf("reviews client span: status %v (%T), want 200", code, code)
	}
	// reviews' server span for catalog's call continues catalog's client
	// span (the traceparent latscope inserted).
	find("reviews", "server", func(s jaegertest.Span) bool { return s.Parent() == revClient.SpanID })

	// The Hertz hop: inventory's server span, named by its route,
	// continues catalog's client span; its Hertz client call to reviews
	// is under it, and reviews continues that one.
	invClient := find("catalog", "client", func(s jaegertest.Span) bool { return strings.Contains(fmt.Sprint(s.Tags["url.full"]), "/stock/") })
	invServer := find("inventory", "server", nil)
	if invServer.OperationName != "GET /stock/:id" || invServer.Parent() != invClient.SpanID || invServer.Tags["http.route"] != "/stock/:id" {
		t.Errorf("inventory's server span %s (route %v, parent %s) is not GET /stock/:id under catalog's client span %s",
			invServer.OperationName, invServer.Tags["http.route"], invServer.Parent(), invClient.SpanID)
	}
	invRevClient := find("inventory", "client", func(s jaegertest.Span) bool { return strings.Contains(fmt.Sprint(s.Tags["url.full"]), "/reviews/") })
	if !isDescendant(byID, invRevClient, invServer.SpanID) || invRevClient.Tags["http.response.status_code"] != int64(200) {
		t.Errorf("inventory's client span %s (status %v) is not a 200 under its server span", invRevClient.OperationName, invRevClient.Tags["http.response.status_code"])
	}
	find("reviews", "server", func(s jaegertest.Span) bool { return s.Parent() == invRevClient.SpanID })

	for _, s := range []jaegertest.Span{db, rpc, revClient, invClient} {
		if !isDescendant(byID, s, catServer.SpanID) {
			t.Errorf("%s is not under catalog's server span", s.OperationName)
		}
	}
}

func underSpan(tr jaegertest.Trace, s jaegertest.Span, ancestor string) bool {
	byID := map[string]jaegertest.Span{}
	for _, x := range tr.Spans {
		byID[x.SpanID] = x
	}
	return isDescendant(byID, s, ancestor)
}

func isDescendant(byID map[string]jaegertest.Span, s jaegertest.Span, ancestor string) bool {
	for i := 0; i < 64; i++ {
		p := s.Parent()
		if p == ancestor {
			return true
		}
		var ok bool
		if s, ok = byID[p]; !ok {
			return false
		}
	}
	return false
}

func names(spans []jaegertest.Span) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.ServiceName+"/"+s.OperationName)
	}
	return out
}

// TestDemoScript runs make demo's script (scripts/demo.sh), the main job,
// on free ports with a short load phase: it must build and start
// everything, print a trace of catalog as latscope saw it, keep running
// until Ctrl-C (SIGINT to its process group, as a terminal sends it), then
// stop every process it started. Its last line is the web UI's address.
func TestDemoScript(t *testing.T) {
	fixture.RequireRoot(t)
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but redis-server is not installed (.ci/run installs it)")
		}
		t.Skip("SKIP: redis-server not installed: apt-get install -y redis-server")
	}
	env := []string{"JAEGER_BIN=" + jaegertest.Build(t), "DEMO_LOAD=3s"}
	ports := map[string]int{}
	for _, name := range []string{"GATEWAY_PORT", "CATALOG_PORT", "PRICING_PORT", "REVIEWS_PORT", "INVENTORY_PORT", "REDIS_PORT", "LATSCOPE_AGENT_PORT",
		"LATSCOPE_JAEGER_QUERY_PORT", "LATSCOPE_JAEGER_OTLP_GRPC_PORT", "LATSCOPE_JAEGER_OTLP_HTTP_PORT"} {
		ports[name] = freePort(t)
		env = append(env, fmt.Sprintf("%s=%d", name, ports[name]))
	}
	demo := startGroup(t, "demo", env, filepath.Join(repoRoot(), "scripts", "demo.sh"))
	demo.await(t, "demo: one trace of catalog", 10*time.Minute)
	last := demo.await(t, "(Ctrl-C to stop)", time.Minute)
	// It ends with the web UI's address, and the UI answers there.
	ui := fmt.Sprintf("http://127.0.0.1:%d/", ports["LATSCOPE_AGENT_PORT"])
	if !strings.Contains(last, "web UI: "+ui) {
		t.Errorf("the demo's last line %q does not give the web UI's address %s", last, ui)
	} else if resp, err := http.Get(ui); err != nil {
		t.Errorf("GET %s: %v", ui, err)
	} else {
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(page), "catalog") {
			t.Errorf("GET %s: %s, catalog on the page: %v", ui, resp.Status, strings.Contains(string(page), "catalog"))
		}
	}
	out := demo.output()
	tree := out[strings.Index(out, "demo: one trace of catalog"):]
	for _, want := range []string{"main.(*handler).product", "SELECT", "demo.Pricing/GetPrice", "GET"} {
		if !strings.Contains(tree, want) {
			t.Errorf("the trace the demo printed has no %q:\n%s", want, tree)
		}
	}
	// The Hertz hop: inventory's server span under catalog's call to it,
	// and its Hertz client's call to reviews under that.
	if stock := subtree(tree, "main.(*handler).stock"); !hasSpan(stock, "GET /stock/:id") || !hasSpan(subtree(stock, "GET /stock/:id"), "GET") {
		t.Errorf("the trace the demo printed has no Hertz hop (inventory's GET /stock/:id, and its GET to reviews, under catalog's main.(*handler).stock):\n%s", tree)
	}
	// It keeps running until interrupted.
	time.Sleep(2 * time.Second)
	select {
	case <-demo.done:
		t.Fatalf("the demo stopped by itself:\n%s", demo.output())
	default:
	}
	syscall.Kill(-demo.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-demo.done:
	case <-time.After(time.Minute):
		t.Fatalf("the demo did not stop on Ctrl-C")
	}
	if code := demo.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("the demo exited %d", code)
	}
	// Everything it started is gone: its ports are free again.
	for name, port := range ports {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Errorf("%s %d still in use after the demo stopped: %v", name, port, err)
			continue
		}
		l.Close()
	}
}

// subtree returns the lines of a printed call tree (exporter/tree: two
// spaces of indent per level, the span name first) from the first span
// whose name is name, through its descendants; "" when there is none.
func subtree(tree, name string) string {
	lines := strings.Split(tree, "\n")
	for i, l := range lines {
		if spanName(l) != name {
			continue
		}
		depth := len(l) - len(strings.TrimLeft(l, " "))
		end := i + 1
		for end < len(lines) && strings.TrimSpace(lines[end]) != "" && len(lines[end])-len(strings.TrimLeft(lines[end], " ")) > depth {
			end++
		}
		return strings.Join(lines[i:end], "\n")
	}
	return ""
}

// hasSpan reports whether a printed call tree has a span named name
// below its first line.
func hasSpan(tree, name string) bool {
	lines := strings.Split(tree, "\n")
	for _, l := range lines[1:] {
		if spanName(l) == name {
			return true
		}
	}
	return false
}

// spanName is the span name of a line of a printed call tree: what
// precedes the two spaces before the duration ("go " marks a goroutine).
func spanName(line string) string {
	name, _, _ := strings.Cut(strings.TrimSpace(line), "  ")
	return name
}
