package store

import (
	"cmp"
	"slices"
	"time"

	"github.com/latscope/latscope/span"
)

// Operation is one operation (span name) of a service, with its span kind
// in Jaeger's words (see KindName).
type Operation struct {
	Name     string
	SpanKind string
}

// KindName returns a span kind in Jaeger's words: "server", "client",
// "producer", "consumer", "internal", or "" for an unspecified kind.
func KindName(k span.Kind) string {
	switch k {
	case span.KindServer:
		return "server"
	case span.KindClient:
		return "client"
	case span.KindProducer:
		return "producer"
	case span.KindConsumer:
		return "consumer"
	case span.KindInternal:
		return "internal"
	}
	return ""
}

// StatusName returns a status code as OpenTelemetry's otel.status_code
// attribute writes it: "OK", "ERROR", or "" when unset.
func StatusName(c span.StatusCode) string {
	switch c {
	case span.StatusOK:
		return "OK"
	case span.StatusError:
		return "ERROR"
	}
	return ""
}

// Query selects traces for Search, with Jaeger's semantics: a trace
// matches when one of its spans matches every span filter (Service,
// Operation, Tags, MinDuration, MaxDuration, Start, End) and the trace
// matches the trace filters (Error, NoError). Zero fields do not filter.
type Query struct {
	Service   string // the span's process service.name
	Operation string // the span's name

	// Tags must all match the same span. A key matches a span attribute
	// (span.Span.Attributes) whose value, written as a string, equals the
	// tag's; a process-level value (service.name, process.pid,
	// process.executable.name, process.runtime.name,
	// process.runtime.version); span.kind (KindName) or otel.status_code
	// (StatusName). The key "error" is special: "true" matches a span with
	// status error, "false" any other span.
	Tags map[string]string

	MinDuration time.Duration // the span lasted at least this long
	MaxDuration time.Duration // the span lasted at most this long
	Start       time.Time     // the span started at or after Start
	End         time.Time     // the span started at or before End

	Error   bool // the trace has a span with status error
	NoError bool // the trace has no span with status error

	Limit int // at most this many traces, the newest; ≤ 0: no limit
	// Longest orders the traces by duration (first span start to last
	// span end), longest first, instead of newest first: with Limit, the
	// slowest N of the window without sending them all.
	Longest bool
}

// Services returns the service names of the spans held, sorted.
func (s *Store) Services() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.services))
	for svc := range s.services {
		out = append(out, svc)
	}
	slices.Sort(out)
	return out
}

// Operations returns the operations of service held, sorted by name then
// kind. kind ("server", "client", … as KindName writes them) keeps only
// those of that kind; "" keeps all.
func (s *Store) Operations(service, kind string) []Operation {
	s.mu.RLock()
	out := []Operation{}
	for i := range s.ops {
		op := &s.ops[i]
		if op.spans == 0 || op.service != service {
			continue
		}
		k := KindName(op.kind)
		if kind != "" && k != kind {
			continue
		}
		out = append(out, Operation{Name: op.name, SpanKind: k})
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Operation) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.SpanKind, b.SpanKind))
	})
	return out
}

// Trace returns the trace with the given id, and false if the store does
// not hold it.
func (s *Store) Trace(id span.TraceID) (*Trace, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	slot, ok := s.index.get(s.entries, id)
	if !ok {
		return nil, false
	}
	return s.decodeTrace(slot), true
}

// Search returns the traces q selects, newest first (by trace start; equal
// starts by trace id), at most q.Limit of them. It reads the encoded spans
// and decodes only the traces it returns, a chunk at a time outside the
// matching (see Each), so a large result does not hold up Export; a trace
// evicted meanwhile is left out.
func (s *Store) Search(q Query) []*Trace {
	m := newMatcher(q)
	var hits []hit
	s.mu.RLock()
	if q.Service != "" && s.services[q.Service] == nil {
		s.mu.RUnlock()
		return []*Trace{}
	}
	for _, ref := range s.order[s.head:] {
		e := &s.entries[ref.slot]
		if e.gen != ref.gen || !m.matchTrace(s, e) {
			continue
		}
		key := e.sum.firstStart
		if q.Longest {
			key = e.sum.end - e.sum.firstStart
		}
		hits = append(hits, hit{key, e.id, ref})
		if q.Limit > 0 && len(hits) >= 4*q.Limit+64 {
			hits = sortHits(hits, q.Limit) // keep the best so far
		}
	}
	s.mu.RUnlock()
	out := make([]*Trace, 0, len(hits))
	s.decodeHits(sortHits(hits, q.Limit), func(t *Trace) bool { out = append(out, t); return true })
	return out
}

// eachChunk is how many traces Each and Search decode per hold of the
// store's lock.
const eachChunk = 256

// Each calls fn with every trace held, newest first (by trace start), until
// fn returns false. It lists the traces when it is called and decodes them
// a chunk at a time, releasing the store's lock in between, so fn may take
// its time and Export goes on; a trace evicted meanwhile is skipped.
func (s *Store) Each(fn func(*Trace) bool) {
	s.mu.RLock()
	hits := make([]hit, 0, s.index.len())
	for _, ref := range s.order[s.head:] {
		if e := &s.entries[ref.slot]; e.gen == ref.gen {
			hits = append(hits, hit{e.sum.firstStart, e.id, ref})
		}
	}
	s.mu.RUnlock()
	s.decodeHits(sortHits(hits, 0), fn)
}

// decodeHits decodes the traces of hits still held, in order, a chunk per
// hold of the read lock, and calls fn with each until it returns false.
func (s *Store) decodeHits(hits []hit, fn func(*Trace) bool) {
	chunk := make([]*Trace, 0, min(len(hits), eachChunk))
	for len(hits) > 0 {
		n := min(len(hits), eachChunk)
		chunk = chunk[:0]
		s.mu.RLock()
		for _, h := range hits[:n] {
			if s.entries[h.ref.slot].gen == h.ref.gen {
				chunk = append(chunk, s.decodeTrace(h.ref.slot))
			}
		}
		s.mu.RUnlock()
		hits = hits[n:]
		for _, t := range chunk {
			if !fn(t) {
				return
			}
		}
	}
}

// hit is a selected trace with its sort key (its start, Unix ns, or its
// duration).
type hit struct {
	key int64
	id  span.TraceID
	ref slotRef
}

// sortHits sorts hits by key, largest first (newest, or longest), equal
// keys by trace id, and returns at most limit (≤ 0: all) of them.
func sortHits(hits []hit, limit int) []hit {
	slices.SortFunc(hits, func(a, b hit) int {
		if c := cmp.Compare(b.key, a.key); c != 0 {
			return c
		}
		return slices.Compare(a.id[:], b.id[:])
	})
	if limit > 0 && len(hits) > limit {
		hits = hits[:limit]
	}
	return hits
}

// Oldest returns the earliest span start of the traces held, and false
// when the store is empty: the web UI says a window reaching further back
// sees only what the store kept. It reads the traces' summaries, decoding
// none.
func (s *Store) Oldest() (time.Time, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var oldest int64
	found := false
	for _, ref := range s.order[s.head:] {
		e := &s.entries[ref.slot]
		if e.gen != ref.gen {
			continue
		}
		if !found || e.sum.firstStart < oldest {
			oldest, found = e.sum.firstStart, true
		}
	}
	if !found {
		return time.Time{}, false
	}
	return time.Unix(0, oldest), true
}
