package demo_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// TestDemo builds the six commands, runs the whole system against a real
// redis-server and checks, end to end:
//   - loadgen's 50 requests through gateway all answer 200 with the product JSON,
//     whose stock is what inventory (Hertz) answers for that product, and
//     inventory's review count is the product's (its call to reviews works);
//   - gateway's request to catalog carries a W3C traceparent (seen by a
//     recording proxy between the two), whose trace gateway exports;
//   - reviews continues an incoming traceparent, and catalog and inventory,
//     which have no tracing code, propagate none;
//   - every service exits 0 on SIGTERM, logging no warning or error.
func TestDemo(t *testing.T) {
	requireRedis(t)
	bin := buildAll(t)

	began := time.Now()
	redisAddr := startRedis(t)
	otlp := newOTLPReceiver(t)
	otelEnv := []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + otlp.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}

	pricing := start(t, bin, "pricing", nil, "-redis", redisAddr)
	reviews := start(t, bin, "reviews", otelEnv, "-delay", "1ms")
	inventory := start(t, bin, "inventory", nil, "-reviews", "http://"+reviews.addr)
	inventoryURL := "http://" + inventory.addr
	catalog := start(t, bin, "catalog", nil, "-pricing", pricing.addr, "-reviews", "http://"+reviews.addr, "-inventory", inventoryURL)
	proxy := newRecordingProxy(t, "http://"+catalog.addr)
	gateway := start(t, bin, "gateway", otelEnv, "-catalog", proxy.URL)
	gatewayURL := "http://" + gateway.addr

	// 1. Load through gateway: every answer is a 200.
	const requests = 50
	out, err := exec.Command(filepath.Join(bin, "loadgen"), "-json",
		"-url", gatewayURL+"/product/%d", "-ids", "1-20", "-n", strconv.Itoa(requests), "-c", "8", "-duration", "20s").Output()
	if err != nil {
		t.Fatalf("loadgen: %v\n%s", err, stderrOf(err))
	}
	var res struct {
		Requests int            `json:"requests"`
		Errors   int            `json:"errors"`
		Status   map[string]int `json:"status"`
		P50ms    float64        `json:"p50_ms"`
		P99ms    float64        `json:"p99_ms"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("decode loadgen output %q: %v", out, err)
	}
	t.Logf("loadgen: %s", bytes.TrimSpace(out))
	if res.Requests != requests || res.Errors != 0 || res.Status["200"] != requests {
		t.Fatalf("loadgen = %+v, want %d requests, all 200", res, requests)
	}

	// 2. Every answer catalog gave gateway is a complete product, and every
	// request gateway sent carried a traceparent.
	traceparent := regexp.MustCompile(`^00-([0-9a-f]{32})-[0-9a-f]{16}-0[01]$`)
	gatewayTraces := map[string]bool{}
	records := proxy.records()
	if len(records) != requests {
		t.Fatalf("catalog got %d requests from gateway, want %d", len(records), requests)
	}
	products := map[int64]product{}
	for _, r := range records {
		m := traceparent.FindStringSubmatch(r.traceparent)
		if m == nil {
			t.Errorf("gateway → catalog %s: traceparent %q, want a W3C traceparent", r.path, r.traceparent)
			continue
		}
		gatewayTraces[m[1]] = true
		if p, ok := checkProduct(t, r.path, r.status, r.body); ok {
			products[p.ID] = p
		}
	}

	// 2b. The stock is inventory's, and inventory's review count (its
	// Hertz client's call to reviews) is the product's.
	var direct int // calls to inventory from the test: each calls reviews
	for id, p := range products {
		direct++
		status, body := get(t, fmt.Sprintf("%s/stock/%d", inventoryURL, id), nil)
		var s struct {
			ID      *int64 `json:"id"`
			InStock *int64 `json:"in_stock"`
			Reviews *int   `json:"reviews"`
		}
		if err := json.Unmarshal([]byte(body), &s); status != http.StatusOK || err != nil || s.ID == nil || s.InStock == nil || s.Reviews == nil {
			t.Errorf("GET /stock/%d = %d %s (%v), want 200 and {id, in_stock, reviews}", id, status, body, err)
			continue
		}
		if *s.ID != id || *s.InStock != p.Stock || *s.InStock < 0 || *s.Reviews != len(p.Reviews) {
			t.Errorf("GET /stock/%d = %s; the product has stock %d and %d reviews", id, body, p.Stock, len(p.Reviews))
		}
	}
	if len(products) < 2 {
		t.Errorf("loadgen fetched %d distinct products, want several", len(products))
	}
	for _, path := range []string{"/stock/0", "/stock/101", "/stock/x"} {
		if status, body := get(t, inventoryURL+path, nil); status != http.StatusNotFound {
			t.Errorf("GET %s on inventory = %d %s, want 404", path, status, body)
		}
	}

	// 3. Unknown ids are 404 all the way through.
	if status, body := get(t, gatewayURL+"/product/100000", nil); status != http.StatusNotFound {
		t.Errorf("GET /product/100000 via gateway = %d %s, want 404", status, body)
	}

	// 3b. The benchmark's reference request: computation and one call to
	// reviews; a bad id is refused.
	if status, body := get(t, "http://"+catalog.addr+"/work/3", nil); status != http.StatusOK || !regexp.MustCompile(`^\d+ [0-9a-f]{64}\n$`).MatchString(body) {
		t.Errorf("GET /work/3 = %d %q, want 200 and a review count and digest", status, body)
	}
	if status, _ := get(t, "http://"+catalog.addr+"/work/x", nil); status != http.StatusBadRequest {
		t.Errorf("GET /work/x = %d, want 400", status)
	}

	// 4. reviews continues the trace of an incoming traceparent.
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	if status, body := get(t, "http://"+reviews.addr+"/reviews/3",
		http.Header{"Traceparent": {"00-" + traceID + "-" + parentID + "-01"}}); status != http.StatusOK {
		t.Errorf("GET /reviews/3 = %d %s, want 200", status, body)
	}

	// 5. Clean exits flush the exporters.
	gateway.stop(t)
	// Like a real client going away: otherwise catalog's drain waits 5s on
	// connections the proxy dialed but never used (net/http's StateNew rule).
	proxy.transport.CloseIdleConnections()
	catalog.stop(t)
	// The same for the test's own keep-alive connections to inventory:
	// Hertz serves a kept-alive connection in a loop that waits for its
	// next request, so its drain would wait them out (5s).
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	inventory.stop(t)
	reviews.stop(t)
	pricing.stop(t)
	t.Logf("system ran %v (after builds)", time.Since(began).Round(time.Millisecond))

	spans := otlp.spansByService()
	if names := keys(spans); strings.Join(names, ",") != "gateway,reviews" {
		t.Errorf("spans exported by services %v, want exactly gateway and reviews (catalog, pricing and inventory have no tracing code)", names)
	}
	var servers, clients int
	for _, s := range spans["gateway"] {
		switch s.GetKind() {
		case tracepb.Span_SPAN_KIND_SERVER:
			servers++
		case tracepb.Span_SPAN_KIND_CLIENT:
			clients++
			delete(gatewayTraces, hex.EncodeToString(s.GetTraceId()))
		}
	}
	if servers < requests || clients < requests {
		t.Errorf("gateway exported %d server and %d client spans, want at least %d of each", servers, clients, requests)
	}
	if len(gatewayTraces) != 0 {
		t.Errorf("catalog saw traceparents of %d traces gateway never exported a client span for", len(gatewayTraces))
	}

	var continued bool
	var roots int
	for _, s := range spans["reviews"] {
		if s.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
			continue
		}
		switch {
		case hex.EncodeToString(s.GetTraceId()) == traceID:
			continued = hex.EncodeToString(s.GetParentSpanId()) == parentID
		case len(s.GetParentSpanId()) == 0:
			roots++
		}
	}
	if !continued {
		t.Errorf("reviews exported no server span in trace %s with parent %s: it does not continue an incoming traceparent", traceID, parentID)
	}
	// Per product request one call from catalog and one from inventory;
	// GET /work/3; inventory's calls for the test's own requests.
	if calls := 2*requests + 1 + direct; roots != calls {
		t.Errorf("reviews exported %d root server spans for %d calls from catalog and inventory; neither may propagate trace context", roots, calls)
	}
}

// product is catalog's answer to GET /product/{id}.
type product struct {
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Price       int64  `json:"price"`
	Reviews     []struct {
		Author string `json:"author"`
		Rating int    `json:"rating"`
		Text   string `json:"text"`
	} `json:"reviews"`
	Stock int64 `json:"stock"`
}

// checkProduct reports an answer of catalog that is not a complete
// product; ok is whether it is one.
func checkProduct(t *testing.T, path string, status int, body []byte) (p product, ok bool) {
	t.Helper()
	if status != http.StatusOK {
		t.Errorf("%s: status %d, body %s", path, status, body)
		return p, false
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Errorf("%s: decode %s: %v", path, body, err)
		return p, false
	}
	ok = true
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(body, &raw)
	for _, field := range []string{"id", "name", "description", "price", "reviews", "stock"} {
		if _, found := raw[field]; !found {
			t.Errorf("%s: body %s has no %q", path, body, field)
			ok = false
		}
	}
	if want := "/product/" + strconv.FormatInt(p.ID, 10); path != want || p.Name == "" || p.Description == "" || p.Price <= 0 || p.Reviews == nil || p.Stock < 0 {
		t.Errorf("%s: product %+v is incomplete", path, p)
		ok = false
	}
	for _, r := range p.Reviews {
		if r.Author == "" || r.Rating < 1 || r.Rating > 5 || r.Text == "" {
			t.Errorf("%s: bad review %+v", path, r)
			ok = false
		}
	}
	return p, ok
}

// requireRedis skips the test, loudly, when redis-server is missing; under
// CI=true that is a failure.
func requireRedis(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err == nil {
		return
	}
	msg := "redis-server is not installed: the demo end-to-end test did NOT run (apt-get install -y redis-server)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	fmt.Fprintf(os.Stderr, "\n%s\n!!! %s\n%s\n\n", strings.Repeat("!", 80), msg, strings.Repeat("!", 80))
	t.Skip(msg)
}
