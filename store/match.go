package store

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/span"
)

// Tag keys a query matches against what the span's fields say rather than
// against its attributes; the HTTP API writes them as tags.
const (
	TagError      = "error"
	TagSpanKind   = "span.kind"
	TagStatusCode = string(semconv.OTelStatusCodeKey)
)

// derivedKeys are the keys span.Span.Attributes derives from span fields
// (thread, goroutine, code location, …) rather than copying from Attrs.
// They are learnt from the span package itself, from a span with every
// such field set, so the set follows it. Matching a tag on any other key
// reads only Attrs, which allocates nothing.
var derivedKeys = func() map[string]bool {
	full := &span.Span{
		Function: "f", File: "f.go", Line: 1, Kind: span.KindInternal,
		GoID: 1, ParentGoID: 2, StartTID: 1, EndTID: 2, Unwound: true, Orphan: true,
		Time: &span.TimeSplit{Full: true}, // latscope.time.*: decoded when searched
	}
	keys := make(map[string]bool)
	for _, a := range full.Attributes() {
		keys[a.Key] = true
	}
	return keys
}()

// derivedReaders read a derived attribute straight from the span's fields,
// as span.Span.Attributes would write it, without building the whole list
// (which allocates: a search of 100k traces for code.function.name took
// 257 ms through Attributes, 31 ms with these; BenchmarkSearch). A derived key without
// a reader falls back to Attributes; TestDerivedReaders holds each reader
// to what Attributes returns.
var derivedReaders = map[string]func(*span.Span) (any, bool){
	string(semconv.ThreadIDKey): func(s *span.Span) (any, bool) { return int64(s.EndTID), true },
	span.KeyGoroutineID:         func(s *span.Span) (any, bool) { return int64(s.GoID), true },
	span.KeyStartThreadID:       func(s *span.Span) (any, bool) { return int64(s.StartTID), s.StartTID != s.EndTID },
	span.KeyParentGoroutineID: func(s *span.Span) (any, bool) {
		return int64(s.ParentGoID), s.ParentGoID != 0 && s.ParentGoID != s.GoID
	},
	span.KeyUnwound:                     func(s *span.Span) (any, bool) { return true, s.Unwound },
	span.KeyParentMissing:               func(s *span.Span) (any, bool) { return true, s.Orphan },
	string(semconv.CodeFunctionNameKey): func(s *span.Span) (any, bool) { return s.Function, s.Function != "" },
	string(semconv.CodeFilePathKey): func(s *span.Span) (any, bool) {
		return s.File, s.File != "" && s.Kind == span.KindInternal
	},
	string(semconv.CodeLineNumberKey): func(s *span.Span) (any, bool) {
		return int64(s.Line), s.File != "" && s.Kind == span.KindInternal
	},
}

// matcher is a Query prepared for matching many spans.
type matcher struct {
	q                Query
	tags             []tagMatch
	start, end       int64 // q.Start and q.End in Unix ns
	hasStart, hasEnd bool
	scratch          span.Span // the fields of the span being matched
}

// tagMatch is one queried tag with its value parsed once into every type
// an attribute may hold.
type tagMatch struct {
	key, value string
	i          int64
	f          float64
	b          bool
	iok, fok   bool
	bok        bool
	derived    bool                         // the key may come from span fields
	read       func(*span.Span) (any, bool) // reads it, if derived and known
}

func newMatcher(q Query) *matcher {
	m := &matcher{q: q, hasStart: !q.Start.IsZero(), hasEnd: !q.End.IsZero()}
	if m.hasStart {
		m.start = q.Start.UnixNano()
	}
	if m.hasEnd {
		m.end = q.End.UnixNano()
	}
	for k, v := range q.Tags {
		t := tagMatch{key: k, value: v, derived: derivedKeys[k], read: derivedReaders[k]}
		t.i, t.iok = parseInt(v)
		f, err := strconv.ParseFloat(v, 64)
		t.f, t.fok = f, err == nil
		b, err := strconv.ParseBool(v)
		t.b, t.bok = b, err == nil
		m.tags = append(m.tags, t)
	}
	// Cheap keys first: a span fails on its first mismatch.
	slices.SortFunc(m.tags, func(a, b tagMatch) int {
		switch {
		case a.derived == b.derived:
			return 0
		case b.derived:
			return -1
		}
		return 1
	})
	return m
}

func parseInt(v string) (int64, bool) {
	i, err := strconv.ParseInt(v, 10, 64)
	return i, err == nil
}

// matchTrace reports whether e has a span that matches every span filter,
// and its trace matches the trace filters. s.mu is held.
func (m *matcher) matchTrace(s *Store, e *entry) bool {
	q := &m.q
	sum := &e.sum
	if (q.Error && !sum.hasError) || (q.NoError && sum.hasError) {
		return false
	}
	if q.MinDuration > 0 && sum.maxDuration < int64(q.MinDuration) {
		return false
	}
	if (m.hasStart && sum.lastStart < m.start) || (m.hasEnd && sum.firstStart > m.end) {
		return false
	}
	found := false
	records(s.records.bytesOf(e.recs), func(r record) bool {
		start := r.start()
		if (m.hasStart && start < m.start) || (m.hasEnd && start > m.end) {
			return true
		}
		found = m.matchSpan(s, e.id, r)
		return !found
	})
	return found
}

func (m *matcher) matchSpan(s *Store, id span.TraceID, r record) bool {
	q := &m.q
	op := &s.ops[r.op()]
	if q.Service != "" && op.service != q.Service {
		return false
	}
	if q.Operation != "" && op.name != q.Operation {
		return false
	}
	if q.MinDuration > 0 || q.MaxDuration > 0 {
		d := time.Duration(r.duration())
		if d < q.MinDuration || (q.MaxDuration > 0 && d > q.MaxDuration) {
			return false
		}
	}
	if len(m.tags) == 0 {
		return true
	}
	// Derived keys read the span's fields: decode them once per span.
	var sp *span.Span
	for i := range m.tags {
		t := &m.tags[i]
		if t.derived && sp == nil {
			sp = &m.scratch
			s.fields(r, id, sp, false)
		}
		if !m.matchTag(s, id, r, op, sp, t) {
			return false
		}
	}
	return true
}

// matchTag matches one tag against the span r encodes; sp holds its
// decoded fields (no Attrs) when t is derived.
func (m *matcher) matchTag(s *Store, id span.TraceID, r record, op *opEntry, sp *span.Span, t *tagMatch) bool {
	switch t.key {
	case TagError:
		return t.bok && (span.StatusCode(r.status()) == span.StatusError) == t.b
	case TagSpanKind:
		return KindName(op.kind) == t.value
	case TagStatusCode:
		return StatusName(span.StatusCode(r.status())) == t.value
	}
	if p := s.procs[r.proc()].p; p != nil && matchProcess(p, t) {
		return true
	}
	if s.matchEncodedAttrs(r, t) {
		return true
	}
	switch {
	case !t.derived:
		return false
	case t.read != nil:
		v, ok := t.read(sp)
		return ok && matchValue(v, t)
	}
	return matchAttrs(s.decode(r, id).Attributes(), t)
}

// matchEncodedAttrs matches t against r's attributes without decoding
// them into values.
func (s *Store) matchEncodedAttrs(r record, t *tagMatch) bool {
	rd := s.skipFields(r)
	for n := rd.uvarint(); n > 0; n-- {
		key := rd.ref()
		kind, str, i, f := rd.value()
		if key != t.key {
			continue
		}
		switch kind {
		case valString:
			if str == t.value {
				return true
			}
		case valInt:
			if t.iok && i == t.i {
				return true
			}
		case valFloat:
			if t.fok && f == t.f {
				return true
			}
		case valTrue, valFalse:
			if t.bok && (kind == valTrue) == t.b {
				return true
			}
		}
	}
	return false
}

// skipFields returns a reader of r positioned at its attribute count.
func (s *Store) skipFields(r record) reader {
	rd := reader{b: r, s: s, off: hdrSize}
	for range 7 { // GoID … Line
		rd.uvarint()
	}
	rd.ref() // Function
	rd.ref() // File
	rd.str() // StatusMessage
	return rd
}

// matchProcess matches the process-level values a query may name, its
// extra resource attributes included (k8s.namespace.name=shop,
// k8s.deployment.name=catalog); the host name is left out (every process
// here shares it).
func matchProcess(p *span.Process, t *tagMatch) bool {
	switch t.key {
	case string(semconv.ServiceNameKey):
		return p.ServiceName == t.value
	case string(semconv.ProcessPIDKey):
		return t.iok && int64(p.PID) == t.i
	case string(semconv.ProcessExecutableNameKey):
		return p.Executable == t.value
	case string(semconv.ProcessRuntimeNameKey):
		return t.value == "go"
	case string(semconv.ProcessRuntimeVersionKey):
		return p.GoVersion == t.value
	}
	return matchAttrs(p.Resource, t)
}

func matchAttrs(attrs []span.Attr, t *tagMatch) bool {
	for _, a := range attrs {
		if a.Key == t.key && matchValue(a.Value, t) {
			return true
		}
	}
	return false
}

// matchValue compares an attribute value with a queried string: numbers
// and booleans by value ("500" matches int64 500, "1.5" float64 1.5).
func matchValue(v any, t *tagMatch) bool {
	switch v := v.(type) {
	case string:
		return v == t.value
	case int64:
		return t.iok && v == t.i
	case float64:
		return t.fok && v == t.f
	case bool:
		return t.bok && v == t.b
	case int:
		return t.iok && int64(v) == t.i
	case nil:
		return false
	}
	return fmt.Sprint(v) == t.value
}
