package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/latscope/latscope/span"
)

// BenchmarkSearch searches stores of 10k and 100k checkout traces (4 spans
// each, one in 50 failing) with the queries Jaeger's UI and Grafana send.
func BenchmarkSearch(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		s := New(1 << 40)
		for i := range uint64(n) {
			status := int64(200)
			if i%50 == 0 {
				status = 500
			}
			s.Export(checkout(i, t0.Add(time.Duration(i)*time.Millisecond), status, time.Duration(i%1000)*time.Microsecond))
		}
		queries := []struct {
			name string
			q    Query
		}{
			{"service", Query{Service: "frontend", Limit: 20}},
			{"all", Query{Limit: 100}},
			{"operation+tags", Query{Service: "payments", Operation: "POST /charge", Tags: map[string]string{"http.response.status_code": "500"}, Limit: 20}},
			{"derived tag", Query{Tags: map[string]string{"code.function.name": "main.nomatch"}, Limit: 20}},
			{"minDuration", Query{Service: "frontend", MinDuration: 900 * time.Microsecond, Limit: 20}},
			{"window", Query{Start: t0.Add(time.Duration(n/2) * time.Millisecond), End: t0.Add(time.Duration(n/2+100) * time.Millisecond)}},
			{"error", Query{Error: true, Limit: 20}},
		}
		for _, q := range queries {
			b.Run(fmt.Sprintf("traces=%d/%s", n, q.name), func(b *testing.B) {
				for b.Loop() {
					s.Search(q.q)
				}
			})
		}
	}
}

// BenchmarkExport adds checkout traces to a store at its budget, so every
// Export also evicts.
func BenchmarkExport(b *testing.B) {
	s := New(16 << 20)
	var i uint64
	for b.Loop() {
		s.Export(checkout(i, t0.Add(time.Duration(i)*time.Millisecond), 200, time.Millisecond))
		i++
	}
	b.ReportMetric(float64(s.Stats().Traces), "traces_held")
}

// BenchmarkExportFull adds checkout traces (4 spans, 11 attributes) to a
// store at the agent's default budget, full and evicting, as the agent
// does at a steady rate; the spans are built once and relabelled, so only
// the store's own work is measured. ns/op is per trace.
func BenchmarkExportFull(b *testing.B) {
	s := New(128 << 20)
	spans := checkout(0, t0, 200, time.Millisecond)
	relabel := func(i uint64) {
		id := traceID(i)
		for _, sp := range spans {
			sp.TraceID = id
		}
	}
	var i uint64
	for ; s.Stats().EvictedTraces == 0; i++ { // fill
		relabel(i)
		s.Export(spans)
	}
	b.ReportAllocs()
	for b.Loop() {
		relabel(i)
		s.Export(spans)
		i++
	}
	b.ReportMetric(float64(s.Stats().Traces), "traces_held")
}

// BenchmarkExportFullBatch is BenchmarkExportFull with the spans of 256
// traces per Export, as the node agent hands over a drain of the ring
// (callchain.Options.Deferred); ns/op is per trace.
func BenchmarkExportFullBatch(b *testing.B) {
	s := New(128 << 20)
	one := checkout(0, t0, 200, time.Millisecond)
	const traces = 256
	batch := make([]*span.Span, 0, traces*len(one))
	for range traces {
		for _, sp := range one {
			c := *sp
			batch = append(batch, &c)
		}
	}
	var i uint64
	relabel := func() {
		for k := range traces {
			id := traceID(i)
			i++
			for _, sp := range batch[k*len(one) : (k+1)*len(one)] {
				sp.TraceID = id
			}
		}
	}
	for s.Stats().EvictedTraces == 0 { // fill
		relabel()
		s.Export(batch)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if n%traces == 0 {
			relabel()
			s.Export(batch)
		}
		n++
	}
	b.ReportMetric(float64(s.Stats().Traces), "traces_held")
}
