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
	for op := range s.operations {
		if op.service != service {
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
	e, ok := s.traces[id]
	if !ok {
		return nil, false
	}
	return e.trace, true
}

// Search returns the traces q selects, newest first (by trace start; equal
// starts by trace id), at most q.Limit of them.
func (s *Store) Search(q Query) []*Trace {
	m := newMatcher(q)
	var hits []hit
	s.mu.RLock()
	for _, e := range s.order[s.head:] {
		if !e.dead && m.matchTrace(&e.sum, e.trace) {
			key := e.sum.firstStart
			if q.Longest {
				key = e.trace.end.UnixNano() - e.sum.firstStart
			}
			hits = append(hits, hit{key, e.trace})
		}
	}
	s.mu.RUnlock()
	return newestFirst(hits, q.Limit)
}

// Each calls fn with every trace held, newest first (by trace start), until
// fn returns false. It walks a snapshot taken when it is called, without
// holding the store's lock, so fn may take its time and Export goes on.
func (s *Store) Each(fn func(*Trace) bool) {
	s.mu.RLock()
	hits := make([]hit, 0, len(s.traces))
	for _, e := range s.order[s.head:] {
		if !e.dead {
			hits = append(hits, hit{e.sum.firstStart, e.trace})
		}
	}
	s.mu.RUnlock()
	for _, t := range newestFirst(hits, 0) {
		if !fn(t) {
			return
		}
	}
}

// hit is a selected trace with its sort key (its start, Unix ns, or its
// duration), so sorting does not chase pointers.
type hit struct {
	key   int64
	trace *Trace
}

// newestFirst sorts hits by key, largest first (newest, or longest),
// equal keys by trace id, and returns at most limit (≤ 0: all) of their
// traces.
func newestFirst(hits []hit, limit int) []*Trace {
	slices.SortFunc(hits, func(a, b hit) int {
		if c := cmp.Compare(b.key, a.key); c != 0 {
			return c
		}
		return slices.Compare(a.trace.ID[:], b.trace.ID[:])
	})
	if limit > 0 && len(hits) > limit {
		hits = hits[:limit]
	}
	out := make([]*Trace, len(hits))
	for i, h := range hits {
		out[i] = h.trace
	}
	return out
}
