package store

import (
	"fmt"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/latscope/latscope/span"
)

// TestRoundTrip holds the encoding to every field of span.Span and every
// attribute type, with the string table in use and full.
func TestRoundTrip(t *testing.T) {
	full := &span.Span{
		TraceID: traceID(7), SpanID: spanID(7, 1), ParentID: spanID(7, 2), RemoteParent: true,
		Name: "main.work", Function: "main.work", Kind: span.KindInternal,
		Start: t0, End: t0.Add(1500 * time.Microsecond), Status: span.StatusError, StatusMessage: "boom ✗",
		Process: frontend, GoID: 1 << 40, ParentGoID: 3, StartTID: 70000, EndTID: 70001, CPU: 1, Depth: 300,
		Unwound: true, Orphan: true, File: "/src/work.go", Line: 1234,
		Attrs: []span.Attr{
			{Key: "s", Value: "x"}, {Key: "empty", Value: ""}, {Key: "neg", Value: int64(-5)},
			{Key: "big", Value: int64(1) << 62}, {Key: "f", Value: 2.5}, {Key: "t", Value: true},
			{Key: "no", Value: false}, {Key: "int", Value: 42},
		},
		Time: &span.TimeSplit{Full: true, NS: [span.NumTimeCategories]int64{span.TimeOnCPU: 300_000, span.TimeGCSTW: 1 << 40, span.TimeOther: 1}},
	}
	bare := &span.Span{TraceID: traceID(7), SpanID: spanID(7, 3), Name: "GET", Kind: span.KindClient, Start: t0, End: t0, Process: payments}
	for _, tableFull := range []bool{false, true} {
		if tableFull {
			defer func(n int) { maxStrs = n }(maxStrs)
			maxStrs = 0
		}
		s := New(1 << 20)
		s.Export([]*span.Span{full, bare})
		tr, ok := s.Trace(traceID(7))
		if !ok || len(tr.Spans) != 2 {
			t.Fatalf("table full %v: trace held %v", tableFull, ok)
		}
		for i, want := range []*span.Span{full, bare} {
			got := *tr.Spans[i]
			w := *want
			if !got.Start.Equal(w.Start) || !got.End.Equal(w.End) {
				t.Errorf("table full %v, span %d: times %v–%v, want %v–%v", tableFull, i, got.Start, got.End, w.Start, w.End)
			}
			got.Start, got.End, w.Start, w.End = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if want == full {
				w.Attrs = append([]span.Attr(nil), w.Attrs...)
				w.Attrs[len(w.Attrs)-1].Value = int64(42) // an int is kept as the int64 Attr documents
			}
			if !reflect.DeepEqual(got, w) {
				t.Errorf("table full %v, span %d:\n got %+v\nwant %+v", tableFull, i, got, w)
			}
		}
		if want := SpanCost(full) + SpanCost(bare) + traceOverhead; !tableFull && s.Stats().Bytes < want {
			t.Errorf("charged %d bytes, less than SpanCost says (%d)", s.Stats().Bytes, want)
		}
		// Attributes match encoded, and inline, as decoded.
		for _, tag := range []map[string]string{{"s": "x"}, {"neg": "-5"}, {"f": "2.5"}, {"t": "true"}, {"no": "false"}, {"int": "42"}, {"code.function.name": "main.work"}, {"latscope.time.gc_stw": "1099511627776"}} {
			if got := s.Search(Query{Tags: tag}); len(got) != 1 {
				t.Errorf("table full %v: Search(%v) found %d traces, want 1", tableFull, tag, len(got))
			}
		}
		if got := s.Search(Query{Tags: map[string]string{"s": "y"}}); len(got) != 0 {
			t.Errorf("table full %v: Search(s=y) found %d traces", tableFull, len(got))
		}
	}
}

// TestTablesFollowEviction: operations and processes leave the store's
// tables with their last span, and their slots are reused.
func TestTablesFollowEviction(t *testing.T) {
	s := New(traceCost(checkout(1, t0, 200, time.Millisecond)))
	for n := range uint64(100) {
		s.Export(checkout(n, t0.Add(time.Duration(n)*time.Second), 200, time.Millisecond))
		s.Export(restock(1000+n, t0.Add(time.Duration(n)*time.Second)))
	}
	s.mu.RLock()
	ops, procs := len(s.ops), len(s.procs)
	liveOps, liveProcs := len(s.opIdx), len(s.procIdx)
	s.mu.RUnlock()
	if ops > 8 || procs > 4 {
		t.Errorf("tables grew to %d operations and %d processes for 6 and 3 distinct", ops, procs)
	}
	if got := s.Services(); len(got) != 1 || liveOps != 1 || liveProcs != 1 {
		t.Errorf("with one restock trace held: services %q, %d operations, %d processes in the tables", got, liveOps, liveProcs)
	}
}

// TestSnapshotOutlivesEviction: a decoded trace shares strings with the
// store's blocks; evicting the trace (and its block) must not change it.
func TestSnapshotOutlivesEviction(t *testing.T) {
	const budget = 1 << 20 // 4 KiB blocks: several traces each
	s := New(budget)
	s.Export(checkout(1, t0, 500, time.Millisecond))
	tr, _ := s.Trace(traceID(1))
	want := make([]string, 0, len(tr.Spans))
	for _, sp := range tr.Spans {
		want = append(want, fmt.Sprint(sp.Name, sp.StatusMessage, sp.Attrs))
	}
	for n := uint64(2); s.Stats().EvictedTraces < 10_000; n++ {
		s.Export(checkout(n, t0.Add(time.Duration(n)*time.Millisecond), 200, time.Millisecond))
	}
	runtime.GC()
	for i, sp := range tr.Spans {
		if got := fmt.Sprint(sp.Name, sp.StatusMessage, sp.Attrs); got != want[i] {
			t.Errorf("span %d changed after eviction:\n got %s\nwant %s", i, got, want[i])
		}
	}
	s.mu.RLock()
	held := len(s.records.blocks) - len(s.records.freeIDs)
	s.mu.RUnlock()
	if max := budget/s.records.blockSize + 2; held > max || s.records.blockSize != 4096 {
		t.Errorf("%d blocks of %d bytes held for a %d-byte budget", held, s.records.blockSize, budget)
	}
}

// TestInterleavedBatches: a trace whose later spans arrive after another
// trace's are copied to a new region (and in place when nothing came
// between); either way every span decodes as sent.
func TestInterleavedBatches(t *testing.T) {
	s := New(1 << 20)
	a, b := checkout(1, t0, 200, time.Millisecond), checkout(2, t0, 500, 2*time.Millisecond)
	s.Export(a[:1])
	s.Export(b[:2])
	s.Export(a[1:2]) // after b's: copied
	s.Export(a[2:])  // right after its own: in place
	s.Export(b[2:])
	for _, want := range [][]*span.Span{a, b} {
		tr, ok := s.Trace(want[0].TraceID)
		if !ok || len(tr.Spans) != len(want) {
			t.Fatalf("trace %s: held %v", want[0].TraceID, ok)
		}
		got := map[span.SpanID]string{}
		for _, sp := range tr.Spans {
			got[sp.SpanID] = fmt.Sprint(sp.Name, sp.Status, sp.Attrs)
		}
		for _, sp := range want {
			if w := fmt.Sprint(sp.Name, sp.Status, sp.Attrs); got[sp.SpanID] != w {
				t.Errorf("span %s: %q, want %q", sp.SpanID, got[sp.SpanID], w)
			}
		}
	}
}
