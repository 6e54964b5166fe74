package api

import (
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
)

// The JSON model of Jaeger's HTTP query API (jaeger/internal/uimodel and
// the query service's structuredResponse), which Jaeger's UI and Grafana's
// Jaeger data source read. Field names and shapes follow Jaeger's exactly.

// response is the envelope of every Jaeger API answer.
type response struct {
	Data   any        `json:"data"`
	Total  int        `json:"total"`
	Limit  int        `json:"limit"`
	Offset int        `json:"offset"`
	Errors []apiError `json:"errors"`
}

type apiError struct {
	Code int    `json:"code,omitempty"`
	Msg  string `json:"msg"`
}

type jaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []jaegerSpan             `json:"spans"`
	Processes map[string]jaegerProcess `json:"processes"`
	Warnings  []string                 `json:"warnings"`
}

type jaegerSpan struct {
	TraceID       string            `json:"traceID"`
	SpanID        string            `json:"spanID"`
	Flags         uint32            `json:"flags"`
	OperationName string            `json:"operationName"`
	References    []jaegerReference `json:"references"`
	StartTime     int64             `json:"startTime"` // µs since the Unix epoch
	Duration      int64             `json:"duration"`  // µs
	Tags          []jaegerKeyValue  `json:"tags"`
	Logs          []jaegerLog       `json:"logs"`
	ProcessID     string            `json:"processID"`
	Warnings      []string          `json:"warnings"`
}

type jaegerReference struct {
	RefType string `json:"refType"` // "CHILD_OF" or "FOLLOWS_FROM"
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

type jaegerProcess struct {
	ServiceName string           `json:"serviceName"`
	Tags        []jaegerKeyValue `json:"tags"`
}

// jaegerLog is a span event; latscope records none, but the field is
// always present ([]).
type jaegerLog struct {
	Timestamp int64            `json:"timestamp"`
	Fields    []jaegerKeyValue `json:"fields"`
}

// jaegerKeyValue is a typed tag: Type is "string", "bool", "int64" or
// "float64" and Value is the JSON value of that type.
type jaegerKeyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

type jaegerOperation struct {
	Name     string `json:"name"`
	SpanKind string `json:"spanKind"`
}

// sampledFlag is W3C's sampled bit: every span latscope stores was kept.
const sampledFlag = 1

// maxSafeInteger is the largest integer a JavaScript number holds exactly;
// Jaeger writes int64 tags beyond it as strings so the UI shows them whole.
const maxSafeInteger = 1<<53 - 1

// formatTraceID writes a trace id as Jaeger does: 16 hex digits when the
// high 64 bits are zero, else 32.
func formatTraceID(id span.TraceID) string {
	if [8]byte(id[:8]) == ([8]byte{}) {
		return hex.EncodeToString(id[8:])
	}
	return hex.EncodeToString(id[:])
}

// FormatTraceID writes a trace id as the API does: 16 hex digits when
// its high half is zero, else 32.
func FormatTraceID(id span.TraceID) string { return formatTraceID(id) }

// ParseTraceID reads a trace id as the API takes it: 1 to 32 hex
// digits, left-padded with zeros.
func ParseTraceID(s string) (span.TraceID, error) { return parseTraceID(s) }

// parseTraceID reads 1 to 32 hex digits, left-padded with zeros.
func parseTraceID(s string) (span.TraceID, error) {
	var id span.TraceID
	if len(s) == 0 || len(s) > 32 {
		return id, fmt.Errorf("trace ID %q: want 1 to 32 hex digits", s)
	}
	b, err := hex.DecodeString(strings.Repeat("0", 32-len(s)) + s)
	if err != nil {
		return id, fmt.Errorf("trace ID %q: want 1 to 32 hex digits", s)
	}
	return span.TraceID(b), nil
}

// jaegerTraceOf converts a stored trace. Each distinct *span.Process
// becomes a process entry, "p1", "p2", … in order of first appearance.
func jaegerTraceOf(t *store.Trace) jaegerTrace {
	traceID := formatTraceID(t.ID)
	out := jaegerTrace{
		TraceID:   traceID,
		Spans:     make([]jaegerSpan, 0, len(t.Spans)),
		Processes: make(map[string]jaegerProcess),
	}
	processIDs := make(map[*span.Process]string)
	for _, sp := range t.Spans {
		pid, ok := processIDs[sp.Process]
		if !ok {
			pid = "p" + strconv.Itoa(len(processIDs)+1)
			processIDs[sp.Process] = pid
			out.Processes[pid] = jaegerProcessOf(sp.Process)
		}
		out.Spans = append(out.Spans, jaegerSpanOf(traceID, sp, pid))
	}
	return out
}

func jaegerSpanOf(traceID string, sp *span.Span, processID string) jaegerSpan {
	js := jaegerSpan{
		TraceID:       traceID,
		SpanID:        sp.SpanID.String(),
		Flags:         sampledFlag,
		OperationName: sp.Name,
		References:    []jaegerReference{},
		StartTime:     sp.Start.UnixMicro(),
		Duration:      max(0, sp.Duration().Microseconds()),
		Tags:          spanTags(sp),
		Logs:          []jaegerLog{},
		ProcessID:     processID,
	}
	// Also for a remote parent: Jaeger joins the two processes' spans.
	if !sp.ParentID.IsZero() {
		js.References = append(js.References, jaegerReference{RefType: "CHILD_OF", TraceID: traceID, SpanID: sp.ParentID.String()})
	}
	return js
}

// spanTags are the span's attributes, then what Jaeger derives from an
// OpenTelemetry span: span.kind, otel.status_code, otel.status_description,
// error, otel.scope.name and otel.scope.version.
func spanTags(sp *span.Span) []jaegerKeyValue {
	attrs := sp.Attributes()
	tags := make([]jaegerKeyValue, 0, len(attrs)+6)
	for _, a := range attrs {
		tags = append(tags, keyValue(a.Key, a.Value))
	}
	if k := store.KindName(sp.Kind); k != "" {
		tags = append(tags, keyValue(store.TagSpanKind, k))
	}
	if c := store.StatusName(sp.Status); c != "" {
		tags = append(tags, keyValue(store.TagStatusCode, c))
	}
	if sp.StatusMessage != "" {
		tags = append(tags, keyValue(string(semconv.OTelStatusDescriptionKey), sp.StatusMessage))
	}
	if sp.Status == span.StatusError {
		tags = append(tags, keyValue(store.TagError, true))
	}
	return append(tags,
		keyValue(string(semconv.OTelScopeNameKey), span.Scope.Name),
		keyValue(string(semconv.OTelScopeVersionKey), span.Scope.Version),
	)
}

// jaegerProcessOf writes the process's resource attributes but service.name
// (which is serviceName) and host.name. A nil process is an unnamed one.
func jaegerProcessOf(p *span.Process) jaegerProcess {
	if p == nil {
		return jaegerProcess{Tags: []jaegerKeyValue{}}
	}
	tags := []jaegerKeyValue{
		keyValue(string(semconv.ProcessPIDKey), int64(p.PID)),
	}
	if p.Executable != "" {
		tags = append(tags, keyValue(string(semconv.ProcessExecutableNameKey), p.Executable))
	}
	tags = append(tags, keyValue(string(semconv.ProcessRuntimeNameKey), "go"))
	if p.GoVersion != "" {
		tags = append(tags, keyValue(string(semconv.ProcessRuntimeVersionKey), p.GoVersion))
	}
	for _, a := range p.Resource {
		tags = append(tags, keyValue(a.Key, a.Value))
	}
	return jaegerProcess{ServiceName: p.ServiceName, Tags: tags}
}

// keyValue types an attribute value for Jaeger. Integers beyond what a
// JavaScript number holds exactly are written as strings (still typed
// int64), as Jaeger does; a float that JSON cannot hold (NaN, ±Inf) is
// written as a string tag.
func keyValue(key string, v any) jaegerKeyValue {
	switch v := v.(type) {
	case string:
		return jaegerKeyValue{key, "string", v}
	case bool:
		return jaegerKeyValue{key, "bool", v}
	case int64:
		return intKeyValue(key, v)
	case int:
		return intKeyValue(key, int64(v))
	case int32:
		return intKeyValue(key, int64(v))
	case uint32:
		return intKeyValue(key, int64(v))
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return jaegerKeyValue{key, "string", strconv.FormatFloat(v, 'g', -1, 64)}
		}
		return jaegerKeyValue{key, "float64", v}
	}
	return jaegerKeyValue{key, "string", fmt.Sprint(v)}
}

func intKeyValue(key string, v int64) jaegerKeyValue {
	if v > maxSafeInteger || v < -maxSafeInteger {
		return jaegerKeyValue{key, "int64", strconv.FormatInt(v, 10)}
	}
	return jaegerKeyValue{key, "int64", v}
}
