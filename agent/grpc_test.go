package agent_test

import (
	"fmt"
	"sort"
	"testing"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
)

// gRPC spans from a process that serves demo.Pricing on loopback and
// calls it three times (one NotFound, one carrying a traceparent in its
// metadata), with the oldest and newest tabled grpc releases, each built
// with a toolchain that can build it, with DWARF and stripped (the field
// table then). The client's HEADERS frames carry the traceparent
// latscope puts in them (HPACK, by the sk_msg program), so each server
// span continues its client span's trace; with injection off each starts
// its own and the counter says why.
func TestGRPC(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range []struct{ toolchain, grpc string }{
		{"go1.21.13", "v1.67.3"}, // grpc >= v1.68 needs Go >= 1.22
		{"local", "v1.85.0"},
	} {
		for _, mode := range []fixture.Mode{fixture.Default, fixture.Stripped} {
			t.Run(tc.grpc+"/"+tc.toolchain+"/"+string(mode), func(t *testing.T) {
				bin := fixture.BuildWith(t, "grpcapp", tc.toolchain, mode, map[string]string{"google.golang.org/grpc": tc.grpc})
				testGRPC(t, bin, true)
			})
		}
	}
	t.Run("no-inject", func(t *testing.T) {
		testGRPC(t, fixture.BuildWith(t, "grpcapp", "local", fixture.Stripped, map[string]string{"google.golang.org/grpc": "v1.85.0"}), false)
	})
}

func testGRPC(t *testing.T, bin string, inject bool) {
	tr := traceCommand(t, agent.Config{Inject: inject}, []string{"main.callPrice", "main.getPrice"}, "OK apple 120\nOK pear 95\nNotFound missing\n", bin)
	byID := tr.byID
	servers, clients := tr.ofKind(span.KindServer), tr.ofKind(span.KindClient)
	if len(servers) != 3 || len(clients) != 3 {
		t.Fatalf("%d server and %d client spans, want 3 and 3", len(servers), len(clients))
	}
	// And per RPC one main.callPrice and one main.getPrice: nothing else.
	if len(tr.spans) != 12 {
		t.Errorf("%d spans, want 12", len(tr.spans))
	}
	// The calls are sequential: apple, pear, missing.
	byStart := func(ss []*span.Span) {
		sort.Slice(ss, func(i, j int) bool { return ss[i].Start.Before(ss[j].Start) })
	}
	byStart(servers)
	byStart(clients)
	codes := []int64{0, 0, 5} // OK, OK, NotFound
	port := attr(clients[0], "server.port")
	if p, ok := port.(int64); !ok || p <= 0 {
		t.Fatalf("client server.port %v", port)
	}
	common := map[string]any{"rpc.system": "grpc", "rpc.service": "demo.Pricing", "rpc.method": "GetPrice", "server.address": "127.0.0.1", "server.port": port}
	check := func(s *span.Span, i int) {
		t.Helper()
		if s.Name != "demo.Pricing/GetPrice" {
			t.Errorf("%v span %d name %q", s.Kind, i, s.Name)
		}
		for k, v := range common {
			if attr(s, k) != v {
				t.Errorf("%v span %d: %s = %v, want %v", s.Kind, i, k, attr(s, k), v)
			}
		}
		if attr(s, "rpc.grpc.status_code") != codes[i] {
			t.Errorf("%v span %d: rpc.grpc.status_code = %v, want %d", s.Kind, i, attr(s, "rpc.grpc.status_code"), codes[i])
		}
	}
	for i, c := range clients {
		check(c, i)
		// A client counts every non-OK code as an error.
		if (c.Status == span.StatusError) != (codes[i] != 0) {
			t.Errorf("client span %d status %v %q", i, c.Status, c.StatusMessage)
		}
		if p := byID[c.ParentID]; p == nil || p.Name != "main.callPrice" || p.TraceID != c.TraceID {
			t.Errorf("client span %d's parent %v, want main.callPrice", i, p)
		}
	}
	counters := map[string]uint64{}
	for _, c := range tr.res.Counters {
		counters[c.Name] = c.Value
	}
	wantCounters := map[string]uint64{"propagation_injected": 2, "propagation_already_present": 1, "propagation_off": 0, "propagation_failed": 0}
	if !inject {
		wantCounters = map[string]uint64{"propagation_injected": 0, "propagation_already_present": 0, "propagation_off": 3}
	}
	for k, v := range wantCounters {
		if counters[k] != v {
			t.Errorf("%s = %d, want %d", k, counters[k], v)
		}
	}
	traces := map[span.TraceID]bool{}
	for i, s := range servers {
		check(s, i)
		// NotFound is the client's doing: not a server error (OTel gRPC conventions).
		if s.Status == span.StatusError {
			t.Errorf("server span %d status %v %q", i, s.Status, s.StatusMessage)
		}
		if attr(s, "client.address") != "127.0.0.1" {
			t.Errorf("server span %d client.address %v", i, attr(s, "client.address"))
		}
		// Pear's call carried the application's traceparent: its server
		// span continues that trace. The others continue their client
		// span's trace with injection on, and start their own without.
		switch {
		case i == 1:
			if s.TraceID.String() != "0af7651916cd43dd8448eb211c80319c" || s.ParentID.String() != "b7ad6b7169203331" || !s.RemoteParent {
				t.Errorf("server span %d: trace %s parent %s remote %v; want the caller's", i, s.TraceID, s.ParentID, s.RemoteParent)
			}
		case inject:
			if s.TraceID != clients[i].TraceID || s.ParentID != clients[i].SpanID || !s.RemoteParent {
				t.Errorf("server span %d: trace %s parent %s remote %v; want client span %s %s", i, s.TraceID, s.ParentID, s.RemoteParent, clients[i].TraceID, clients[i].SpanID)
			}
		case !s.ParentID.IsZero() || s.RemoteParent || s.TraceID == clients[i].TraceID:
			t.Errorf("server span %d: trace %s parent %s remote %v; want a trace of its own", i, s.TraceID, s.ParentID, s.RemoteParent)
		}
		if traces[s.TraceID] {
			t.Errorf("server span %d shares trace %s", i, s.TraceID)
		}
		traces[s.TraceID] = true
		var handler *span.Span
		for _, c := range tr.spans {
			if c.ParentID == s.SpanID {
				handler = c
			}
		}
		if handler == nil || handler.Name != "main.getPrice" || handler.TraceID != s.TraceID {
			t.Errorf("server span %d's child %v, want main.getPrice", i, handler)
		}
	}
}

// Trace context on many concurrent calls over one connection, with
// messages large enough that the transport's writes cut frames (and frame
// headers) across sendmsg calls: every server span must continue its own
// client span, and every call must have been given context.
func TestGRPCPropagationUnderLoad(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.BuildWith(t, "grpcapp", "local", fixture.Stripped, map[string]string{"google.golang.org/grpc": "v1.85.0"})
	t.Run("load", func(t *testing.T) { testGRPCLoad(t, bin, 400, 16, 40000) })
	// A 64-byte write buffer cuts most HEADERS frames and frame headers
	// across writes: the socket program holds such a message until the
	// frame is whole (bpf_msg_cork_bytes), then injects.
	t.Run("cut-frames", func(t *testing.T) {
		t.Setenv("GRPCAPP_WRITE_BUFFER", "64")
		testGRPCLoad(t, bin, 200, 4, 100)
	})
}

func testGRPCLoad(t *testing.T, bin string, calls, conc, pad int) {
	tr := traceCommand(t, agent.Config{Inject: true}, nil, fmt.Sprintf("load %d ok\n", calls), bin, "load", fmt.Sprint(calls), fmt.Sprint(conc), fmt.Sprint(pad))
	servers, clients := tr.ofKind(span.KindServer), tr.ofKind(span.KindClient)
	if len(servers) != calls || len(clients) != calls {
		t.Fatalf("%d server and %d client spans, want %d and %d", len(servers), len(clients), calls, calls)
	}
	orphans := 0
	for _, s := range servers {
		c := tr.byID[s.ParentID]
		if c == nil || c.Kind != span.KindClient || c.TraceID != s.TraceID || !s.RemoteParent {
			orphans++
		}
	}
	if orphans > 0 {
		t.Errorf("%d of %d server spans do not continue a client span", orphans, calls)
	}
	counters := map[string]uint64{}
	for _, c := range tr.res.Counters {
		counters[c.Name] = c.Value
	}
	for k, v := range map[string]uint64{"propagation_injected": uint64(calls), "propagation_failed": 0, "propagation_already_present": 0} {
		if counters[k] != v {
			t.Errorf("%s = %d, want %d", k, counters[k], v)
		}
	}
}
