package sampling

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/span"
)

// collector is the next exporter: it records every batch.
type collector struct {
	batches [][]*span.Span
	closed  bool
	err     error
}

func (c *collector) Export(spans []*span.Span) error {
	c.batches = append(c.batches, spans)
	return c.err
}

func (c *collector) Close() error { c.closed = true; return nil }

func (c *collector) names() []string {
	var out []string
	for _, b := range c.batches {
		for _, s := range b {
			out = append(out, s.Name)
		}
	}
	return out
}

var checkout = &span.Process{PID: 7, ServiceName: "checkout"}

// mk builds a span of trace tr (randomness r), with id sid and parent
// pid (0 = root) taking d.
func mk(name string, r uint64, sid, pid byte, d time.Duration) *span.Span {
	s := &span.Span{TraceID: traceID(r), SpanID: span.SpanID{sid}, Name: name, Start: t0, End: t0.Add(d), Process: checkout, Kind: span.KindInternal}
	if pid != 0 {
		s.ParentID = span.SpanID{pid}
	}
	return s
}

func withStatus(s *span.Span, c span.StatusCode) *span.Span { s.Status = c; return s }

const (
	rLow  = 0x00000000000001 // dropped by any ratio < 1
	rHigh = 0xfffffffffffff0 // kept by any ratio > 0
)

func TestExporterRules(t *testing.T) {
	batch := func() []*span.Span {
		return []*span.Span{
			mk("ok/root", rLow, 1, 0, 10*time.Millisecond),
			mk("ok/child", rLow, 2, 1, 5*time.Millisecond),
			mk("err/root", rLow+1, 1, 0, 10*time.Millisecond),
			withStatus(mk("err/child", rLow+1, 2, 1, 5*time.Millisecond), span.StatusError),
			mk("slow/root", rLow+2, 1, 0, 900*time.Millisecond),
			mk("slow/child", rLow+2, 2, 1, 800*time.Millisecond),
			// Slow child, fast root: the duration rule looks at the root.
			mk("fastroot/root", rLow+3, 1, 0, 20*time.Millisecond),
			mk("fastroot/child", rLow+3, 2, 1, 2*time.Second),
			mk("lucky/root", rHigh, 1, 0, time.Millisecond),
			// A remote parent makes a local root; a parent missing
			// from the batch too.
			{TraceID: traceID(rLow + 4), SpanID: span.SpanID{1}, ParentID: span.SpanID{9}, RemoteParent: true, Name: "remote/root", Start: t0, End: t0.Add(time.Second)},
			{TraceID: traceID(rLow + 5), SpanID: span.SpanID{2}, ParentID: span.SpanID{9}, Name: "orphan/root", Start: t0, End: t0.Add(time.Second)},
		}
	}
	for _, tc := range []struct {
		policy string
		want   string // kept trace prefixes
	}{
		{"all", "ok err slow fastroot lucky remote orphan"},
		{"none", ""},
		{"errors", "err"},
		{"duration>500ms", "slow remote orphan"},
		{"ratio=0.5", "lucky"},
		{"ratio=1", "ok err slow fastroot lucky remote orphan"},
		{"errors,duration>500ms", "err slow remote orphan"},
		{"errors,ratio=0.01", "err lucky"},
		{"errors,duration>950ms,ratio=0.01", "err lucky remote orphan"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			p, err := ParsePolicy(tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			var c collector
			e := NewExporter(p, &c)
			in := batch()
			if err := e.Export(in); err != nil {
				t.Fatal(err)
			}
			var kept []string
			for _, n := range c.names() {
				if tr, _, _ := strings.Cut(n, "/"); !slices.Contains(kept, tr) {
					kept = append(kept, tr)
				}
			}
			if got := strings.Join(kept, " "); got != tc.want {
				t.Errorf("kept traces %q, want %q", got, tc.want)
			}
			if len(c.batches) > 1 {
				t.Errorf("%d calls to next for one batch, want at most 1", len(c.batches))
			}
			// Spans go on in batch order, untouched.
			var want []string
			for _, s := range batch() {
				if tr, _, _ := strings.Cut(s.Name, "/"); slices.Contains(kept, tr) {
					want = append(want, s.Name)
				}
			}
			if !slices.Equal(c.names(), want) {
				t.Errorf("spans passed %v, want %v", c.names(), want)
			}
			st := e.Stats()
			var nkept uint64
			for _, n := range st.TracesKept {
				nkept += n
			}
			wantKept, traces := len(kept), 7
			if p.All {
				// Counted at local roots without a parent or with a
				// remote one: not the orphan's.
				wantKept, traces = 6, 6
			}
			if int(nkept) != wantKept || int(nkept+st.TracesDropped) != traces {
				t.Errorf("stats: %d kept, %d dropped; want %d of %d kept", nkept, st.TracesDropped, wantKept, traces)
			}
			if int(st.SpansKept) != len(want) || int(st.SpansKept+st.SpansDropped) != len(in) {
				t.Errorf("stats: %d spans kept, %d dropped; want %d of %d", st.SpansKept, st.SpansDropped, len(want), len(in))
			}
		})
	}
}

func TestExporterReasons(t *testing.T) {
	p, _ := ParsePolicy("errors,duration>500ms,ratio=0.5")
	e := NewExporter(p, &collector{})
	e.Export([]*span.Span{
		withStatus(mk("a", rHigh, 1, 0, time.Second), span.StatusError), // error first
		mk("b", rHigh-1, 1, 0, time.Second),                             // duration before ratio
		mk("c", rHigh-2, 1, 0, time.Millisecond),                        // ratio
		mk("d", rLow, 1, 0, time.Millisecond),                           // dropped
	})
	st := e.Stats()
	want := map[Reason]uint64{ReasonError: 1, ReasonDuration: 1, ReasonRatio: 1}
	for _, r := range Reasons() {
		if st.TracesKept[r] != want[r] {
			t.Errorf("kept by %v: %d, want %d", r, st.TracesKept[r], want[r])
		}
	}
	if st.TracesDropped != 1 {
		t.Errorf("dropped %d, want 1", st.TracesDropped)
	}
	b, err := json.Marshal(st)
	if err != nil || !strings.Contains(string(b), `"tracesKept":{"duration":1,"error":1,"ratio":1}`) {
		t.Errorf("JSON %s, %v: want reasons by name", b, err)
	}
}

func TestExporterLateSpansFollowDecision(t *testing.T) {
	p, _ := ParsePolicy("errors")
	var c collector
	e := NewExporter(p, &c)
	// First batch: trace A has an error, trace B does not.
	e.Export([]*span.Span{
		withStatus(mk("A/root", 1, 1, 0, time.Millisecond), span.StatusError),
		mk("B/root", 2, 1, 0, time.Millisecond),
	})
	// Later: a goroutine of A ends fine, one of B fails. B was dropped:
	// its error comes too late to keep the part already gone, and
	// keeping the rest would export a trace without its root.
	e.Export([]*span.Span{
		mk("A/late", 1, 2, 1, time.Millisecond),
		withStatus(mk("B/late", 2, 2, 1, time.Millisecond), span.StatusError),
		mk("C/root", 3, 1, 0, time.Millisecond),
	})
	if got, want := c.names(), []string{"A/root", "A/late"}; !slices.Equal(got, want) {
		t.Errorf("exported %v, want %v", got, want)
	}
	st := e.Stats()
	if st.TracesKept[ReasonError] != 1 || st.TracesDropped != 2 || st.SpansKept != 2 || st.SpansDropped != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestExporterDecisionsBounded(t *testing.T) {
	p, _ := ParsePolicy("ratio=0.5")
	var c collector
	e := NewExporter(p, &c)
	e.decided = newDecisions(4)
	for i := range 10 {
		e.Export([]*span.Span{mk("root", uint64(i), 1, 0, time.Millisecond)})
	}
	if st := e.Stats(); st.DecisionsEvicted != 6 || e.decided.len() != 4 {
		t.Errorf("evicted %d, remembered %d; want 6, 4", st.DecisionsEvicted, e.decided.len())
	}
	// The four newest are remembered, the oldest forgotten.
	for i := range 10 {
		_, ok := e.decided.index[traceID(uint64(i))]
		if ok != (i >= 6) {
			t.Errorf("trace %d remembered = %v", i, ok)
		}
	}
	// Touching a decision keeps it: 6 is used, then 10 evicts 7.
	e.Export([]*span.Span{mk("late", 6, 2, 1, time.Millisecond)})
	e.Export([]*span.Span{mk("root", 10, 1, 0, time.Millisecond)})
	if _, ok := e.decided.index[traceID(6)]; !ok {
		t.Error("recently used decision evicted")
	}
	if _, ok := e.decided.index[traceID(7)]; ok {
		t.Error("least recently used decision kept")
	}
}

func TestDecisionsList(t *testing.T) {
	d := newDecisions(3)
	for i := range 3 {
		d.put(traceID(uint64(i)), i%2 == 0)
	}
	if k, ok := d.get(traceID(0)); !ok || !k {
		t.Fatalf("get(0) = %v, %v", k, ok)
	}
	d.put(traceID(3), true) // evicts 1, the least recently used
	if _, ok := d.get(traceID(1)); ok {
		t.Error("1 not evicted")
	}
	if k, ok := d.get(traceID(2)); !ok || !k {
		t.Errorf("get(2) = %v, %v", k, ok)
	}
	// Walk the list both ways: most recent first 2, 3, 0.
	var fwd, back []span.TraceID
	for i := d.head; i >= 0; i = d.entries[i].next {
		fwd = append(fwd, d.entries[i].id)
	}
	for i := d.tail; i >= 0; i = d.entries[i].prev {
		back = append(back, d.entries[i].id)
	}
	slices.Reverse(back)
	want := []span.TraceID{traceID(2), traceID(3), traceID(0)}
	if !slices.Equal(fwd, want) || !slices.Equal(back, want) {
		t.Errorf("list %v / %v, want %v", fwd, back, want)
	}
}

// TestExporterPercentile feeds 1000 local roots of one operation — 990
// taking 10-20ms and 10 taking 200-400ms, shuffled — then checks that the
// percentile rule keeps nothing while warming up, keeps only slow roots
// afterwards, and, once warm, keeps exactly the slowest 1 %.
func TestExporterPercentile(t *testing.T) {
	p, _ := ParsePolicy("p99")
	var c collector
	e := NewExporter(p, &c)
	var ds []time.Duration
	for i := range 990 {
		ds = append(ds, 10*time.Millisecond+time.Duration(i)*10*time.Millisecond/990)
	}
	for i := range 10 {
		ds = append(ds, 200*time.Millisecond+time.Duration(i)*20*time.Millisecond)
	}
	rand.New(rand.NewPCG(5, 6)).Shuffle(len(ds), func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
	n := uint64(0)
	root := func(d time.Duration) bool {
		n++
		before := len(c.batches)
		e.Export([]*span.Span{mk("GET /cart", n, 1, 0, d)})
		return len(c.batches) > before
	}
	keptSlow, keptFast := 0, 0
	for i, d := range ds {
		kept := root(d)
		if kept && i < MinSamples {
			t.Fatalf("root %d (%v) kept during warm-up", i, d)
		}
		switch {
		case kept && d >= 200*time.Millisecond:
			keptSlow++
		case kept && d < 18*time.Millisecond:
			t.Errorf("root %d of %v kept: far below p99", i, d)
		case kept:
			keptFast++
		}
	}
	t.Logf("first pass: kept %d slow, %d near p99", keptSlow, keptFast)
	if keptSlow+keptFast > 20 {
		t.Errorf("first pass kept %d of 1000 by p99", keptSlow+keptFast)
	}
	// Warm: 100 fast roots (below the top 1 %), then one slow one, ten
	// times; slow roots stay under 1 % of the window.
	for probe := range 10 {
		for i := range 100 {
			if d := 10*time.Millisecond + time.Duration(i)*50*time.Microsecond; root(d) {
				t.Fatalf("probe %d: fast root of %v kept", probe, d)
			}
		}
		if d := 150*time.Millisecond + time.Duration(probe)*time.Millisecond; !root(d) {
			t.Fatalf("probe %d: slow root of %v dropped", probe, d)
		}
	}
	st := e.Stats()
	if st.Operations != 1 || st.TracesKept[ReasonPercentile] != uint64(keptSlow+keptFast+10) {
		t.Errorf("stats %+v", st)
	}
}

// TestExporterPercentileAllRoots: dropped traces and late roots count in
// the percentile too.
func TestExporterPercentileAllRoots(t *testing.T) {
	p, _ := ParsePolicy("p50")
	e := NewExporter(p, &collector{})
	// 1 decided trace, then MinSamples-1 more roots of the operation
	// arriving late for it: together MinSamples roots.
	e.Export([]*span.Span{mk("op", 1, 1, 0, time.Millisecond)})
	for i := range MinSamples - 1 {
		e.Export([]*span.Span{mk("op", 1, byte(i+2), 0, time.Millisecond)})
	}
	w := e.ops.byOp[operation{"checkout", "op"}]
	if w == nil || w.total != MinSamples {
		t.Fatalf("window %+v, want %d roots", w, MinSamples)
	}
	// A child of an earlier span, arriving late, is no root.
	e.Export([]*span.Span{mk("op", 1, 200, 2, time.Millisecond)})
	if w.total != MinSamples {
		t.Errorf("late child counted as a root")
	}
}

func TestExporterUntrackedOperations(t *testing.T) {
	p, _ := ParsePolicy("p99")
	e := NewExporter(p, &collector{})
	for i := range MaxOperations + 5 {
		e.Export([]*span.Span{mk(fmt.Sprint("op", i), uint64(i), 1, 0, time.Millisecond)})
	}
	if st := e.Stats(); st.Operations != MaxOperations || st.OperationsUntracked != 5 {
		t.Errorf("%d operations, %d untracked; want %d, 5", st.Operations, st.OperationsUntracked, MaxOperations)
	}
}

func TestExporterCloseAndErrors(t *testing.T) {
	c := collector{err: errors.New("collector down")}
	e := NewExporter(Policy{All: true}, &c)
	if err := e.Export(nil); err != nil {
		t.Errorf("Export(nil) = %v", err)
	}
	if len(c.batches) != 0 {
		t.Error("empty batch passed on")
	}
	err := e.Export([]*span.Span{mk("x", 1, 1, 0, time.Millisecond)})
	if err == nil || !strings.Contains(err.Error(), "collector down") {
		t.Errorf("Export error = %v, want the next exporter's", err)
	}
	e.Close()
	if !c.closed {
		t.Error("Close did not close next")
	}
}

type discard struct{}

func (discard) Export([]*span.Span) error { return nil }
func (discard) Close() error              { return nil }

// BenchmarkExport measures Export per span: batches of 64 spans in 8
// traces of 8 spans, half new traces, half late spans of known ones.
func BenchmarkExport(b *testing.B) {
	for _, policy := range []string{"all", "errors,duration>500ms,p99,ratio=0.05"} {
		b.Run(policy, func(b *testing.B) {
			p, _ := ParsePolicy(policy)
			e := NewExporter(p, discard{})
			rng := rand.New(rand.NewPCG(7, 8))
			const nb = 256
			batches := make([][]*span.Span, nb)
			for i := range batches {
				for tr := range 8 {
					r := uint64(i*8 + tr)
					if tr%2 == 1 && i > 0 {
						r = uint64((i-1)*8 + tr) // late spans of the previous batch's trace
					}
					for s := range 8 {
						d := time.Duration(rng.ExpFloat64() * float64(20*time.Millisecond))
						parent := byte(0)
						if s > 0 {
							parent = byte(1)
						}
						batches[i] = append(batches[i], mk(fmt.Sprint("op", tr), r<<8, byte(s+1), parent, d))
					}
				}
			}
			b.ResetTimer()
			for i := range b.N {
				e.Export(batches[i%nb])
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/span")
		})
	}
}

// Stats survive a JSON round trip: `latscope status` decodes the agent's.
func TestStatsJSONRoundTrip(t *testing.T) {
	in := Stats{TracesKept: map[Reason]uint64{ReasonError: 3, ReasonRatio: 1}, SpansDropped: 7}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Stats
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if out.TracesKept[ReasonError] != 3 || out.TracesKept[ReasonRatio] != 1 || out.SpansDropped != 7 {
		t.Errorf("%s read back as %+v", b, out)
	}
}
