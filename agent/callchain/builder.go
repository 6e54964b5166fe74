// Package callchain rebuilds call trees from the kernel's completed-call
// records and turns them into spans. One Builder serves any number of
// processes at once.
//
// The kernel sends a call when it returns, with its trace id, so children
// arrive before their parent. A call waits, grouped under its parent's
// call id, until that parent arrives; a root call (no traced parent)
// completes its tree and the whole tree is emitted. A goroutine may
// outlive the call that started it: its calls then arrive after their
// parent was emitted and are emitted at once, recognised through a
// bounded index of recently emitted calls that started goroutines (the
// kernel flags them). Calls whose parent never arrives (filtered
// by --min-duration, or lost) are emitted as orphan roots when they
// expire or at Flush, never dropped.
package callchain

import (
	"encoding/binary"
	"time"

	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/span"
)

// Func describes a traced function id of a process.
type Func struct {
	Name string
	File string
	Line int
}

// Options bounds the builder's memory.
type Options struct {
	// MaxPending is the most calls waiting for their parent, per process;
	// past it the oldest group is emitted as orphans. Default 1<<20.
	MaxPending int
	// RecentCalls is how many completed calls per process stay known for
	// late goroutine children. Default 1<<16.
	RecentCalls int
	// PendingTTL: calls waiting longer than this (monotonic, by their end
	// time) are emitted as orphans by Expire. Default 30s.
	PendingTTL time.Duration
	// Salt makes span ids unique across runs (random if zero); the
	// kernel must use the same (calltracer.Options.IDSalt).
	Salt uint64
	// Libraries decode library records into span fields, indexed by the
	// library id the kernel puts in each record.
	Libraries []LibDecoder
	// ReuseSpans: the spans handed to out, and their Attrs, are valid only
	// until out returns; the builder reuses their memory for the next
	// batch. For an out whose consumers copy what they keep
	// (span.Span.Clone): the spans are then not garbage (~560 bytes each
	// with a library's attributes, at the node agent's rate most of its
	// allocation).
	ReuseSpans bool
	// Deferred: Add keeps the spans it completes until the next Expire
	// (or Flush), which passes them to out in one batch; for a caller that
	// calls Expire after each drain of the ring buffer (the node agent).
	// Each consumer then takes its lock once per drain, and the store can
	// load what a batch will touch before it needs it (store.Store.warm).
	Deferred bool
}

// LibDecoder applies one library record (probe says which of the
// library's records; raw is the whole record) to the call's span.
type LibDecoder func(probe uint16, raw []byte, s *span.Span)

// Stats counts what the builder did; losses are reported, never hidden.
type Stats struct {
	Calls          uint64 // events added
	Spans          uint64 // spans emitted
	Orphans        uint64 // spans emitted without their parent
	Evicted        uint64 // orphans emitted early because MaxPending was reached
	UnknownProcess uint64 // events of a process never added (dropped)
	UnknownFunc    uint64 // events with a function id the process does not have
	LibRecords     uint64 // library records added
	LibUnknown     uint64 // library records of an unknown library or process (dropped)
	LibDropped     uint64 // library records whose call never arrived, dropped at the bound
}

// Builder turns events into spans; it is not safe for concurrent use.
type Builder struct {
	opts  Options
	out   func([]*span.Span)
	wall  int64 // add to a CLOCK_MONOTONIC time to get Unix ns
	procs map[uint32]*proc
	stats Stats
	batch []*span.Span
	spans []span.Span // preallocated spans not yet handed out
	attrs []span.Attr // preallocated attribute slots not yet handed out
	// With ReuseSpans, spans and attribute slots come from these blocks
	// instead, handed out again from the first after each batch.
	spanBlocks         [][]span.Span
	attrBlocks         [][]span.Attr
	usedSpans, usedAtt int
	// Blocks library records are kept in until their call arrives.
	now      call // the call being emitted by Add, when it waits for nothing
	libSlots []libRecord
	libBlock *libBlock   // the block records are being copied into
	spare    []*libBlock // blocks whose records were all used, for reuse
}

// libBlock holds copies of library records until their calls arrive.
type libBlock struct {
	buf     []byte
	pending int // records in it not yet applied to their span
}

type proc struct {
	info    *span.Process
	funcs   []Func
	pending map[uint64]*group // by parent call id
	npend   int
	arrived map[uint64]*call       // calls that arrived but wait for an ancestor
	libs    map[uint64][]libRecord // library records waiting for their call
	recent  map[uint64]struct{}    // emitted calls that started goroutines
	ring    []uint64               // insertion order of recent
	next    int
}

type libRecord struct {
	block *libBlock
	lib   uint8
	probe uint16
	raw   []byte
}

type group struct {
	calls   []*call
	lastEnd uint64
}

type call struct {
	ev       calltracer.Event
	children []*call
}

// New returns a Builder that passes every finished batch of spans to out,
// which may keep the spans (unless opts.ReuseSpans) but not the slice (the
// Builder reuses it).
// monoToWall is added to kernel CLOCK_MONOTONIC times to get Unix times
// (see MonoToWall).
func New(out func([]*span.Span), monoToWall int64, opts Options) *Builder {
	if opts.MaxPending <= 0 {
		opts.MaxPending = 1 << 20
	}
	if opts.RecentCalls <= 0 {
		opts.RecentCalls = 1 << 16
	}
	if opts.PendingTTL <= 0 {
		opts.PendingTTL = 30 * time.Second
	}
	if opts.Salt == 0 {
		opts.Salt = NewSalt()
	}
	return &Builder{opts: opts, out: out, wall: monoToWall, procs: make(map[uint32]*proc)}
}

// AddProcess registers a traced process and its function table, indexed
// by the function ids its probes carry.
func (b *Builder) AddProcess(pid uint32, info *span.Process, funcs []Func) {
	b.procs[pid] = &proc{
		info:    info,
		funcs:   funcs,
		pending: make(map[uint64]*group),
		arrived: make(map[uint64]*call),
		libs:    make(map[uint64][]libRecord),
		recent:  make(map[uint64]struct{}),
	}
}

// RemoveProcess emits what the process still has pending and forgets it.
func (b *Builder) RemoveProcess(pid uint32) {
	if p, ok := b.procs[pid]; ok {
		b.flushProc(pid, p)
		delete(b.procs, pid)
	}
}

// Processes is the number of processes the builder holds state for.
func (b *Builder) Processes() int { return len(b.procs) }

// Stats returns the counters so far.
func (b *Builder) Stats() Stats { return b.stats }

// Add takes one completed call.
func (b *Builder) Add(ev *calltracer.Event) {
	b.stats.Calls++
	p := b.procs[ev.Pid]
	if p == nil {
		b.stats.UnknownProcess++
		return
	}
	var children []*call
	if g := p.pending[ev.CallId]; g != nil {
		children = g.calls
		p.npend -= len(g.calls)
		delete(p.pending, ev.CallId)
	}
	now := ev.ParentCallId == 0 // a root
	if !now {
		_, now = p.recent[ev.ParentCallId] // its parent was emitted
	}
	switch {
	case now:
		// Emitted at once: the call need not outlive Add (no allocation
		// for the commonest case, a request's root call).
		b.now = call{ev: *ev, children: children}
		b.emitTree(ev.Pid, p, &b.now, false)
		b.now = call{}
	default:
		c := &call{ev: *ev, children: children}
		p.arrived[ev.CallId] = c
		if parent := p.arrived[ev.ParentCallId]; parent != nil {
			// The parent returned before this goroutine's call did and
			// itself waits for an ancestor.
			parent.children = append(parent.children, c)
			break
		}
		g := p.pending[ev.ParentCallId]
		if g == nil {
			g = &group{}
			p.pending[ev.ParentCallId] = g
		}
		g.calls = append(g.calls, c)
		g.lastEnd = max(g.lastEnd, ev.EndNs)
		p.npend++
		for p.npend > b.opts.MaxPending {
			b.evictOne(ev.Pid, p)
		}
	}
	if !b.opts.Deferred {
		b.send()
	}
}

// AddLib takes a library record about a call; it is applied to the call's
// span when the call arrives (library records are sent first).
func (b *Builder) AddLib(raw []byte) {
	b.stats.LibRecords++
	h, ok := calltracer.DecodeLib(raw)
	if !ok {
		b.stats.LibUnknown++
		return
	}
	p := b.procs[h.Pid]
	if p == nil || int(h.Lib) >= len(b.opts.Libraries) || b.opts.Libraries[h.Lib] == nil {
		b.stats.LibUnknown++
		return
	}
	if len(p.libs) >= b.opts.MaxPending {
		// Calls that never arrived (lost, or still running for long):
		// bounded memory wins, and the loss is counted.
		b.stats.LibDropped += uint64(len(p.libs))
		clear(p.libs)
	}
	recs := p.libs[h.CallId]
	if recs == nil {
		// Most calls have a record at entry and one at return.
		if len(b.libSlots) < 2 {
			b.libSlots = make([]libRecord, 512)
		}
		recs, b.libSlots = b.libSlots[:0:2], b.libSlots[2:]
	}
	blk, kept := b.keep(raw)
	p.libs[h.CallId] = append(recs, libRecord{blk, h.Lib, h.Probe, kept})
}

// keep copies a ring record the builder holds until its call arrives
// (the ring buffer reuses its bytes) into shared 4 KiB blocks, and a block
// whose records have all been applied is reused: allocating (and zeroing,
// and faulting in) fresh memory for every record cost more than the
// decoding. Records dropped unapplied (MaxPending, process exit) leave
// their block to the collector. A record waiting long pins its block:
// small blocks bound that.
func (b *Builder) keep(raw []byte) (*libBlock, []byte) {
	blk := b.libBlock
	if blk == nil || len(raw) > cap(blk.buf)-len(blk.buf) {
		if blk != nil && blk.pending == 0 {
			blk.buf = blk.buf[:0] // all used: start over
		} else if n := len(b.spare); n > 0 && len(raw) <= 4<<10 {
			blk, b.spare = b.spare[n-1], b.spare[:n-1]
			blk.buf = blk.buf[:0]
		} else {
			blk = &libBlock{buf: make([]byte, 0, max(4<<10, len(raw)))}
		}
		b.libBlock = blk
	}
	n := len(blk.buf)
	blk.buf = append(blk.buf, raw...)
	blk.pending++
	return blk, blk.buf[n:len(blk.buf):len(blk.buf)]
}

// applied notes that a kept record was applied to its span: nothing
// refers to its bytes any more (decoders copy what they keep).
func (b *Builder) applied(blk *libBlock) {
	if blk.pending--; blk.pending == 0 && blk != b.libBlock && len(b.spare) < 16 && cap(blk.buf) == 4<<10 {
		b.spare = append(b.spare, blk)
	}
}

// Expire emits as orphans the calls that waited for their parent longer
// than PendingTTL; now is CLOCK_MONOTONIC ns.
func (b *Builder) Expire(now uint64) {
	ttl := uint64(b.opts.PendingTTL)
	for pid, p := range b.procs {
		for parent, g := range p.pending {
			if g.lastEnd+ttl < now {
				b.emitOrphans(pid, p, parent, g)
			}
		}
	}
	b.send()
}

// Flush emits everything still pending, as orphans.
func (b *Builder) Flush() {
	for pid, p := range b.procs {
		b.flushProc(pid, p)
	}
	b.send()
}

func (b *Builder) flushProc(pid uint32, p *proc) {
	for parent, g := range p.pending {
		b.emitOrphans(pid, p, parent, g)
	}
	b.send()
}

func (b *Builder) evictOne(pid uint32, p *proc) {
	var oldest uint64
	var og *group
	for parent, g := range p.pending {
		if og == nil || g.lastEnd < og.lastEnd {
			oldest, og = parent, g
		}
	}
	if og != nil {
		b.stats.Evicted += uint64(len(og.calls))
		b.emitOrphans(pid, p, oldest, og)
	}
}

func (b *Builder) emitOrphans(pid uint32, p *proc, parent uint64, g *group) {
	delete(p.pending, parent)
	p.npend -= len(g.calls)
	for _, c := range g.calls {
		b.emitTree(pid, p, c, true)
	}
}

// emitTree converts c and its subtree into spans.
func (b *Builder) emitTree(pid uint32, p *proc, c *call, orphan bool) {
	if c.ev.Flags&calltracer.FlagSpawned != 0 {
		// Only a call that started goroutines can get children later.
		b.remember(p, c.ev.CallId)
	}
	if c.ev.ParentCallId != 0 {
		delete(p.arrived, c.ev.CallId)
	}
	s := b.toSpan(pid, p, &c.ev)
	if orphan {
		s.Orphan = true
		s.ParentID = span.SpanID{}
		b.stats.Orphans++
	}
	b.batch = append(b.batch, s)
	for _, ch := range c.children {
		b.emitTree(pid, p, ch, false)
	}
}

func (b *Builder) remember(p *proc, callID uint64) {
	if len(p.ring) < b.opts.RecentCalls { // grows up to RecentCalls, then wraps
		p.ring = append(p.ring, callID)
	} else {
		delete(p.recent, p.ring[p.next])
		p.ring[p.next] = callID
		p.next = (p.next + 1) % len(p.ring)
	}
	p.recent[callID] = struct{}{}
}

func (b *Builder) send() {
	if len(b.batch) == 0 {
		return
	}
	b.stats.Spans += uint64(len(b.batch))
	b.out(b.batch)
	clear(b.batch) // out kept the spans it wants, not the slice
	b.batch = b.batch[:0]
	if b.opts.ReuseSpans {
		// What the batch used lets go of what it pointed to (processes
		// since gone, attribute values) until the memory is used again.
		for i := 0; i*blockLen < b.usedSpans; i++ {
			clear(b.spanBlocks[i][:min(blockLen, b.usedSpans-i*blockLen)])
		}
		for i := 0; i*blockLen < b.usedAtt; i++ {
			clear(b.attrBlocks[i][:min(blockLen, b.usedAtt-i*blockLen)*libAttrs])
		}
		b.usedSpans, b.usedAtt = 0, 0
		// A flush of many pending calls may have needed many blocks:
		// keep what an ordinary batch needs, and let the rest go.
		if len(b.spanBlocks) > keptBlocks {
			clear(b.spanBlocks[keptBlocks:])
			b.spanBlocks = b.spanBlocks[:keptBlocks]
		}
		if len(b.attrBlocks) > keptBlocks {
			clear(b.attrBlocks[keptBlocks:])
			b.attrBlocks = b.attrBlocks[:keptBlocks]
		}
	}
}

// blockLen is how many spans (or libAttrs attribute slots) one block of
// span memory holds; with ReuseSpans, keptBlocks of each stay between
// batches.
const (
	blockLen   = 256
	keptBlocks = 16
)

// newSpan returns memory for a span.
func (b *Builder) newSpan() *span.Span {
	if !b.opts.ReuseSpans {
		if len(b.spans) == 0 {
			b.spans = make([]span.Span, blockLen) // one allocation per 256 spans
		}
		s := &b.spans[0]
		b.spans = b.spans[1:]
		return s
	}
	blk, i := b.usedSpans/blockLen, b.usedSpans%blockLen
	if blk == len(b.spanBlocks) {
		b.spanBlocks = append(b.spanBlocks, make([]span.Span, blockLen))
	}
	b.usedSpans++
	return &b.spanBlocks[blk][i]
}

// newAttrs returns room for a library span's attributes: libAttrs slots
// (a decoder appending more gets its own).
func (b *Builder) newAttrs() []span.Attr {
	if !b.opts.ReuseSpans {
		if len(b.attrs) < libAttrs {
			b.attrs = make([]span.Attr, blockLen*libAttrs)
		}
		a := b.attrs[:0:libAttrs]
		b.attrs = b.attrs[libAttrs:]
		return a
	}
	blk, i := b.usedAtt/blockLen, b.usedAtt%blockLen
	if blk == len(b.attrBlocks) {
		b.attrBlocks = append(b.attrBlocks, make([]span.Attr, blockLen*libAttrs))
	}
	b.usedAtt++
	return b.attrBlocks[blk][i*libAttrs : i*libAttrs : (i+1)*libAttrs]
}

// libAttrs is the attribute capacity a library span starts with: a
// net/http server span has 10.
const libAttrs = 12

func (b *Builder) toSpan(pid uint32, p *proc, ev *calltracer.Event) *span.Span {
	s := b.newSpan()
	var tid span.TraceID
	binary.BigEndian.PutUint64(tid[:8], ev.TraceIdHi)
	binary.BigEndian.PutUint64(tid[8:], ev.TraceIdLo)
	*s = span.Span{
		TraceID:    tid,
		SpanID:     b.spanID(pid, ev.CallId),
		Kind:       span.KindInternal,
		Start:      time.Unix(0, int64(ev.StartNs)+b.wall),
		End:        time.Unix(0, int64(ev.EndNs)+b.wall),
		Process:    p.info,
		GoID:       ev.Goid,
		ParentGoID: ev.ParentGoid,
		StartTID:   ev.StartTid,
		EndTID:     ev.Tid,
		CPU:        ev.Cpu,
		Depth:      int(ev.Depth),
	}
	if ev.ParentCallId != 0 {
		s.ParentID = b.spanID(pid, ev.ParentCallId)
	}
	if int(ev.FuncId) < len(p.funcs) {
		f := &p.funcs[ev.FuncId]
		s.Name, s.Function, s.File, s.Line = f.Name, f.Name, f.File, f.Line
	} else {
		b.stats.UnknownFunc++
		s.Name = "unknown"
	}
	if recs, ok := p.libs[ev.CallId]; ok {
		delete(p.libs, ev.CallId)
		// Library spans carry attributes: room for them from a shared
		// block, as for the spans themselves.
		s.Attrs = b.newAttrs()
		for _, r := range recs {
			b.opts.Libraries[r.lib](r.probe, r.raw, s)
			b.applied(r.block)
		}
	}
	if ev.Flags&calltracer.FlagUnwound != 0 {
		s.Unwound = true
		s.Status = span.StatusError
		s.StatusMessage = "unwound: a panic or runtime.Goexit skipped this function's return"
		if ev.Flags&calltracer.FlagExitMissed != 0 {
			s.StatusMessage = "return not seen: closed when a later call started on its goroutine; its end is late"
		}
	}
	return s
}

// spanID derives a span id from the process and the kernel's call id,
// so a call's id is known before the call itself arrives. The kernel
// computes the same (span_id in bpf/include/frames.h) for the trace
// context it propagates.
func (b *Builder) spanID(pid uint32, callID uint64) span.SpanID {
	var id span.SpanID
	v := mix(b.opts.Salt ^ uint64(pid)<<32 ^ mix(callID))
	if v == 0 {
		v = 1
	}
	binary.BigEndian.PutUint64(id[:], v)
	return id
}

// mix is splitmix64's finalizer: a bijection, so distinct inputs stay
// distinct.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
