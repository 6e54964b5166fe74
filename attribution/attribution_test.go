package attribution

import (
	"math"
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

var proc1 = &span.Process{PID: 1, ServiceName: "svc"}

func rec(kind uint8, goid uint64, start, end float64) *sched.Event {
	return &sched.Event{Kind: kind, Pid: 1, Goid: goid, Start: ms(start), Mid: ms(start), End: ms(end)}
}

var nextID byte

func sp(name string, kind span.Kind, goid uint64, depth int, start, end float64) *span.Span {
	nextID++
	s := &span.Span{Name: name, Kind: kind, GoID: goid, Depth: depth, Process: proc1,
		Start: time.Unix(0, int64(ms(start))), End: time.Unix(0, int64(ms(end)))}
	s.SpanID[7] = nextID
	return s
}

// A span gets the stop-the-world and assist time it overlaps, and
// nothing else; none when it overlaps neither.
func TestGCOnly(t *testing.T) {
	c := New(0)
	c.AddProcess(1)
	c.Add(rec(sched.KindAssist, 3, 1, 2))
	c.Add(rec(sched.KindSTW, 0, 1.5, 2.5))
	s := sp("GET /alloc", span.KindServer, 3, 0, 0, 6)
	other := sp("GET /other", span.KindServer, 5, 0, 0, 2) // the pause, not the assist
	quiet := sp("GET /quiet", span.KindServer, 4, 0, 3, 6)
	c.Apply([]*span.Span{s, other, quiet})
	for _, tc := range []struct {
		s           *span.Span
		stw, assist float64
	}{{s, 1, 0.5}, {other, 0.5, 0}} {
		if tc.s.Time == nil || tc.s.Time.Full || tc.s.Time.NS[span.TimeGCSTW] != nsOf(tc.stw) || tc.s.Time.NS[span.TimeGCAssist] != nsOf(tc.assist) || tc.s.Time.Total() != nsOf(tc.stw+tc.assist) {
			t.Errorf("%s: %+v, want gc_stw %gms gc_assist %gms", tc.s.Name, tc.s.Time, tc.stw, tc.assist)
		}
	}
	if quiet.Time != nil {
		t.Errorf("a span without GC time got %+v", quiet.Time)
	}
	var keys []string
	for _, a := range s.Attributes() {
		if len(a.Key) > len(span.TimeKeyPrefix) && a.Key[:len(span.TimeKeyPrefix)] == span.TimeKeyPrefix {
			keys = append(keys, a.Key)
		}
	}
	if len(keys) != 2 || keys[0] != "latscope.time.gc_stw" || keys[1] != "latscope.time.gc_assist" {
		t.Errorf("GC-only attributes %v", keys)
	}
	if st := c.Stats(); st.SpansGC != 2 || st.STW != 1 || st.Assists != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestExpire(t *testing.T) {
	c := New(0)
	c.AddProcess(1)
	c.Add(rec(sched.KindAssist, 1, 1, 2))
	c.Add(rec(sched.KindSTW, 0, 1, 2))
	c.Add(rec(sched.KindAssist, 2, 1, float64(Retain/time.Millisecond)+10))
	c.Expire(ms(float64(Retain/time.Millisecond) + 5))
	if c.procs[1].gs[1] != nil || c.procs[1].gs[2] == nil {
		t.Errorf("goroutines after expiry: %v", c.procs[1].gs)
	}
	if len(c.procs[1].stw) != 1 {
		t.Errorf("the last stop-the-world window is kept for long spans: %v", c.procs[1].stw)
	}
	c.Add(&sched.Event{Kind: sched.KindSTW, Pid: 99})
	if c.Stats().UnknownProcess != 1 {
		t.Error("a record of an unknown process was not counted")
	}
}
