package sampling

import (
	"sync"
	"testing"
	"time"

	"github.com/latscope/latscope/span"
)

// A trace's parts arrive process by process: the callee's (fast, OK)
// before the caller's (slow, failed). Waiting decides on both: the
// trace is kept, every span exported; deciding on the first part alone
// dropped it.
func TestWaitingDecidesOnTheWholeTrace(t *testing.T) {
	p, err := ParsePolicy("errors,duration>250ms")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	callerProc, calleeProc := &span.Process{ServiceName: "caller"}, &span.Process{ServiceName: "callee"}
	id := span.TraceID{9}
	root := &span.Span{TraceID: id, SpanID: span.SpanID{1}, Name: "GET /a", Kind: span.KindServer, Start: t0, End: t0.Add(400 * time.Millisecond), Status: span.StatusError, Process: callerProc}
	client := &span.Span{TraceID: id, SpanID: span.SpanID{2}, ParentID: root.SpanID, Name: "GET", Kind: span.KindClient, Start: t0.Add(time.Millisecond), End: t0.Add(7 * time.Millisecond), Process: callerProc}
	server := &span.Span{TraceID: id, SpanID: span.SpanID{3}, ParentID: client.SpanID, RemoteParent: true, Name: "GET /b", Kind: span.KindServer, Start: t0.Add(2 * time.Millisecond), End: t0.Add(6 * time.Millisecond), Process: calleeProc}

	// Without waiting, the callee's part decides: dropped.
	direct := &collect{}
	e := NewExporter(p, direct)
	e.Export([]*span.Span{server})
	e.Export([]*span.Span{client, root})
	if len(direct.spans) != 0 {
		t.Fatalf("at once: %d spans exported; the first part (fast, OK) decides the trace", len(direct.spans))
	}

	got := &collect{}
	w := NewWaiting(p, got, 50*time.Millisecond)
	w.Export([]*span.Span{server})
	w.Export([]*span.Span{client, root})
	if got.len() != 0 {
		t.Fatalf("exported before the wait: %d spans", got.len())
	}
	deadline := time.Now().Add(5 * time.Second)
	for got.len() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got.len() != 3 {
		t.Fatalf("%d spans exported after the wait, want the whole trace (3)", got.len())
	}
	// A late span follows the decision at once.
	late := &span.Span{TraceID: id, SpanID: span.SpanID{4}, ParentID: root.SpanID, Name: "main.async", Start: t0.Add(time.Second), End: t0.Add(2 * time.Second), Process: callerProc}
	w.Export([]*span.Span{late})
	if got.len() != 4 {
		t.Errorf("late span of a kept trace: %d spans exported, want 4", got.len())
	}
	if st := w.Stats(); st.TracesKept[ReasonError] != 1 || st.HeldSpans != 0 {
		t.Errorf("stats %+v", st)
	}
	// Close decides what is still held.
	other := &span.Span{TraceID: span.TraceID{10}, SpanID: span.SpanID{1}, Name: "GET /c", Kind: span.KindServer, Start: t0, End: t0.Add(300 * time.Millisecond), Process: callerProc}
	w.Export([]*span.Span{other})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got.len() != 5 {
		t.Errorf("Close left held spans undecided: %d exported, want 5", got.len())
	}
}

// collect records exported spans; safe for the Waiting exporter's loop.
type collect struct {
	mu    sync.Mutex
	spans []*span.Span
}

func (c *collect) Export(spans []*span.Span) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.spans = append(c.spans, spans...)
	return nil
}

func (c *collect) Close() error { return nil }

func (c *collect) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.spans)
}

// Waiting holds copies: its caller reuses span memory once Export returns
// (the node agent's builder). With a policy that keeps all it holds
// nothing: spans reach next before Export returns, uncopied.
func TestWaitingCopiesWhatItHolds(t *testing.T) {
	t0 := time.Unix(1000, 0)
	mem := span.Span{TraceID: span.TraceID{1}, SpanID: span.SpanID{1}, Name: "GET /a", Start: t0, End: t0.Add(time.Millisecond),
		Status: span.StatusError, Attrs: make([]span.Attr, 0, 4)}
	mem.Attrs = append(mem.Attrs, span.Attr{Key: "http.route", Value: "/a"})

	p, _ := ParsePolicy("errors")
	got := &collect{}
	w := NewWaiting(p, got, time.Hour)
	w.Export([]*span.Span{&mem})
	// The caller reuses the span and its attribute slots.
	mem.TraceID, mem.Name, mem.Status = span.TraceID{2}, "GET /b", span.StatusUnset
	mem.Attrs = append(mem.Attrs[:0], span.Attr{Key: "http.route", Value: "/b"})
	w.Export([]*span.Span{&mem})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if len(got.spans) != 1 {
		t.Fatalf("%d spans kept, want the error trace's one", len(got.spans))
	}
	if s := got.spans[0]; s.TraceID != (span.TraceID{1}) || s.Name != "GET /a" || s.Attrs[0].Value != "/a" || s == &mem {
		t.Errorf("held span now %v %q %v: its memory was the caller's", s.TraceID, s.Name, s.Attrs)
	}

	all, _ := ParsePolicy("all")
	got = &collect{}
	w = NewWaiting(all, got, time.Hour)
	defer w.Close()
	w.Export([]*span.Span{&mem})
	if got.len() != 1 || got.spans[0] != &mem {
		t.Errorf("policy all: %d spans passed on at once, want the caller's one", got.len())
	}
	if st := w.Stats(); st.HeldSpans != 0 {
		t.Errorf("policy all holds %d spans", st.HeldSpans)
	}
}
