package attribution

import (
	"slices"

	"github.com/latscope/latscope/span"
)

// categoryOf files a runtime.traceBlockReason (by name, without its
// prefix) under a category, as the execution tracer files blocking time:
// Net, Select, ChanSend/ChanRecv, Sync and CondWait, Sleep; a park that
// is part of a GC assist is assist time. The rest (Generic, Forever,
// GCSweep, UntilGCEnds, SystemGoroutine, Preempted, DebugCall,
// GCWeakToStrongWait, Synctest, and reasons a later Go adds) is other.
func categoryOf(reason string) span.TimeCategory {
	switch reason {
	case "Net":
		return span.TimeBlockedNet
	case "Select", "ChanSend", "ChanRecv":
		return span.TimeBlockedChan
	case "Sync", "CondWait":
		return span.TimeBlockedSync
	case "Sleep":
		return span.TimeBlockedSleep
	case "GCMarkAssist":
		return span.TimeGCAssist
	}
	return span.TimeOther
}

// blocked reports the categories of a parked goroutine, which become
// downstream time while a child span elsewhere runs.
func blocked(c span.TimeCategory) bool {
	switch c {
	case span.TimeBlockedNet, span.TimeBlockedSync, span.TimeBlockedChan, span.TimeBlockedSleep, span.TimeOther:
		return true
	}
	return false
}

// Apply sets the time split of each span of a batch from the builder
// (whole call trees: a span's children on its own goroutine and those
// elsewhere that ended before it are in the same batch) whose process
// has records. A span deep mode covered from start to end gets the full
// split; any other gets the stop-the-world and assist time it overlaps,
// if any.
func (c *Collector) Apply(spans []*span.Span) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var kids map[span.SpanID][]*span.Span
	for _, s := range spans {
		if s.Process == nil || c.procs[uint32(s.Process.PID)] == nil {
			continue
		}
		if kids == nil && len(c.deep) > 0 {
			kids = make(map[span.SpanID][]*span.Span, len(spans))
			for _, k := range spans {
				if !k.ParentID.IsZero() {
					kids[k.ParentID] = append(kids[k.ParentID], k)
				}
			}
		}
		c.apply(s, kids)
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

func (c *Collector) apply(s *span.Span, kids map[span.SpanID][]*span.Span) {
	p := c.procs[uint32(s.Process.PID)]
	a, b := c.mono(s.Start.UnixNano()), c.mono(s.End.UnixNano())
	if b <= a {
		return
	}
	tl := p.gs[s.GoID]
	full := c.deepCovers(p, a, b)
	if full && tl != nil && tl.pruned > a {
		full = false
		c.stats.SpansIncomplete++
	}
	var ivs []interval
	if tl != nil {
		ivs = tl.ivs
	}
	if !full && !gcDuring(a, b, p.stw, ivs) {
		return // the common case in always-on mode: nothing to split
	}
	var down []window
	if full {
		down = downstream(s, kids, c)
	}
	ns := sweep(a, b, p.stw, ivs, down, full)
	if full {
		s.Time = &span.TimeSplit{Full: true, NS: ns}
		c.stats.SpansFull++
		return
	}
	if ns[span.TimeGCSTW] == 0 && ns[span.TimeGCAssist] == 0 {
		return
	}
	t := &span.TimeSplit{}
	t.NS[span.TimeGCSTW], t.NS[span.TimeGCAssist] = ns[span.TimeGCSTW], ns[span.TimeGCAssist]
	s.Time = t
	c.stats.SpansGC++
}

// gcDuring reports whether a stop-the-world window or an assist interval
// overlaps [a, b): what always-on mode splits out of a span.
func gcDuring(a, b uint64, stw []window, ivs []interval) bool {
	for i := len(stw) - 1; i >= 0 && stw[i].end > a; i-- {
		if stw[i].start < b {
			return true
		}
	}
	for _, iv := range ivs {
		if iv.cat == span.TimeGCAssist && iv.start < b && iv.end > a {
			return true
		}
	}
	return false
}

// downstream returns the windows during which s waited on work elsewhere:
// all of s if it is a client (or producer) span — its time is another
// service's — else its children on other goroutines, and the same for
// its children on its own goroutine, recursively.
func downstream(s *span.Span, kids map[span.SpanID][]*span.Span, c *Collector) []window {
	var out []window
	var walk func(x *span.Span)
	walk = func(x *span.Span) {
		if x.Kind == span.KindClient || x.Kind == span.KindProducer {
			out = append(out, window{c.mono(x.Start.UnixNano()), c.mono(x.End.UnixNano())})
			return
		}
		for _, k := range kids[x.SpanID] {
			if k.GoID != x.GoID || k.Process != x.Process {
				out = append(out, window{c.mono(k.Start.UnixNano()), c.mono(k.End.UnixNano())})
			} else {
				walk(k)
			}
		}
	}
	walk(s)
	return out
}

// edge kinds of the sweep.
const (
	edgeSTW = iota
	edgeDown
	edgeOff // an interval of the goroutine's (its category says which)
)

type edge struct {
	t     uint64
	kind  uint8
	cat   span.TimeCategory
	delta int8
}

// offOrder is which category wins where intervals of one goroutine
// overlap (a record's clock read a little before another's): the more
// specific first.
var offOrder = [...]span.TimeCategory{
	span.TimeGCAssist, span.TimeBlockedNet, span.TimeBlockedSync, span.TimeBlockedChan, span.TimeBlockedSleep,
	span.TimeSyscall, span.TimeOther, span.TimeRunnable,
}

// sweep partitions [a, b) among the categories: each instant is
// stop-the-world if the world was stopped; else assist if the goroutine
// was assisting (or parked for it); else the category of the goroutine's
// off-CPU interval then, a blocked one read as downstream while a
// downstream window is open; else on CPU. Without full, only
// stop-the-world and assist intervals are known: the rest is returned
// as on CPU and must not be reported.
func sweep(a, b uint64, stw []window, ivs []interval, down []window, full bool) [span.NumTimeCategories]int64 {
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
		if full || iv.cat == span.TimeGCAssist {
			clip(iv.start, iv.end, edgeOff, iv.cat)
		}
	}
	for _, w := range down {
		clip(w.start, w.end, edgeDown, span.TimeDownstream)
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
	var stwOpen, downOpen int
	var off [span.NumTimeCategories]int
	label := func() span.TimeCategory {
		if stwOpen > 0 {
			return span.TimeGCSTW
		}
		for _, c := range offOrder {
			if off[c] > 0 {
				if downOpen > 0 && blocked(c) {
					return span.TimeDownstream
				}
				return c
			}
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
		case edgeDown:
			downOpen += int(e.delta)
		default:
			off[e.cat] += int(e.delta)
		}
	}
	ns[label()] += int64(b - at)
	return ns
}
