package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/bpf/propagation"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
)

// A service traced with --pid has its connections open already: an
// HTTP/1 keep-alive connection, a gRPC channel. latscope adds them to
// its socket programs at attach (and recognizes the HTTP/2 one by its
// frames), so requests on them carry trace context like requests on new
// connections.
func TestPropagationOnConnectionsOpenedBeforeAttach(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range []struct {
		name, fixture string
		mods          map[string]string
		args          []string
	}{
		{"http", "httpapp", nil, []string{"wait"}},
		{"http-ipv6", "httpapp", nil, []string{"wait", "ipv6"}},
		{"grpc", "grpcapp", map[string]string{"google.golang.org/grpc": "v1.85.0"}, []string{"wait"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := fixture.BuildWith(t, tc.fixture, "local", fixture.Stripped, tc.mods)
			spans, res, out := traceRunning(t, bin, tc.args...)
			if strings.Count(out, "\n") != 3 {
				t.Fatalf("output %q, want three calls", out)
			}
			checkPropagated(t, spans, res)
		})
	}
}

// traceRunning starts bin with args, waits for it to print "ready" (its
// connections open), attaches to it by pid with injection on, lets it go
// on (a line on its stdin) and traces it until it exits. It returns the
// spans, the session's result and what bin printed after "ready".
func traceRunning(t *testing.T, bin string, args ...string) ([]*span.Span, *agent.Result, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
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
	defer cmd.Process.Kill()
	r := bufio.NewReader(stdout)
	if line, err := r.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("fixture said %q (%v), want ready", line, err)
	}
	rest := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		rest <- string(b)
	}()
	col := &collector{}
	s := &agent.Session{
		PIDs:      []int{cmd.Process.Pid},
		Exporters: []span.Exporter{col},
		Tracer:    agent.Config{Inject: true},
		Ready:     func(*agent.Process) { io.WriteString(stdin, "go\n") },
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := s.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("fixture: %v", err)
	}
	return col.spans, res, <-rest
}

// Outgoing requests over IPv6 carry trace context like IPv4 ones.
func TestPropagationOverIPv6(t *testing.T) {
	fixture.RequireRoot(t)
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but no IPv6 loopback: %v", err)
		}
		t.Skipf("SKIP: no IPv6 loopback (%v)", err)
	}
	ln.Close()
	bin := fixture.Build(t, "httpapp", "local", fixture.Stripped)
	tr := traceCommand(t, agent.Config{Inject: true}, nil, "200 item-1\n200 item-2\n404 404 page not found\n", bin, "ipv6")
	checkPropagated(t, tr.spans, tr.res)
}

// checkPropagated: of the fixture's three calls, two carried latscope's
// traceparent (their server spans continue their client spans) and one
// the application's own.
func checkPropagated(t *testing.T, spans []*span.Span, res *agent.Result) {
	t.Helper()
	byID := map[span.SpanID]*span.Span{}
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	continued, own := 0, 0
	for _, s := range spans {
		if s.Kind != span.KindServer {
			continue
		}
		switch c := byID[s.ParentID]; {
		case c != nil && c.Kind == span.KindClient && c.TraceID == s.TraceID && s.RemoteParent:
			continued++
		case s.TraceID.String() == "0af7651916cd43dd8448eb211c80319c":
			own++ // the call that carried the application's traceparent
		default:
			t.Errorf("server span %s (trace %s, parent %s) continues no client span", s.Name, s.TraceID, s.ParentID)
		}
	}
	if continued != 2 || own != 1 {
		t.Errorf("%d server spans continue their client span, %d the caller's; want 2 and 1", continued, own)
	}
	counters := map[string]uint64{}
	for _, c := range res.Counters {
		counters[c.Name] = c.Value
	}
	for k, v := range map[string]uint64{"propagation_injected": 2, "propagation_already_present": 1, "propagation_failed": 0, "propagation_unsent": 0} {
		if counters[k] != v {
			t.Errorf("%s = %d, want %d", k, counters[k], v)
		}
	}
}

// Requests on connections the socket programs do not follow (a unix
// socket here) leave without context: each is counted as
// propagation_unsent, none is lost silently, and the traces stay correct
// per process.
func TestPropagationUnsentIsCounted(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "httpapp", "local", fixture.Stripped)
	// Not traceCommand: these losses are expected.
	var stdout bytes.Buffer
	col := &collector{}
	sess := &agent.Session{Command: []string{bin, "unix"}, Stdout: &stdout, Exporters: []span.Exporter{col}, Tracer: agent.Config{Inject: true}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := sess.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := "200 item-1\n200 item-2\n404 404 page not found\n"; stdout.String() != want {
		t.Fatalf("output %q, want %q", stdout.String(), want)
	}
	counters := map[string]uint64{}
	for _, c := range res.Counters {
		counters[c.Name] = c.Value
	}
	for k, v := range map[string]uint64{"propagation_injected": 0, "propagation_unsent": 3, "propagation_failed": 0} {
		if counters[k] != v {
			t.Errorf("%s = %d, want %d", k, counters[k], v)
		}
	}
	if lost := res.Lost(); lost != 3 {
		t.Errorf("lost %d, want the 3 unsent: %+v", lost, res.Counters)
	}
	byID := map[span.SpanID]*span.Span{}
	for _, s := range col.spans {
		byID[s.SpanID] = s
	}
	servers := 0
	for _, s := range col.spans {
		if s.Kind != span.KindServer {
			continue
		}
		servers++
		if c := byID[s.ParentID]; c != nil {
			t.Errorf("server span %s continues client span %s: nothing carried it", s.Name, c.Name)
		}
	}
	if servers != 3 {
		t.Errorf("%d server spans, want 3", servers)
	}
}

// Only traced processes' connections go through the sk_msg program: a
// socket in its sockhash sends through the kernel's slower sk_msg path,
// which the node's other processes (here the test itself) must not pay.
func TestPropagationLeavesUntracedConnectionsAlone(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "httpapp", "local", fixture.Stripped)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	checked := false
	ready := func(*agent.Process) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		port := uint32(c.LocalAddr().(*net.TCPAddr).Port)
		maps := 0
		for id := ebpf.MapID(0); ; {
			next, err := ebpf.MapGetNextID(id)
			if err != nil {
				break
			}
			id = next
			m, err := ebpf.NewMapFromID(id)
			if err != nil {
				continue
			}
			info, err := m.Info()
			if err != nil || info.Name != "sockets" || info.Type != ebpf.SockHash {
				m.Close()
				continue
			}
			maps++
			var k propagation.PropagationSockkey
			it := m.Iterate()
			for it.Next(&k, new(uint64)) {
				if k.LocalPort == port {
					t.Errorf("the test's own connection (local port %d) is in sockhash %d", port, id)
				}
			}
			m.Close()
		}
		checked = maps > 0
	}
	var stdout bytes.Buffer
	sess := &agent.Session{Command: []string{bin}, Stdout: &stdout, Exporters: []span.Exporter{&collector{}}, Tracer: agent.Config{Inject: true}, Ready: ready}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := sess.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !checked {
		t.Fatal("found no sockets map of the session to check")
	}
	for _, c := range res.Counters {
		if c.Name == "propagation_injected" && c.Value != 2 {
			t.Errorf("propagation_injected = %d, want 2: the traced process's own connections are followed", c.Value)
		}
	}
}
