package otlp

import (
	"compress/gzip"
	"context"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/latscope/latscope/span"
)

// collector is an OTLP/gRPC trace receiver on loopback that keeps what
// it is sent.
type collector struct {
	collectorpb.UnimplementedTraceServiceServer
	// hold, if set, holds the first export until it is closed; holding
	// is closed when it does.
	hold, holding chan struct{}
	holdOnce      sync.Once

	mu       sync.Mutex
	received []*tracepb.ResourceSpans
	fail     bool   // answer InvalidArgument, receiving nothing (but the held export)
	encoding string // of the last request: its compression
	auth     string // and authorization
}

// HandleRPC notes the compression of a request (grpc-encoding is not in
// the handler's metadata).
func (c *collector) HandleRPC(_ context.Context, s stats.RPCStats) {
	if h, ok := s.(*stats.InHeader); ok && h.Compression != "" {
		c.mu.Lock()
		c.encoding = h.Compression
		c.mu.Unlock()
	}
}

func (c *collector) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (c *collector) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c *collector) HandleConn(context.Context, stats.ConnStats)                       {}

func (c *collector) Export(ctx context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	held := false
	if c.hold != nil {
		c.holdOnce.Do(func() { held = true })
		if held {
			close(c.holding)
			<-c.hold
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail && !held {
		return nil, status.Error(codes.InvalidArgument, "refused by the test")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	c.auth = strings.Join(md.Get("authorization"), ",")
	c.received = append(c.received, req.ResourceSpans...)
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func startCollector(t *testing.T) (*collector, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{holding: make(chan struct{})}
	srv := grpc.NewServer(grpc.StatsHandler(c))
	collectorpb.RegisterTraceServiceServer(srv, c)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return c, l.Addr().String()
}

func TestExportOverGRPC(t *testing.T) {
	c, addr := startCollector(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	e, err := New(context.Background(), Options{BatchSize: 2, BatchTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	catalog := &span.Process{PID: 10, ServiceName: "catalog", Executable: "catalog", GoVersion: "go1.27.3"}
	pricing := &span.Process{PID: 11, ServiceName: "pricing", Executable: "pricing", GoVersion: "go1.22.12"}
	start := time.Unix(1700000000, 5)
	server := &span.Span{
		TraceID: span.TraceID{1, 2, 3}, SpanID: span.SpanID{4}, ParentID: span.SpanID{9}, RemoteParent: true,
		Name: "GET /product/{id}", Kind: span.KindServer, Start: start, End: start.Add(time.Millisecond),
		Status: span.StatusError, StatusMessage: "HTTP 500", Process: catalog, GoID: 7, EndTID: 70, CPU: 1, Depth: 2,
		Function: "net/http.serverHandler.ServeHTTP", File: "/usr/local/go/src/net/http/server.go", Line: 3300,
		Attrs: []span.Attr{{Key: "http.response.status_code", Value: int64(500)}, {Key: "ok", Value: false}, {Key: "ratio", Value: 0.5}},
	}
	client := &span.Span{TraceID: server.TraceID, SpanID: span.SpanID{5}, ParentID: server.SpanID, Name: "SELECT", Kind: span.KindClient,
		Start: start.Add(10 * time.Microsecond), End: start.Add(20 * time.Microsecond), Status: span.StatusOK, Process: catalog}
	remote := &span.Span{TraceID: server.TraceID, SpanID: span.SpanID{6}, ParentID: client.SpanID, RemoteParent: true, Name: "pricing.Pricing/Get",
		Kind: span.KindServer, Start: start, End: start.Add(time.Microsecond), Process: pricing}
	if err := e.Export([]*span.Span{server, client, remote}); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if exported, dropped, failed := e.Stats(); exported != 3 || dropped+failed != 0 {
		t.Fatalf("stats: exported %d dropped %d failed %d", exported, dropped, failed)
	}

	byID := map[byte]*tracepb.Span{}
	service := map[byte]string{}
	for _, rs := range c.received {
		svc := attr(rs.Resource.Attributes, "service.name").GetStringValue()
		if got := attr(rs.Resource.Attributes, "telemetry.distro.name").GetStringValue(); got != "latscope" {
			t.Errorf("resource %s: telemetry.distro.name %q", svc, got)
		}
		for _, ss := range rs.ScopeSpans {
			if ss.Scope.Name != span.Scope.Name {
				t.Errorf("scope %q", ss.Scope.Name)
			}
			for _, s := range ss.Spans {
				byID[s.SpanId[0]] = s
				service[s.SpanId[0]] = svc
			}
		}
	}
	if len(byID) != 3 || service[4] != "catalog" || service[5] != "catalog" || service[6] != "pricing" {
		t.Fatalf("received spans %v by service %v", byID, service)
	}
	s := byID[4]
	if s.Name != server.Name || s.Kind != tracepb.Span_SPAN_KIND_SERVER || s.ParentSpanId[0] != 9 || s.TraceId[2] != 3 ||
		s.StartTimeUnixNano != uint64(start.UnixNano()) || s.EndTimeUnixNano != uint64(start.Add(time.Millisecond).UnixNano()) {
		t.Errorf("server span: %v", s)
	}
	if s.Flags&uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK) == 0 {
		t.Errorf("server span flags %#x: remote parent not flagged", s.Flags)
	}
	if s.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || s.Status.GetMessage() != "HTTP 500" {
		t.Errorf("server span status %v", s.Status)
	}
	if v := attr(s.Attributes, "http.response.status_code"); v.GetIntValue() != 500 {
		t.Errorf("status code attribute %v", v)
	}
	if v := attr(s.Attributes, "ok"); v == nil || v.GetBoolValue() {
		t.Errorf("bool attribute %v", v)
	}
	if v := attr(s.Attributes, "ratio"); v.GetDoubleValue() != 0.5 {
		t.Errorf("float attribute %v", v)
	}
	if v := attr(s.Attributes, span.KeyGoroutineID); v.GetIntValue() != 7 {
		t.Errorf("goroutine attribute %v", v)
	}
	if v := attr(s.Attributes, "code.function.name"); v.GetStringValue() != server.Function {
		t.Errorf("code.function.name %v", v)
	}
	// Only latscope's own analysis needs these; a library's code location
	// is the library's.
	for _, key := range []string{"latscope.cpu", "latscope.depth", "code.file.path", "code.line.number"} {
		if v := attr(s.Attributes, key); v != nil {
			t.Errorf("server span exports %s = %v", key, v)
		}
	}
	c5 := byID[5]
	if c5.Kind != tracepb.Span_SPAN_KIND_CLIENT || c5.ParentSpanId[0] != 4 || c5.Status.GetCode() != tracepb.Status_STATUS_CODE_OK ||
		c5.Flags&uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK) != 0 {
		t.Errorf("client span: %v", c5)
	}
}

func attr(kvs []*commonpb.KeyValue, key string) *commonpb.AnyValue {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}

// TestExportConfigured: the OTEL_EXPORTER_OTLP_* settings still apply
// (protocol, TLS with the given certificate, gzip, headers), and what a
// receiver decodes with the official types equals the request built from
// the official messages (protoRequest), every span kind, status and
// attribute type included.
func TestExportConfigured(t *testing.T) {
	spans := encodeCases()
	want := &collectorpb.ExportTraceServiceRequest{ResourceSpans: protoRequest(spans, map[*span.Process]*resourcepb.Resource{})}

	t.Run("grpc", func(t *testing.T) {
		c, addr := startCollector(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
		t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
		t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
		t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken")
		exportAll(t, spans)
		c.mu.Lock()
		defer c.mu.Unlock()
		if !proto.Equal(&collectorpb.ExportTraceServiceRequest{ResourceSpans: c.received}, want) {
			t.Errorf("received\n%v\nwant\n%v", c.received, want)
		}
		if c.encoding != "gzip" || c.auth != "Bearer t0ken" {
			t.Errorf("grpc-encoding %q, authorization %q: compression or headers not applied", c.encoding, c.auth)
		}
	})

	t.Run("http/protobuf", func(t *testing.T) {
		var (
			mu   sync.Mutex
			got  collectorpb.ExportTraceServiceRequest
			seen []string
		)
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body := io.Reader(r.Body)
			if r.Header.Get("Content-Encoding") == "gzip" {
				zr, err := gzip.NewReader(r.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				body = zr
			}
			b, err := io.ReadAll(body)
			var req collectorpb.ExportTraceServiceRequest
			if err == nil {
				err = proto.Unmarshal(b, &req)
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			mu.Lock()
			got.ResourceSpans = append(got.ResourceSpans, req.ResourceSpans...)
			seen = append(seen, r.URL.Path, r.Header.Get("Content-Encoding"), r.Header.Get("Authorization"))
			mu.Unlock()
			w.Header().Set("Content-Type", "application/x-protobuf")
		}))
		defer srv.Close()
		cert := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
		t.Setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", cert)
		t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
		t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken")
		exportAll(t, spans)
		mu.Lock()
		defer mu.Unlock()
		if !proto.Equal(&got, want) {
			t.Errorf("received\n%v\nwant\n%v", &got, want)
		}
		if len(seen) != 3 || seen[0] != "/v1/traces" || seen[1] != "gzip" || seen[2] != "Bearer t0ken" {
			t.Errorf("requests (path, encoding, authorization): %q", seen)
		}
	})
}

// exportAll exports spans in one batch and closes the exporter, which
// must have exported every one.
func exportAll(t *testing.T, spans []*span.Span) {
	t.Helper()
	e, err := New(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Export(spans); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if exported, dropped, failed := e.Stats(); exported != uint64(len(spans)) || dropped+failed != 0 {
		t.Fatalf("stats: exported %d of %d, dropped %d, failed %d", exported, len(spans), dropped, failed)
	}
}

// TestExportCounts: spans beyond the full queue are dropped, spans of a
// failed export are failed, spans after Close are dropped: all counted,
// and every span is counted once.
func TestExportCounts(t *testing.T) {
	c, addr := startCollector(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	spans := benchSpans(40)

	// The receiver holds the first export until released: the queue
	// (2 batches of 2) and the batch being filled take 6 spans, the
	// export held 2 more; at least 12 of 20 are dropped.
	c.hold = make(chan struct{})
	e, err := New(context.Background(), Options{QueueSize: 4, BatchSize: 2, BatchTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.Export(spans[:2])
	e.Export(spans[2:3]) // hands the first batch to the sender
	waitHeld(t, c)
	e.Export(spans[3:20])
	if q := e.Queued(); q != 6 {
		t.Errorf("Queued() = %d, want 6 (two full batches and one being filled)", q)
	}
	// Exports but the held one fail from now on; they are not retried
	// (InvalidArgument).
	c.mu.Lock()
	c.fail = true
	c.mu.Unlock()
	close(c.hold)
	if err := e.Close(); err == nil || !strings.Contains(err.Error(), "12 spans dropped at the full queue, 6 lost to failed exports") {
		t.Errorf("Close: %v", err)
	}
	e.Export(spans[20:]) // after Close
	exported, dropped, failed := e.Stats()
	if exported != 2 || dropped != 12+20 || failed != 6 {
		t.Errorf("stats: exported %d dropped %d failed %d, want 2, 32, 6", exported, dropped, failed)
	}
	c.mu.Lock()
	if n := countSpans(c.received); n != 2 {
		t.Errorf("receiver got %d spans, want 2", n)
	}
	c.mu.Unlock()
}

func waitHeld(t *testing.T, c *collector) {
	t.Helper()
	select {
	case <-c.holding:
	case <-time.After(10 * time.Second):
		t.Fatal("the exporter sent nothing")
	}
}

func countSpans(rss []*tracepb.ResourceSpans) int {
	n := 0
	for _, rs := range rss {
		for _, ss := range rs.ScopeSpans {
			n += len(ss.Spans)
		}
	}
	return n
}
