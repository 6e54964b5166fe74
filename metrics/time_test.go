package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/latscope/latscope/span"
)

// Server spans' time splits add up per operation and category; spans
// without a split, and client spans, do not count.
func TestServerSpanTime(t *testing.T) {
	r, reg := newTestRED(t, Options{})
	split := func(full bool, cats map[span.TimeCategory]time.Duration) *span.TimeSplit {
		ts := &span.TimeSplit{Full: full}
		for c, d := range cats {
			ts.NS[c] = d.Nanoseconds()
		}
		return ts
	}
	s1 := newSpan(1, span.KindServer, 10*time.Millisecond)
	s1.Time = split(true, map[span.TimeCategory]time.Duration{span.TimeOnCPU: 2 * time.Millisecond, span.TimeBlockedSync: 8 * time.Millisecond})
	s2 := newSpan(2, span.KindServer, 5*time.Millisecond)
	s2.Time = split(true, map[span.TimeCategory]time.Duration{span.TimeOnCPU: time.Millisecond, span.TimeBlockedSync: 4 * time.Millisecond})
	s3 := newSpan(3, span.KindServer, 5*time.Millisecond)
	s3.Time = split(false, map[span.TimeCategory]time.Duration{span.TimeGCSTW: 500 * time.Microsecond})
	plain := newSpan(4, span.KindServer, 5*time.Millisecond)
	client := newSpan(5, span.KindClient, 5*time.Millisecond)
	client.Time = split(true, map[span.TimeCategory]time.Duration{span.TimeDownstream: 5 * time.Millisecond})
	for _, s := range []*span.Span{s1, s2, s3, plain, client} {
		s.Process, s.Name = shop, "GET /cart"
	}
	if err := r.Export([]*span.Span{s1, s2, s3, plain, client}); err != nil {
		t.Fatal(err)
	}
	const k8s = `k8s_namespace_name="",k8s_workload_kind="",k8s_workload_name=""`
	want := `# HELP latscope_server_spans_attributed_total Server spans with a time split, by split: full (deep attribution, every category) or gc (always on: gc_stw and gc_assist).
# TYPE latscope_server_spans_attributed_total counter
latscope_server_spans_attributed_total{` + k8s + `,service_name="shop",span_name="GET /cart",split="full"} 2
latscope_server_spans_attributed_total{` + k8s + `,service_name="shop",span_name="GET /cart",split="gc"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "latscope_server_spans_attributed_total"); err != nil {
		t.Error(err)
	}
	got := map[string]float64{}
	for _, m := range gatherAll(t, reg, "latscope_server_span_time_seconds_total") {
		got[m.labels["category"]] = m.value
	}
	for cat, v := range map[string]float64{"on_cpu": 0.003, "blocked_sync": 0.012, "gc_stw": 0.0005, "downstream": 0, "runnable": 0} {
		if d := got[cat] - v; d > 1e-12 || d < -1e-12 {
			t.Errorf("%s = %g s, want %g", cat, got[cat], v)
		}
	}
	if len(got) != int(span.NumTimeCategories) {
		t.Errorf("%d categories exported, want every one: %v", len(got), got)
	}
	if n := r.Expire(0); n == 0 {
		t.Error("idle time series were not expired")
	}
}

type counterSample struct {
	labels map[string]string
	value  float64
}

// gatherAll returns the counters of family name.
func gatherAll(t *testing.T, reg *prometheus.Registry, name string) []counterSample {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var out []counterSample
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			out = append(out, counterSample{l, m.GetCounter().GetValue()})
		}
	}
	return out
}
