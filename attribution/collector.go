// Package attribution says where the time of each span went: on CPU,
// runnable, stopped by the GC, assisting it, blocked (network, sync,
// channels, sleep), in the kernel, waiting on downstream calls
// (docs/attribution.md). It turns the records of bpf/sched — off-CPU
// episodes of goroutines inside traced calls, stop-the-world windows, GC
// assists — into the span.TimeSplit of each span the call-chain builder
// emits, and keeps the deep-mode periods during which the full split is
// measured. Pure Go over recorded events: it needs no BPF to test.
package attribution

import (
	"math"
	"sync"
	"time"

	"github.com/latscope/latscope/bpf/sched"
	"github.com/latscope/latscope/span"
)

// Bounds of what a Collector keeps.
const (
	// Retain is how long records are kept for spans still to come: a
	// span arrives when it ends (the builder waits for parents at most
	// 30 s), so a record older than this cannot belong to one.
	Retain = 2 * time.Minute
	// maxIntervals bounds one goroutine's timeline; past it the oldest
	// half goes, and spans that started before lose their full split
	// (counted as Stats.SpansIncomplete).
	maxIntervals = 1 << 14
	// maxSTW bounds each process's stop-the-world windows.
	maxSTW = 4096
	// maxDeep bounds the deep periods remembered.
	maxDeep = 64
)

// Collector gathers the records of traced processes and applies them to
// their spans. It is safe for concurrent use: the ring reader adds
// records while the builder's output is applied.
type Collector struct {
	mu    sync.Mutex
	wall  int64 // add to a CLOCK_MONOTONIC time to get Unix ns: the builder's
	procs map[uint32]*proc
	deep  []window // deep periods, oldest first; the last is open (end = MaxUint64) while on
	stats Stats
}

// Stats counts what a Collector did.
type Stats struct {
	Records        uint64 // records added
	UnknownProcess uint64 // records of a process never added (dropped)
	Off            uint64 // Go off-CPU episodes (deep mode)
	OSRunnable     uint64 // threads preempted by the kernel (deep mode)
	OSBlocked      uint64 // threads asleep in the kernel (deep mode)
	STW            uint64 // stop-the-world windows
	Assists        uint64 // GC assists
	// SpansFull and SpansGC count spans given a full split (deep mode
	// covered them) and a GC-only one (stop-the-world or assist time).
	SpansFull, SpansGC uint64
	// SpansIncomplete counts spans deep mode covered that only got a
	// GC-only split: their goroutine's records were dropped at the
	// bounds (Retain, the per-goroutine limit) before the span arrived.
	SpansIncomplete uint64
	Dropped         uint64 // records dropped at the bounds
}

type window struct{ start, end uint64 }

type proc struct {
	cats  [256]span.TimeCategory // a park's reason byte → category
	since uint64                 // registered: deep splits only for spans after
	gone  uint64                 // removed at (0: traced): forgotten by Expire a Retain later
	stw   []window               // recent stop-the-world windows, by end
	gs    map[uint64]*timeline
}

// interval is part of a goroutine's time: off CPU in a category, or a
// GC assist.
type interval struct {
	start, end uint64
	cat        span.TimeCategory
}

type timeline struct {
	ivs    []interval // by arrival (close to end order)
	pruned uint64     // intervals ending at or before it were dropped
	last   uint64     // the latest end added
}

// New returns a Collector for spans whose times are CLOCK_MONOTONIC
// plus monoToWall (callchain.MonoToWall, the builder's own offset).
func New(monoToWall int64) *Collector {
	return &Collector{wall: monoToWall, procs: make(map[uint32]*proc)}
}

// AddProcess registers a traced process: reasons are its Go release's
// runtime.traceBlockReason values by name (symbolizer.BlockReasons), and
// now (CLOCK_MONOTONIC ns) when its probes went in.
func (c *Collector) AddProcess(pid uint32, reasons map[string]uint8, now uint64) {
	p := &proc{since: now, gs: make(map[uint64]*timeline)}
	for i := range p.cats {
		p.cats[i] = span.TimeOther
	}
	for name, v := range reasons {
		if cat := categoryOf(name); cat != span.TimeOther {
			p.cats[v] = cat
		}
	}
	c.mu.Lock()
	c.procs[pid] = p
	c.mu.Unlock()
}

// RemoveProcess forgets a process detached now (CLOCK_MONOTONIC ns), once
// Expire runs a Retain later: its last spans may still be in the ring
// buffer, read after the detach (up to a drain interval of them), and
// split with its records.
func (c *Collector) RemoveProcess(pid uint32, now uint64) {
	c.mu.Lock()
	if p := c.procs[pid]; p != nil && p.gone == 0 {
		p.gone = max(now, 1)
	}
	c.mu.Unlock()
}

// DeepStart says deep mode is on from now (CLOCK_MONOTONIC ns): every
// probe it needs is in.
func (c *Collector) DeepStart(now uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.deep); n > 0 && c.deep[n-1].end == math.MaxUint64 {
		return
	}
	c.deep = append(c.deep, window{now, math.MaxUint64})
	if len(c.deep) > maxDeep {
		c.deep = c.deep[1:]
	}
}

// DeepStop says deep mode ends now, before its probes go.
func (c *Collector) DeepStop(now uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.deep); n > 0 && c.deep[n-1].end == math.MaxUint64 {
		c.deep[n-1].end = now
	}
}

// Add takes one record. The kernel sends a goroutine's records before
// the calls that end after them, in one ring, so they are here before
// their spans.
func (c *Collector) Add(ev *sched.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Records++
	p := c.procs[ev.Pid]
	if p == nil {
		c.stats.UnknownProcess++
		return
	}
	switch ev.Kind {
	case sched.KindSTW:
		c.stats.STW++
		if len(p.stw) == maxSTW {
			p.stw = append(p.stw[:0], p.stw[maxSTW/2:]...)
			c.stats.Dropped += maxSTW / 2
		}
		p.stw = append(p.stw, window{ev.Start, ev.End})
	case sched.KindOff:
		c.stats.Off++
		cat := span.TimeOther
		if ev.Reason != sched.ReasonUnknown {
			cat = p.cats[ev.Reason]
		}
		c.add(p, ev.Goid, interval{ev.Start, ev.Mid, cat}, interval{ev.Mid, ev.End, span.TimeRunnable})
	case sched.KindOSRunnable:
		c.stats.OSRunnable++
		c.add(p, ev.Goid, interval{ev.Start, ev.End, span.TimeRunnable})
	case sched.KindOSBlocked:
		c.stats.OSBlocked++
		c.add(p, ev.Goid, interval{ev.Start, ev.End, span.TimeSyscall})
	case sched.KindAssist:
		c.stats.Assists++
		c.add(p, ev.Goid, interval{ev.Start, ev.End, span.TimeGCAssist})
	}
}

func (c *Collector) add(p *proc, goid uint64, ivs ...interval) {
	tl := p.gs[goid]
	if tl == nil {
		tl = &timeline{}
		p.gs[goid] = tl
	}
	for _, iv := range ivs {
		if iv.end <= iv.start {
			continue
		}
		if len(tl.ivs) == maxIntervals {
			half := tl.ivs[:maxIntervals/2]
			for _, d := range half {
				tl.pruned = max(tl.pruned, d.end)
			}
			tl.ivs = append(tl.ivs[:0], tl.ivs[maxIntervals/2:]...)
			c.stats.Dropped += maxIntervals / 2
		}
		tl.ivs = append(tl.ivs, iv)
		tl.last = max(tl.last, iv.end)
	}
}

// Expire drops what no span still to come can need: records older than
// Retain before now (CLOCK_MONOTONIC ns).
func (c *Collector) Expire(now uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now < uint64(Retain) {
		return
	}
	before := now - uint64(Retain)
	for pid, p := range c.procs {
		if p.gone != 0 && p.gone <= before {
			delete(c.procs, pid)
			continue
		}
		for goid, tl := range p.gs {
			if tl.last <= before {
				delete(p.gs, goid)
				continue
			}
			tl.prune(before)
		}
		i := 0
		for i < len(p.stw) && p.stw[i].end <= before && len(p.stw)-i > 1 {
			i++
		}
		p.stw = p.stw[i:]
	}
}

// prune drops the intervals that end at or before t.
func (tl *timeline) prune(t uint64) {
	kept := tl.ivs[:0]
	for _, iv := range tl.ivs {
		if iv.end > t {
			kept = append(kept, iv)
		}
	}
	clear(tl.ivs[len(kept):])
	tl.ivs = kept
	tl.pruned = max(tl.pruned, t)
}

// Stats returns the counters so far.
func (c *Collector) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// deepCovers reports whether deep mode was on in p from before a to
// after b.
func (c *Collector) deepCovers(p *proc, a, b uint64) bool {
	for i := len(c.deep) - 1; i >= 0; i-- {
		w := c.deep[i]
		if a >= max(w.start, p.since) && b <= w.end {
			return true
		}
	}
	return false
}
