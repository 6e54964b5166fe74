package store

import (
	"testing"
	"time"

	"github.com/latscope/latscope/span"
)

func TestOldest(t *testing.T) {
	s := New(1 << 20)
	if _, ok := s.Oldest(); ok {
		t.Fatal("an empty store has an oldest trace")
	}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	mk := func(trace byte, start time.Time) *span.Span {
		return &span.Span{TraceID: span.TraceID{trace}, SpanID: span.SpanID{trace}, Name: "op", Start: start, End: start.Add(time.Millisecond),
			Process: &span.Process{ServiceName: "a"}}
	}
	// Added out of start order: the oldest by start is the second.
	s.Export([]*span.Span{mk(1, t0.Add(time.Minute))})
	s.Export([]*span.Span{mk(2, t0)})
	s.Export([]*span.Span{mk(3, t0.Add(2*time.Minute))})
	if got, ok := s.Oldest(); !ok || !got.Equal(t0) {
		t.Errorf("Oldest() = %v, %v; want %v", got, ok, t0)
	}
}
