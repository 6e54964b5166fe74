package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
)

// Proxies that forward the incoming traceparent (httputil.ReverseProxy,
// one written by hand) send the backend a copy of what they received:
// latscope makes the copy name the proxy's client span, as a proxy
// instrumented with an SDK would, so the backend hangs under that span —
// for a lowercase traceparent, a canonical Traceparent, none at all
// (injected), and two values (the proxy starts a new trace, W3C; the
// backend gets one value). A proxy that sets a value of its own keeps it.
// With the backend untraced, the value it received is checked.
func TestProxyForwardedTraceparent(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range []string{"go1.21.13", "local", "go1.27.3"} {
		for _, backend := range []string{"traced", "untraced"} {
			t.Run(tc+"/"+backend, func(t *testing.T) { testProxy(t, tc, backend == "traced") })
		}
	}
}

// The contexts proxyapp's caller sends (its cases), and what its SDK-like proxy sets.
var proxyCases = map[string]struct{ trace, parent string }{
	"lower":     {"0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"},
	"canonical": {"4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"},
	"none":      {},
	"two":       {}, // two values: no valid context (W3C), a new trace
}

const (
	sdkSpan  = "a1b2c3d4e5f60718"
	sdkTrace = "5ad7e6c3d2b1a0f9e8d7c6b5a4938271"
)

func testProxy(t *testing.T, tc string, tracedBackend bool) {
	bin := fixture.Build(t, "proxyapp", tc, fixture.Stripped)
	argv := []string{bin}
	if !tracedBackend {
		argv = append(argv, "backend", startBackend(t, bin))
	}
	tr, out := traceRun(t, agent.Config{Inject: true}, nil, argv...)
	received := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.SplitN(line, " ", 3)
		if len(f) < 2 {
			t.Fatalf("output line %q", line)
		}
		received[f[0]+"/"+f[1]] = strings.Join(f[2:], "")
	}
	servers, clients := map[string]*span.Span{}, map[string]*span.Span{}
	for _, s := range tr.ofKind(span.KindServer) {
		servers[fmt.Sprint(attr(s, "url.path"))] = s
	}
	for _, c := range tr.ofKind(span.KindClient) {
		u := fmt.Sprint(attr(c, "url.full"))
		clients[u[strings.Index(u, "/echo/"):]] = c
	}
	for _, proxy := range []string{"rp", "fw", "sdk"} {
		for name, in := range proxyCases {
			key := proxy + "/" + name
			s, c := servers["/"+key], clients["/echo/"+key]
			if s == nil || c == nil {
				t.Errorf("%s: server span %v, client span %v", key, s, c)
				continue
			}
			// The proxy's server span continues a single valid incoming
			// context; the client span is its child.
			switch {
			case in.trace != "" && (s.TraceID.String() != in.trace || s.ParentID.String() != in.parent || !s.RemoteParent):
				t.Errorf("%s: proxy server span trace %s parent %s, want %s %s", key, s.TraceID, s.ParentID, in.trace, in.parent)
			case in.trace == "" && (s.RemoteParent || s.ParentID != span.SpanID{} || strings.Contains("11111111111111111111111111111111 33333333333333333333333333333333", s.TraceID.String())):
				t.Errorf("%s: proxy server span trace %s parent %s, want a new trace", key, s.TraceID, s.ParentID)
			case c.ParentID != s.SpanID || c.TraceID != s.TraceID:
				t.Errorf("%s: client span's parent %s trace %s, want the proxy's server span %s %s", key, c.ParentID, c.TraceID, s.SpanID, s.TraceID)
			}
			// What the backend received: one value naming the client
			// span, or the SDK-like proxy's own.
			want, wantTrace, wantParent := "00-"+c.TraceID.String()+"-"+c.SpanID.String()+"-01", c.TraceID.String(), c.SpanID.String()
			if proxy == "sdk" {
				wantTrace, wantParent = sdkTrace, sdkSpan
				if in.trace != "" {
					wantTrace = in.trace
				}
				want = "00-" + wantTrace + "-" + sdkSpan + "-01"
			}
			if received[key] != want {
				t.Errorf("%s: backend received %q, want %q", key, received[key], want)
			}
			if !tracedBackend {
				continue
			}
			b := servers["/echo/"+key]
			if b == nil || b.TraceID.String() != wantTrace || b.ParentID.String() != wantParent || !b.RemoteParent {
				t.Errorf("%s: backend server span %+v, want trace %s parent %s", key, b, wantTrace, wantParent)
			}
		}
	}
	// rp and fw: lower, canonical and two replaced, none injected; sdk: its own left alone.
	checkCounters(t, tr.res, map[string]uint64{"propagation_injected": 2, "propagation_replaced": 6, "propagation_already_present": 4,
		"propagation_failed": 0, "propagation_unsent": 0, "propagation_tls": 0, "propagation_no_connection": 0, "propagation_conn_unknown": 0})
}

// startBackend runs proxyapp's backend untraced and returns its address.
func startBackend(t *testing.T, bin string) string {
	t.Helper()
	cmd := exec.Command(bin, "serve-backend")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		t.Fatalf("backend said %q: %v", line, err)
	}
	return addr
}

// A request latscope changed on its way out (a traceparent line inserted,
// forwarded copies replaced and removed) leaves in one TCP segment, as
// it would untraced: tcp_bpf sends each piece of a message it holds with
// a send of its own, so on a TCP_NODELAY socket (Go's default) a message
// split by the change would reach the backend in three segments, each
// processed and woken for. The backend here is the test's own server,
// which reads each connection's data segment count (TCP_INFO) per
// request.
func TestChangedRequestOneSegment(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "proxyapp", "local", fixture.Stripped)
	type connKey struct{}
	var mu sync.Mutex
	segs := map[*net.TCPConn]uint32{} // data segments in, as of the connection's last request
	var split []string
	srv := &http.Server{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := r.Context().Value(connKey{}).(*net.TCPConn)
			raw, err := c.SyscallConn()
			var info *unix.TCPInfo
			if err == nil {
				raw.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
			}
			mu.Lock()
			if err != nil {
				split = append(split, fmt.Sprintf("%s: TCP_INFO: %v", r.URL.Path, err))
			} else if n := info.Data_segs_in - segs[c]; n != 1 {
				split = append(split, fmt.Sprintf("%s: came in %d data segments", r.URL.Path, n))
			}
			if err == nil {
				segs[c] = info.Data_segs_in
			}
			mu.Unlock()
			fmt.Fprint(w, strings.Join(r.Header.Values("Traceparent"), ","))
		}),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	tr, out := traceRun(t, agent.Config{Inject: true}, nil, bin, "backend", ln.Addr().String())
	if n := strings.Count(out, "\n"); n != 12 {
		t.Fatalf("proxyapp answered %d requests, want 12:\n%s", n, out)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range split {
		t.Error(s)
	}
	checkCounters(t, tr.res, map[string]uint64{"propagation_injected": 2, "propagation_replaced": 6, "propagation_already_present": 4, "propagation_failed": 0})
}
