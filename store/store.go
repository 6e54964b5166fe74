// Package store is the agent's embedded trace store: it keeps the completed
// spans of every traced process in memory, grouped by trace, within a byte
// budget, and answers the queries the HTTP API and the analyses ask
// (services, operations, one trace, a search, a walk over every trace).
//
// A Store is a span.Exporter, so the agent plugs it in as one more sink.
// When the spans it holds cost more than its budget it evicts whole traces,
// oldest first. Every query is safe for concurrent use with Export: the
// *Trace values it hands out are immutable snapshots.
package store

import (
	"slices"
	"sync"
	"unsafe"

	"github.com/latscope/latscope/span"
)

// Store holds traces in memory within a byte budget. Create it with New.
type Store struct {
	budget int64

	mu     sync.RWMutex
	bytes  int64
	traces map[span.TraceID]*entry
	// order holds the live entries by when their trace was first added,
	// oldest at head. Entries evicted out of turn (a trace over the whole
	// budget) stay in it, marked dead, until they reach the head.
	order []*entry
	head  int

	services   map[string]int    // service name → spans held
	operations map[operation]int // (service, name, kind) → spans held

	spans, spansAdded           int64
	evictedTraces, evictedSpans int64
}

// entry is one trace held by the store.
type entry struct {
	// spans is the trace's spans sorted by start, with spare capacity;
	// trace.Spans is a prefix of it capped at its length, so appending here
	// never changes what a handed-out snapshot sees.
	spans []*span.Span
	trace *Trace  // current immutable snapshot
	sum   summary // trace.sum, inline for scans
	bytes int64
	dead  bool
}

type operation struct {
	service, name string
	kind          span.Kind
}

// Stats describes what the store holds and has done since New.
type Stats struct {
	Bytes  int64 `json:"bytes"`  // approximate cost of what is held now (see SpanCost)
	Budget int64 `json:"budget"` // the budget given to New
	Traces int   `json:"traces"` // traces held now
	Spans  int64 `json:"spans"`  // spans held now

	SpansAdded    int64 `json:"spansAdded"`    // spans received by Export, cumulative
	EvictedTraces int64 `json:"evictedTraces"` // traces evicted, cumulative
	EvictedSpans  int64 `json:"evictedSpans"`  // spans evicted with them, cumulative
}

// Fixed costs of the model SpanCost describes.
var (
	spanOverhead  = int64(unsafe.Sizeof(span.Span{})) + int64(unsafe.Sizeof(uintptr(0)))
	attrOverhead  = int64(unsafe.Sizeof(span.Attr{}))
	traceOverhead = int64(unsafe.Sizeof(entry{})+unsafe.Sizeof(Trace{})) + 64
)

const (
	stringHeader = int64(unsafe.Sizeof(""))
	boxedWord    = 8
)

// SpanCost is the approximate number of bytes the store charges for s
// against its budget: the span struct and its pointer in the trace, the
// bytes of the strings it holds (name, function, status message, file),
// each Attr slot of its attribute slice's capacity, each attribute key, and
// each value boxed in an interface (a string's header and bytes, 8 bytes
// for the other types). The span's *span.Process is shared by every span of
// the process and is not charged. Each trace is also charged a fixed
// overhead for its map slot, entry and snapshot. Strings shared between
// spans (interned names) are charged to each span, so the estimate errs
// high; transient garbage (superseded snapshots) is not charged.
func SpanCost(s *span.Span) int64 {
	n := spanOverhead + int64(len(s.Name)+len(s.Function)+len(s.StatusMessage)+len(s.File))
	n += int64(cap(s.Attrs)) * attrOverhead
	for _, a := range s.Attrs {
		n += int64(len(a.Key))
		if v, ok := a.Value.(string); ok {
			n += stringHeader + int64(len(v))
		} else if a.Value != nil {
			n += boxedWord
		}
	}
	return n
}

// New returns an empty store that keeps at most budgetBytes of spans, as
// SpanCost counts them. A budget ≤ 0 keeps nothing: every trace is evicted
// as it arrives.
func New(budgetBytes int64) *Store {
	return &Store{
		budget:     budgetBytes,
		traces:     make(map[span.TraceID]*entry),
		services:   make(map[string]int),
		operations: make(map[operation]int),
	}
}

// Export adds spans to their traces, then evicts whole traces, oldest first
// (by when the store first saw the trace), until what it holds costs at most
// the budget. A trace that alone costs more than the budget is evicted as
// soon as it does, without evicting older ones for it. A span of a trace
// already evicted starts a new entry for that trace. Nil spans are skipped.
// Export never fails; the spans must not be modified afterwards.
func (s *Store) Export(spans []*span.Span) error {
	batches, ids := groupByTrace(spans)
	if len(ids) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		s.add(id, batches[id])
	}
	s.evictOverBudget()
	return nil
}

// Close does nothing: a store has nothing to flush. It still answers
// queries after Close.
func (s *Store) Close() error { return nil }

// groupByTrace splits spans by trace, keeping the order in which traces
// first appear so new entries are ordered as they arrived.
func groupByTrace(spans []*span.Span) (map[span.TraceID][]*span.Span, []span.TraceID) {
	batches := make(map[span.TraceID][]*span.Span)
	var ids []span.TraceID
	for _, sp := range spans {
		if sp == nil {
			continue
		}
		b, ok := batches[sp.TraceID]
		if !ok {
			ids = append(ids, sp.TraceID)
		}
		batches[sp.TraceID] = append(b, sp)
	}
	return batches, ids
}

// add merges one trace's batch into its entry. s.mu is held.
func (s *Store) add(id span.TraceID, batch []*span.Span) {
	e := s.traces[id]
	if e == nil {
		e = &entry{bytes: traceOverhead}
		s.traces[id] = e
		s.order = append(s.order, e)
		s.bytes += traceOverhead
	}
	slices.SortStableFunc(batch, byStart)
	e.spans = merge(e.spans, batch)
	e.trace = newTrace(id, e.spans[:len(e.spans):len(e.spans)], e.trace, batch)
	e.sum = e.trace.sum

	for _, sp := range batch {
		c := SpanCost(sp)
		e.bytes += c
		s.bytes += c
		s.services[serviceOf(sp)]++
		s.operations[operationOf(sp)]++
	}
	n := int64(len(batch))
	s.spans += n
	s.spansAdded += n

	if e.bytes > s.budget {
		s.evict(e)
	}
}

// merge returns sorted with batch (sorted) merged in. When the whole batch
// starts at or after the last span it appends in place, which never
// touches the prefix a snapshot holds; otherwise it copies.
func merge(sorted, batch []*span.Span) []*span.Span {
	if len(sorted) == 0 || !batch[0].Start.Before(sorted[len(sorted)-1].Start) {
		return append(sorted, batch...)
	}
	out := make([]*span.Span, 0, len(sorted)+len(batch)+len(sorted)/4)
	i, j := 0, 0
	for i < len(sorted) && j < len(batch) {
		if batch[j].Start.Before(sorted[i].Start) {
			out = append(out, batch[j])
			j++
		} else {
			out = append(out, sorted[i])
			i++
		}
	}
	out = append(out, sorted[i:]...)
	return append(out, batch[j:]...)
}

func byStart(a, b *span.Span) int { return a.Start.Compare(b.Start) }

// evictOverBudget evicts the oldest traces until the store is within its
// budget. s.mu is held.
func (s *Store) evictOverBudget() {
	for s.bytes > s.budget && s.head < len(s.order) {
		e := s.order[s.head]
		s.order[s.head] = nil
		s.head++
		if !e.dead {
			s.evict(e)
		}
	}
	// Drop dead entries at the head and reclaim the queue's front once it
	// is mostly consumed.
	for s.head < len(s.order) && s.order[s.head].dead {
		s.order[s.head] = nil
		s.head++
	}
	if s.head > 1024 && s.head > len(s.order)/2 {
		s.order = slices.Clone(s.order[s.head:])
		s.head = 0
	}
}

// evict removes e's trace and everything it accounts for. s.mu is held.
func (s *Store) evict(e *entry) {
	e.dead = true
	delete(s.traces, e.trace.ID)
	s.bytes -= e.bytes
	for _, sp := range e.spans {
		decrement(s.services, serviceOf(sp))
		decrement(s.operations, operationOf(sp))
	}
	n := int64(len(e.spans))
	s.spans -= n
	s.evictedSpans += n
	s.evictedTraces++
}

func decrement[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}

func serviceOf(sp *span.Span) string {
	if sp.Process == nil {
		return ""
	}
	return sp.Process.ServiceName
}

func operationOf(sp *span.Span) operation {
	return operation{service: serviceOf(sp), name: sp.Name, kind: sp.Kind}
}

// Stats returns the store's current size and cumulative counters.
func (s *Store) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return Stats{
		Bytes:         s.bytes,
		Budget:        s.budget,
		Traces:        len(s.traces),
		Spans:         s.spans,
		SpansAdded:    s.spansAdded,
		EvictedTraces: s.evictedTraces,
		EvictedSpans:  s.evictedSpans,
	}
}
