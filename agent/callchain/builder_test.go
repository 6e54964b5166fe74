package callchain

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/span"
)

var funcs = []Func{{Name: "main.root"}, {Name: "main.child"}, {Name: "main.leaf"}, {Name: "main.worker"}}

type sink struct{ spans []*span.Span }

func (s *sink) out(b []*span.Span) { s.spans = append(s.spans, b...) }

func (s *sink) byName(t *testing.T, name string) *span.Span {
	t.Helper()
	var found *span.Span
	for _, sp := range s.spans {
		if sp.Name == name {
			if found != nil {
				t.Fatalf("two spans named %s", name)
			}
			found = sp
		}
	}
	if found == nil {
		t.Fatalf("no span %s among %d", name, len(s.spans))
	}
	return found
}

func newBuilder(opts Options) (*Builder, *sink) {
	s := &sink{}
	opts.Salt = 42
	b := New(s.out, 1_000_000_000, opts)
	b.AddProcess(7, &span.Process{PID: 7}, funcs)
	return b, s
}

// ev is a call of trace 0xa (the kernel sets trace ids; tests use one).
func ev(id, parent uint64, fn uint32, goid uint64, start, end uint64) *calltracer.Event {
	return &calltracer.Event{Pid: 7, CallId: id, ParentCallId: parent, FuncId: fn, Goid: goid, ParentGoid: goid, StartNs: start, EndNs: end, TraceIdLo: 0xa}
}

func TestChildrenBeforeParent(t *testing.T) {
	b, s := newBuilder(Options{})
	b.Add(ev(3, 2, 2, 1, 30, 40)) // leaf
	b.Add(ev(2, 1, 1, 1, 20, 50)) // child
	if len(s.spans) != 0 {
		t.Fatalf("spans emitted before the root returned: %d", len(s.spans))
	}
	b.Add(ev(1, 0, 0, 1, 10, 60)) // root
	if len(s.spans) != 3 {
		t.Fatalf("got %d spans, want 3", len(s.spans))
	}
	root, child, leaf := s.byName(t, "main.root"), s.byName(t, "main.child"), s.byName(t, "main.leaf")
	if !root.ParentID.IsZero() || child.ParentID != root.SpanID || leaf.ParentID != child.SpanID {
		t.Errorf("parent links wrong: root %s child %s→%s leaf %s→%s", root.SpanID, child.SpanID, child.ParentID, leaf.SpanID, leaf.ParentID)
	}
	if child.TraceID != root.TraceID || leaf.TraceID != root.TraceID || root.TraceID != (span.TraceID{15: 0xa}) {
		t.Errorf("trace ids %s %s %s, want the kernel's", root.TraceID, child.TraceID, leaf.TraceID)
	}
	if got := root.Start; !got.Equal(time.Unix(1, 10)) {
		t.Errorf("root start %v, want monotonic 10ns + 1s offset", got)
	}
	if root.Duration() != 50 {
		t.Errorf("root duration %v", root.Duration())
	}
}

func TestLateGoroutineJoinsTrace(t *testing.T) {
	b, s := newBuilder(Options{})
	r := ev(1, 0, 0, 1, 10, 20)
	r.Flags = calltracer.FlagSpawned
	b.Add(r)
	w := ev(5, 1, 3, 9, 15, 90) // goroutine outlived the root
	w.ParentGoid = 1
	b.Add(w)
	root, worker := s.byName(t, "main.root"), s.byName(t, "main.worker")
	if worker.TraceID != root.TraceID || worker.ParentID != root.SpanID || worker.ParentGoID != 1 || worker.GoID != 9 {
		t.Errorf("late worker not linked: %+v", worker)
	}
}

// A goroutine's call returns after its parent frame returned, while that
// parent still waits for its own parent.
func TestLateChildOfWaitingParent(t *testing.T) {
	b, s := newBuilder(Options{})
	b.Add(ev(2, 1, 1, 1, 20, 30)) // child returns, root still running
	b.Add(ev(5, 2, 3, 9, 25, 40)) // worker started by child, returns later
	b.Add(ev(1, 0, 0, 1, 10, 50)) // root
	if len(s.spans) != 3 {
		t.Fatalf("got %d spans, want 3", len(s.spans))
	}
	if s.byName(t, "main.worker").ParentID != s.byName(t, "main.child").SpanID {
		t.Error("worker not under child")
	}
	if b.Stats().Orphans != 0 {
		t.Error("orphans reported")
	}
}

func TestOrphansAreFlushedNotDropped(t *testing.T) {
	b, s := newBuilder(Options{})
	b.Add(ev(3, 2, 2, 1, 30, 40)) // parent 2 filtered in the kernel: never arrives
	b.Flush()
	if len(s.spans) != 1 {
		t.Fatalf("got %d spans, want 1", len(s.spans))
	}
	leaf := s.spans[0]
	if !leaf.Orphan || !leaf.ParentID.IsZero() || b.Stats().Orphans != 1 {
		t.Errorf("orphan not marked: %+v stats %+v", leaf, b.Stats())
	}
}

func TestExpireAndEvict(t *testing.T) {
	b, s := newBuilder(Options{PendingTTL: time.Second, MaxPending: 2})
	b.Add(ev(3, 100, 2, 1, 30, 40))
	b.Expire(40 + uint64(time.Second) - 1)
	if len(s.spans) != 0 {
		t.Fatal("expired too early")
	}
	b.Expire(41 + uint64(time.Second))
	if len(s.spans) != 1 {
		t.Fatalf("not expired: %d spans", len(s.spans))
	}
	b.Add(ev(4, 200, 2, 1, 50, 60))
	b.Add(ev(5, 201, 2, 1, 50, 70))
	b.Add(ev(6, 202, 2, 1, 50, 80)) // third pending: the oldest is evicted
	if got := b.Stats().Evicted; got != 1 || len(s.spans) != 2 || s.spans[1].SpanID != b.spanID(7, 4) {
		t.Errorf("evicted %d, spans %d", got, len(s.spans))
	}
}

func TestProcessesDoNotMix(t *testing.T) {
	b, s := newBuilder(Options{})
	b.AddProcess(8, &span.Process{PID: 8}, funcs)
	b.Add(ev(1, 0, 0, 1, 10, 20))
	other := ev(1, 0, 0, 1, 10, 20)
	other.Pid = 8
	other.TraceIdLo = 0xb
	b.Add(other)
	if len(s.spans) != 2 || s.spans[0].SpanID == s.spans[1].SpanID || s.spans[0].TraceID == s.spans[1].TraceID {
		t.Errorf("same call id in two processes collided: %+v", s.spans)
	}
	unknown := ev(1, 0, 0, 1, 10, 20)
	unknown.Pid = 99
	b.Add(unknown)
	bad := ev(2, 0, 77, 1, 10, 20)
	b.Add(bad)
	if st := b.Stats(); st.UnknownProcess != 1 || st.UnknownFunc != 1 {
		t.Errorf("stats %+v", st)
	}
	b.RemoveProcess(8)
	if len(b.procs) != 1 {
		t.Error("process not removed")
	}
}

func TestUnwoundIsAnError(t *testing.T) {
	b, s := newBuilder(Options{})
	e := ev(1, 0, 0, 1, 10, 20)
	e.Flags = calltracer.FlagUnwound
	b.Add(e)
	sp := s.spans[0]
	if !sp.Unwound || sp.Status != span.StatusError || sp.StatusMessage == "" {
		t.Errorf("unwound span %+v", sp)
	}
}

// TestLibraryRecordsKept: library records wait in shared, reused blocks
// until their call arrives; each call's decoder sees its own bytes,
// whatever waited alongside it and however often blocks were reused
// (records of many sizes, some calls arriving late, some never).
func TestLibraryRecordsKept(t *testing.T) {
	var got []string
	decode := func(probe uint16, raw []byte, s *span.Span) {
		got = append(got, string(raw[calltracer.LibHeaderSize:]))
	}
	b, s := newBuilder(Options{Libraries: []LibDecoder{decode}, MaxPending: 1 << 20})
	record := func(call uint64) []byte {
		h := calltracer.LibHeader{Type: calltracer.RecordLib, Pid: 7, CallId: call}
		raw := append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(&h)), calltracer.LibHeaderSize)...)
		return append(raw, strings.Repeat(fmt.Sprint(call%10), int(call%700))+fmt.Sprint("#", call)...)
	}
	const calls = 20_000
	var late []uint64
	for call := uint64(1); call <= calls; call++ {
		b.AddLib(record(call)) // the ring reuses its bytes: AddLib must copy
		switch {
		case call%7 == 0:
			late = append(late, call) // arrives 50 calls later, in another block
		case call%97 == 0:
			// never arrives
		default:
			b.Add(ev(call, 0, 0, call, call*10, call*10+5))
		}
		for len(late) > 0 && late[0]+50 <= call {
			b.Add(ev(late[0], 0, 0, late[0], late[0]*10, late[0]*10+5))
			late = late[1:]
		}
	}
	for _, call := range late {
		b.Add(ev(call, 0, 0, call, call*10, call*10+5))
	}
	if len(got) != len(s.spans) {
		t.Fatalf("%d records applied to %d spans", len(got), len(s.spans))
	}
	for i, sp := range s.spans {
		call := sp.GoID
		want := string(record(call)[calltracer.LibHeaderSize:])
		if got[i] != want {
			t.Fatalf("call %d: decoder saw %.40q…, want %.40q…", call, got[i], want)
		}
	}
	if len(b.spare) == 0 {
		t.Error("no block was ever reused")
	}
}

// TestReuseSpans: with ReuseSpans each batch's spans are whole and right
// while out runs (copied there, as span.Span.Clone does), later batches
// reuse the memory, and a big flush does not keep its blocks for good.
func TestReuseSpans(t *testing.T) {
	decode := func(probe uint16, raw []byte, s *span.Span) {
		for i := range int(probe) { // more than libAttrs: the decoder's own append
			s.Attrs = append(s.Attrs, span.Attr{Key: fmt.Sprint("k", i), Value: int64(i)})
		}
	}
	var copies []*span.Span
	seen := map[*span.Span]bool{}
	reused := 0
	out := func(batch []*span.Span) {
		for _, s := range batch {
			if seen[s] {
				reused++
			}
			seen[s] = true
			copies = append(copies, s.Clone())
		}
	}
	b := New(out, 0, Options{Salt: 42, Libraries: []LibDecoder{decode}, ReuseSpans: true})
	b.AddProcess(7, &span.Process{PID: 7}, funcs)
	record := func(call uint64, attrs uint16) []byte {
		h := calltracer.LibHeader{Type: calltracer.RecordLib, Pid: 7, CallId: call, Probe: attrs}
		return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(&h)), calltracer.LibHeaderSize)...)
	}
	const n = 2000
	for call := uint64(1); call <= n; call++ {
		b.AddLib(record(call, uint16(call%20)))
		b.Add(ev(call, 0, 0, call, call*10, call*10+5)) // a root: one span per batch
	}
	// Children waiting for a parent that never comes: one batch at Flush.
	for call := uint64(n + 1); call <= 2*n+blockLen*keptBlocks; call++ {
		b.AddLib(record(call, 3))
		b.Add(ev(call, 1<<40, 1, call, call*10, call*10+5))
	}
	b.Flush()
	if reused == 0 {
		t.Error("no span memory was reused")
	}
	if len(copies) != 2*n+blockLen*keptBlocks {
		t.Fatalf("%d spans, want %d", len(copies), 2*n+blockLen*keptBlocks)
	}
	for _, s := range copies {
		call := s.GoID
		want := int(call % 20)
		if call > n {
			want = 3
		}
		if s.Start != time.Unix(0, int64(call*10)) || len(s.Attrs) != want {
			t.Fatalf("call %d: start %v, %d attributes; want %v, %d", call, s.Start, len(s.Attrs), time.Unix(0, int64(call*10)), want)
		}
		for i, a := range s.Attrs {
			if a.Value != int64(i) {
				t.Fatalf("call %d: attribute %d = %v: another span's", call, i, a.Value)
			}
		}
	}
	if len(b.spanBlocks) > keptBlocks || len(b.attrBlocks) > keptBlocks {
		t.Errorf("after a flush of %d spans, %d span and %d attribute blocks kept, want at most %d", n+blockLen*keptBlocks, len(b.spanBlocks), len(b.attrBlocks), keptBlocks)
	}
	// The blocks let go are not reachable through the slices' arrays.
	for i, blk := range b.spanBlocks[len(b.spanBlocks):cap(b.spanBlocks)] {
		if blk != nil {
			t.Fatalf("span block %d past the kept ones still referenced", len(b.spanBlocks)+i)
		}
	}
	for i, blk := range b.attrBlocks[len(b.attrBlocks):cap(b.attrBlocks)] {
		if blk != nil {
			t.Fatalf("attribute block %d past the kept ones still referenced", len(b.attrBlocks)+i)
		}
	}
	// Nor does a kept block hold on to the last batch's spans.
	if s := b.spanBlocks[0][0]; s.Process != nil || s.Attrs != nil {
		t.Errorf("a kept block's span still points at %v, %d attributes", s.Process, len(s.Attrs))
	}
}

// TestDeferred: with Deferred, completed calls wait for Expire and go out
// in one batch, children and all; without it each Add sends its own.
func TestDeferred(t *testing.T) {
	for _, deferred := range []bool{false, true} {
		var batches [][]string
		out := func(batch []*span.Span) {
			var names []string
			for _, s := range batch {
				names = append(names, fmt.Sprint(s.Name, "#", s.GoID))
			}
			batches = append(batches, names)
		}
		b := New(out, 0, Options{Salt: 42, Deferred: deferred, ReuseSpans: true})
		b.AddProcess(7, &span.Process{PID: 7}, funcs)
		b.Add(ev(2, 1, 1, 1, 11, 12)) // child first: waits for its parent either way
		b.Add(ev(1, 0, 0, 1, 10, 20))
		b.Add(ev(3, 0, 0, 2, 30, 40))
		if deferred && len(batches) != 0 {
			t.Fatalf("deferred: %d batches before Expire", len(batches))
		}
		b.Expire(0)
		want := [][]string{{"main.root#1", "main.child#1"}, {"main.root#2"}}
		if deferred {
			want = [][]string{{"main.root#1", "main.child#1", "main.root#2"}}
		}
		if fmt.Sprint(batches) != fmt.Sprint(want) {
			t.Errorf("deferred=%v: batches %v, want %v", deferred, batches, want)
		}
	}
}
