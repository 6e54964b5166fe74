package ui_test

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/latscope/latscope/metrics"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/ui"
)

// BenchmarkPages renders pages with 10 000 demo-like traces (6 spans
// each, two services) in the store and their spans in the history: the
// issue's bound is 300 ms for the overview and the trace list. Run:
//
//	go test -run '^$' -bench Pages -benchtime 20x -count 5 -cpu 1 ./ui/
func BenchmarkPages(b *testing.B) {
	e := newEnv(b, 10000)
	for _, bb := range []struct{ name, path string }{
		{"overview", "/"},
		{"overview-1h", "/?window=1h"},
		{"traces", "/traces"},
		{"traces-operation", "/traces?service=catalog&operation=GET+/product/%7Bid%7D"},
		{"traces-slowest-1pct", "/traces?service=catalog&slowest=1%25&since=1h"},
		{"trace", "/trace/ab000000000000000000000000002710"},
		{"flame", "/flame?service=catalog&since=15m"},
		{"status", "/status"},
	} {
		b.Run(bb.name, func(b *testing.B) {
			for b.Loop() {
				rec := httptest.NewRecorder()
				e.ui.ServeHTTP(rec, httptest.NewRequest("GET", bb.path, nil))
				if rec.Code != 200 {
					b.Fatalf("%s: %d %s", bb.path, rec.Code, rec.Body.String())
				}
			}
		})
	}
}

// BenchmarkOverviewFullHistory renders the overview with the history at
// its bound: 500 operations, each with a span every 2 s over the last 10
// minutes (the 5m window and the one before it all filled).
func BenchmarkOverviewFullHistory(b *testing.B) {
	now := time.Now()
	clock := now.Add(-time.Hour)
	h := metrics.NewHistory(metrics.HistoryOptions{Now: func() time.Time { return clock }})
	clock = now
	var spans []*span.Span
	for op := range metrics.DefaultMaxOperations {
		p := &span.Process{ServiceName: fmt.Sprintf("svc%d", op%20)}
		for i := range 300 {
			end := now.Add(-time.Duration(i) * 2 * time.Second)
			d := time.Duration(1+i%50) * time.Millisecond
			spans = append(spans, &span.Span{Name: fmt.Sprintf("op%d", op), Kind: span.KindServer, Start: end.Add(-d), End: end, Process: p})
		}
	}
	h.Export(spans)
	e := newEnv(b, 0, func(o *ui.Options) { o.History = h })
	for b.Loop() {
		rec := httptest.NewRecorder()
		e.ui.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		if rec.Code != 200 {
			b.Fatalf("%d", rec.Code)
		}
	}
}
