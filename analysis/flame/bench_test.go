package flame

import (
	"fmt"
	"testing"

	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
)

// BenchmarkBuild: the critical path of every one of 100k stored demo
// traces (8 spans each, three services, pricing's redis call 1–64 ms),
// aggregated into one profile, as GET /api/flame does it from the store.
// Run with -cpu 1: the goal is ≤ 1 s on one core.
func BenchmarkBuild(b *testing.B) {
	const n = 100_000
	s := store.New(1 << 40)
	for i := range n {
		s.Export(demoTrace(i, float64(i), float64(1+i%64)))
	}
	queries := []struct {
		name string
		q    Query
	}{
		{"all", Query{}},
		{"service", Query{Service: "catalog"}},
		{"slowest=1%", Query{Service: "catalog", Slowest: 0.01}},
	}
	for _, q := range queries {
		b.Run(fmt.Sprintf("traces=%d/%s", n, q.name), func(b *testing.B) {
			var res *Result
			for b.Loop() {
				traces := make([][]*span.Span, 0, n)
				s.Each(func(t *store.Trace) bool {
					traces = append(traces, t.Spans)
					return true
				})
				var err error
				if res, err = Build(traces, q.q, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(res.Requests), "requests")
			b.ReportMetric(float64(len(res.Profile.Sample)), "samples")
		})
	}
}
