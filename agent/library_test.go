package agent_test

import (
	"debug/buildinfo"
	"fmt"
	"go/version"
	"strings"
	"testing"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/symbolizer"
)

func attr(s *span.Span, key string) any {
	for _, a := range s.Attrs {
		if a.Key == key {
			return a.Value
		}
	}
	return nil
}

// net/http spans from a process that serves and fetches /items/ on
// loopback: server and client spans with their attributes, nested with
// the user functions around them, stripped binaries included.
func TestNetHTTP(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range fixture.Matrix() {
		for _, mode := range []fixture.Mode{fixture.Default, fixture.Stripped} {
			t.Run(tc+"/"+string(mode), func(t *testing.T) { testNetHTTP(t, tc, mode, true) })
		}
	}
	// Injection off: per-process traces stay correct, and the counter says
	// why the next service got no context.
	t.Run("no-inject", func(t *testing.T) { testNetHTTP(t, "local", fixture.Stripped, false) })
}

func testNetHTTP(t *testing.T, tc string, mode fixture.Mode, inject bool) {
	{
		{
			{
				bin := fixture.Build(t, "httpapp", tc, mode)
				// The fixture's module says go 1.21, which keeps Go 1.21's
				// ServeMux: the newer one sets Request.Pattern (Go >= 1.23).
				t.Setenv("GODEBUG", "httpmuxgo121=0")
				bi, err := buildinfo.ReadFile(bin)
				if err != nil {
					t.Fatal(err)
				}
				goVersion := bi.GoVersion
				tr := traceCommand(t, agent.Config{Inject: inject}, []string{"main.fetch", "main.handleItem", "main.lookup"},
					"200 item-1\n200 item-2\n404 404 page not found\n", bin)
				res, byID := tr.res, tr.byID
				servers, clients := tr.ofKind(span.KindServer), tr.ofKind(span.KindClient)
				// A request ends where conn.serve resumes, an emulated site,
				// until Go 1.27 put serverHandler in an itab.
				checkServerExits(t, tr.proc, tc != "go1.27.3")
				if len(servers) != 3 || len(clients) != 3 {
					t.Fatalf("%d server and %d client spans, want 3 and 3", len(servers), len(clients))
				}
				for _, c := range clients {
					id := strings.TrimPrefix(fmt.Sprint(attr(c, "url.full")), "http://")
					id = id[strings.LastIndexByte(id, '/')+1:]
					want := int64(200)
					if id == "missing" {
						want = 404
					}
					parent := byID[c.ParentID]
					switch {
					case c.Name != "GET" || attr(c, "http.request.method") != "GET":
						t.Errorf("client span %q method %v", c.Name, attr(c, "http.request.method"))
					case strings.Contains(fmt.Sprint(attr(c, "url.full")), "secret"):
						t.Errorf("query string recorded: %v", attr(c, "url.full"))
					case attr(c, "http.response.status_code") != want:
						t.Errorf("client %s status %v, want %d", id, attr(c, "http.response.status_code"), want)
					case (c.Status == span.StatusError) != (want >= 400):
						t.Errorf("client %s span status %v", id, c.Status)
					case parent == nil || parent.Name != "main.fetch":
						t.Errorf("client span's parent %v, want main.fetch", parent)
					case attr(c, "server.address") != "127.0.0.1":
						t.Errorf("server.address %v", attr(c, "server.address"))
					}
				}
				counters := map[string]uint64{}
				for _, c := range res.Counters {
					counters[c.Name] = c.Value
				}
				wantCounters := map[string]uint64{"propagation_injected": 2, "propagation_already_present": 1, "propagation_off": 0, "lib_read_failed": 0}
				if !inject {
					wantCounters = map[string]uint64{"propagation_injected": 0, "propagation_already_present": 0, "propagation_off": 3, "lib_read_failed": 0}
				}
				for k, v := range wantCounters {
					if counters[k] != v {
						t.Errorf("%s = %d, want %d", k, counters[k], v)
					}
				}
				clientFor := map[string]*span.Span{}
				for _, c := range clients {
					u := fmt.Sprint(attr(c, "url.full"))
					clientFor[u[strings.Index(u[len("http://"):], "/")+len("http://"):]] = c
				}
				for _, s := range servers {
					path := fmt.Sprint(attr(s, "url.path"))
					want := int64(200)
					if path == "/items/missing" {
						want = 404
					}
					if !strings.HasPrefix(path, "/items/") || attr(s, "http.response.status_code") != want || s.Status == span.StatusError {
						t.Errorf("server span %q path %v status %v (%v)", s.Name, path, attr(s, "http.response.status_code"), s.Status)
					}
					// Item 2's request carried a traceparent: the server
					// span continues that trace under the caller's span.
					// Otherwise, with injection on, the traceparent latscope put
					// on the wire makes it a child of the client span.
					wantTrace, wantParent, remote := s.TraceID.String(), "0000000000000000", false
					switch c := clientFor[path]; {
					case path == "/items/2":
						wantTrace, wantParent, remote = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", true
					case inject && c != nil:
						wantTrace, wantParent, remote = c.TraceID.String(), c.SpanID.String(), true
					case inject:
						t.Errorf("no client span for %s", path)
					}
					if s.TraceID.String() != wantTrace || s.ParentID.String() != wantParent || s.RemoteParent != remote {
						t.Errorf("server span %s: trace %s parent %s remote %v; want %s %s %v", path, s.TraceID, s.ParentID, s.RemoteParent, wantTrace, wantParent, remote)
					}
					if attr(s, "client.address") != "127.0.0.1" {
						t.Errorf("client.address %v", attr(s, "client.address"))
					}
					// The rest of what server_entry and server_exit read of
					// *http.Request and *http.response: Host, ProtoMajor,
					// TLS, bytes written, and the ServeMux pattern (Go >= 1.23).
					size, route := int64(len("item-1\n")), any("/items/")
					if want == 404 {
						size = int64(len("404 page not found\n"))
					}
					if version.Compare(goVersion, "go1.23") < 0 {
						route = nil
					}
					if c := clientFor[path]; c == nil || attr(s, "server.address") != "127.0.0.1" || attr(s, "server.port") != attr(c, "server.port") {
						t.Errorf("server span %s: server.address %v port %v, want the client's", path, attr(s, "server.address"), attr(s, "server.port"))
					}
					if attr(s, "url.scheme") != "http" || attr(s, "network.protocol.version") != "1" ||
						attr(s, "http.response.body.size") != size || attr(s, "http.route") != route {
						t.Errorf("server span %s: scheme %v protocol %v body size %v route %v, want http 1 %d %v", path,
							attr(s, "url.scheme"), attr(s, "network.protocol.version"), attr(s, "http.response.body.size"), attr(s, "http.route"), size, route)
					}
					var handler *span.Span
					for _, c := range tr.spans {
						if c.ParentID == s.SpanID {
							handler = c
						}
					}
					if handler == nil || handler.Name != "main.handleItem" || handler.TraceID != s.TraceID {
						t.Errorf("server span's child %v, want main.handleItem", handler)
					}
				}
			}
		}
	}
}

// HTTP/2 server requests (TLS, ALPN) reach serverHandler.ServeHTTP through
// initALPNRequest, which tail-calls it: their spans end where it returns,
// not at conn.serve's site, and must end as returned calls nesting their
// handler.
func TestNetHTTP2Server(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range []string{"go1.21.13", "local", "go1.27.3"} {
		t.Run(tc, func(t *testing.T) {
			bin := fixture.Build(t, "httpapp", tc, fixture.Stripped)
			tr := traceCommand(t, agent.Config{}, []string{"main.handleItem"},
				"200 item-1\n200 item-2\n404 404 page not found\n", bin, "h2")
			checkServerExits(t, tr.proc, tc != "go1.27.3")
			servers := tr.ofKind(span.KindServer)
			if len(servers) != 3 {
				t.Fatalf("%d server spans, want 3", len(servers))
			}
			for _, s := range servers {
				if attr(s, "network.protocol.version") != "2" || s.Unwound || s.Status == span.StatusError {
					t.Errorf("server span %q: protocol %v unwound %v status %v %q", s.Name, attr(s, "network.protocol.version"), s.Unwound, s.Status, s.StatusMessage)
				}
				// The HTTP/2 writer's state: status and body size.
				want, size := int64(200), int64(len("item-1\n"))
				if attr(s, "url.path") == "/items/missing" {
					want, size = 404, int64(len("404 page not found\n"))
				}
				if attr(s, "http.response.status_code") != want || attr(s, "http.response.body.size") != size {
					t.Errorf("server span %v: status %v size %v, want %d %d", attr(s, "url.path"), attr(s, "http.response.status_code"), attr(s, "http.response.body.size"), want, size)
				}
				var handler *span.Span
				for _, c := range tr.spans {
					if c.ParentID == s.SpanID {
						handler = c
					}
				}
				if handler == nil || handler.Name != "main.handleItem" || handler.Start.Before(s.Start) || handler.End.After(s.End) {
					t.Errorf("server span %s [%v, %v]: child %+v, want main.handleItem inside it", s.Name, s.Start, s.End, handler)
				}
			}
		})
	}
}

// checkServerExits proves where serverHandler.ServeHTTP's returns were
// probed: with inConnServe, an emulated site in conn.serve (HTTP/1) and
// the HTTP/2 adapters' returns; else its own RETs.
func checkServerExits(t *testing.T, p *agent.Process, inConnServe bool) {
	t.Helper()
	for _, f := range p.Funcs {
		if f.Func.Name != "net/http.serverHandler.ServeHTTP" {
			continue
		}
		serve, alpn := false, false
		for _, e := range f.Exits {
			c := p.Binary.FuncAt(e.Addr)
			serve = serve || c != nil && c.Name == "net/http.(*conn).serve" && e.Emulated
			alpn = alpn || c != nil && c.Name == "net/http.initALPNRequest.ServeHTTP"
		}
		if serve != inConnServe || alpn != inConnServe {
			t.Errorf("serverHandler.ServeHTTP exits %+v: in conn.serve %v, initALPNRequest %v; want %v", f.Exits, serve, alpn, inConnServe)
		}
		return
	}
	t.Error("serverHandler.ServeHTTP not traced")
}

// symbolizer/fields.json must agree with DWARF for every library and
// toolchain of the matrix (stripped binaries rely on it), and for the
// builds whose GOEXPERIMENT changes the runtime's maps (their own rows).
func TestFieldTableMatchesDWARF(t *testing.T) {
	// A fixture that links each standard library package instrumented.
	fixtureOf := map[string]string{"net/http": "httpapp", "database/sql": "sqlapp"}
	for _, lib := range agent.Libraries {
		if lib.Module != "std" || len(lib.Fields) == 0 {
			continue // third-party libraries test their tabled versions themselves
		}
		fx, ok := fixtureOf[lib.Name]
		if !ok {
			t.Fatalf("no fixture links %s", lib.Name)
		}
		for _, tc := range append(fixture.Matrix(), "go1.24.9+noswissmap", "go1.25.4+noswissmap", "go1.27.3+mapsplitgroup") {
			bin := fixture.Build(t, fx, tc, fixture.Default)
			b, err := symbolizer.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			var own []string // its deps' fields: see their own tests
			for _, f := range lib.Fields {
				if lib.ModuleOf(f) == lib.Module {
					own = append(own, f)
				}
			}
			dwarf, err := b.DWARFFieldOffsets(own)
			if err != nil {
				t.Fatalf("%s %s: %v", lib.Name, tc, err)
			}
			b.HasDWARF = false
			table, src, err := b.FieldOffsets(lib.Module, own)
			if err != nil || !strings.HasPrefix(src, "table:") {
				t.Fatalf("%s %s table: %v (%s)", lib.Name, tc, err, src)
			}
			if fmt.Sprint(dwarf) != fmt.Sprint(table) {
				t.Errorf("%s %s: DWARF %v, table %v", lib.Name, tc, dwarf, table)
			}
			b.Close()
		}
	}
}

// Under concurrency, with the garbage collector preempting goroutines all
// the time (GOGC=1), every outgoing HTTP/1 request carries its own client
// span's context: none is left behind by a writer goroutine that moved to
// another thread, none lands on another request. Half of them have a body
// (net/http sends a copy of such a request).
func TestHTTPPropagationUnderLoad(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "httpapp", "local", fixture.Stripped)
	t.Setenv("GOGC", "1")
	t.Setenv("GOMAXPROCS", "4")
	const calls = 2000
	tr := traceCommand(t, agent.Config{Inject: true}, nil, fmt.Sprintf("load %d ok\n", calls), bin, "load", fmt.Sprint(calls), "16")
	servers, clients := tr.ofKind(span.KindServer), tr.ofKind(span.KindClient)
	if len(servers) != calls || len(clients) != calls {
		t.Fatalf("%d server and %d client spans, want %d and %d", len(servers), len(clients), calls, calls)
	}
	wrong, sizes := 0, 0
	for _, s := range servers {
		c := tr.byID[s.ParentID]
		// The server span continues the client span that fetched its item.
		if c == nil || c.Kind != span.KindClient || c.TraceID != s.TraceID || !s.RemoteParent ||
			!strings.HasSuffix(fmt.Sprint(attr(c, "url.full")), fmt.Sprint(attr(s, "url.path"))) {
			wrong++
		}
		// A POST's Content-Length ("body of <id>"), none for a GET.
		var size any
		if attr(s, "http.request.method") == "POST" {
			size = int64(len("body of ") + len(strings.TrimPrefix(fmt.Sprint(attr(s, "url.path")), "/items/")))
		}
		if attr(s, "http.request.body.size") != size {
			sizes++
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d server spans do not continue the client span of their request", wrong, calls)
	}
	if sizes > 0 {
		t.Errorf("%d of %d server spans have a wrong http.request.body.size", sizes, calls)
	}
	for k, v := range map[string]uint64{"propagation_injected": calls, "propagation_failed": 0, "propagation_unsent": 0, "propagation_already_present": 0} {
		if got := tr.res.Counter(k); got != v {
			t.Errorf("%s = %d, want %d", k, got, v)
		}
	}
}

// Handlers that leave the status to net/http (write nothing, or only set
// a header) get the status on the wire, 200, on their server span, over
// HTTP/1 and HTTP/2; one that hijacks the connection gets none (it
// answered on the connection itself: net/http sent nothing).
func TestNetHTTPImplicitStatus(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range []string{"go1.21.13", "local", "go1.27.3"} {
		t.Run(tc, func(t *testing.T) {
			bin := fixture.Build(t, "implicitapp", tc, fixture.Stripped)
			tr := traceCommand(t, agent.Config{}, nil,
				"h1 /nothing 200\nh1 /header 200\nh1 /hijack 202\nh2 /nothing 200\nh2 /header 200\n", bin)
			servers := tr.ofKind(span.KindServer)
			if len(servers) != 5 {
				var got []string
				for _, s := range servers {
					got = append(got, fmt.Sprintf("HTTP/%v %v", attr(s, "network.protocol.version"), attr(s, "url.path")))
				}
				t.Fatalf("%d server spans (%s), want 5; calls_open_at_detach %d", len(servers), strings.Join(got, ", "), tr.res.Counter("calls_open_at_detach"))
			}
			for _, s := range servers {
				path, want := fmt.Sprint(attr(s, "url.path")), any(int64(200))
				if path == "/hijack" {
					want = nil
				}
				if got := attr(s, "http.response.status_code"); got != want || s.Status == span.StatusError {
					t.Errorf("HTTP/%v %s: status code %v (%v), want %v", attr(s, "network.protocol.version"), path, got, s.Status, want)
				}
			}
		})
	}
}
