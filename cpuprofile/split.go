package cpuprofile

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/latscope/latscope/analysis/criticalpath"
	"github.com/latscope/latscope/analysis/flame"
	"github.com/latscope/latscope/span"
)

// Split returns a flame.SelfSplit that puts code under the "[on cpu]"
// leaf of each critical-path segment: the samples the segment's span took
// on its own goroutine during the segment (Spawned ones are left out:
// another goroutine's CPU is not the span's own time), grouped by stack,
// each stack's frames outermost first ("[kernel]" last when the thread was
// in the kernel).
//
// next (nil: none) splits the segment first. When it gives an "[on cpu]"
// cause — on-CPU time measured otherwise — the stacks share that time in
// proportion to their samples. Otherwise the samples' own time, one
// Period each, becomes the "[on cpu]" cause, added after next's causes
// (flame.Builder cuts what exceeds the segment).
func (s *Store) Split(next flame.SelfSplit) flame.SelfSplit {
	return func(p *criticalpath.Path, seg criticalpath.Segment) []flame.Cause {
		var causes []flame.Cause
		if next != nil {
			causes = next(p, seg)
		}
		n := p.Nodes[seg.Node]
		// Segments are on the root's clock, samples on their span's.
		lo, hi := seg.Start.UnixNano()-int64(n.Shift), seg.End.UnixNano()-int64(n.Shift)
		stacks, total := s.segmentStacks(n.Span.SpanID, lo, hi)
		if total == 0 {
			return causes
		}
		for i, c := range causes {
			if c.Name == flame.OnCPU {
				causes[i].Stacks = s.share(stacks, total, c.Duration)
				return causes
			}
		}
		// A segment's samples may stand for a little more than the
		// segment (a sample taken just inside it stands for a whole
		// period): the stacks then share the segment in proportion, not
		// first come first served, which would always cut the rarest.
		d := min(time.Duration(total)*s.period, seg.Duration())
		return append(causes, flame.Cause{Name: flame.OnCPU, Duration: d, Stacks: s.share(stacks, total, d)})
	}
}

// share gives each stack its part of d in proportion to its samples
// (each stack's Duration is its samples × the period; total samples in
// all).
func (s *Store) share(stacks []flame.CodeStack, total int64, d time.Duration) []flame.CodeStack {
	for j := range stacks {
		stacks[j].Duration = time.Duration(float64(d) * float64(stacks[j].Duration/s.period) / float64(total))
	}
	return stacks
}

// segmentStacks groups the own-goroutine samples of span id taken in
// [lo, hi) by stack: their frames and time (samples × Period), most
// first; total is the number of samples.
func (s *Store) segmentStacks(id span.SpanID, lo, hi int64) ([]flame.CodeStack, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.spans[id]
	if e == nil {
		return nil, 0
	}
	type key struct {
		stack  uint32
		kernel bool
	}
	var counts map[key]int64
	var order []key
	var total int64
	for _, smp := range e.samples {
		if smp.flags&Spawned != 0 || smp.at < lo || smp.at >= hi {
			continue
		}
		if counts == nil {
			counts = make(map[key]int64)
		}
		k := key{smp.stack, smp.flags&Kernel != 0}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
		total++
	}
	out := make([]flame.CodeStack, 0, len(order))
	for _, k := range order {
		var frames []string
		locs := s.stacks[k.stack].locs
		for i := len(locs) - 1; i >= 0; i-- {
			lines := s.locs[locs[i]].lines
			for j := len(lines) - 1; j >= 0; j-- {
				frames = append(frames, lines[j].Function)
			}
		}
		if k.kernel {
			frames = append(frames, KernelFrame)
		}
		out = append(out, flame.CodeStack{Frames: frames, Duration: time.Duration(counts[k]) * s.period})
	}
	slices.SortFunc(out, func(a, b flame.CodeStack) int {
		return cmp.Or(cmp.Compare(b.Duration, a.Duration), strings.Compare(strings.Join(a.Frames, ";"), strings.Join(b.Frames, ";")))
	})
	return out, total
}
