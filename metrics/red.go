// Package metrics owns latscope's Prometheus metrics: RED (rate, errors,
// duration) histograms computed from every span the agent rebuilds, before
// any sampling, and the agent's own counters and gauges, and the HTTP
// handler that serves them in the OpenMetrics format (exemplars link a
// histogram bucket to a stored trace).
//
// Metric and label names are OpenTelemetry semantic conventions in their
// Prometheus form: dots become underscores and the unit is a suffix
// (http.server.request.duration → http_server_request_duration_seconds).
package metrics

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/span"
)

// buckets are semconv's advice for http.server.request.duration, in
// seconds, used for all five histograms so they can be compared.
var buckets = bucketBounds[:]

var bucketBounds = [...]float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// DefaultMaxSeries is Options.MaxSeries when it is left zero.
const DefaultMaxSeries = 2000

// DefaultExemplarInterval is Options.ExemplarInterval when it is left zero.
const DefaultExemplarInterval = time.Second

// Options tune the RED histograms.
type Options struct {
	// MaxSeries bounds the label sets of each histogram (default 2000).
	// An observation that would create one more is recorded in its
	// service's overflow series, whose every label but service_name is
	// "_other", and counted in
	// latscope_metrics_series_overflow_total{metric="<histogram>"}. The
	// overflow series (one per service) are not counted in MaxSeries.
	// A series lives until RED.Expire deletes it for being idle.
	MaxSeries int
	// ExemplarInterval is how long a bucket of one series keeps its
	// exemplar before a newer span replaces it, measured on the spans' end
	// times (default 1 s; negative: every span replaces it). Prometheus
	// keeps one exemplar per bucket and scrape, and recording one costs
	// about ten allocations, so most spans observe without one.
	ExemplarInterval time.Duration
	// PodLabel adds k8s_pod_name to every histogram. Off by default: each
	// rollout makes new pods and so new series (namespace and workload
	// are the bounded labels).
	PodLabel bool
}

// RED records OpenTelemetry semantic-convention duration histograms from
// spans. It implements span.Exporter; Export is safe for concurrent use.
//
// Histograms (all in seconds, buckets 5 ms … 10 s) and the spans they
// observe:
//   - http_server_request_duration_seconds: server spans with
//     http.request.method. Labels service_name, http_request_method
//     ("_OTHER" for a method outside RFC 9110/5789),
//     http_response_status_code, http_route (empty without a route: never
//     the path), error_type (error.type, else the status code for 5xx),
//     network_protocol_version.
//   - http_client_request_duration_seconds: client spans with
//     http.request.method. Labels service_name, http_request_method,
//     http_response_status_code, server_address, server_port, error_type
//     (error.type, else the status code for 4xx and 5xx, else "_OTHER"
//     for a failed span without a response).
//   - rpc_server_duration_seconds, rpc_client_duration_seconds: server and
//     client spans with rpc.system. Labels service_name, rpc_system,
//     rpc_service, rpc_method, rpc_grpc_status_code and, for clients,
//     server_address, server_port.
//   - db_client_operation_duration_seconds: client spans with
//     db.system.name. Labels service_name, db_system_name,
//     db_operation_name, db_namespace, server_address, server_port,
//     error_type (error.type, else "_OTHER" for a failed span). Never the
//     query text.
//
// Every histogram also has the labels k8s_namespace_name,
// k8s_workload_kind and k8s_workload_name (see k8sLabels), empty outside
// Kubernetes, and k8s_pod_name with Options.PodLabel.
//
// Other spans (user functions' internal spans, anything else) are not
// observed. service_name is the span's Process.ServiceName. Each
// observation may carry an exemplar {trace_id, span_id} (lower-case hex);
// see Options.ExemplarInterval.
type RED struct {
	httpServer, httpClient, rpcServer, rpcClient, db *histogram
	time                                             *spanTime // server spans' time by category
	exemplarEvery                                    int64     // ns; <= 0: every span
	podLabel                                         bool      // Options.PodLabel
}

// NewRED registers the RED histograms and the overflow counter on reg. It
// fails if reg is nil or if registering fails (typically: a RED is already
// registered on reg; use one RED per registry).
func NewRED(reg prometheus.Registerer, opts Options) (*RED, error) {
	if reg == nil {
		return nil, errors.New("metrics: NewRED needs a prometheus.Registerer (prometheus.NewRegistry() or prometheus.DefaultRegisterer)")
	}
	if opts.MaxSeries <= 0 {
		opts.MaxSeries = DefaultMaxSeries
	}
	if opts.ExemplarInterval == 0 {
		opts.ExemplarInterval = DefaultExemplarInterval
	}
	overflow := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "latscope_metrics_series_overflow_total",
		Help: "Observations recorded in a histogram's \"_other\" series because it had reached its limit of label sets (the agent's metrics.max_series).",
	}, []string{"metric"})
	r := &RED{exemplarEvery: int64(opts.ExemplarInterval), podLabel: opts.PodLabel}
	var registered []prometheus.Collector
	register := func(c prometheus.Collector, name string) error {
		if err := reg.Register(c); err != nil {
			for _, c := range registered {
				reg.Unregister(c)
			}
			return fmt.Errorf("register %s: %w (is a RED already registered on this registry?)", name, err)
		}
		registered = append(registered, c)
		return nil
	}
	newHistogram := func(name, help string, labels []string, values func(key) []string) (*histogram, error) {
		if opts.PodLabel {
			labels = append(labels, podLabel)
			base := values
			values = func(k key) []string { return append(base(k), k.pod) }
		}
		vec := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
		if err := register(vec, name); err != nil {
			return nil, err
		}
		return &histogram{
			vec: vec, values: values, labels: len(labels), max: opts.MaxSeries,
			overflow: overflow.WithLabelValues(name), // created now: the counter shows 0 until it counts
			series:   make(map[key]*series),
		}, nil
	}
	var err error
	if r.httpServer, err = newHistogram("http_server_request_duration_seconds",
		"Duration of HTTP server requests (OpenTelemetry http.server.request.duration), from every latscope server span.",
		withK8s("service_name", "http_request_method", "http_response_status_code", "http_route", "error_type", "network_protocol_version"),
		httpServerValues); err != nil {
		return nil, err
	}
	if r.httpClient, err = newHistogram("http_client_request_duration_seconds",
		"Duration of HTTP client requests (OpenTelemetry http.client.request.duration), from every latscope client span.",
		withK8s("service_name", "http_request_method", "http_response_status_code", "server_address", "server_port", "error_type"),
		httpClientValues); err != nil {
		return nil, err
	}
	if r.rpcServer, err = newHistogram("rpc_server_duration_seconds",
		"Duration of inbound RPCs (OpenTelemetry rpc.server.duration), from every latscope server span.",
		withK8s("service_name", "rpc_system", "rpc_service", "rpc_method", "rpc_grpc_status_code"),
		rpcServerValues); err != nil {
		return nil, err
	}
	if r.rpcClient, err = newHistogram("rpc_client_duration_seconds",
		"Duration of outbound RPCs (OpenTelemetry rpc.client.duration), from every latscope client span.",
		withK8s("service_name", "rpc_system", "rpc_service", "rpc_method", "rpc_grpc_status_code", "server_address", "server_port"),
		rpcClientValues); err != nil {
		return nil, err
	}
	if r.db, err = newHistogram("db_client_operation_duration_seconds",
		"Duration of database client operations (OpenTelemetry db.client.operation.duration), from every latscope client span.",
		withK8s("service_name", "db_system_name", "db_operation_name", "db_namespace", "server_address", "server_port", "error_type"),
		dbValues); err != nil {
		return nil, err
	}
	if r.time, err = newSpanTime(register, overflow, opts.MaxSeries); err != nil {
		return nil, err
	}
	if err := register(overflow, "latscope_metrics_series_overflow_total"); err != nil {
		return nil, err
	}
	return r, nil
}

// Export observes each span in its histogram, if any. It never fails.
func (r *RED) Export(spans []*span.Span) error {
	for _, s := range spans {
		r.observe(s)
	}
	return nil
}

// Expire deletes the series that observed no span that ended in the
// last idle (by the spans' end times), and returns how many. The agent
// calls it every minute with 10 minutes: label values that come and go
// (server addresses after rollouts) then free their place under
// MaxSeries. A deleted series starts again from zero if its labels
// return, which Prometheus' rate() reads as a counter reset.
func (r *RED) Expire(idle time.Duration) int {
	before := time.Now().Add(-idle).UnixNano()
	n := 0
	for _, h := range []*histogram{r.httpServer, r.httpClient, r.rpcServer, r.rpcClient, r.db} {
		n += h.expire(before)
	}
	return n + r.time.expire(before)
}

// Close does nothing: the histograms stay registered and keep their
// values.
func (r *RED) Close() error { return nil }

func (r *RED) observe(s *span.Span) {
	if s.Kind != span.KindServer && s.Kind != span.KindClient {
		return
	}
	h, k := r.classify(s)
	if s.Process != nil && len(s.Process.Resource) > 0 {
		k.k8s = k8sValues(s.Process.Resource)
	}
	if s.Time != nil && s.Kind == span.KindServer {
		r.time.observe(s, k.k8s)
	}
	if h == nil {
		return
	}
	if s.Process != nil && len(s.Process.Resource) > 0 {
		if r.podLabel {
			if v, ok := s.Process.Lookup(string(semconv.K8SPodNameKey)); ok {
				k.pod = str(v)
			}
		}
	}
	se := h.lookup(k)
	se.used.Store(s.End.UnixNano())
	v := s.Duration().Seconds()
	if v < 0 {
		v = 0 // clocks of entry and return disagree: count it as instant
	}
	if r.exemplarEvery > 0 {
		i := bucketIndex(v)
		end, last := s.End.UnixNano(), se.lastExemplar[i].Load()
		if end-last < r.exemplarEvery || !se.lastExemplar[i].CompareAndSwap(last, end) {
			se.obs.Observe(v)
			return
		}
	}
	se.obs.ObserveWithExemplar(v, prometheus.Labels{"trace_id": s.TraceID.String(), "span_id": s.SpanID.String()})
}

// classify picks the histogram s belongs to and its label set; nil if
// none. rpc.system wins over http.request.method (a gRPC call is an HTTP/2
// request too).
func (r *RED) classify(s *span.Span) (*histogram, key) {
	f := gather(s)
	service := ""
	if s.Process != nil {
		service = s.Process.ServiceName
	}
	failed := s.Status == span.StatusError
	server := s.Kind == span.KindServer
	switch {
	case f.hasRPCSystem && server:
		return r.rpcServer, key{strs: [6]string{service, f.rpcSystem, f.rpcService, f.rpcMethod}, nums: [2]int64{f.grpcStatusCode, -1}}
	case f.hasRPCSystem:
		return r.rpcClient, key{strs: [6]string{service, f.rpcSystem, f.rpcService, f.rpcMethod, f.serverAddress}, nums: [2]int64{f.grpcStatusCode, f.serverPort}}
	case f.hasMethod && server:
		return r.httpServer, key{strs: [6]string{service, f.method, f.route, f.errorType, f.protocolVersion}, nums: [2]int64{f.statusCode, -1}}
	case f.hasMethod:
		if f.errorType == "" && failed && f.statusCode < 0 {
			f.errorType = semconvOther
		}
		return r.httpClient, key{strs: [6]string{service, f.method, f.serverAddress, f.errorType}, nums: [2]int64{f.statusCode, f.serverPort}}
	case f.hasDBSystem && !server:
		if f.errorType == "" && failed {
			f.errorType = semconvOther
		}
		return r.db, key{strs: [6]string{service, f.dbSystem, f.dbOperation, f.dbNamespace, f.serverAddress, f.errorType}, nums: [2]int64{f.serverPort, -1}}
	}
	return nil, key{}
}

// The values functions turn a key into label values in the order of the
// labels NewRED declares.

func httpServerValues(k key) []string {
	return append([]string{k.strs[0], k.strs[1], formatNum(k.nums[0]), k.strs[2], httpErrorType(k.strs[3], k.nums[0], 500), k.strs[4]}, k.k8s[:]...)
}

func httpClientValues(k key) []string {
	return append([]string{k.strs[0], k.strs[1], formatNum(k.nums[0]), k.strs[2], formatNum(k.nums[1]), httpErrorType(k.strs[3], k.nums[0], 400)}, k.k8s[:]...)
}

func rpcServerValues(k key) []string {
	return append([]string{k.strs[0], k.strs[1], k.strs[2], k.strs[3], formatNum(k.nums[0])}, k.k8s[:]...)
}

func rpcClientValues(k key) []string {
	return append([]string{k.strs[0], k.strs[1], k.strs[2], k.strs[3], formatNum(k.nums[0]), k.strs[4], formatNum(k.nums[1])}, k.k8s[:]...)
}

func dbValues(k key) []string {
	return append([]string{k.strs[0], k.strs[1], k.strs[2], k.strs[3], k.strs[4], formatNum(k.nums[0]), k.strs[5]}, k.k8s[:]...)
}

// httpErrorType is semconv's error.type for an HTTP span: the span's
// error.type if it has one, else the status code when it is an error
// (from errorFrom: 500 for servers, 400 for clients).
func httpErrorType(explicit string, status, errorFrom int64) string {
	if explicit == "" && status >= errorFrom {
		return formatNum(status)
	}
	return explicit
}
