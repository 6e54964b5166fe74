package attribution

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/latscope/latscope/bpf/sched"
	"github.com/latscope/latscope/span"
)

// Times are in ms from a base; the collector's wall offset is 0, so mono
// == Unix ns.
const base = uint64(1_000_000_000_000)

func ms(v float64) uint64 { return base + uint64(math.Round(v*1e6)) }

func nsOf(v float64) int64 { return int64(math.Round(v * 1e6)) }

// reasons122 are Go 1.22+'s traceBlockReason values (symbolizer's table).
var reasons122 = map[string]uint8{"Generic": 0, "Forever": 1, "Net": 2, "Select": 3, "CondWait": 4, "Sync": 5,
	"ChanSend": 6, "ChanRecv": 7, "GCMarkAssist": 8, "GCSweep": 9, "SystemGoroutine": 10, "Preempted": 11,
	"DebugCall": 12, "UntilGCEnds": 13, "Sleep": 14}

var proc1 = &span.Process{PID: 1, ServiceName: "svc"}

func newCollector(t *testing.T, deepFrom float64) *Collector {
	t.Helper()
	c := New(0)
	c.AddProcess(1, reasons122, ms(-100))
	if deepFrom >= 0 {
		c.DeepStart(ms(deepFrom))
	}
	return c
}

func off(goid uint64, reason uint8, start, mid, end float64) *sched.Event {
	return &sched.Event{Kind: sched.KindOff, Reason: reason, Pid: 1, Goid: goid, Start: ms(start), Mid: ms(mid), End: ms(end)}
}

func rec(kind uint8, goid uint64, start, end float64) *sched.Event {
	return &sched.Event{Kind: kind, Pid: 1, Goid: goid, Start: ms(start), Mid: ms(start), End: ms(end)}
}

var nextID byte

func sp(name string, kind span.Kind, goid uint64, depth int, start, end float64, parent *span.Span) *span.Span {
	nextID++
	s := &span.Span{Name: name, Kind: kind, GoID: goid, Depth: depth, Process: proc1,
		Start: time.Unix(0, int64(ms(start))), End: time.Unix(0, int64(ms(end)))}
	s.SpanID[7] = nextID
	if parent != nil {
		s.ParentID = parent.SpanID
	}
	return s
}

func checkSplit(t *testing.T, s *span.Span, full bool, want map[span.TimeCategory]float64) {
	t.Helper()
	if s.Time == nil {
		t.Fatalf("%s: no time split", s.Name)
	}
	if s.Time.Full != full {
		t.Errorf("%s: full = %v, want %v", s.Name, s.Time.Full, full)
	}
	for c := span.TimeCategory(0); c < span.NumTimeCategories; c++ {
		if got, w := s.Time.NS[c], nsOf(want[c]); got != w {
			t.Errorf("%s: %s = %d, want %d", s.Name, c.Name(), got, w)
		}
	}
	if full && s.Time.Total() != s.Duration().Nanoseconds() {
		t.Errorf("%s: categories sum to %d, duration %d", s.Name, s.Time.Total(), s.Duration().Nanoseconds())
	}
}

// A full split partitions the span: parked (by reason), runnable after
// the wake-up, preempted by the kernel, asleep in the kernel, the rest on
// CPU; a stop-the-world wins over what the goroutine was doing.
func TestFullSplit(t *testing.T) {
	c := newCollector(t, 0)
	c.Add(off(7, 14, 1, 6, 6.5))                                                                                                    // time.Sleep 1..6, runnable to 6.5
	c.Add(rec(sched.KindOSRunnable, 7, 7, 7.5))                                                                                     // preempted by the kernel
	c.Add(rec(sched.KindOSBlocked, 7, 8, 9))                                                                                        // a blocking syscall
	c.Add(rec(sched.KindSTW, 0, 2, 3))                                                                                              // the world stopped during the sleep
	c.Add(off(8, 5, 1, 9, 9))                                                                                                       // another goroutine: not this span's
	c.Add(&sched.Event{Kind: sched.KindOff, Reason: sched.ReasonNone, Pid: 1, Goid: 7, Start: ms(9.5), Mid: ms(9.5), End: ms(9.7)}) // preempted by Go
	s := sp("GET /sleep", span.KindServer, 7, 0, 0.5, 10, nil)
	c.Apply([]*span.Span{s})
	checkSplit(t, s, true, map[span.TimeCategory]float64{
		span.TimeBlockedSleep: 4, span.TimeGCSTW: 1, span.TimeRunnable: 0.5 + 0.5 + 0.2,
		span.TimeSyscall: 1, span.TimeOnCPU: 9.5 - 4 - 1 - 1.2 - 1,
	})
	st := c.Stats()
	if st.SpansFull != 1 || st.Off != 3 || st.OSRunnable != 1 || st.OSBlocked != 1 || st.STW != 1 {
		t.Errorf("stats %+v", st)
	}
	// The outermost span of goroutine 7 is done: its records are gone.
	if tl := c.procs[1].gs[7]; tl == nil || len(tl.ivs) != 0 || tl.pruned != ms(10) {
		t.Errorf("goroutine 7 after its outermost span: %+v", tl)
	}
}

// Blocked while a client call (another service) or a child on another
// goroutine runs is downstream time; on CPU and runnable stay what they
// are. The client span itself waits downstream throughout.
func TestDownstream(t *testing.T) {
	c := newCollector(t, 0)
	c.Add(off(1, 3, 2.5, 7.5, 7.6)) // select in the client call, woken by its reader
	c.Add(off(1, 7, 8.5, 9.5, 9.5)) // then a channel receive from a goroutine child
	srv := sp("GET /checkout", span.KindServer, 1, 0, 0, 10, nil)
	cli := sp("GET", span.KindClient, 1, 1, 2, 8, srv)
	kid := sp("main.work", span.KindInternal, 2, 0, 8.2, 9.5, srv)
	c.Apply([]*span.Span{srv, cli, kid})
	checkSplit(t, srv, true, map[span.TimeCategory]float64{
		span.TimeDownstream: 5 + 1, span.TimeRunnable: 0.1, span.TimeOnCPU: 10 - 6 - 0.1,
	})
	checkSplit(t, cli, true, map[span.TimeCategory]float64{
		span.TimeDownstream: 5, span.TimeRunnable: 0.1, span.TimeOnCPU: 6 - 5 - 0.1,
	})
	checkSplit(t, kid, true, map[span.TimeCategory]float64{span.TimeOnCPU: 1.3})
}

// Outside deep mode a span gets the stop-the-world and assist time it
// overlaps, and nothing else; none when it overlaps neither.
func TestGCOnly(t *testing.T) {
	c := newCollector(t, -1)
	c.Add(rec(sched.KindAssist, 3, 1, 2))
	c.Add(rec(sched.KindSTW, 0, 1.5, 2.5))
	c.Add(off(3, 14, 4, 5, 5)) // a deep record from an earlier period: not used
	s := sp("GET /alloc", span.KindServer, 3, 0, 0, 6, nil)
	quiet := sp("GET /quiet", span.KindServer, 4, 0, 3, 6, nil)
	c.Apply([]*span.Span{s, quiet})
	checkSplit(t, s, false, map[span.TimeCategory]float64{span.TimeGCSTW: 1, span.TimeGCAssist: 0.5})
	if quiet.Time != nil {
		t.Errorf("a span without GC time got %+v", quiet.Time)
	}
	attrs := s.Attributes()
	var keys []string
	for _, a := range attrs {
		if len(a.Key) > len(span.TimeKeyPrefix) && a.Key[:len(span.TimeKeyPrefix)] == span.TimeKeyPrefix {
			keys = append(keys, a.Key)
		}
	}
	if len(keys) != 2 || keys[0] != "latscope.time.gc_stw" || keys[1] != "latscope.time.gc_assist" {
		t.Errorf("GC-only attributes %v", keys)
	}
}

// Deep mode must cover the whole span, in a process registered before
// it started; records dropped before the span arrived make it GC-only,
// counted.
func TestDeepCoverage(t *testing.T) {
	c := newCollector(t, 5)
	before := sp("started before", span.KindServer, 1, 0, 4, 8, nil)
	inside := sp("inside", span.KindServer, 2, 0, 6, 8, nil)
	c.Apply([]*span.Span{before, inside})
	if before.Time != nil {
		t.Errorf("a span started before deep mode got %+v", before.Time)
	}
	checkSplit(t, inside, true, map[span.TimeCategory]float64{span.TimeOnCPU: 2})

	c.DeepStop(ms(20))
	after := sp("ends after", span.KindServer, 3, 0, 19, 21, nil)
	c.Apply([]*span.Span{after})
	if after.Time != nil {
		t.Errorf("a span that outlived deep mode got %+v", after.Time)
	}

	// Goroutine 5's outermost span pruned its records; a child of it
	// that comes later (its parent was lost) cannot be split.
	c.DeepStart(ms(30))
	c.Add(off(5, 5, 31, 32, 32))
	c.Apply([]*span.Span{sp("outer", span.KindServer, 5, 0, 30.5, 33, nil)})
	c.Add(off(5, 5, 34, 35, 35))
	late := sp("late orphan", span.KindInternal, 5, 1, 31, 32.5, nil)
	c.Apply([]*span.Span{late})
	if late.Time != nil || c.Stats().SpansIncomplete != 1 {
		t.Errorf("late span %+v, stats %+v", late.Time, c.Stats())
	}
}

// Go 1.21 numbers its reasons after the old tracer's events, several of
// them 20; the table per release sorts them right.
func TestReasons121(t *testing.T) {
	c := New(0)
	c.AddProcess(1, map[string]uint8{"Generic": 20, "GCSweep": 20, "Net": 27, "Select": 24, "Sync": 25, "Sleep": 19, "GCMarkAssist": 42}, ms(-1))
	c.DeepStart(ms(0))
	for i, r := range []uint8{27, 24, 25, 19, 42, 20, sched.ReasonUnknown} {
		c.Add(off(uint64(10+i), r, 1, 2, 2))
	}
	want := []span.TimeCategory{span.TimeBlockedNet, span.TimeBlockedChan, span.TimeBlockedSync, span.TimeBlockedSleep, span.TimeGCAssist, span.TimeOther, span.TimeOther}
	for i, w := range want {
		s := sp("s", span.KindServer, uint64(10+i), 0, 0.5, 2.2, nil)
		c.Apply([]*span.Span{s})
		if s.Time == nil || s.Time.Largest() != w || s.Time.NS[w] != nsOf(1) {
			t.Errorf("reason #%d: %+v, want 1ms of %s", i, s.Time, w.Name())
		}
	}
}

func TestExpire(t *testing.T) {
	c := newCollector(t, 0)
	c.Add(off(1, 5, 1, 2, 2))
	c.Add(rec(sched.KindSTW, 0, 1, 2))
	c.Add(off(2, 5, 1, 2, float64(Retain/time.Millisecond)+10))
	c.Expire(ms(float64(Retain/time.Millisecond) + 5))
	if c.procs[1].gs[1] != nil || c.procs[1].gs[2] == nil {
		t.Errorf("goroutines after expiry: %v", c.procs[1].gs)
	}
	if len(c.procs[1].stw) != 1 {
		t.Errorf("the last stop-the-world window is kept for long spans: %v", c.procs[1].stw)
	}
	c.Add(&sched.Event{Kind: sched.KindOff, Pid: 99})
	if c.Stats().UnknownProcess != 1 {
		t.Error("a record of an unknown process was not counted")
	}
}

// The trigger fires once an operation's p99 crosses the threshold with
// enough spans to say, then waits its cooldown.
func TestTrigger(t *testing.T) {
	var mu sync.Mutex
	var fired []string
	done := make(chan struct{}, 10)
	tr := NewTrigger(TriggerConfig{P99Above: 50 * time.Millisecond, For: time.Minute}, func(d time.Duration, reason string) {
		mu.Lock()
		fired = append(fired, reason)
		mu.Unlock()
		done <- struct{}{}
	})
	now := time.Unix(1_700_000_000, 0)
	batch := func(n int, d time.Duration) {
		var spans []*span.Span
		for i := 0; i < n; i++ {
			now = now.Add(10 * time.Millisecond)
			spans = append(spans, &span.Span{Name: "GET /x", Kind: span.KindServer, Process: proc1, Start: now.Add(-d), End: now})
		}
		tr.Observe(spans)
	}
	batch(200, 10*time.Millisecond)
	batch(5, 200*time.Millisecond) // 5 of 205: p99 above
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the trigger did not fire")
	}
	batch(10, 200*time.Millisecond) // within the cooldown
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(fired) != 1 {
		t.Fatalf("fired %d times: %v", len(fired), fired)
	}
	if want := "p99 of svc GET /x"; len(fired[0]) < len(want) || fired[0][:len(want)] != want {
		t.Errorf("reason %q", fired[0])
	}
	if NewTrigger(TriggerConfig{}, nil) != nil {
		t.Error("a zero threshold made a trigger")
	}
}

// A process detached before its last spans were read (they wait in the
// ring for the next drain) still gets them split; it is forgotten a
// Retain later, and a new process under its pid is a process of its own.
func TestRemovedProcessSpansStillSplit(t *testing.T) {
	c := newCollector(t, 0)
	c.Add(off(7, 14, 1, 6, 6))
	c.RemoveProcess(1, ms(11)) // detached at 11 ms; the span below is read after
	s := sp("GET /sleep", span.KindServer, 7, 0, 0.5, 10, nil)
	c.Apply([]*span.Span{s})
	checkSplit(t, s, true, map[span.TimeCategory]float64{span.TimeBlockedSleep: 5, span.TimeOnCPU: 4.5})

	c.Expire(ms(11) + uint64(Retain) - 1)
	if c.procs[1] == nil {
		t.Fatal("forgotten before a Retain had passed")
	}
	c.Expire(ms(11) + uint64(Retain))
	if c.procs[1] != nil {
		t.Fatal("still held a Retain after its removal")
	}

	// pid 1 again, removed, then registered anew before Expire: the new
	// one stays.
	c.AddProcess(1, reasons122, ms(20))
	c.RemoveProcess(1, ms(21))
	c.AddProcess(1, reasons122, ms(22))
	c.Expire(ms(21) + uint64(Retain))
	if p := c.procs[1]; p == nil || p.gone != 0 {
		t.Fatalf("the pid's new process: %+v", p)
	}
}
