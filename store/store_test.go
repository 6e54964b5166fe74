package store

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/latscope/latscope/span"
)

func TestExportAssemblesTrace(t *testing.T) {
	s := New(1 << 20)
	spans := checkout(1, t0, 200, 5*time.Millisecond)
	// The child spans arrive first, the server span in a later batch.
	s.Export(spans[:2])
	first, ok := s.Trace(traceID(1))
	if !ok {
		t.Fatal("trace not found after the first batch")
	}
	firstSpans := slices.Clone(first.Spans)
	s.Export(spans[2:])

	tr, ok := s.Trace(traceID(1))
	if !ok {
		t.Fatal("trace not found")
	}
	if len(tr.Spans) != 4 {
		t.Fatalf("got %d spans, want 4", len(tr.Spans))
	}
	for i := 1; i < len(tr.Spans); i++ {
		if tr.Spans[i].Start.Before(tr.Spans[i-1].Start) {
			t.Errorf("spans not sorted by start: %s before %s", tr.Spans[i-1].Name, tr.Spans[i].Name)
		}
	}
	server := spans[3]
	if tr.Root().SpanID != server.SpanID {
		t.Errorf("Root() = %q, want the frontend server span", tr.Root().Name)
	}
	if !tr.Start().Equal(t0) || !tr.End().Equal(server.End) || tr.Duration() != server.Duration() {
		t.Errorf("Start, End, Duration = %v, %v, %v; want %v, %v, %v", tr.Start(), tr.End(), tr.Duration(), t0, server.End, server.Duration())
	}
	if got := tr.Services(); !reflect.DeepEqual(got, []string{"frontend", "payments"}) {
		t.Errorf("Services() = %q", got)
	}
	if tr.HasError() {
		t.Error("HasError() = true for a trace without error spans")
	}
	// The snapshot handed out before the second batch has not changed.
	if !slices.Equal(first.Spans, firstSpans) || first.Services()[0] != "payments" || len(first.Services()) != 1 {
		t.Errorf("earlier snapshot changed: %d spans, services %q", len(first.Spans), first.Services())
	}
	st := s.Stats()
	if st.Traces != 1 || st.Spans != 4 || st.SpansAdded != 4 || st.EvictedTraces != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestRootWithoutLocalParent(t *testing.T) {
	s := New(1 << 20)
	// Only payments is traced: its server span's parent (frontend's client
	// span) is not in the trace.
	spans := checkout(1, t0, 500, time.Millisecond)
	s.Export(spans[:2])
	tr, _ := s.Trace(traceID(1))
	if tr.Root().SpanID != spans[1].SpanID {
		t.Errorf("Root() = %q, want payments' server span", tr.Root().Name)
	}
	if !tr.HasError() {
		t.Error("HasError() = false for a trace with an error span")
	}
}

func TestEvictsOldestFirst(t *testing.T) {
	perTrace := traceCost(checkout(0, t0, 200, time.Millisecond))
	budget := 4*perTrace - 1 // room for three traces and a late span, not four
	s := New(budget)
	for n := range uint64(5) {
		s.Export(checkout(n, t0.Add(time.Duration(n)*time.Second), 200, time.Millisecond))
	}
	for n := range uint64(5) {
		_, ok := s.Trace(traceID(n))
		if want := n >= 2; ok != want {
			t.Errorf("trace %d held = %v, want %v", n, ok, want)
		}
	}
	want := Stats{Bytes: 3 * perTrace, Budget: budget, Traces: 3, Spans: 12, SpansAdded: 20, EvictedTraces: 2, EvictedSpans: 8}
	if got := s.Stats(); got != want {
		t.Errorf("Stats =\n%+v, want\n%+v", got, want)
	}
	// Order is by first arrival, not by last arrival: a late span of
	// trace 2 does not save it from being the next evicted.
	late := *checkout(2, t0, 200, time.Millisecond)[0]
	late.SpanID = spanID(2, 9)
	s.Export([]*span.Span{&late})
	s.Export(checkout(5, t0.Add(5*time.Second), 200, time.Millisecond))
	if _, ok := s.Trace(traceID(2)); ok {
		t.Error("trace 2 still held after trace 5 arrived")
	}
	if _, ok := s.Trace(traceID(3)); !ok {
		t.Error("trace 3 evicted before trace 2")
	}
}

func TestEvictionUnderFlood(t *testing.T) {
	const budget = 1 << 20
	s := New(budget)
	rng := rand.New(rand.NewPCG(1, 2))
	var added int64
	var batch []*span.Span
	for n := uint64(0); added < 200_000; n++ {
		batch = append(batch, checkout(n, t0.Add(time.Duration(n)*time.Millisecond), 200, time.Duration(rng.IntN(5000))*time.Microsecond)...)
		added += 4
		if len(batch) >= 1+rng.IntN(64) {
			s.Export(batch)
			batch = nil
			if st := s.Stats(); st.Bytes > budget {
				t.Fatalf("after %d spans: %d bytes held, budget %d", added, st.Bytes, budget)
			}
		}
	}
	s.Export(batch)
	st := s.Stats()
	if st.Bytes > budget || st.Bytes < budget*3/4 {
		t.Errorf("%d bytes held, want within [%d, %d]", st.Bytes, budget*3/4, budget)
	}
	if st.SpansAdded != added || st.Spans+st.EvictedSpans != added || st.EvictedTraces == 0 {
		t.Errorf("Stats = %+v after %d spans", st, added)
	}
	var walked int
	var spans int64
	s.Each(func(tr *Trace) bool { walked++; spans += int64(len(tr.Spans)); return true })
	if walked != st.Traces || spans != st.Spans {
		t.Errorf("Each walked %d traces, %d spans; Stats says %d, %d", walked, spans, st.Traces, st.Spans)
	}
	// The newest traces are the ones kept.
	last := uint64(added/4 - 1)
	if _, ok := s.Trace(traceID(last)); !ok {
		t.Error("newest trace evicted")
	}
	if _, ok := s.Trace(traceID(0)); ok {
		t.Error("oldest trace still held")
	}
}

func TestTraceOverBudget(t *testing.T) {
	s := New(4096)
	s.Export(checkout(1, t0, 200, time.Millisecond))
	// Trace 2 alone costs more than the budget: it goes, trace 1 stays.
	var huge []*span.Span
	for i := range 100 {
		sp := *checkout(2, t0.Add(time.Duration(i)), 200, time.Millisecond)[3]
		sp.SpanID = spanID(2, byte(i))
		huge = append(huge, &sp)
	}
	s.Export(huge)
	if _, ok := s.Trace(traceID(2)); ok {
		t.Error("trace over the whole budget held")
	}
	if _, ok := s.Trace(traceID(1)); !ok {
		t.Error("trace 1 evicted for a trace that could never fit")
	}
	st := s.Stats()
	if st.EvictedTraces != 1 || st.EvictedSpans != 100 || st.Traces != 1 || st.Bytes > st.Budget {
		t.Errorf("Stats = %+v", st)
	}
	// A late span of the evicted trace starts a new entry.
	late := checkout(2, t0, 200, time.Millisecond)[:1]
	s.Export(late)
	if tr, ok := s.Trace(traceID(2)); !ok || len(tr.Spans) != 1 {
		t.Errorf("late span of an evicted trace: held %v", ok)
	}
}

func TestZeroBudgetKeepsNothing(t *testing.T) {
	s := New(0)
	s.Export(checkout(1, t0, 200, time.Millisecond))
	s.Export(checkout(2, t0, 500, time.Millisecond))
	want := Stats{SpansAdded: 8, EvictedTraces: 2, EvictedSpans: 8}
	if got := s.Stats(); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	if svcs := s.Services(); len(svcs) != 0 {
		t.Errorf("Services() = %q, want none", svcs)
	}
}

func TestExportSkipsNilAndKeepsCallerSlice(t *testing.T) {
	s := New(1 << 20)
	spans := checkout(1, t0, 200, time.Millisecond)
	in := []*span.Span{spans[0], nil, spans[1]}
	orig := slices.Clone(in)
	if err := s.Export(in); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(in, orig) {
		t.Error("Export reordered the caller's slice")
	}
	if st := s.Stats(); st.Spans != 2 {
		t.Errorf("%d spans held, want 2", st.Spans)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestConcurrentExportAndQueries(t *testing.T) {
	s := New(64 << 10)
	var wg sync.WaitGroup
	const writers, perWriter = 2, 500
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				n := uint64(w*perWriter + i)
				spans := checkout(n, t0.Add(time.Duration(n)*time.Millisecond), int64(200+300*(i%2)), time.Millisecond)
				s.Export(spans[:2])
				s.Export(spans[2:])
			}
		})
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 3 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, tr := range s.Search(Query{Service: "payments", Tags: map[string]string{"error": "true"}, Limit: 10}) {
					_ = tr.Root()
					_ = tr.Services()
				}
				s.Each(func(tr *Trace) bool { _ = tr.Duration(); return true })
				s.Operations("frontend", "")
				s.Services()
				s.Trace(traceID(3))
				s.Stats()
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if st := s.Stats(); st.SpansAdded != writers*perWriter*4 || st.Bytes > st.Budget {
		t.Errorf("Stats = %+v", st)
	}
}
