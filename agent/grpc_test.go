package agent_test

import (
	"fmt"
	"sort"
	"testing"
	"time"

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

// Client spans of streaming calls: each lasts from NewStream until its
// stream ends (whichever goroutine ends it), carries the final status,
// and its HEADERS frame carries its context, so the server span is its
// child. One process makes a unary call, then a client stream (Total), a
// server stream (Watch: 5 prices 200 ms apart, then NotFound), a bidi
// stream (Quote, whose stream interceptor makes unary calls before and
// after opening the stream: calls inside NewStream, each of its own
// context, none taken for the stream), a Watch it cancels after 2
// prices, one with a context cancelled before it starts (NewStream
// fails: no server span) and one a stream interceptor cancels after a
// price before NewStream returns (the stream ends while its span is
// still NewStream's frame). Oldest and newest tabled grpc, with DWARF and
// stripped; with injection off each server span starts its own trace.
func TestGRPCStreams(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range []struct{ toolchain, grpc string }{
		{"go1.21.13", "v1.67.3"},
		{"local", "v1.85.0"},
	} {
		for _, mode := range []fixture.Mode{fixture.Default, fixture.Stripped} {
			t.Run(tc.grpc+"/"+tc.toolchain+"/"+string(mode), func(t *testing.T) {
				bin := fixture.BuildWith(t, "grpcapp", tc.toolchain, mode, map[string]string{"google.golang.org/grpc": tc.grpc})
				testGRPCStreams(t, bin, true)
			})
		}
	}
	t.Run("no-inject", func(t *testing.T) {
		testGRPCStreams(t, fixture.BuildWith(t, "grpcapp", "local", fixture.Stripped, map[string]string{"google.golang.org/grpc": "v1.85.0"}), false)
	})
}

func testGRPCStreams(t *testing.T, bin string, inject bool) {
	patterns := []string{"main.callPrice", "main.getPrice", "main.totalPrices", "main.total", "main.watchPrices", "main.watch", "main.quotePrices", "main.quote"}
	want := "OK apple 120\nOK total 215\nNotFound watch apple after 5\nOK quote apple=120 pear=95\nCanceled watch pear after 2\nCanceled watch apple\nCanceled watch apple after 0\n"
	tr := traceCommand(t, agent.Config{Inject: inject}, patterns, want, bin, "streams")
	// The calls' client spans, by start.
	calls := []struct {
		method, parent, handler string
		code                    int64
		server                  bool          // the call reached the server
		atLeast                 time.Duration // what the server's pace makes the call last at least
	}{
		{"GetPrice", "main.callPrice", "main.getPrice", 0, true, 0},
		{"Total", "main.totalPrices", "main.total", 0, true, 0},
		{"Watch", "main.watchPrices", "main.watch", 5, true, 5 * 200 * time.Millisecond},
		{"Quote", "main.quotePrices", "main.quote", 0, true, 0},
		// Quote's interceptor, inside its NewStream, before and after
		// opening the stream: each call its own context, the stream still
		// Quote's.
		{"GetPrice", "demo.Pricing/Quote", "main.getPrice", 0, true, 0},
		{"GetPrice", "demo.Pricing/Quote", "main.getPrice", 0, true, 0},
		{"Watch", "main.watchPrices", "main.watch", 1, true, 2 * 200 * time.Millisecond},
		{"Watch", "main.watchPrices", "", 1, false, 0},
		{"Watch", "main.watchPrices", "main.watch", 1, true, 200 * time.Millisecond},
	}
	servers, clients := tr.ofKind(span.KindServer), tr.ofKind(span.KindClient)
	if len(clients) != len(calls) || len(servers) != len(calls)-1 {
		t.Fatalf("%d client and %d server spans, want %d and %d", len(clients), len(servers), len(calls), len(calls)-1)
	}
	// Per call its client span, and (when it reached the server) server
	// span and handler; per call but the interceptor's its caller.
	if want := 4*len(calls) - 4; len(tr.spans) != want {
		t.Errorf("%d spans, want %d", len(tr.spans), want)
	}
	byStart := func(ss []*span.Span) {
		sort.Slice(ss, func(i, j int) bool { return ss[i].Start.Before(ss[j].Start) })
	}
	byStart(clients)
	byStart(servers)
	used := map[*span.Span]bool{}
	traces := map[span.TraceID]bool{}
	for i, want := range calls {
		c := clients[i]
		if c.Name != "demo.Pricing/"+want.method || attr(c, "rpc.method") != want.method || attr(c, "rpc.service") != "demo.Pricing" || attr(c, "rpc.system") != "grpc" {
			t.Errorf("client span %d: %q %v, want demo.Pricing/%s", i, c.Name, c.Attrs, want.method)
		}
		if attr(c, "rpc.grpc.status_code") != want.code {
			t.Errorf("client span %d (%s): rpc.grpc.status_code = %v, want %d", i, c.Name, attr(c, "rpc.grpc.status_code"), want.code)
		}
		// A client counts every non-OK code as an error.
		if (c.Status == span.StatusError) != (want.code != 0) {
			t.Errorf("client span %d (%s): status %v %q", i, c.Name, c.Status, c.StatusMessage)
		}
		// The stream ends before its caller returns (RecvMsg ends it, or
		// waits for the context watcher that does).
		p := tr.byID[c.ParentID]
		if p == nil || p.Name != want.parent || p.TraceID != c.TraceID || c.Start.Before(p.Start) || c.End.After(p.End) {
			t.Errorf("client span %d (%s) %v–%v: parent %v, want %s around it", i, c.Name, c.Start, c.End, p, want.parent)
		}
		if d := c.End.Sub(c.Start); d < want.atLeast {
			t.Errorf("client span %d (%s) lasts %v, want at least %v: until the stream ends", i, c.Name, d, want.atLeast)
		}
		if !want.server {
			continue
		}
		// Its server span: the next of that name (calls of one name are
		// sequential).
		var s *span.Span
		for _, x := range servers {
			if x.Name == c.Name && !used[x] {
				s = x
				break
			}
		}
		if s == nil {
			t.Errorf("client span %d (%s): no server span", i, c.Name)
			continue
		}
		used[s] = true
		if attr(s, "rpc.grpc.status_code") != want.code {
			t.Errorf("server span %q: code %v, want %d", s.Name, attr(s, "rpc.grpc.status_code"), want.code)
		}
		// None of these codes is the server's fault (OTel gRPC conventions).
		if s.Status == span.StatusError {
			t.Errorf("server span %q: status %v %q", s.Name, s.Status, s.StatusMessage)
		}
		if inject {
			if s.TraceID != c.TraceID || s.ParentID != c.SpanID || !s.RemoteParent {
				t.Errorf("server span %q: trace %s parent %s remote %v; want client span %d %s %s", s.Name, s.TraceID, s.ParentID, s.RemoteParent, i, c.TraceID, c.SpanID)
			}
		} else {
			if !s.ParentID.IsZero() || s.RemoteParent || s.TraceID == c.TraceID {
				t.Errorf("server span %q: trace %s parent %s remote %v; want a trace of its own", s.Name, s.TraceID, s.ParentID, s.RemoteParent)
			}
			if traces[s.TraceID] {
				t.Errorf("server span %q shares trace %s", s.Name, s.TraceID)
			}
			traces[s.TraceID] = true
		}
		// The client span covers the server's work: it starts first, and
		// (but for a cancelled call) ends after the handler returned: the
		// status is written after.
		var handler *span.Span
		for _, h := range tr.spans {
			if h.ParentID == s.SpanID {
				handler = h
			}
		}
		if handler == nil || handler.Name != want.handler || handler.TraceID != s.TraceID {
			t.Errorf("server span %q's child %v, want %s", s.Name, handler, want.handler)
			continue
		}
		if s.Start.Before(c.Start) || want.code != 1 && handler.End.After(c.End) {
			t.Errorf("client span %d (%s) %v–%v does not cover the server's %v–%v", i, c.Name, c.Start, c.End, s.Start, handler.End)
		}
	}
	counters := map[string]uint64{}
	for _, c := range tr.res.Counters {
		counters[c.Name] = c.Value
	}
	// Every call that sent its headers carried its own context; the call
	// cancelled before it started sent none.
	wantCounters := map[string]uint64{"propagation_injected": uint64(len(servers)), "propagation_already_present": 0, "propagation_off": 0, "propagation_failed": 0, "stream_end_without_start": 0}
	if !inject {
		wantCounters = map[string]uint64{"propagation_injected": 0, "propagation_already_present": 0, "propagation_off": uint64(len(calls)), "stream_end_without_start": 0}
	}
	for k, v := range wantCounters {
		if counters[k] != v {
			t.Errorf("%s = %d, want %d", k, counters[k], v)
		}
	}
}
