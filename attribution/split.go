package attribution

import (
	"slices"

	"github.com/latscope/latscope/span"
)

// Apply sets the time split of each span of a batch from the builder
// (whole call trees) whose process has records: the stop-the-world and
// assist time it overlaps, if any.
func (c *Collector) Apply(spans []*span.Span) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range spans {
		if s.Process == nil || c.procs[uint32(s.Process.PID)] == nil {
			continue
		}
		c.apply(s)
	}
	// A goroutine's outermost span is over: nothing later on it started
	// before its end.
	for _, s := range spans {
		if s.Depth != 0 || s.Process == nil {
			continue
		}
		if p := c.procs[uint32(s.Process.PID)]; p != nil {
			if tl := p.gs[s.GoID]; tl != nil {
				tl.prune(c.mono(s.End.UnixNano())) // the timeline stays (Expire drops it): its watermark matters to late spans
			}
		}
	}
}

func (c *Collector) mono(unixNano int64) uint64 {
	return uint64(max(unixNano-c.wall, 0))
}

func (c *Collector) apply(s *span.Span) {
	p := c.procs[uint32(s.Process.PID)]
	a, b := c.mono(s.Start.UnixNano()), c.mono(s.End.UnixNano())
	if b <= a {
		return
	}
	var ivs []interval
	if tl := p.gs[s.GoID]; tl != nil {
		ivs = tl.ivs
	}
	ns := sweep(a, b, p.stw, ivs)
	if ns[span.TimeGCSTW] == 0 && ns[span.TimeGCAssist] == 0 {
		return
	}
	t := &span.TimeSplit{}
	t.NS[span.TimeGCSTW], t.NS[span.TimeGCAssist] = ns[span.TimeGCSTW], ns[span.TimeGCAssist]
	s.Time = t
	c.stats.SpansGC++
}

// edge kinds of the sweep.
const (
	edgeSTW = iota
	edgeOff // an interval of the goroutine's (its category says which)
)

type edge struct {
	t     uint64
	kind  uint8
	cat   span.TimeCategory
	delta int8
}

// sweep partitions [a, b) among the categories: each instant is
// stop-the-world if the world was stopped; else assist if the goroutine
// was assisting; the rest is returned as on CPU: it is not measured and
// must not be reported.
func sweep(a, b uint64, stw []window, ivs []interval) [span.NumTimeCategories]int64 {
	var edges []edge
	clip := func(start, end uint64, kind uint8, cat span.TimeCategory) {
		start, end = max(start, a), min(end, b)
		if end > start {
			edges = append(edges, edge{start, kind, cat, 1}, edge{end, kind, cat, -1})
		}
	}
	for i := len(stw) - 1; i >= 0 && stw[i].end > a; i-- {
		clip(stw[i].start, stw[i].end, edgeSTW, span.TimeGCSTW)
	}
	for _, iv := range ivs {
		clip(iv.start, iv.end, edgeOff, iv.cat)
	}
	slices.SortFunc(edges, func(x, y edge) int {
		switch {
		case x.t < y.t:
			return -1
		case x.t > y.t:
			return 1
		}
		return 0
	})
	var ns [span.NumTimeCategories]int64
	var stwOpen int
	var off [span.NumTimeCategories]int
	label := func() span.TimeCategory {
		if stwOpen > 0 {
			return span.TimeGCSTW
		}
		if off[span.TimeGCAssist] > 0 {
			return span.TimeGCAssist
		}
		return span.TimeOnCPU
	}
	at := a
	for _, e := range edges {
		if e.t > at {
			ns[label()] += int64(e.t - at)
			at = e.t
		}
		switch e.kind {
		case edgeSTW:
			stwOpen += int(e.delta)
		default:
			off[e.cat] += int(e.delta)
		}
	}
	ns[label()] += int64(b - at)
	return ns
}
