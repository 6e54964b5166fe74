package metrics

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/span"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

var shop = &span.Process{PID: 42, ServiceName: "shop"}

// newSpan returns a span of process shop, numbered n (its trace and span
// ids derive from n), ending at t0 + n ms after lasting d.
func newSpan(n int, kind span.Kind, d time.Duration, attrs ...span.Attr) *span.Span {
	s := &span.Span{Kind: kind, Process: shop, Attrs: attrs, Name: "test"}
	binary.BigEndian.PutUint64(s.TraceID[8:], uint64(0xab00+n))
	binary.BigEndian.PutUint64(s.SpanID[:], uint64(0xcd00+n))
	s.End = t0.Add(time.Duration(n) * time.Millisecond)
	s.Start = s.End.Add(-d)
	return s
}

func attr(k attribute.Key, v any) span.Attr { return span.Attr{Key: string(k), Value: v} }

// sample is one series of a gathered histogram.
type sample struct {
	labels map[string]string
	count  uint64
	sum    float64
}

// gatherSeries returns every histogram series in reg by metric name.
func gatherSeries(t *testing.T, reg *prometheus.Registry) map[string][]sample {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string][]sample{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetHistogram() == nil {
				continue
			}
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			out[mf.GetName()] = append(out[mf.GetName()], sample{l, m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()})
		}
	}
	return out
}

// noK8s adds to a histogram's wanted labels the Kubernetes ones, empty:
// a process outside Kubernetes.
func noK8s(labels map[string]string) map[string]string {
	out := maps.Clone(labels)
	for _, l := range k8sLabels {
		out[l] = ""
	}
	return out
}

func newTestRED(t *testing.T, opts Options) (*RED, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	r, err := NewRED(reg, opts)
	if err != nil {
		t.Fatalf("NewRED: %v", err)
	}
	return r, reg
}

func TestREDSpanShapes(t *testing.T) {
	tests := []struct {
		name   string
		span   *span.Span
		metric string
		labels map[string]string
	}{{
		name: "http server with route",
		span: newSpan(1, span.KindServer, 30*time.Millisecond,
			attr(semconv.HTTPRequestMethodKey, "GET"), attr(semconv.URLPathKey, "/product/17"),
			attr(semconv.NetworkProtocolVersionKey, "1"), attr(semconv.ServerAddressKey, "shop"), attr(semconv.ServerPortKey, int64(8080)),
			attr(semconv.HTTPRouteKey, "/product/{id}"), attr(semconv.HTTPResponseStatusCodeKey, int64(200))),
		metric: "http_server_request_duration_seconds",
		labels: map[string]string{"service_name": "shop", "http_request_method": "GET", "http_response_status_code": "200",
			"http_route": "/product/{id}", "error_type": "", "network_protocol_version": "1"},
	}, {
		name: "http server 5xx without route: no path, error type is the code",
		span: newSpan(2, span.KindServer, 2*time.Second,
			attr(semconv.HTTPRequestMethodKey, "POST"), attr(semconv.URLPathKey, "/checkout/123"),
			attr(semconv.NetworkProtocolVersionKey, "2"), attr(semconv.HTTPResponseStatusCodeKey, int64(503))),
		metric: "http_server_request_duration_seconds",
		labels: map[string]string{"service_name": "shop", "http_request_method": "POST", "http_response_status_code": "503",
			"http_route": "", "error_type": "503", "network_protocol_version": "2"},
	}, {
		name: "http server 404 is no server error; unknown method",
		span: newSpan(3, span.KindServer, time.Millisecond,
			attr(semconv.HTTPRequestMethodKey, "PROPFIND"), attr(semconv.HTTPResponseStatusCodeKey, int64(404))),
		metric: "http_server_request_duration_seconds",
		labels: map[string]string{"service_name": "shop", "http_request_method": "_OTHER", "http_response_status_code": "404",
			"http_route": "", "error_type": "", "network_protocol_version": ""},
	}, {
		name: "invalid UTF-8 from process memory",
		span: newSpan(10, span.KindServer, time.Millisecond,
			attr(semconv.HTTPRequestMethodKey, "GET"), attr(semconv.HTTPRouteKey, "/\xff{id}")),
		metric: "http_server_request_duration_seconds",
		labels: map[string]string{"service_name": "shop", "http_request_method": "GET", "http_response_status_code": "",
			"http_route": "/\uFFFD{id}", "error_type": "", "network_protocol_version": ""},
	}, {
		name: "http client 404",
		span: newSpan(4, span.KindClient, 12*time.Millisecond,
			attr(semconv.HTTPRequestMethodKey, "GET"), attr(semconv.URLFullKey, "http://pricing:8081/price/9"),
			attr(semconv.ServerAddressKey, "pricing"), attr(semconv.ServerPortKey, int64(8081)), attr(semconv.HTTPResponseStatusCodeKey, int64(404))),
		metric: "http_client_request_duration_seconds",
		labels: map[string]string{"service_name": "shop", "http_request_method": "GET", "http_response_status_code": "404",
			"server_address": "pricing", "server_port": "8081", "error_type": "404"},
	}, {
		name: "http client round trip error",
		span: func() *span.Span {
			s := newSpan(5, span.KindClient, 12*time.Millisecond,
				attr(semconv.HTTPRequestMethodKey, "PUT"), attr(semconv.ServerAddressKey, "pricing"), attr(semconv.ServerPortKey, int64(443)))
			s.Status = span.StatusError
			return s
		}(),
		metric: "http_client_request_duration_seconds",
		labels: map[string]string{"service_name": "shop", "http_request_method": "PUT", "http_response_status_code": "",
			"server_address": "pricing", "server_port": "443", "error_type": "_OTHER"},
	}, {
		name: "grpc server",
		span: newSpan(6, span.KindServer, 3*time.Millisecond,
			attr(semconv.RPCSystemKey, "grpc"), attr(semconv.RPCServiceKey, "demo.Pricing"), attr(semconv.RPCMethodKey, "GetPrice"),
			attr(semconv.ServerAddressKey, "10.0.0.1"), attr(semconv.ServerPortKey, uint16(50051)), attr(semconv.RPCGRPCStatusCodeKey, int64(0))),
		metric: "rpc_server_duration_seconds",
		labels: map[string]string{"service_name": "shop", "rpc_system": "grpc", "rpc_service": "demo.Pricing", "rpc_method": "GetPrice",
			"rpc_grpc_status_code": "0"},
	}, {
		name: "grpc client unavailable",
		span: newSpan(7, span.KindClient, 3*time.Millisecond,
			attr(semconv.RPCSystemKey, "grpc"), attr(semconv.RPCServiceKey, "demo.Pricing"), attr(semconv.RPCMethodKey, "GetPrice"),
			attr(semconv.ServerAddressKey, "pricing"), attr(semconv.ServerPortKey, int64(50051)), attr(semconv.RPCGRPCStatusCodeKey, int64(14))),
		metric: "rpc_client_duration_seconds",
		labels: map[string]string{"service_name": "shop", "rpc_system": "grpc", "rpc_service": "demo.Pricing", "rpc_method": "GetPrice",
			"rpc_grpc_status_code": "14", "server_address": "pricing", "server_port": "50051"},
	}, {
		name: "database/sql failed query: never the query text",
		span: func() *span.Span {
			s := newSpan(8, span.KindClient, 7*time.Millisecond,
				attr(semconv.DBSystemNameKey, "postgresql"), attr(semconv.DBQueryTextKey, "SELECT * FROM t WHERE id = ?"),
				attr(semconv.DBOperationNameKey, "SELECT"))
			s.Status = span.StatusError
			return s
		}(),
		metric: "db_client_operation_duration_seconds",
		labels: map[string]string{"service_name": "shop", "db_system_name": "postgresql", "db_operation_name": "SELECT",
			"db_namespace": "", "server_address": "", "server_port": "", "error_type": "_OTHER"},
	}, {
		name: "redis error reply",
		span: func() *span.Span {
			s := newSpan(9, span.KindClient, 400*time.Microsecond,
				attr(semconv.DBSystemNameKey, "redis"), attr(semconv.DBOperationNameKey, "GET"),
				attr(semconv.ServerAddressKey, "cache"), attr(semconv.ServerPortKey, int64(6379)), attr(semconv.DBNamespaceKey, "0"),
				attr(semconv.DBResponseStatusCodeKey, "WRONGTYPE"), attr(semconv.ErrorTypeKey, "WRONGTYPE"))
			s.Status = span.StatusError
			return s
		}(),
		metric: "db_client_operation_duration_seconds",
		labels: map[string]string{"service_name": "shop", "db_system_name": "redis", "db_operation_name": "GET",
			"db_namespace": "0", "server_address": "cache", "server_port": "6379", "error_type": "WRONGTYPE"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, reg := newTestRED(t, Options{})
			before := slices.Clone(tt.span.Attrs)
			if err := r.Export([]*span.Span{tt.span}); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(before, tt.span.Attrs) {
				t.Error("Export modified the span's attributes")
			}
			got := gatherSeries(t, reg)
			if len(got) != 1 || len(got[tt.metric]) != 1 {
				t.Fatalf("got series %v, want one in %s", got, tt.metric)
			}
			s := got[tt.metric][0]
			if !maps.Equal(s.labels, noK8s(tt.labels)) {
				t.Errorf("labels\n got %v\nwant %v", s.labels, tt.labels)
			}
			if want := tt.span.Duration().Seconds(); s.count != 1 || s.sum != want {
				t.Errorf("count %d sum %g, want 1 and %g", s.count, s.sum, want)
			}
		})
	}
}

func TestREDIgnores(t *testing.T) {
	spans := []*span.Span{
		newSpan(1, span.KindInternal, time.Millisecond, attr(semconv.HTTPRequestMethodKey, "GET"), attr(semconv.CodeFunctionNameKey, "main.handle")),
		newSpan(2, span.KindServer, time.Millisecond),
		newSpan(3, span.KindClient, time.Millisecond, attr(semconv.URLFullKey, "http://x/")),
		newSpan(4, span.KindServer, time.Millisecond, attr(semconv.DBSystemNameKey, "redis")),
		newSpan(5, span.KindProducer, time.Millisecond, attr(semconv.RPCSystemKey, "grpc")),
		newSpan(6, span.KindUnspecified, time.Millisecond, attr(semconv.HTTPRequestMethodKey, "GET")),
	}
	r, reg := newTestRED(t, Options{})
	if err := r.Export(spans); err != nil {
		t.Fatal(err)
	}
	if got := gatherSeries(t, reg); len(got) != 0 {
		t.Errorf("observed %v, want nothing", got)
	}
}

// TestREDCounts observes known durations and compares the whole
// exposition: buckets are cumulative, upper bounds inclusive.
func TestREDCounts(t *testing.T) {
	r, reg := newTestRED(t, Options{})
	durations := []time.Duration{time.Millisecond, 5 * time.Millisecond, 7 * time.Millisecond, 100 * time.Millisecond,
		300 * time.Millisecond, 3 * time.Second, 20 * time.Second}
	var spans []*span.Span
	for i, d := range durations {
		spans = append(spans, newSpan(i, span.KindServer, d, attr(semconv.HTTPRequestMethodKey, "GET"),
			attr(semconv.HTTPRouteKey, "/a"), attr(semconv.HTTPResponseStatusCodeKey, int64(200)), attr(semconv.NetworkProtocolVersionKey, "1")))
	}
	// Two batches, and a client span that must not land here.
	spans = append(spans, newSpan(99, span.KindClient, time.Second, attr(semconv.HTTPRequestMethodKey, "GET")))
	if err := r.Export(spans[:3]); err != nil {
		t.Fatal(err)
	}
	if err := r.Export(spans[3:]); err != nil {
		t.Fatal(err)
	}
	const labels = `error_type="",http_request_method="GET",http_response_status_code="200",http_route="/a",k8s_namespace_name="",k8s_workload_kind="",k8s_workload_name="",network_protocol_version="1",service_name="shop"`
	var want strings.Builder
	want.WriteString("# HELP http_server_request_duration_seconds Duration of HTTP server requests (OpenTelemetry http.server.request.duration), from every latscope server span.\n")
	want.WriteString("# TYPE http_server_request_duration_seconds histogram\n")
	cumulative := map[string]int{"0.005": 2, "0.01": 3, "0.025": 3, "0.05": 3, "0.075": 3, "0.1": 4, "0.25": 4, "0.5": 5,
		"0.75": 5, "1": 5, "2.5": 5, "5": 6, "7.5": 6, "10": 6, "+Inf": 7}
	for _, le := range []string{"0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5", "7.5", "10", "+Inf"} {
		fmt.Fprintf(&want, "http_server_request_duration_seconds_bucket{%s,le=%q} %d\n", labels, le, cumulative[le])
	}
	fmt.Fprintf(&want, "http_server_request_duration_seconds_sum{%s} 23.413\n", labels)
	fmt.Fprintf(&want, "http_server_request_duration_seconds_count{%s} 7\n", labels)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want.String()), "http_server_request_duration_seconds"); err != nil {
		t.Error(err)
	}
}

func TestREDCardinalityLimit(t *testing.T) {
	r, reg := newTestRED(t, Options{MaxSeries: 3})
	route := func(n int, svc *span.Process, route string) *span.Span {
		s := newSpan(n, span.KindServer, time.Millisecond, attr(semconv.HTTPRequestMethodKey, "GET"), attr(semconv.HTTPRouteKey, route))
		s.Process = svc
		return s
	}
	other := &span.Process{ServiceName: "cart"}
	spans := []*span.Span{
		route(1, shop, "/a"), route(2, shop, "/b"), route(3, other, "/a"), // the three allowed
		route(4, shop, "/c"), route(5, shop, "/d"), route(6, shop, "/c"), // over: shop's _other
		route(7, other, "/z"), // over: cart's _other
		route(8, shop, "/a"),  // existing: still its own series
	}
	if err := r.Export(spans); err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, s := range gatherSeries(t, reg)["http_server_request_duration_seconds"] {
		counts[s.labels["service_name"]+" "+s.labels["http_route"]+" "+s.labels["http_request_method"]+" "+s.labels["error_type"]] = s.count
	}
	want := map[string]uint64{"shop /a GET ": 2, "shop /b GET ": 1, "cart /a GET ": 1, "shop _other _other _other": 3, "cart _other _other _other": 1}
	if !maps.Equal(counts, want) {
		t.Errorf("series\n got %v\nwant %v", counts, want)
	}
	if got := testutil.ToFloat64(r.httpServer.overflow); got != 4 {
		t.Errorf("overflow counted %g, want 4", got)
	}
	// The other histograms' overflow counters exist at zero.
	const wantOverflow = `# HELP latscope_metrics_series_overflow_total Observations recorded in a histogram's "_other" series because it had reached its limit of label sets (the agent's metrics.max_series).
# TYPE latscope_metrics_series_overflow_total counter
latscope_metrics_series_overflow_total{metric="db_client_operation_duration_seconds"} 0
latscope_metrics_series_overflow_total{metric="http_client_request_duration_seconds"} 0
latscope_metrics_series_overflow_total{metric="http_server_request_duration_seconds"} 4
latscope_metrics_series_overflow_total{metric="latscope_server_span_time_seconds_total"} 0
latscope_metrics_series_overflow_total{metric="rpc_client_duration_seconds"} 0
latscope_metrics_series_overflow_total{metric="rpc_server_duration_seconds"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantOverflow), "latscope_metrics_series_overflow_total"); err != nil {
		t.Error(err)
	}
}

func TestREDConcurrentExport(t *testing.T) {
	r, reg := newTestRED(t, Options{MaxSeries: 10})
	const workers, perWorker = 4, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				s := newSpan(w*perWorker+i, span.KindServer, time.Duration(i)*time.Microsecond,
					attr(semconv.HTTPRequestMethodKey, "GET"), attr(semconv.HTTPRouteKey, fmt.Sprintf("/r%d", i%20)))
				if err := r.Export([]*span.Span{s}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	var total uint64
	got := gatherSeries(t, reg)["http_server_request_duration_seconds"]
	for _, s := range got {
		total += s.count
	}
	if total != workers*perWorker || len(got) != 11 {
		t.Errorf("%d observations in %d series, want %d in 11 (10 + _other)", total, len(got), workers*perWorker)
	}
	if got := testutil.ToFloat64(r.httpServer.overflow); got != workers*perWorker/2 {
		t.Errorf("overflow %g, want %d", got, workers*perWorker/2)
	}
}

func TestNewREDErrors(t *testing.T) {
	if _, err := NewRED(nil, Options{}); err == nil {
		t.Error("NewRED(nil) succeeded")
	}
	reg := prometheus.NewRegistry()
	if _, err := NewRED(reg, Options{}); err != nil {
		t.Fatal(err)
	}
	_, err := NewRED(reg, Options{})
	if err == nil || !strings.Contains(err.Error(), "http_server_request_duration_seconds") {
		t.Errorf("second NewRED on one registry: %v, want an error naming the histogram", err)
	}
}

// Idle series expire and free their place under the limit: a new label
// set then gets a series of its own instead of "_other".
func TestREDExpire(t *testing.T) {
	r, reg := newTestRED(t, Options{MaxSeries: 2})
	now := time.Now()
	route := func(route string, end time.Time) *span.Span {
		s := newSpan(1, span.KindServer, time.Millisecond, attr(semconv.HTTPRequestMethodKey, "GET"), attr(semconv.HTTPRouteKey, route))
		s.End, s.Start = end, end.Add(-time.Millisecond)
		return s
	}
	old := now.Add(-20 * time.Minute)
	r.Export([]*span.Span{route("/a", old), route("/b", old), route("/c", now)}) // /c: over the limit
	if n := r.Expire(10 * time.Minute); n != 2 {
		t.Errorf("Expire deleted %d series, want /a and /b", n)
	}
	r.Export([]*span.Span{route("/d", now)})
	routes := map[string]uint64{}
	for _, s := range gatherSeries(t, reg)["http_server_request_duration_seconds"] {
		routes[s.labels["http_route"]] = s.count
	}
	if want := map[string]uint64{"_other": 1, "/d": 1}; !maps.Equal(routes, want) {
		t.Errorf("series after expiry: %v, want %v", routes, want)
	}
}
