package demo_test

// The harness TestDemo runs the system with: builds, processes, a recording
// proxy and a stand-in OTLP receiver.

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// buildAll builds every command of the demo into a temporary directory.
func buildAll(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"./gateway", "./catalog", "./pricing", "./reviews", "./inventory", "./loadgen")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	version, _ := exec.Command("go", "env", "GOVERSION").Output()
	t.Logf("built the demo with %s in %v", bytes.TrimSpace(version), time.Since(start).Round(time.Millisecond))
	return dir
}

func startRedis(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // redis-server cannot bind port 0; take a free one and hope it stays free
	_, port, _ := net.SplitHostPort(addr)

	var logs bytes.Buffer
	cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("redis-server exited at start:\n%s", logs.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s: no PONG: %v", addr, err)
		}
	}
}

// proc is a running demo service.
type proc struct {
	name   string
	addr   string // the address it logged it listens on
	cmd    *exec.Cmd
	log    *lineLog
	exited chan struct{}
}

// start runs a service on a free loopback port, with only PATH, HOME and
// env in its environment, and waits for it to log its listening address.
func start(t *testing.T, bin, name string, env []string, args ...string) *proc {
	t.Helper()
	ll := &lineLog{addr: make(chan string, 1)}
	cmd := exec.Command(filepath.Join(bin, name), append([]string{"-listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + t.TempDir()}, env...)
	cmd.Stdout, cmd.Stderr = ll, ll
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: ll, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s log:\n%s", name, ll.String())
		}
	})
	select {
	case p.addr = <-ll.addr:
		return p
	case <-p.exited:
		t.Fatalf("%s exited at start: %v", name, cmd.ProcessState)
	case <-time.After(10 * time.Second):
		t.Fatalf("%s logged no listening address within 10s", name)
	}
	return nil
}

// stop sends SIGTERM and expects a clean exit, with no warning logged
// (by slog, or by Hertz's own logger in inventory).
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still running 10s after SIGTERM", p.name)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s exited with code %d after SIGTERM, want 0", p.name, code)
	}
	for _, line := range strings.Split(p.log.String(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") ||
			strings.Contains(line, "[Warn]") || strings.Contains(line, "[Error]") || strings.Contains(line, "[Fatal]") {
			t.Errorf("%s logged: %s", p.name, line)
		}
	}
}

// lineLog collects a service's output and picks out its listening address.
type lineLog struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	seen bool
	addr chan string
}

var listeningLine = regexp.MustCompile(`msg=listening .*addr=(\S+)`)

func (l *lineLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(b)
	if !l.seen {
		if m := listeningLine.FindSubmatch(l.buf.Bytes()); m != nil {
			l.seen = true
			l.addr <- string(m[1])
		}
	}
	return len(b), nil
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// recordingProxy sits between gateway and catalog and records what passes.
type recordingProxy struct {
	*httptest.Server
	transport *http.Transport
	mu        sync.Mutex
	seen      []exchange
}

type exchange struct {
	path, traceparent string
	status            int
	body              []byte
}

func newRecordingProxy(t *testing.T, target string) *recordingProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	p := &recordingProxy{transport: &http.Transport{}}
	rp.Transport = p.transport
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		p.mu.Lock()
		p.seen = append(p.seen, exchange{path: r.URL.Path, traceparent: r.Header.Get("Traceparent"), status: rec.Code, body: rec.Body.Bytes()})
		p.mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *recordingProxy) records() []exchange {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]exchange(nil), p.seen...)
}

// otlpReceiver is a minimal OTLP/HTTP trace endpoint (POST /v1/traces).
type otlpReceiver struct {
	*httptest.Server
	mu  sync.Mutex
	got []*tracepb.ResourceSpans
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	o := &otlpReceiver{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
			http.Error(w, "want POST /v1/traces", http.StatusNotFound)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		var req coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(b, &req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		o.mu.Lock()
		o.got = append(o.got, req.GetResourceSpans()...)
		o.mu.Unlock()
		resp, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(resp)
	}))
	t.Cleanup(o.Close)
	return o
}

// spansByService returns the spans received, keyed by service.name.
func (o *otlpReceiver) spansByService() map[string][]*tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string][]*tracepb.Span{}
	for _, rs := range o.got {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			out[service] = append(out[service], ss.GetSpans()...)
		}
	}
	return out
}

func get(t *testing.T, u string, h http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func keys(m map[string][]*tracepb.Span) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
