package metrics

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/latscope/latscope/span"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

var hist0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// histSpan makes a span; latscope.time.* attributes among attrs become
// its time split, as the Jaeger client reads them back.
func histSpan(service, name string, kind span.Kind, end time.Time, d time.Duration, status span.StatusCode, attrs ...span.Attr) *span.Span {
	s := &span.Span{Name: name, Kind: kind, Start: end.Add(-d), End: end, Status: status,
		Process: &span.Process{ServiceName: service}}
	for _, a := range attrs {
		if v, ok := a.Value.(int64); !ok || !s.SetTimeAttr(a.Key, v) {
			s.Attrs = append(s.Attrs, a)
		}
	}
	return s
}

func TestHistoryQuantiles(t *testing.T) {
	c := &clock{hist0}
	h := NewHistory(HistoryOptions{Now: c.now})
	// 10 000 spans with durations spread log-uniformly over 100 µs … 1 s,
	// ending within the last minute.
	rng := rand.New(rand.NewPCG(1, 2))
	c.t = hist0.Add(10 * time.Minute)
	var durs []time.Duration
	var spans []*span.Span
	for i := range 10000 {
		d := time.Duration(float64(100*time.Microsecond) * math.Pow(10, 4*rng.Float64()))
		durs = append(durs, d)
		spans = append(spans, histSpan("shop", "GET /", span.KindServer, c.t.Add(-time.Duration(i)*time.Millisecond*5), d, span.StatusUnset))
	}
	h.Export(spans)
	ov, err := h.Overview(5 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(ov.Operations) != 1 {
		t.Fatalf("%d operations, want 1", len(ov.Operations))
	}
	got := ov.Operations[0].Current
	if got.Count != 10000 {
		t.Fatalf("count %d, want 10000", got.Count)
	}
	slices.Sort(durs)
	for _, q := range []struct {
		name string
		got  time.Duration
		at   float64
	}{{"p50", got.P50, 0.5}, {"p90", got.P90, 0.9}, {"p99", got.P99, 0.99}} {
		want := durs[int(q.at*float64(len(durs)))-1]
		if rel := math.Abs(float64(q.got-want)) / float64(want); rel > 0.09 {
			t.Errorf("%s = %v, want %v ±9%% (off by %.1f%%)", q.name, q.got, want, rel*100)
		}
	}
	var total time.Duration
	for _, d := range durs {
		total += d
	}
	if got.Total != total {
		t.Errorf("total %v, want %v", got.Total, total)
	}
}

func TestHistoryWindows(t *testing.T) {
	c := &clock{hist0}
	h := NewHistory(HistoryOptions{Now: c.now})
	c.t = hist0.Add(30 * time.Minute)
	// The previous 5 minutes: 100 spans of 10 ms, 10 failed; the current
	// 5 minutes: 50 spans of 40 ms, 25 failed; one span 20 minutes ago
	// counts in neither 5 min window but in the 15 min one's previous.
	var spans []*span.Span
	for i := range 100 {
		st := span.StatusUnset
		if i%10 == 0 {
			st = span.StatusError
		}
		spans = append(spans, histSpan("shop", "GET /", span.KindServer, c.t.Add(-6*time.Minute).Add(time.Duration(i)*time.Second/2), 10*time.Millisecond, st))
	}
	for i := range 50 {
		st := span.StatusUnset
		if i%2 == 0 {
			st = span.StatusError
		}
		spans = append(spans, histSpan("shop", "GET /", span.KindServer, c.t.Add(-time.Minute).Add(time.Duration(i)*time.Second/2), 40*time.Millisecond, st))
	}
	spans = append(spans, histSpan("shop", "GET /", span.KindServer, c.t.Add(-20*time.Minute), time.Second, span.StatusUnset))
	h.Export(spans)

	ov, err := h.Overview(5 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	op := ov.Operations[0]
	if op.Current.Count != 50 || op.Current.Errors != 25 || op.Previous.Count != 100 || op.Previous.Errors != 10 {
		t.Errorf("current %d/%d errors, previous %d/%d; want 50/25, 100/10", op.Current.Count, op.Current.Errors, op.Previous.Count, op.Previous.Errors)
	}
	near := func(got, want time.Duration) bool { return math.Abs(float64(got-want)) <= 0.09*float64(want) }
	if !near(op.Current.P99, 40*time.Millisecond) || !near(op.Previous.P99, 10*time.Millisecond) {
		t.Errorf("p99 %v, previous %v; want ~40ms, ~10ms", op.Current.P99, op.Previous.P99)
	}
	if ov.Step != 10*time.Second || len(op.Points) != 30 {
		t.Errorf("step %v with %d points, want 10s and 30", ov.Step, len(op.Points))
	}
	var pointCount uint64
	for i, p := range op.Points {
		pointCount += p.Count
		if i > 0 && p.Start.Sub(op.Points[i-1].Start) != 10*time.Second {
			t.Errorf("point %d starts %v after the previous", i, p.Start.Sub(op.Points[i-1].Start))
		}
		if p.Count > 0 && !near(p.P99, 40*time.Millisecond) {
			t.Errorf("point %d p99 %v, want ~40ms", i, p.P99)
		}
	}
	if pointCount != 50 {
		t.Errorf("points count %d spans, want 50", pointCount)
	}
	if ov.Covered <= 4*time.Minute || ov.PreviousCovered != 5*time.Minute {
		t.Errorf("covered %v, previous %v; want ~5m, 5m", ov.Covered, ov.PreviousCovered)
	}

	ov, err = h.Overview(15 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if op := ov.Operations[0]; op.Current.Count != 150 || op.Previous.Count != 1 || ov.Step != time.Minute {
		t.Errorf("15m: current %d, previous %d, step %v; want 150, 1, 1m", op.Current.Count, op.Previous.Count, ov.Step)
	}
}

func TestHistoryCoveredSinceStart(t *testing.T) {
	c := &clock{hist0}
	h := NewHistory(HistoryOptions{Now: c.now})
	c.t = hist0.Add(90 * time.Second)
	ov, err := h.Overview(5 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ov.Covered != 90*time.Second || ov.PreviousCovered != 0 {
		t.Errorf("covered %v, previous %v; want 1m30s (since the start), 0", ov.Covered, ov.PreviousCovered)
	}
}

func TestHistoryWindowErrors(t *testing.T) {
	h := NewHistory(HistoryOptions{})
	for _, w := range []time.Duration{0, time.Second, 2 * time.Hour} {
		_, err := h.Overview(w)
		var ew ErrWindow
		if !errors.As(err, &ew) {
			t.Errorf("window %v: err %v, want ErrWindow", w, err)
		}
	}
	for _, w := range []time.Duration{20 * time.Second, 5 * time.Minute, 15 * time.Minute, time.Hour} {
		if _, err := h.Overview(w); err != nil {
			t.Errorf("window %v: %v", w, err)
		}
	}
}

func TestHistoryOverflowLateExpire(t *testing.T) {
	c := &clock{hist0}
	h := NewHistory(HistoryOptions{Now: c.now, MaxOperations: 2})
	h.Export([]*span.Span{
		histSpan("a", "one", span.KindServer, c.t, time.Millisecond, span.StatusUnset),
		histSpan("a", "two", span.KindServer, c.t, time.Millisecond, span.StatusUnset),
		histSpan("a", "three", span.KindServer, c.t, time.Millisecond, span.StatusUnset),
		histSpan("a", "four", span.KindServer, c.t, time.Millisecond, span.StatusUnset),
		histSpan("a", "one", span.KindServer, c.t.Add(-3*time.Hour), time.Millisecond, span.StatusUnset),
	})
	st := h.Stats()
	if st.Overflow != 2 || st.Late != 1 || st.Operations != 3 {
		t.Errorf("stats %+v, want 2 overflowed, 1 late, 3 operations (two and _other)", st)
	}
	ov, _ := h.Overview(time.Minute)
	var names []string
	for _, op := range ov.Operations {
		names = append(names, op.Name)
		if op.Name == overflowValue && op.Current.Count != 2 {
			t.Errorf("_other counted %d, want 2", op.Current.Count)
		}
	}
	if !slices.Equal(names, []string{"_other", "one", "two"}) {
		t.Errorf("operations %v", names)
	}
	// Two hours later only the operation with a new span is kept.
	c.t = c.t.Add(2*time.Hour + time.Minute)
	h.Export([]*span.Span{histSpan("a", "two", span.KindServer, c.t, time.Millisecond, span.StatusUnset)})
	if st := h.Stats(); st.Operations != 1 {
		t.Errorf("%d operations after 2h idle, want 1", st.Operations)
	}
	ov, _ = h.Overview(time.Hour)
	if len(ov.Operations) != 1 || ov.Operations[0].Current.Count != 1 || ov.Operations[0].Previous.Count != 0 {
		t.Errorf("after expiry: %+v", ov.Operations)
	}
}

func TestHistoryCauses(t *testing.T) {
	c := &clock{hist0}
	h := NewHistory(HistoryOptions{Now: c.now})
	h.Export([]*span.Span{
		histSpan("a", "op", span.KindServer, c.t, 10*time.Millisecond, span.StatusUnset,
			span.Attr{Key: "latscope.time.on_cpu", Value: int64(3 * time.Millisecond)},
			span.Attr{Key: "latscope.time.blocked_net", Value: int64(7 * time.Millisecond)}),
		histSpan("a", "op", span.KindServer, c.t, 10*time.Millisecond, span.StatusUnset,
			span.Attr{Key: "latscope.time.on_cpu", Value: int64(time.Millisecond)}),
		histSpan("a", "op", span.KindServer, c.t, 10*time.Millisecond, span.StatusUnset),
	})
	ov, _ := h.Overview(time.Minute)
	s := ov.Operations[0].Current
	if s.Count != 3 || s.Attributed != 2 || s.Causes[0] != 4*time.Millisecond || s.Causes[4] != 7*time.Millisecond {
		t.Errorf("count %d attributed %d causes %v", s.Count, s.Attributed, s.Causes)
	}
	if CauseName(4) != "blocked_net" {
		t.Errorf("CauseName(4) = %q", CauseName(4))
	}
}

func TestHistorySeries(t *testing.T) {
	c := &clock{hist0}
	h := NewHistory(HistoryOptions{Now: c.now})
	h.Export([]*span.Span{
		histSpan("a", "x", span.KindServer, c.t, 10*time.Millisecond, span.StatusUnset),
		histSpan("a", "y", span.KindServer, c.t, 20*time.Millisecond, span.StatusError),
		histSpan("b", "x", span.KindServer, c.t, 30*time.Millisecond, span.StatusUnset),
	})
	op, _, err := h.Series(5*time.Minute, func(service, name string, kind span.Kind) bool { return service == "a" })
	if err != nil {
		t.Fatal(err)
	}
	if op.Service != "a" || op.Name != "" || op.Current.Count != 2 || op.Current.Errors != 1 {
		t.Errorf("series of service a: %+v", op)
	}
	last := op.Points[len(op.Points)-1]
	if last.Count != 2 || last.P99 < 18*time.Millisecond {
		t.Errorf("last point %+v", last)
	}
	op, _, _ = h.Series(5*time.Minute, func(string, string, span.Kind) bool { return false })
	if op.Current.Count != 0 || len(op.Points) != 30 {
		t.Errorf("no match: %+v", op)
	}
}

func TestBins(t *testing.T) {
	var b bins
	for _, i := range []int{10, 12, 5, 127, 5} {
		b.add(i)
	}
	if b.lo != 5 || len(b.n) != 123 || b.n[0] != 2 || b.n[5] != 1 || b.n[7] != 1 || b.n[122] != 1 {
		t.Errorf("bins lo %d len %d", b.lo, len(b.n))
	}
	if binOf(0) != 0 || binOf(time.Microsecond) != 0 || binOf(2*time.Microsecond) != 4 || binOf(1000*time.Hour) != numBins-1 {
		t.Errorf("binOf: %d %d %d %d", binOf(0), binOf(time.Microsecond), binOf(2*time.Microsecond), binOf(1000*time.Hour))
	}
	for i := 1; i < numBins; i++ { // every boundary, both sides
		start := time.Duration(binStarts[i])
		if binOf(start) != i || binOf(start-1) != i-1 || float64(start) < binLower(i) || float64(start-1) >= binLower(i) {
			t.Errorf("bin %d starts at %v (binLower %v): binOf there %d, a nanosecond before %d", i, start, binLower(i), binOf(start), binOf(start-1))
		}
	}
	for _, d := range []time.Duration{3 * time.Microsecond, time.Millisecond, 7 * time.Second} {
		i := binOf(d)
		if float64(d) < binLower(i) || float64(d) >= binLower(i+1) {
			t.Errorf("%v in bin %d [%v, %v)", d, i, time.Duration(binLower(i)), time.Duration(binLower(i+1)))
		}
	}
}

func BenchmarkHistoryExport(b *testing.B) {
	h := NewHistory(HistoryOptions{})
	spans := benchSpans(1000)
	now := time.Now()
	for i, s := range spans {
		s.End = now.Add(-time.Duration(i) * time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		h.Export(spans)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
}

// BenchmarkHistoryOverview answers the 5 m overview with the history at
// its bound (500 operations, a span every 2 s each for 10 minutes): the
// time Export waits behind it.
func BenchmarkHistoryOverview(b *testing.B) {
	now := time.Now()
	clock := now.Add(-time.Hour)
	h := NewHistory(HistoryOptions{Now: func() time.Time { return clock }})
	clock = now
	var spans []*span.Span
	for op := range DefaultMaxOperations {
		p := &span.Process{ServiceName: "svc"}
		for i := range 300 {
			end := now.Add(-time.Duration(i) * 2 * time.Second)
			d := time.Duration(1+i%50) * time.Millisecond
			spans = append(spans, &span.Span{Name: "op" + strconv.Itoa(op), Kind: span.KindServer, Start: end.Add(-d), End: end, Process: p})
		}
	}
	h.Export(spans)
	for b.Loop() {
		if _, err := h.Overview(5 * time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}

// Export and the queries run concurrently (the agent's pipeline and the
// UI): go test -race checks it.
func TestHistoryConcurrent(t *testing.T) {
	h := NewHistory(HistoryOptions{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			now := time.Now()
			h.Export([]*span.Span{histSpan("a", "op"+strconv.Itoa(i%7), span.KindServer, now, time.Duration(i)*time.Microsecond, span.StatusUnset)})
		}
	}()
	for range 50 {
		if _, err := h.Overview(time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, _, err := h.Series(time.Minute, func(string, string, span.Kind) bool { return true }); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	ov, _ := h.Overview(time.Minute)
	var n uint64
	for _, op := range ov.Operations {
		n += op.Current.Count
	}
	if n != 200 {
		t.Errorf("counted %d spans, want 200", n)
	}
}
