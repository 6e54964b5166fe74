package otlp

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/latscope/latscope/span"
)

// collector is an OTLP/gRPC trace receiver on loopback that keeps what
// it is sent.
type collector struct {
	collectorpb.UnimplementedTraceServiceServer
	mu       sync.Mutex
	received []*tracepb.ResourceSpans
}

func (c *collector) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.received = append(c.received, req.ResourceSpans...)
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func startCollector(t *testing.T) (*collector, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	srv := grpc.NewServer()
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
