// Package span is latscope's span model: what the agent rebuilds from
// kernel events and what every exporter writes. It is deliberately close to
// OpenTelemetry's span data, plus the Go facts latscope keeps (goroutine,
// thread, CPU) for latency attribution.
package span

import (
	"encoding/hex"
	"time"
)

// TraceID and SpanID follow W3C Trace Context sizes.
type (
	TraceID [16]byte
	SpanID  [8]byte
)

func (t TraceID) String() string { return hex.EncodeToString(t[:]) }
func (s SpanID) String() string  { return hex.EncodeToString(s[:]) }

// IsZero reports whether s is unset (no parent).
func (s SpanID) IsZero() bool { return s == SpanID{} }

// Kind is the OpenTelemetry span kind.
type Kind int

const (
	KindUnspecified Kind = iota
	KindInternal
	KindServer
	KindClient
	KindProducer
	KindConsumer
)

// StatusCode is the OpenTelemetry status code.
type StatusCode int

const (
	StatusUnset StatusCode = iota
	StatusOK
	StatusError
)

// Process identifies the traced process a span comes from; it becomes the
// OTLP resource.
type Process struct {
	PID         int
	ServiceName string
	Executable  string // executable base name
	GoVersion   string
	// Modules are the binary's dependencies: module path → version.
	Modules map[string]string
	// Resource holds more resource attributes: where the process runs
	// (Kubernetes: k8s.namespace.name, k8s.pod.name, container.id, …),
	// under OpenTelemetry semantic-convention keys.
	Resource []Attr
}

// Lookup returns the value of resource attribute key, and whether p has it.
func (p *Process) Lookup(key string) (any, bool) {
	for _, a := range p.Resource {
		if a.Key == key {
			return a.Value, true
		}
	}
	return nil, false
}

// Span is one traced call.
type Span struct {
	TraceID  TraceID
	SpanID   SpanID
	ParentID SpanID // zero for a root
	// RemoteParent: ParentID names a span in another process (the trace
	// context arrived with the request).
	RemoteParent bool
	Name         string
	// Function is the traced Go function ("net/http.serverHandler.ServeHTTP");
	// Name starts as it, and a library's decoder renames the span.
	Function string
	Kind     Kind
	Start    time.Time
	End      time.Time
	Status   StatusCode
	// StatusMessage explains an error status.
	StatusMessage string

	Process *Process

	// Go facts.
	GoID       uint64 // goroutine the call ran on
	ParentGoID uint64 // goroutine of the parent span (differs across a go statement)
	StartTID   uint32 // thread at entry
	EndTID     uint32 // thread at return
	CPU        uint32 // CPU at return
	Depth      int    // traced frames above it on its goroutine
	Unwound    bool   // closed by an outer return: a panic or Goexit skipped its own
	Orphan     bool   // its parent span never arrived (filtered or lost)

	// Code location of the function.
	File string
	Line int

	// Time says where the span's goroutine spent its wall time (latency
	// attribution); nil when nothing was attributed.
	Time *TimeSplit

	Attrs []Attr
}

// Duration is End - Start.
func (s *Span) Duration() time.Duration { return s.End.Sub(s.Start) }

// Clone returns a copy of s that shares nothing s's producer may reuse:
// its own Attrs. (Attribute values, Process and Time are never changed
// once a span is handed over: they are shared.)
func (s *Span) Clone() *Span {
	c := *s
	c.Attrs = append([]Attr(nil), s.Attrs...)
	return &c
}

// Attr is a span attribute; Value is a string, int64, float64 or bool.
type Attr struct {
	Key   string
	Value any
}

// Exporter receives finished spans. Spans of one trace may arrive in
// several batches (a goroutine can outlive the call that started it).
// Export may keep the spans but not the slice: the caller reuses it. A
// caller that also reuses the spans' memory (the node agent's builder)
// passes them only to exporters that copy what they keep (Clone).
type Exporter interface {
	Export(spans []*Span) error
	Close() error
}
