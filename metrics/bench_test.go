package metrics

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/span"
)

// benchSpans returns n spans of the shapes the libraries produce, with
// every attribute they set, over 4 routes, 2 status codes, 3 redis
// commands, ending 10 µs apart.
func benchSpans(n int) []*span.Span {
	spans := make([]*span.Span, n)
	for i := range spans {
		d := time.Duration(i%200) * 100 * time.Microsecond
		var s *span.Span
		switch i % 4 {
		case 0:
			s = newSpan(i, span.KindServer, d,
				attr(semconv.HTTPRequestMethodKey, "GET"), attr(semconv.URLPathKey, fmt.Sprintf("/product/%d", i)),
				attr(semconv.URLSchemeKey, "http"), attr(semconv.NetworkProtocolVersionKey, "1"),
				attr(semconv.ServerAddressKey, "shop"), attr(semconv.ServerPortKey, int64(8080)),
				attr(semconv.ClientAddressKey, "10.0.0.7"), attr(semconv.ClientPortKey, int64(40000+i%1000)),
				attr(semconv.HTTPRouteKey, fmt.Sprintf("/product%d/{id}", i%8)), attr(semconv.HTTPResponseStatusCodeKey, int64(200+300*(i%8/7))),
				attr(semconv.HTTPResponseBodySizeKey, int64(512)))
		case 1:
			s = newSpan(i, span.KindClient, d,
				attr(semconv.HTTPRequestMethodKey, "GET"), attr(semconv.URLFullKey, fmt.Sprintf("http://pricing:8081/price/%d", i)),
				attr(semconv.ServerAddressKey, "pricing"), attr(semconv.ServerPortKey, int64(8081)), attr(semconv.HTTPResponseStatusCodeKey, int64(200)))
		case 2:
			s = newSpan(i, span.KindClient, d,
				attr(semconv.RPCSystemKey, "grpc"), attr(semconv.RPCServiceKey, "demo.Pricing"), attr(semconv.RPCMethodKey, "GetPrice"),
				attr(semconv.ServerAddressKey, "pricing"), attr(semconv.ServerPortKey, int64(50051)), attr(semconv.RPCGRPCStatusCodeKey, int64(0)))
		case 3:
			s = newSpan(i, span.KindClient, d,
				attr(semconv.DBSystemNameKey, "redis"), attr(semconv.DBOperationNameKey, []string{"GET", "SET", "HGETALL"}[i%3]),
				attr(semconv.ServerAddressKey, "cache"), attr(semconv.ServerPortKey, int64(6379)), attr(semconv.DBNamespaceKey, "0"))
		}
		s.End = t0.Add(time.Duration(i) * 10 * time.Microsecond)
		s.Start = s.End.Add(-d)
		spans[i] = s
	}
	return spans
}

// BenchmarkObserve measures Export of one span (ns/op and allocs/op are
// per span) cycling over 16384 spans of four shapes, with exemplars at the
// default interval and on every span; the agent's budget is 2 µs of CPU
// per span for everything.
func BenchmarkObserve(b *testing.B) {
	for _, bc := range []struct {
		name     string
		interval time.Duration
	}{{"exemplar-interval-1s", 0}, {"exemplar-every-span", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			r, err := NewRED(prometheus.NewRegistry(), Options{ExemplarInterval: bc.interval})
			if err != nil {
				b.Fatal(err)
			}
			spans := benchSpans(16384)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := r.Export(spans[i : i+1]); err != nil {
					b.Fatal(err)
				}
				if i++; i == len(spans) {
					i = 0
				}
			}
		})
	}
}
