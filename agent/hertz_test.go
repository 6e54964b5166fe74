package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/bpf/library/hertz"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/symbolizer"
)

const (
	hertzServeHTTP = "github.com/cloudwego/hertz/pkg/route.(*Engine).ServeHTTP"
	hertzClientDo  = "github.com/cloudwego/hertz/pkg/protocol/http1.(*HostClient).Do"
)

// hertzTransports are Hertz's two network layers: its own (netpoll) and
// Go's net package (standard).
var hertzTransports = []string{"netpoll", "standard"}

// hertzBuilds are the fixture builds the Hertz tests cover: the oldest
// and newest tabled Hertz releases with the toolchains of the matrix that
// build them (the oldest pulls in a bytedance/sonic that does not link
// with Go >= 1.23), with DWARF and stripped (the field table then).
func hertzBuilds() []struct {
	version, toolchain string
	mode               fixture.Mode
} {
	versions := hertz.Library.Versions
	var out []struct {
		version, toolchain string
		mode               fixture.Mode
	}
	for _, v := range []string{versions[0], versions[len(versions)-1]} {
		for _, tc := range fixture.Matrix() {
			if v == versions[0] && goMinor(tc) > 22 {
				continue
			}
			for _, mode := range []fixture.Mode{fixture.Default, fixture.Stripped} {
				out = append(out, struct {
					version, toolchain string
					mode               fixture.Mode
				}{v, tc, mode})
			}
		}
	}
	return out
}

// A three-hop chain in one process, net/http → Hertz → net/http, on
// both of Hertz's network layers: every span of every hop, their
// attributes, and the parent links across the hops (the traceparent
// latscope puts on the wire of each client request, the application's
// own on one Hertz request).
func TestHertz(t *testing.T) {
	fixture.RequireRoot(t)
	for _, b := range hertzBuilds() {
		bin := fixture.BuildWith(t, "hertzapp", b.toolchain, b.mode, map[string]string{hertz.Library.Module: b.version})
		if b.mode == fixture.Default {
			t.Run(b.version+"/"+b.toolchain+"/fields", func(t *testing.T) { checkHertzFieldTable(t, bin, b.version) })
		}
		for _, tr := range hertzTransports {
			t.Run(b.version+"/"+b.toolchain+"/"+string(b.mode)+"/"+tr, func(t *testing.T) { testHertzChain(t, bin, tr, true) })
		}
	}
	// Injection off: each service's spans are still right, the Hertz
	// request that carried the application's traceparent still continues
	// it, and the counter says why the others start traces of their own.
	newest := hertz.Library.Versions[len(hertz.Library.Versions)-1]
	bin := fixture.BuildWith(t, "hertzapp", "local", fixture.Stripped, map[string]string{hertz.Library.Module: newest})
	for _, tr := range hertzTransports {
		t.Run("no-inject/"+tr, func(t *testing.T) { testHertzChain(t, bin, tr, false) })
	}
}

// hertzHop is one request's spans in the chain, by role.
type hertzHop struct {
	fetch, frontClient, frontServer, callProduct *span.Span
	hzClient, hzServer, getProduct               *span.Span
	stockClient, stockServer, lookupStock        *span.Span
}

func testHertzChain(t *testing.T, bin, transport string, inject bool) {
	tr := traceCommand(t, agent.Config{Inject: inject}, []string{"main.fetch", "main.callProduct", "main.getProduct", "main.lookupStock"},
		"200 product-1 stock-1\n200 product-2 stock-2\n404 no such product\n", bin, "chain", transport)
	ids := []string{"1", "2", "missing"}
	if len(tr.spans) != 10*len(ids) {
		t.Errorf("%d spans, want %d", len(tr.spans), 10*len(ids))
	}
	for _, s := range tr.spans {
		for _, a := range s.Attrs {
			if strings.Contains(fmt.Sprint(a.Value), "secret") {
				t.Errorf("%s: query recorded: %s=%v", s.Name, a.Key, a.Value)
			}
		}
	}
	// Each request's spans, found by what they say, not by their links.
	urlEnds := func(k span.Kind, key, suffix string) *span.Span {
		var found *span.Span
		for _, s := range tr.ofKind(k) {
			if v := fmt.Sprint(attr(s, key)); strings.HasSuffix(v, suffix) {
				if found != nil {
					t.Errorf("two %v spans with %s ending in %s", k, key, suffix)
				}
				found = s
			}
		}
		if found == nil {
			t.Fatalf("no %v span with %s ending in %s", k, key, suffix)
		}
		return found
	}
	childNamed := func(p *span.Span, name string) *span.Span {
		for _, s := range tr.spans {
			if s.ParentID == p.SpanID && s.Name == name && s.TraceID == p.TraceID {
				return s
			}
		}
		t.Fatalf("%s has no child %s", p.Name, name)
		return nil
	}
	var fetches []*span.Span
	for _, s := range tr.spans {
		if s.Name == "main.fetch" {
			fetches = append(fetches, s)
		}
	}
	sort.Slice(fetches, func(i, j int) bool { return fetches[i].Start.Before(fetches[j].Start) })
	if len(fetches) != len(ids) {
		t.Fatalf("%d main.fetch spans, want %d", len(fetches), len(ids))
	}
	port := int64(0)
	for i, id := range ids {
		var h hertzHop
		h.fetch = fetches[i]
		h.frontClient = urlEnds(span.KindClient, "url.full", "/front/"+id)
		h.frontServer = urlEnds(span.KindServer, "url.path", "/front/"+id)
		h.callProduct = childNamed(h.frontServer, "main.callProduct")
		h.hzClient = urlEnds(span.KindClient, "url.full", "/product/"+id)
		h.hzServer = urlEnds(span.KindServer, "url.path", "/product/"+id)
		h.getProduct = childNamed(h.hzServer, "main.getProduct")
		h.stockClient = urlEnds(span.KindClient, "url.full", "/stock/"+id)
		h.stockServer = urlEnds(span.KindServer, "url.path", "/stock/"+id)
		h.lookupStock = childNamed(h.stockServer, "main.lookupStock")
		if port == 0 {
			port, _ = attr(h.hzClient, "server.port").(int64)
		}
		checkHertzSpans(t, id, h, port)
		// In-process links: parent and child share the trace.
		for _, l := range [][2]*span.Span{{h.fetch, h.frontClient}, {h.callProduct, h.hzClient}, {h.getProduct, h.stockClient}} {
			if l[1].ParentID != l[0].SpanID || l[1].TraceID != l[0].TraceID || l[1].RemoteParent {
				t.Errorf("%s: %s's parent %s, want %s (%s)", id, l[1].Name, l[1].ParentID, l[0].Name, l[0].SpanID)
			}
		}
		// Across the wire: the server span continues its client span
		// with injection on, starts a trace of its own without; product
		// 2's Hertz request carries the application's traceparent.
		for _, l := range [][2]*span.Span{{h.frontClient, h.frontServer}, {h.hzClient, h.hzServer}, {h.stockClient, h.stockServer}} {
			c, s := l[0], l[1]
			wantTrace, wantParent, remote := c.TraceID.String(), c.SpanID.String(), true
			switch {
			case s == h.hzServer && id == "2":
				wantTrace, wantParent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
			case !inject:
				wantTrace, wantParent, remote = s.TraceID.String(), "0000000000000000", false
				if s.TraceID == c.TraceID {
					t.Errorf("%s: %s continues trace %s with injection off", id, s.Name, c.TraceID)
				}
			}
			if s.TraceID.String() != wantTrace || s.ParentID.String() != wantParent || s.RemoteParent != remote {
				t.Errorf("%s: server span %s %v: trace %s parent %s remote %v; want %s %s %v", id, s.Name, attr(s, "url.path"),
					s.TraceID, s.ParentID, s.RemoteParent, wantTrace, wantParent, remote)
			}
		}
	}
	want := map[string]uint64{"propagation_injected": 8, "propagation_already_present": 1, "propagation_off": 0, "propagation_failed": 0}
	if !inject {
		want = map[string]uint64{"propagation_injected": 0, "propagation_already_present": 0, "propagation_off": 9}
	}
	for k, v := range want {
		if got := tr.res.Counter(k); got != v {
			t.Errorf("%s = %d, want %d", k, got, v)
		}
	}
}

// checkHertzSpans checks the Hertz client and server spans of request id
// against the Hertz server on port.
func checkHertzSpans(t *testing.T, id string, h hertzHop, port int64) {
	t.Helper()
	status := int64(200)
	if id == "missing" {
		status = 404
	}
	c, s := h.hzClient, h.hzServer
	wantClient := map[string]any{
		"http.request.method": "GET", "url.full": fmt.Sprintf("http://127.0.0.1:%d/product/%s", port, id),
		"server.address": "127.0.0.1", "server.port": port, "http.response.status_code": status,
	}
	for k, v := range wantClient {
		if attr(c, k) != v {
			t.Errorf("%s: Hertz client span %s = %v, want %v", id, k, attr(c, k), v)
		}
	}
	if c.Name != "GET" || (c.Status == span.StatusError) != (status >= 400) {
		t.Errorf("%s: Hertz client span %q status %v", id, c.Name, c.Status)
	}
	// Product 1's handler set no status: Hertz sends 200.
	wantServer := map[string]any{
		"http.request.method": "GET", "http.route": "/product/:id", "url.path": "/product/" + id, "url.scheme": "http",
		"network.protocol.version": "1", "server.address": "127.0.0.1", "server.port": port,
		"client.address": "127.0.0.1", "http.response.status_code": status,
	}
	for k, v := range wantServer {
		if attr(s, k) != v {
			t.Errorf("%s: Hertz server span %s = %v, want %v", id, k, attr(s, k), v)
		}
	}
	if p, ok := attr(s, "client.port").(int64); !ok || p <= 0 || p == port {
		t.Errorf("%s: Hertz server span client.port %v", id, attr(s, "client.port"))
	}
	if s.Name != "GET /product/:id" || s.Status == span.StatusError || s.Unwound {
		t.Errorf("%s: Hertz server span %q status %v unwound %v", id, s.Name, s.Status, s.Unwound)
	}
	// The handler's work is inside the request.
	if g := h.getProduct; g.Start.Before(s.Start) || g.End.After(s.End) {
		t.Errorf("%s: main.getProduct [%v, %v] outside the Hertz server span [%v, %v]", id, g.Start, g.End, s.Start, s.End)
	}
}

// checkHertzFieldTable compares the offsets fields.json gives for Hertz
// version v with the DWARF of bin, built with it.
func checkHertzFieldTable(t *testing.T, bin, v string) {
	b, err := symbolizer.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	lib := hertz.Library
	dwarf, err := b.DWARFFieldOffsets(lib.Fields)
	if err != nil {
		t.Fatalf("DWARF offsets: %v", err)
	}
	b.HasDWARF = false
	table, src, err := b.FieldOffsets(lib.Module, lib.Fields)
	if err != nil || src != "table:"+lib.Module+"@"+v {
		t.Fatalf("table offsets: %v (%s)", err, src)
	}
	if fmt.Sprint(dwarf) != fmt.Sprint(table) {
		t.Errorf("DWARF %v, table %v", dwarf, table)
	}
}

// Hertz serves requests on pooled goroutines: netpoll's workers take
// requests of any connection, the standard layer's goroutine serves one
// keep-alive connection's requests one after the other. Under load, with
// the garbage collector preempting goroutines all the time, every
// request's spans form a trace of their own: the client call, its Hertz
// client span, the server span continuing it, the handler's work —
// nothing of another request. Once the call sites are learned, the
// returns of both probed functions are seen at emulated sites only, and
// the probe hits per request are counted.
func TestHertzWorkerReuse(t *testing.T) {
	fixture.RequireRoot(t)
	newest := hertz.Library.Versions[len(hertz.Library.Versions)-1]
	bin := fixture.BuildWith(t, "hertzapp", "local", fixture.Stripped, map[string]string{hertz.Library.Module: newest})
	t.Setenv("GOGC", "1")
	t.Setenv("GOMAXPROCS", "4")
	const calls, conns = 1000, 8
	const warm = 4 * conns // the fixture's warm-up requests
	for _, transport := range hertzTransports {
		t.Run(transport, func(t *testing.T) {
			var stdout bytes.Buffer
			col := &collector{}
			var hits map[uint64]uint64
			var proc *agent.Process
			s := &agent.Session{
				Command: []string{bin, "load", transport, strconv.Itoa(calls), strconv.Itoa(conns)},
				Stdout:  &stdout, Patterns: []string{"main.call", "main.work"}, Exporters: []span.Exporter{col},
				Tracer: agent.Config{Inject: true, CountHits: true, SettleReturns: 100 * time.Millisecond},
				Ready:  func(p *agent.Process) { proc = p },
			}
			// What was learned, read before the probes go.
			var learned map[string]agent.LearnedReturns
			s.Hits = func(h map[uint64]uint64) { hits, learned = h, proc.Learned() }
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := s.Run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := stdout.String(); got != fmt.Sprintf("load %d ok\n", calls) {
				t.Fatalf("output %q", got)
			}
			if lost := res.Lost(); lost > 0 {
				t.Errorf("lost %d: %+v", lost, res.Counters)
			}
			checkHertzTraces(t, col.spans, calls+warm)
			for k, v := range map[string]uint64{"propagation_injected": calls + warm, "propagation_failed": 0, "propagation_unsent": 0, "propagation_already_present": 0} {
				if got := res.Counter(k); got != v {
					t.Errorf("%s = %d, want %d", k, got, v)
				}
			}
			checkHertzSites(t, proc, learned, hits, calls+warm)
		})
	}
}

// checkHertzTraces checks that n requests made n traces of exactly four
// spans: main.call → Hertz client → Hertz server → main.work.
func checkHertzTraces(t *testing.T, spans []*span.Span, n int) {
	t.Helper()
	traces := map[span.TraceID][]*span.Span{}
	for _, s := range spans {
		traces[s.TraceID] = append(traces[s.TraceID], s)
	}
	if len(spans) != 4*n || len(traces) != n {
		t.Errorf("%d spans in %d traces, want %d in %d", len(spans), len(traces), 4*n, n)
	}
	wrong := 0
	for id, ss := range traces {
		byName := map[string]*span.Span{}
		for _, s := range ss {
			name := s.Name
			switch s.Kind {
			case span.KindClient:
				name = "client"
			case span.KindServer:
				name = "server"
			}
			byName[name] = s
		}
		call, c, srv, work := byName["main.call"], byName["client"], byName["server"], byName["main.work"]
		ok := len(ss) == 4 && call != nil && c != nil && srv != nil && work != nil &&
			c.ParentID == call.SpanID && srv.ParentID == c.SpanID && srv.RemoteParent && work.ParentID == srv.SpanID &&
			strings.HasSuffix(fmt.Sprint(attr(c, "url.full")), fmt.Sprint(attr(srv, "url.path"))) &&
			attr(srv, "http.route") == "/work/:n" && !srv.Unwound && !c.Unwound
		if !ok {
			if wrong < 5 {
				var desc []string
				for _, s := range ss {
					desc = append(desc, fmt.Sprintf("%s(%v %v parent %s)", s.Name, attr(s, "url.full"), attr(s, "url.path"), s.ParentID))
				}
				t.Errorf("trace %s: %s", id, strings.Join(desc, ", "))
			}
			wrong++
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d traces are not one request's", wrong, len(traces))
	}
}

// checkHertzSites checks where the returns of ServeHTTP and HostClient.Do
// were seen: at learned emulated call sites in their callers, their own
// single-stepped RETs detached once settled (fired for the warm-up
// only). It logs the probe hits per request.
func checkHertzSites(t *testing.T, p *agent.Process, learned map[string]agent.LearnedReturns, hits map[uint64]uint64, n int) {
	t.Helper()
	var perRequest []string
	total := uint64(0)
	for _, name := range []string{hertzServeHTTP, hertzClientDo} {
		i := slices.IndexFunc(p.Funcs, func(f agent.TracedFunc) bool { return f.Func.Name == name })
		if i < 0 {
			t.Errorf("%s not traced", name)
			continue
		}
		f := p.Funcs[i]
		entry, own := hits[f.Cookies[0]], uint64(0)
		for _, c := range f.Cookies[1:] {
			own += hits[c]
		}
		l, ok := learned[name]
		var sites uint64
		for _, c := range l.Cookies {
			sites += hits[c]
		}
		if !ok || l.OwnRETs || l.Refused > 0 || len(l.Sites) == 0 {
			t.Errorf("%s: returns learned %v: %+v", name, ok, l)
		}
		for _, s := range l.Sites {
			if !s.Emulated {
				t.Errorf("%s: learned site %#x (%s) is single-stepped", name, s.Addr, s.Insn)
			}
		}
		if entry != uint64(n) || own+sites < uint64(n) || own >= uint64(n)/4 {
			t.Errorf("%s: entry fired %d times, own RETs %d, learned sites %d; want %d, the warm-up's, the rest", name, entry, own, sites, n)
		}
		total += entry + own + sites
		perRequest = append(perRequest, fmt.Sprintf("%s: entry %d, own RETs %d, learned sites %d (%d sites)", name, entry, own, sites, len(l.Sites)))
	}
	// Hooks count under cookie 0: conn_acquired, once per attempt.
	if hits[0] != uint64(n) {
		t.Errorf("conn_acquired fired %d times, want %d", hits[0], n)
	}
	total += hits[0]
	t.Logf("Hertz probe hits for %d requests: %s; conn_acquired %d; %.2f per request", n, strings.Join(perRequest, "; "), hits[0], float64(total)/float64(n))
}
