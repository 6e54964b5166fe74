package callchain

import (
	"testing"

	"github.com/latscope/latscope/agent/span"
	"github.com/latscope/latscope/bpf/calltracer"
)

// stream returns ring-buffer records shaped like a traced service: per
// request a root with 3 children of 2 leaves each, and 2 goroutines of 2
// calls each that outlive the root, in the order the kernel sends them
// (children first).
func stream(requests int) [][]byte {
	var recs [][]byte
	id := uint64(0)
	next := func() uint64 { id++; return id }
	add := func(e calltracer.Event) { recs = append(recs, append([]byte(nil), calltracer.Encode(&e)...)) }
	for r := 0; r < requests; r++ {
		t := uint64(r) * 1000
		root := next()
		var late []calltracer.Event
		for c := 0; c < 3; c++ {
			child := next()
			for l := 0; l < 2; l++ {
				add(calltracer.Event{Pid: 7, CallId: next(), ParentCallId: child, FuncId: 2, Goid: 1, ParentGoid: 1, StartNs: t + 1, EndNs: t + 2, Depth: 2})
			}
			add(calltracer.Event{Pid: 7, CallId: child, ParentCallId: root, FuncId: 1, Goid: 1, ParentGoid: 1, StartNs: t + 1, EndNs: t + 3, Depth: 1})
		}
		for g := 0; g < 2; g++ {
			w := next()
			late = append(late,
				calltracer.Event{Pid: 7, CallId: next(), ParentCallId: w, FuncId: 2, Goid: 10, ParentGoid: 10, StartNs: t + 5, EndNs: t + 6, Depth: 1},
				calltracer.Event{Pid: 7, CallId: w, ParentCallId: root, FuncId: 3, Goid: 10, ParentGoid: 1, StartNs: t + 4, EndNs: t + 9})
		}
		add(calltracer.Event{Pid: 7, CallId: root, FuncId: 0, Goid: 1, StartNs: t, EndNs: t + 8, Flags: calltracer.FlagSpawned})
		for _, e := range late {
			add(e)
		}
	}
	return recs
}

// BenchmarkDecodeRebuild measures user space on one core: decoding ring
// records and rebuilding call trees into spans (exporters excluded).
func BenchmarkDecodeRebuild(b *testing.B) {
	recs := stream(20000)
	spans := 0
	bl := New(func(s []*span.Span) { spans += len(s) }, 0, Options{})
	b.ReportAllocs()
	b.ResetTimer()
	calls := 0
	for i := 0; i < b.N; i++ {
		pid := uint32(i + 1) // a fresh process per round keeps call ids unique
		bl.AddProcess(pid, &span.Process{PID: int(pid)}, funcs)
		for _, raw := range recs {
			ev, _ := calltracer.Decode(raw)
			ev.Pid = pid
			bl.Add(ev)
		}
		bl.RemoveProcess(pid)
		calls += len(recs)
	}
	b.ReportMetric(float64(calls)/b.Elapsed().Seconds(), "calls/s")
	if spans != calls {
		b.Fatalf("%d spans from %d calls", spans, calls)
	}
}
