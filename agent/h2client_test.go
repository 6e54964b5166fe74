package agent_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
)

// net/http clients over TLS (HTTP/2 with ForceAttemptHTTP2, and HTTPS
// with HTTP/1.1): under kernel lockdown nothing can be put in encrypted
// bytes, so each request is counted as propagation_tls (none silently
// lost), and the server spans, separate roots, say url.scheme=https.
func TestTLSClientCounted(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range []string{"go1.21.13", "local", "go1.27.3"} {
		t.Run(tc, func(t *testing.T) {
			bin := fixture.Build(t, "h2app", tc, fixture.Stripped)
			tr, out := traceRun(t, agent.Config{Inject: true}, nil, bin, "tls")
			want := "h2 1 HTTP/2.0 \nh2 2 HTTP/2.0 \nh2 body HTTP/2.0 \nhttps 1 HTTP/1.1 \nhttps 2 HTTP/1.1 \n"
			if out != want {
				t.Fatalf("output %q, want %q", out, want)
			}
			servers, clients := tr.ofKind(span.KindServer), tr.ofKind(span.KindClient)
			if len(servers) != 5 || len(clients) != 5 {
				t.Fatalf("%d server and %d client spans, want 5 and 5", len(servers), len(clients))
			}
			h2 := 0
			for _, s := range servers {
				if attr(s, "url.scheme") != "https" || s.RemoteParent {
					t.Errorf("server span %v: url.scheme %v, remote parent %v", attr(s, "url.path"), attr(s, "url.scheme"), s.RemoteParent)
				}
				if attr(s, "network.protocol.version") == "2" {
					h2++
				}
			}
			if h2 != 3 {
				t.Errorf("%d HTTP/2 server spans, want 3", h2)
			}
			checkCounters(t, tr.res, map[string]uint64{"propagation_tls": 5, "propagation_injected": 0, "propagation_failed": 0,
				"propagation_unsent": 0, "propagation_no_connection": 0, "propagation_conn_unknown": 0})
		})
	}
}

// net/http's own HTTP/2 client without TLS (h2c, prior knowledge; Go >=
// 1.24, bundled in net/http until 1.26, net/http/internal/http2 since
// 1.27): the HEADERS frame of each request carries its client span's
// context, the server continues it, and a request whose application set
// its own traceparent keeps it (one value: nothing appended).
func TestH2CPropagation(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range []string{"go1.24.9", "local", "go1.27.3"} {
		t.Run(tc, func(t *testing.T) {
			bin := fixture.Build(t, "h2app", tc, fixture.Stripped)
			tr, out := traceRun(t, agent.Config{Inject: true}, nil, bin, "h2c")
			received := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(line)
				if len(f) != 4 || f[0] != "h2c" || f[2] != "HTTP/2.0" {
					t.Fatalf("output line %q", line)
				}
				received[f[1]] = f[3]
			}
			clients := map[string]*span.Span{}
			for _, c := range tr.ofKind(span.KindClient) {
				u := fmt.Sprint(attr(c, "url.full"))
				clients[u[strings.LastIndexByte(u, '/')+1:]] = c
			}
			servers := tr.ofKind(span.KindServer)
			if len(servers) != 5 || len(clients) != 5 {
				t.Fatalf("%d server and %d client spans, want 5 and 5", len(servers), len(clients))
			}
			for _, s := range servers {
				id := strings.TrimPrefix(fmt.Sprint(attr(s, "url.path")), "/items/")
				c := clients[id]
				if c == nil {
					t.Errorf("no client span for %s", id)
					continue
				}
				wantTrace, wantParent := c.TraceID.String(), c.SpanID.String()
				if id == "app" {
					wantTrace, wantParent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
				}
				if got := received[id]; got != "00-"+wantTrace+"-"+wantParent+"-01" {
					t.Errorf("%s: server received %q, want one traceparent 00-%s-%s-01", id, got, wantTrace, wantParent)
				}
				if s.TraceID.String() != wantTrace || s.ParentID.String() != wantParent || !s.RemoteParent ||
					attr(s, "network.protocol.version") != "2" || attr(s, "url.scheme") != "http" {
					t.Errorf("%s: server span trace %s parent %s remote %v proto %v scheme %v; want %s %s", id, s.TraceID, s.ParentID,
						s.RemoteParent, attr(s, "network.protocol.version"), attr(s, "url.scheme"), wantTrace, wantParent)
				}
			}
			checkCounters(t, tr.res, map[string]uint64{"propagation_injected": 4, "propagation_already_present": 1,
				"propagation_failed": 0, "propagation_unsent": 0, "propagation_no_connection": 0, "propagation_conn_unknown": 0})
		})
	}
}

// A client call whose request never reaches a connection (the dial
// fails) is counted, not silently dropped.
func TestClientWithoutConnectionCounted(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "h2app", "local", fixture.Stripped)
	tr, out := traceRun(t, agent.Config{Inject: true}, nil, bin, "noconn")
	if out != "noconn 1 error\n" {
		t.Fatalf("output %q", out)
	}
	if clients := tr.ofKind(span.KindClient); len(clients) != 1 || clients[0].Status != span.StatusError {
		t.Fatalf("client spans %+v, want one, failed", clients)
	}
	checkCounters(t, tr.res, map[string]uint64{"propagation_no_connection": 1, "propagation_injected": 0, "propagation_unsent": 0})
}

// Many h2c requests on one connection, 8 at a time: the HPACK dynamic
// table fills and evicts (each request inserts its :path), and blocks
// refer to entries their own insertions evict; each request is still
// judged exactly (no traceparent of its own) and carries its context.
func TestH2CPropagationUnderLoad(t *testing.T) {
	fixture.RequireRoot(t)
	const calls = 600
	for _, tc := range []string{"local", "go1.27.3"} {
		t.Run(tc, func(t *testing.T) {
			bin := fixture.Build(t, "h2app", tc, fixture.Stripped)
			tr := traceCommand(t, agent.Config{Inject: true}, nil, fmt.Sprintf("h2c-load %d ok\n", calls), bin, "h2c-load", fmt.Sprint(calls), "8")
			servers := tr.ofKind(span.KindServer)
			if len(servers) != calls {
				t.Fatalf("%d server spans, want %d", len(servers), calls)
			}
			wrong := 0
			for _, s := range servers {
				c := tr.byID[s.ParentID]
				if c == nil || c.Kind != span.KindClient || c.TraceID != s.TraceID || !s.RemoteParent ||
					!strings.HasSuffix(fmt.Sprint(attr(c, "url.full")), fmt.Sprint(attr(s, "url.path"))) {
					wrong++
				}
			}
			if wrong > 0 {
				t.Errorf("%d of %d server spans do not continue the client span of their request", wrong, calls)
			}
			checkCounters(t, tr.res, map[string]uint64{"propagation_injected": calls, "propagation_failed": 0, "propagation_already_present": 0})
		})
	}
}
