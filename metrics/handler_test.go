package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/span"
)

const openMetricsAccept = "application/openmetrics-text; version=1.0.0"

// scrape GETs /metrics from Handler(g), with accept as its Accept header.
func scrape(t *testing.T, g prometheus.Gatherer, accept string) (string, *http.Response) {
	t.Helper()
	srv := httptest.NewServer(Handler(g))
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s\n%s", resp.Status, body)
	}
	return string(body), resp
}

var (
	traceIDRe = regexp.MustCompile(`trace_id="([0-9a-f]{32})"`)
	spanIDRe  = regexp.MustCompile(`span_id="([0-9a-f]{16})"`)
)

// exemplarOf returns the trace and span ids of the exemplar on the
// bucket line of metric with upper bound le, "" if it has none.
func exemplarOf(t *testing.T, body, metric, le string) (traceID, spanID string) {
	t.Helper()
	for line := range strings.Lines(body) {
		if !strings.HasPrefix(line, metric+"_bucket{") || !strings.Contains(line, `le="`+le+`"`) {
			continue
		}
		_, ex, ok := strings.Cut(line, " # ")
		if !ok {
			return "", ""
		}
		tm, sm := traceIDRe.FindStringSubmatch(ex), spanIDRe.FindStringSubmatch(ex)
		if tm == nil || sm == nil {
			t.Fatalf("exemplar without trace_id and span_id: %s", line)
		}
		return tm[1], sm[1]
	}
	t.Fatalf("no bucket le=%q of %s in\n%s", le, metric, body)
	return "", ""
}

func serverSpan(n int, d time.Duration) *span.Span {
	return newSpan(n, span.KindServer, d, attr(semconv.HTTPRequestMethodKey, "GET"), attr(semconv.HTTPRouteKey, "/a"),
		attr(semconv.HTTPResponseStatusCodeKey, int64(200)))
}

func TestExemplars(t *testing.T) {
	const metric = "http_server_request_duration_seconds"
	tests := []struct {
		name     string
		interval time.Duration
		// spans are exported one after the other; want is the span whose
		// ids the 0.025 bucket's exemplar must carry after each.
		spans []*span.Span
		want  []int
	}{
		{"default interval keeps the first for a second", 0,
			[]*span.Span{serverSpan(1, 20*time.Millisecond), serverSpan(2, 22*time.Millisecond), serverSpan(1500, 21*time.Millisecond)},
			[]int{0, 0, 2}},
		{"negative interval: every span", -1,
			[]*span.Span{serverSpan(1, 20*time.Millisecond), serverSpan(2, 22*time.Millisecond)},
			[]int{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, reg := newTestRED(t, Options{ExemplarInterval: tt.interval})
			for i, s := range tt.spans {
				if err := r.Export([]*span.Span{s}); err != nil {
					t.Fatal(err)
				}
				body, resp := scrape(t, reg, openMetricsAccept)
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
					t.Fatalf("Content-Type %q, want OpenMetrics", ct)
				}
				w := tt.spans[tt.want[i]]
				traceID, spanID := exemplarOf(t, body, metric, "0.025")
				if traceID != w.TraceID.String() || spanID != w.SpanID.String() {
					t.Errorf("after span %d: exemplar trace %s span %s, want %s %s", i, traceID, spanID, w.TraceID, w.SpanID)
				}
				if traceID, _ := exemplarOf(t, body, metric, "0.01"); traceID != "" {
					t.Errorf("bucket 0.01 has an exemplar (trace %s) but no observation", traceID)
				}
			}
		})
	}
}

func TestHandlerPrometheusText(t *testing.T) {
	r, reg := newTestRED(t, Options{})
	if err := r.Export([]*span.Span{serverSpan(1, 20*time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	body, resp := scrape(t, reg, "")
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want the Prometheus text format", ct)
	}
	if !strings.Contains(body, `http_server_request_duration_seconds_count{error_type="",http_request_method="GET",http_response_status_code="200",http_route="/a",k8s_namespace_name="",k8s_workload_kind="",k8s_workload_name="",network_protocol_version="",service_name="shop"} 1`) {
		t.Errorf("count missing from\n%s", body)
	}
	if strings.Contains(body, "trace_id") {
		t.Error("exemplar in the Prometheus text format")
	}
}
