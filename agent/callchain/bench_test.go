package callchain

import (
	"os"
	"testing"

	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/span"
)

// testdata/checkout.events was recorded with
//
//	latscope trace --record ... -- examples/checkout --requests 100
//
// (1100 calls: 100 requests of 11 calls, 3 goroutines each).
func recorded(tb testing.TB) [][]byte {
	raw, err := os.ReadFile("testdata/checkout.events")
	if err != nil {
		tb.Fatal(err)
	}
	recs, err := calltracer.ReadRecords(raw)
	if err != nil {
		tb.Fatal(err)
	}
	return recs
}

// The recording rebuilds into 100 complete trees: no orphan, no loss.
func TestRecordedStream(t *testing.T) {
	recs := recorded(t)
	traces := map[span.TraceID]int{}
	b := New(func(s []*span.Span) {
		for _, sp := range s {
			traces[sp.TraceID]++
		}
	}, 0, Options{})
	ev, _ := calltracer.Decode(recs[0])
	b.AddProcess(ev.Pid, &span.Process{}, make([]Func, 7))
	for _, r := range recs {
		ev, _ := calltracer.Decode(r)
		b.Add(ev)
	}
	b.Flush()
	st := b.Stats()
	if len(recs) != 1100 || len(traces) != 100 || st.Orphans != 0 || st.Spans != 1100 {
		t.Errorf("%d records → %d traces, stats %+v", len(recs), len(traces), st)
	}
	for id, n := range traces {
		if n != 11 {
			t.Errorf("trace %s has %d spans, want 11", id, n)
		}
	}
}

// BenchmarkDecodeRebuild measures user space on one core: decoding ring
// records and rebuilding call trees into spans (exporters excluded),
// replaying the recorded stream as a new process each round.
func BenchmarkDecodeRebuild(b *testing.B) {
	recs := recorded(b)
	buf := make([]byte, calltracer.EventSize)
	spans := 0
	bl := New(func(s []*span.Span) { spans += len(s) }, 0, Options{})
	funcs := make([]Func, 7)
	b.ReportAllocs()
	b.ResetTimer()
	calls := 0
	for i := 0; i < b.N; i++ {
		for round := 0; round < 100; round++ {
			pid := uint32(i*100 + round + 1) // a fresh process keeps call ids unique
			bl.AddProcess(pid, &span.Process{}, funcs)
			for _, raw := range recs {
				copy(buf, raw) // the ring buffer hands out fresh bytes too
				ev, _ := calltracer.Decode(buf)
				ev.Pid = pid
				bl.Add(ev)
			}
			bl.RemoveProcess(pid)
			calls += len(recs)
		}
	}
	b.ReportMetric(float64(calls)/b.Elapsed().Seconds(), "calls/s")
	if spans != calls {
		b.Fatalf("%d spans from %d calls", spans, calls)
	}
}
