// Package store is the agent's embedded trace store: it keeps the completed
// spans of every traced process in memory, grouped by trace, within a byte
// budget, and answers the queries the HTTP API and the analyses ask
// (services, operations, one trace, a search, a walk over every trace).
//
// A Store is a span.Exporter, so the agent plugs it in as one more sink.
// When the spans it holds cost more than its budget it evicts whole traces,
// oldest first. Spans are held encoded (codec.go): a query decodes the
// traces it returns, so every *Trace handed out is the caller's own
// snapshot, and every query is safe for concurrent use with Export.
package store

import (
	"sync"
	"time"
	"unsafe"

	"github.com/latscope/latscope/span"
)

// Store holds traces in memory within a byte budget. Create it with New.
type Store struct {
	budget int64

	mu sync.RWMutex
	// records holds the traces' records; bytes is its blocks plus each
	// held trace's traceOverhead.
	records arena
	bytes   int64
	// index maps a trace to its slot in entries; neither holds pointers.
	index   index
	entries []entry
	free    []int32 // unused slots of entries
	// order holds the slots by when their trace was first added, oldest
	// at head; a slot evicted out of turn (a trace over the whole budget)
	// or reused since is told by its generation.
	order []slotRef
	head  int

	// Tables the records refer to (codec.go), each entry counted by the
	// spans that use it and reused once none does (strs excepted).
	ops      []opEntry
	opIdx    map[opKey]uint32
	freeOps  []uint32
	procs    []procEntry
	procIdx  map[*span.Process]uint32
	freeProc []uint32
	services map[string]*serviceEntry
	strs     []string
	strIdx   map[string]uint16
	refCache [512]refCacheEntry
	opCache  [256]opCacheEntry

	spans, spansAdded           int64
	evictedTraces, evictedSpans int64

	scratch []byte // one trace's records while Export encodes them
	// warmed sums what warm loaded, so that the loads are not dropped.
	warmed uint64
}

// entry is one trace held by the store.
type entry struct {
	id   span.TraceID
	gen  uint32 // bumped when the slot is freed
	n    int32  // spans
	recs region // the spans' records, in the order they arrived
	sum  summary
}

// summary is what Search reads of a trace before its spans; times are
// Unix nanoseconds.
type summary struct {
	firstStart, lastStart int64 // earliest and latest span start
	end                   int64 // latest span end
	maxDuration           int64
	hasError              bool // a span has status error
}

type slotRef struct {
	slot int32
	gen  uint32
}

type opKey struct {
	service string
	name    string
	kind    span.Kind
}

type opEntry struct {
	opKey
	svc   *serviceEntry
	spans int64 // spans held; 0: the slot is free
}

type procEntry struct {
	p     *span.Process
	spans int64
}

type serviceEntry struct {
	spans int64
}

// Stats describes what the store holds and has done since New.
type Stats struct {
	Bytes  int64 `json:"bytes"`  // bytes charged for what is held now (see New)
	Budget int64 `json:"budget"` // the budget given to New
	Traces int   `json:"traces"` // traces held now
	Spans  int64 `json:"spans"`  // spans held now

	SpansAdded    int64 `json:"spansAdded"`    // spans received by Export, cumulative
	EvictedTraces int64 `json:"evictedTraces"` // traces evicted, cumulative
	EvictedSpans  int64 `json:"evictedSpans"`  // spans evicted with them, cumulative
}

// traceOverhead is what each trace is charged besides its records: its
// entry, its index buckets (8 bytes each, the table between 1/4 and 1/2
// full: up to 32 bytes a trace) and its place in the order queue.
const traceOverhead = int64(unsafe.Sizeof(entry{})) + 32 + int64(unsafe.Sizeof(slotRef{}))

// New returns an empty store that keeps at most budgetBytes of traces: the
// blocks holding their records (arena.go; 1/256 of the budget each, at
// most 64 KiB) and traceOverhead per trace. A budget ≤ 0 keeps nothing:
// every trace is evicted as it arrives.
func New(budgetBytes int64) *Store {
	return &Store{
		budget:   budgetBytes,
		records:  newArena(budgetBytes),
		opIdx:    make(map[opKey]uint32),
		procIdx:  make(map[*span.Process]uint32),
		services: make(map[string]*serviceEntry),
		strIdx:   make(map[string]uint16),
	}
}

// Export adds spans to their traces, then evicts whole traces, oldest first
// (by when the store first saw the trace), until what it holds costs at most
// the budget. A trace that alone costs more than the budget is evicted as
// soon as it does, without evicting older ones for it. A span of a trace
// already evicted starts a new entry for that trace. Nil spans are skipped.
// Export never fails and keeps neither the slice nor the spans; it keeps
// strings the spans hold (names, keys, functions, files) as given, and
// their *span.Process.
func (s *Store) Export(spans []*span.Span) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.warm(spans)
	// Spans of one trace mostly come together: encode each run of them
	// into scratch, then copy it to its trace in one append.
	for i := 0; i < len(spans); {
		if spans[i] == nil {
			i++
			continue
		}
		id := spans[i].TraceID
		b := s.scratch[:0]
		var sum summary
		n := 0
		for ; i < len(spans) && (spans[i] == nil || spans[i].TraceID == id); i++ {
			if sp := spans[i]; sp != nil {
				b = s.encode(b, sp, s.opOf(sp), s.procOf(sp.Process))
				sum.add(sp, n == 0)
				n++
			}
		}
		s.scratch = b
		s.add(id, b, n, sum)
	}
	s.evictOverBudget()
	return nil
}

// Close does nothing: a store has nothing to flush. It still answers
// queries after Close.
func (s *Store) Close() error { return nil }

// add appends n encoded spans, summarised by sum, to trace id. s.mu is
// held.
func (s *Store) add(id span.TraceID, recs []byte, n int, sum summary) {
	slot, ok := s.index.get(s.entries, id)
	if !ok {
		slot = s.newEntry(id)
	}
	e := &s.entries[slot]
	before := s.records.bytes
	if e.n == 0 {
		e.recs = s.records.put(recs)
		e.sum = sum
	} else {
		e.recs = s.records.extend(e.recs, recs)
		e.sum.merge(sum)
	}
	e.n += int32(n)
	s.bytes += s.records.bytes - before
	s.spans += int64(n)
	s.spansAdded += int64(n)
	if int64(e.recs.len)+traceOverhead > s.budget {
		s.evict(slot)
	}
}

func (s *Store) newEntry(id span.TraceID) int32 {
	var slot int32
	if k := len(s.free); k > 0 {
		slot = s.free[k-1]
		s.free = s.free[:k-1]
	} else {
		slot = int32(len(s.entries))
		s.entries = append(s.entries, entry{})
	}
	e := &s.entries[slot]
	e.id, e.n, e.recs, e.sum = id, 0, region{}, summary{}
	s.index.put(id, slot)
	s.order = append(s.order, slotRef{slot, e.gen})
	s.bytes += traceOverhead
	return slot
}

func (sum *summary) add(sp *span.Span, first bool) {
	start, end := sp.Start.UnixNano(), sp.End.UnixNano()
	if first {
		*sum = summary{firstStart: start, lastStart: start, end: end}
	}
	sum.firstStart = min(sum.firstStart, start)
	sum.lastStart = max(sum.lastStart, start)
	sum.end = max(sum.end, end)
	sum.maxDuration = max(sum.maxDuration, end-start)
	sum.hasError = sum.hasError || sp.Status == span.StatusError
}

func (sum *summary) merge(o summary) {
	sum.firstStart = min(sum.firstStart, o.firstStart)
	sum.lastStart = max(sum.lastStart, o.lastStart)
	sum.end = max(sum.end, o.end)
	sum.maxDuration = max(sum.maxDuration, o.maxDuration)
	sum.hasError = sum.hasError || o.hasError
}

// opOf returns sp's operation, counting one more span of it. s.mu is held.
func (s *Store) opOf(sp *span.Span) uint32 {
	k := opKey{service: serviceOf(sp), name: sp.Name, kind: sp.Kind}
	// Span names are mostly the same strings span after span (a
	// function's, a route's): a cache by the name's address skips hashing
	// the key; comparing with the entry keeps it right.
	var c *opCacheEntry
	if p := unsafe.StringData(k.name); len(k.name) > 0 {
		c = &s.opCache[uintptr(unsafe.Pointer(p))>>3%uintptr(len(s.opCache))]
		if c.name == p && int(c.op) < len(s.ops) {
			if op := &s.ops[c.op]; op.spans > 0 && op.opKey == k {
				op.spans++
				op.svc.spans++
				return c.op
			}
		}
	}
	i, ok := s.opIdx[k]
	if !ok {
		svc := s.services[k.service]
		if svc == nil {
			svc = &serviceEntry{}
			s.services[k.service] = svc
		}
		if n := len(s.freeOps); n > 0 {
			i = s.freeOps[n-1]
			s.freeOps = s.freeOps[:n-1]
		} else {
			i = uint32(len(s.ops))
			s.ops = append(s.ops, opEntry{})
		}
		s.ops[i] = opEntry{opKey: k, svc: svc}
		s.opIdx[k] = i
	}
	op := &s.ops[i]
	op.spans++
	op.svc.spans++
	if c != nil {
		*c = opCacheEntry{unsafe.StringData(k.name), i}
	}
	return i
}

// opCacheEntry remembers an operation by the address of its name.
type opCacheEntry struct {
	name *byte
	op   uint32
}

// procOf returns p's slot, counting one more span of it. s.mu is held.
func (s *Store) procOf(p *span.Process) uint32 {
	i, ok := s.procIdx[p]
	if !ok {
		if n := len(s.freeProc); n > 0 {
			i = s.freeProc[n-1]
			s.freeProc = s.freeProc[:n-1]
		} else {
			i = uint32(len(s.procs))
			s.procs = append(s.procs, procEntry{})
		}
		s.procs[i] = procEntry{p: p}
		s.procIdx[p] = i
	}
	s.procs[i].spans++
	return i
}

// warm loads, before Export adds spans, the memory its adds and evictions
// will read at random: the index buckets of the batch's traces, and the
// entries and buckets of as many of the oldest traces. Loads that do not
// depend on each other wait on memory together; one at a time, inside
// the adds, each waited alone: index lookups were a fifth of the agent's
// CPU at 20k spans/s, nearly all of it cache misses. s.mu is held.
func (s *Store) warm(spans []*span.Span) {
	if len(s.index.buckets) == 0 {
		return
	}
	var sum uint64
	traces := 0
	var last span.TraceID
	for _, sp := range spans {
		if sp != nil && (traces == 0 || sp.TraceID != last) {
			last = sp.TraceID
			sum += s.index.bucket(last)
			traces++
		}
	}
	if s.bytes+int64(traces)*traceOverhead > s.budget-s.budget/64 {
		// Evicting: as many oldest traces as this batch adds, roughly.
		end := min(s.head+traces, len(s.order))
		for _, ref := range s.order[s.head:end] {
			sum += uint64(s.entries[ref.slot].n)
		}
		for _, ref := range s.order[s.head:end] {
			sum += s.index.bucket(s.entries[ref.slot].id)
		}
	}
	s.warmed += sum
}

// evictOverBudget evicts the oldest traces until the store is within its
// budget. s.mu is held.
func (s *Store) evictOverBudget() {
	for s.bytes > s.budget && s.head < len(s.order) {
		ref := s.order[s.head]
		s.head++
		if s.entries[ref.slot].gen == ref.gen {
			s.evict(ref.slot)
		}
	}
	// Skip refs of traces evicted out of turn, and reclaim the queue's
	// front once it is mostly consumed.
	for s.head < len(s.order) && s.entries[s.order[s.head].slot].gen != s.order[s.head].gen {
		s.head++
	}
	if s.head > 1024 && s.head > len(s.order)/2 {
		s.order = append(s.order[:0], s.order[s.head:]...)
		s.head = 0
	}
}

// evict removes the trace in slot and everything it accounts for. s.mu is
// held.
func (s *Store) evict(slot int32) {
	e := &s.entries[slot]
	records(s.records.bytesOf(e.recs), func(r record) bool {
		s.releaseOp(r.op())
		s.releaseProc(r.proc())
		return true
	})
	s.index.del(e.id, slot)
	before := s.records.bytes
	s.records.free(e.recs)
	s.bytes -= traceOverhead - (s.records.bytes - before)
	s.spans -= int64(e.n)
	s.evictedSpans += int64(e.n)
	s.evictedTraces++
	e.gen++
	e.recs, e.n = region{}, 0
	s.free = append(s.free, slot)
}

func (s *Store) releaseOp(i uint32) {
	op := &s.ops[i]
	op.spans--
	if op.svc.spans--; op.svc.spans == 0 {
		delete(s.services, op.service)
	}
	if op.spans == 0 {
		delete(s.opIdx, op.opKey)
		*op = opEntry{}
		s.freeOps = append(s.freeOps, i)
	}
}

func (s *Store) releaseProc(i uint32) {
	p := &s.procs[i]
	if p.spans--; p.spans == 0 {
		delete(s.procIdx, p.p)
		*p = procEntry{}
		s.freeProc = append(s.freeProc, i)
	}
}

func serviceOf(sp *span.Span) string {
	if sp.Process == nil {
		return ""
	}
	return sp.Process.ServiceName
}

// Stats returns the store's current size and cumulative counters.
func (s *Store) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return Stats{
		Bytes:         s.bytes,
		Budget:        s.budget,
		Traces:        s.index.len(),
		Spans:         s.spans,
		SpansAdded:    s.spansAdded,
		EvictedTraces: s.evictedTraces,
		EvictedSpans:  s.evictedSpans,
	}
}

// decodeTrace returns the trace in slot as a snapshot of its own. s.mu is
// held (read or write).
func (s *Store) decodeTrace(slot int32) *Trace {
	e := &s.entries[slot]
	t := &Trace{ID: e.id, Spans: make([]*span.Span, 0, e.n), end: time.Unix(0, e.sum.end)}
	records(s.records.bytesOf(e.recs), func(r record) bool {
		t.Spans = append(t.Spans, s.decode(r, e.id))
		return true
	})
	sortByStart(t.Spans)
	return t
}
