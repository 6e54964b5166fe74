package otlp

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/latscope/latscope/span"
)

// BenchmarkExport measures the export path as the node agent uses it:
// batches of 512 net/http-shaped spans handed to the exporter, encoded,
// queued, and sent over gRPC to a receiver on loopback that counts spans
// and bytes without decoding them into messages. (Export keeps nothing of
// the spans: the agent's builder reuses their memory and passes them on
// uncopied.) One op is one span; B/op and allocs/op are the whole
// process's (the receiver's gRPC server included); cpu-ns/span is the
// process's CPU time (user + system, all threads, receiver included) per
// span.
func BenchmarkExport(b *testing.B) {
	r := startCountingReceiver(b)
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+r.addr)
	b.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	const batch = 512
	e, err := New(context.Background(), Options{BatchSize: batch, BatchTimeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	spans := benchSpans(8 * batch)
	// Warm up: the connection, the pools, the exporter's reused memory.
	for i := 0; i < 4; i++ {
		e.Export(spans[i*batch : (i+1)*batch])
	}
	waitExported(b, e, 4*batch)

	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		n := min(batch, b.N-sent)
		off := (sent / batch % 8) * batch
		// No more than a few batches ahead of the sender: the queue
		// would drop what does not fit.
		for e.Queued() > 2*batch {
			time.Sleep(200 * time.Microsecond)
		}
		e.Export(spans[off : off+n])
		sent += n
	}
	if err := e.Close(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/span")
	exported, dropped, failed := e.Stats()
	if exported != uint64(b.N+4*batch) || dropped+failed != 0 {
		b.Fatalf("exported %d of %d, dropped %d, failed %d", exported, b.N+4*batch, dropped, failed)
	}
	if got := r.spans.Load(); got != int64(exported) {
		b.Fatalf("receiver counted %d spans, exporter %d", got, exported)
	}
	b.ReportMetric(float64(r.bytes.Load())/float64(r.spans.Load()), "wire-B/span")
}

// waitExported waits until e has exported n spans.
func waitExported(tb testing.TB, e *Exporter, n uint64) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		exported, dropped, failed := e.Stats()
		if exported >= n {
			return
		}
		if dropped+failed > 0 || time.Now().After(deadline) {
			tb.Fatalf("exported %d of %d spans, dropped %d, failed %d", exported, n, dropped, failed)
		}
		time.Sleep(time.Millisecond)
	}
}

// benchSpans returns n spans shaped like the net/http library's, server
// and client spans in turn, of two processes, with the attributes its
// decoder sets (values boxed once, as library.Values does).
func benchSpans(n int) []*span.Span {
	procs := []*span.Process{
		{PID: 4242, ServiceName: "catalog", Executable: "catalog", GoVersion: "go1.26.8"},
		{PID: 4343, ServiceName: "pricing", Executable: "pricing", GoVersion: "go1.26.8"},
	}
	var (
		get, path, scheme, proto11, host = any("GET"), any("/product/42"), any("http"), any("1.1"), any("catalog.shop.svc")
		port, peer, peerPort, status     = any(int64(8080)), any("10.0.3.17"), any(int64(51234)), any(int64(200))
		route, full, pricing, pport      = any("/product/{id}"), any("http://pricing:8081/price/42"), any("pricing"), any(int64(8081))
	)
	start := time.Unix(1764500000, 0)
	out := make([]*span.Span, n)
	for i := range out {
		s := &span.Span{
			TraceID: span.TraceID{byte(i >> 8), byte(i), 0xab, 0xcd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
			SpanID:  span.SpanID{0x51, byte(i >> 8), byte(i), 1, 2, 3, 4, 5},
			Process: procs[i/2%2], GoID: uint64(1000 + i), StartTID: 77, EndTID: 77, CPU: 1,
			Start: start.Add(time.Duration(i) * time.Millisecond), End: start.Add(time.Duration(i)*time.Millisecond + 850*time.Microsecond),
		}
		if i%2 == 0 {
			s.Kind, s.Name, s.Function = span.KindServer, "GET /product/{id}", "net/http.serverHandler.ServeHTTP"
			s.ParentID, s.RemoteParent = span.SpanID{0x77, byte(i), 1}, true
			s.Attrs = []span.Attr{
				{Key: "http.request.method", Value: get}, {Key: "url.path", Value: path}, {Key: "url.scheme", Value: scheme},
				{Key: "network.protocol.version", Value: proto11}, {Key: "server.address", Value: host}, {Key: "server.port", Value: port},
				{Key: "client.address", Value: peer}, {Key: "client.port", Value: peerPort}, {Key: "http.route", Value: route},
				{Key: "http.response.status_code", Value: status}, {Key: "http.response.body.size", Value: int64(1200 + i%64)},
			}
			if i%16 == 0 {
				s.Status, s.StatusMessage = span.StatusError, "HTTP 500"
			}
		} else {
			s.Kind, s.Name, s.Function = span.KindClient, "GET", "net/http.(*Client).do"
			s.ParentID = span.SpanID{0x51, byte((i - 1) >> 8), byte(i - 1), 1, 2, 3, 4, 5}
			s.Attrs = []span.Attr{
				{Key: "http.request.method", Value: get}, {Key: "url.full", Value: full}, {Key: "server.address", Value: pricing},
				{Key: "server.port", Value: pport}, {Key: "http.response.status_code", Value: status},
			}
		}
		out[i] = s
	}
	return out
}

// countingReceiver is an OTLP/gRPC trace receiver on loopback that counts
// the spans and bytes it is sent, walking the wire format instead of
// decoding messages, so that its cost stays small beside the exporter's.
type countingReceiver struct {
	addr         string
	spans, bytes atomic.Int64
}

func startCountingReceiver(tb testing.TB) *countingReceiver {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &countingReceiver{addr: l.Addr().String()}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(countingCodec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Export", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var req wireCount
			if err := dec(&req); err != nil {
				return nil, err
			}
			r.spans.Add(int64(req.spans))
			r.bytes.Add(int64(req.bytes))
			return &collectorpb.ExportTraceServiceResponse{}, nil
		}}},
	}, r)
	go srv.Serve(l)
	tb.Cleanup(srv.Stop)
	return r
}

// wireCount is what countingCodec reads of an ExportTraceServiceRequest.
type wireCount struct{ spans, bytes int }

// countingCodec decodes a request into a wireCount and encodes responses
// as protobuf.
type countingCodec struct{}

func (countingCodec) Name() string { return "proto" }

func (countingCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := proto.Marshal(v.(proto.Message))
	return mem.BufferSlice{mem.SliceBuffer(b)}, err
}

func (countingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	c, ok := v.(*wireCount)
	if !ok {
		return proto.Unmarshal(b, v.(proto.Message))
	}
	c.bytes = len(b)
	// ExportTraceServiceRequest.resource_spans = 1, ResourceSpans.scope_spans
	// = 2, ScopeSpans.spans = 2.
	wireFields(b, 1, func(rs []byte) {
		wireFields(rs, 2, func(ss []byte) {
			wireFields(ss, 2, func([]byte) { c.spans++ })
		})
	})
	return nil
}

// wireFields calls f with the bytes of every length-delimited field num
// of message b.
func wireFields(b []byte, num protowire.Number, f func([]byte)) {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			panic(fmt.Sprintf("bad tag: %v", protowire.ParseError(l)))
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				panic(fmt.Sprintf("bad field %d: %v", n, protowire.ParseError(l)))
			}
			f(v)
			b = b[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			panic(fmt.Sprintf("bad field %d: %v", n, protowire.ParseError(l)))
		}
		b = b[l:]
	}
}
