package ui_test

import (
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/metrics"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
	"github.com/latscope/latscope/ui"
)

var (
	catalog = &span.Process{PID: 4101, ServiceName: "catalog", Executable: "catalog", GoVersion: "go1.26.0"}
	pricing = &span.Process{PID: 4202, ServiceName: "pricing", Executable: "pricing", GoVersion: "go1.25.3"}
)

func traceID(n uint64) span.TraceID {
	var id span.TraceID
	id[0] = 0xab
	binary.BigEndian.PutUint64(id[8:], n)
	return id
}

func spanID(n uint64, k byte) span.SpanID {
	var id span.SpanID
	binary.BigEndian.PutUint32(id[:4], uint32(n))
	id[7] = k
	return id
}

// product is one demo-like request ending at end:
//
//	catalog GET /product/{id}         server   g10
//	  catalog main.(*handler).product internal g10
//	    catalog SELECT                client   g10
//	    catalog demo.Pricing/GetPrice client   g11 (go statement)
//	      pricing demo.Pricing/GetPrice server g40 (remote parent)
//	        pricing GET                client  g40 (redis)
//
// price is pricing's time; failed makes pricing fail.
func product(n uint64, start time.Time, price time.Duration, failed bool, attrs ...span.Attr) []*span.Span {
	id := traceID(n)
	ms := time.Millisecond
	mk := func(k byte, parent byte, name string, kind span.Kind, p *span.Process, from, to time.Duration, goid, pgoid uint64) *span.Span {
		s := &span.Span{TraceID: id, SpanID: spanID(n, k), Name: name, Function: name, Kind: kind, Start: start.Add(from), End: start.Add(to), Process: p, GoID: goid, ParentGoID: pgoid}
		if parent != 0 {
			s.ParentID = spanID(n, parent)
		}
		return s
	}
	server := mk(1, 0, "GET /product/{id}", span.KindServer, catalog, 0, 4*ms+price, 10, 0)
	server.Attrs = []span.Attr{{Key: "http.request.method", Value: "GET"}, {Key: "http.route", Value: "/product/{id}"}}
	for _, a := range attrs { // latscope.time.* are its time split, as the Jaeger client reads them back
		if v, ok := a.Value.(int64); !ok || !server.SetTimeAttr(a.Key, v) {
			server.Attrs = append(server.Attrs, a)
		}
	}
	handler := mk(2, 1, "main.(*handler).product", span.KindInternal, catalog, ms/10, 4*ms+price-ms/10, 10, 10)
	handler.File, handler.Line = "/src/catalog/handler.go", 42
	sel := mk(3, 2, "SELECT", span.KindClient, catalog, ms/5, ms, 10, 10)
	sel.Attrs = []span.Attr{{Key: "db.system.name", Value: "sqlite"}, {Key: "db.query.text", Value: "SELECT name FROM products WHERE id = ?"}}
	rpc := mk(4, 2, "demo.Pricing/GetPrice", span.KindClient, catalog, ms, 3*ms+price, 11, 10)
	rpc.Attrs = []span.Attr{{Key: "rpc.system", Value: "grpc"}}
	psrv := mk(5, 4, "demo.Pricing/GetPrice", span.KindServer, pricing, ms+ms/5, 3*ms+price-ms/5, 40, 0)
	psrv.RemoteParent = true
	psrv.Attrs = []span.Attr{{Key: "rpc.system", Value: "grpc"}}
	redis := mk(6, 5, "GET", span.KindClient, pricing, 2*ms, 2*ms+price, 40, 40)
	redis.Attrs = []span.Attr{{Key: "db.system.name", Value: "redis"}}
	if failed {
		psrv.Status, psrv.StatusMessage = span.StatusError, "NotFound"
		rpc.Status, rpc.StatusMessage = span.StatusError, "NotFound"
	}
	return []*span.Span{redis, psrv, sel, rpc, handler, server}
}

// env is a store and a History holding n product requests over the last
// minutes, and the UI over them.
type env struct {
	store   *store.Store
	history *metrics.History
	ui      *ui.UI
	srv     *httptest.Server
	now     time.Time
	status  map[string]any
}

func newEnv(t testing.TB, n int, opts ...func(*ui.Options)) *env {
	t.Helper()
	now := time.Now()
	clock := now.Add(-time.Hour)
	e := &env{now: now, store: store.New(1 << 30)}
	e.history = metrics.NewHistory(metrics.HistoryOptions{Now: func() time.Time { return clock }})
	clock = now
	for i := range n {
		// The last 5 minutes: pricing takes 20 ms; the 5 before: 2 ms.
		start := now.Add(-10 * time.Minute).Add(time.Duration(i) * 10 * time.Minute / time.Duration(max(n, 1)))
		price := 2 * time.Millisecond
		if now.Sub(start) < 5*time.Minute {
			price = 20 * time.Millisecond
		}
		spans := product(uint64(i+1), start, price+time.Duration(i)*time.Microsecond, i%10 == 3)
		e.store.Export(spans)
		e.history.Export(spans)
	}
	e.status = map[string]any{
		"version": "dev", "pid": 77, "started": now.Add(-time.Hour), "api": "http://127.0.0.1:7070",
		"selectors":  map[string]any{"include": []map[string]any{{"exe": "/srv/*"}}},
		"probeLinks": "uprobe_multi",
		"processes":  []map[string]any{{"pid": 4101, "service": "catalog", "exe": "/srv/catalog", "goVersion": "go1.26.0", "functions": 12, "libraries": []string{"net/http", "database/sql"}, "probes": 40, "links": 3, "replicas": 1}},
		"skipped":    []map[string]any{{"pid": 9, "name": "cgo-thing", "exe": "/srv/cgo", "selected": true, "reason": "not a Go binary"}},
		"counters":   []map[string]any{{"name": "spans_built", "help": "spans rebuilt", "value": 1000}, {"name": "lost_ringbuf_full", "help": "events lost at a full ring buffer", "value": 3, "loss": true}},
		"gauges":     []map[string]any{{"name": "store_traces", "help": "traces in the store", "value": 10}},
		"store":      map[string]any{"bytes": 1 << 20, "budget": 128 << 20, "traces": n},
	}
	o := ui.Options{Store: e.store, History: e.history, Status: func() any { return e.status }}
	for _, f := range opts {
		f(&o)
	}
	u, err := ui.New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.ui = u
	e.srv = httptest.NewServer(u)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(e.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// contains checks body holds every want.
func contains(t *testing.T, what, body string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("%s: no %q in:\n%.3000s", what, w, body)
		}
	}
}
