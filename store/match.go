package store

import (
	"fmt"
	"slices"
	"sort"
	"strconv"

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

// matchTrace reports whether t (summarised by sum) has a span that matches
// every span filter, and t matches the trace filters.
func (m *matcher) matchTrace(sum *summary, t *Trace) bool {
	q := &m.q
	if (q.Error && !sum.hasError) || (q.NoError && sum.hasError) {
		return false
	}
	if q.Service != "" {
		if _, ok := slices.BinarySearch(sum.services, q.Service); !ok {
			return false
		}
	}
	if q.MinDuration > 0 && sum.maxDuration < q.MinDuration {
		return false
	}
	if (m.hasStart && sum.lastStart < m.start) || (m.hasEnd && sum.firstStart > m.end) {
		return false
	}
	// Spans are sorted by start: keep those starting within [Start, End].
	spans := t.Spans
	if m.hasStart {
		spans = spans[sort.Search(len(spans), func(i int) bool { return spans[i].Start.UnixNano() >= m.start }):]
	}
	if m.hasEnd {
		spans = spans[:sort.Search(len(spans), func(i int) bool { return spans[i].Start.UnixNano() > m.end })]
	}
	for _, sp := range spans {
		if m.matchSpan(sp) {
			return true
		}
	}
	return false
}

func (m *matcher) matchSpan(sp *span.Span) bool {
	q := &m.q
	if q.Service != "" && serviceOf(sp) != q.Service {
		return false
	}
	if q.Operation != "" && sp.Name != q.Operation {
		return false
	}
	if q.MinDuration > 0 || q.MaxDuration > 0 {
		d := sp.Duration()
		if d < q.MinDuration || (q.MaxDuration > 0 && d > q.MaxDuration) {
			return false
		}
	}
	for i := range m.tags {
		if !matchTag(sp, &m.tags[i]) {
			return false
		}
	}
	return true
}

func matchTag(sp *span.Span, t *tagMatch) bool {
	switch t.key {
	case TagError:
		return t.bok && (sp.Status == span.StatusError) == t.b
	case TagSpanKind:
		return KindName(sp.Kind) == t.value
	case TagStatusCode:
		return StatusName(sp.Status) == t.value
	}
	if p := sp.Process; p != nil && matchProcess(p, t) {
		return true
	}
	if matchAttrs(sp.Attrs, t) {
		return true
	}
	switch {
	case !t.derived:
		return false
	case t.read != nil:
		v, ok := t.read(sp)
		return ok && matchValue(v, t)
	}
	return matchAttrs(sp.Attributes(), t)
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
