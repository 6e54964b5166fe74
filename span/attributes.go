package span

import (
	"os"
	"runtime/debug"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// Attribute keys latscope defines where OpenTelemetry has none.
const (
	KeyGoroutineID       = "latscope.goroutine.id"
	KeyParentGoroutineID = "latscope.goroutine.parent_id"
	KeyUnwound           = "latscope.unwound"
	KeyParentMissing     = "latscope.parent_missing"
	KeyStartThreadID     = "latscope.thread.start_id"
)

// Scope names latscope as the instrumentation that produced the spans.
var Scope = struct{ Name, Version string }{"github.com/latscope/latscope", moduleVersion()}

func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Attributes returns the span's exported attributes: its Go facts and,
// for a user function's span, its code location, under OpenTelemetry
// semantic-convention keys where they exist, then Attrs. Every attribute
// costs the agent and the trace store per span; facts only latscope's own
// analysis needs (the CPU, the depth) stay in the span model.
func (s *Span) Attributes() []Attr { return s.AppendAttributes(nil) }

// AppendAttributes appends the span's exported attributes (Attributes)
// to a and returns the extended slice, for a caller that reuses a.
func (s *Span) AppendAttributes(a []Attr) []Attr {
	a = append(a,
		Attr{string(semconv.ThreadIDKey), int64(s.EndTID)},
		Attr{KeyGoroutineID, int64(s.GoID)},
	)
	if s.Function != "" {
		a = append(a, Attr{string(semconv.CodeFunctionNameKey), s.Function})
	}
	// A library span's code location is the library's (net/http's
	// server.go, say): the function name says as much.
	if s.File != "" && s.Kind == KindInternal {
		a = append(a, Attr{string(semconv.CodeFilePathKey), s.File}, Attr{string(semconv.CodeLineNumberKey), int64(s.Line)})
	}
	if s.StartTID != s.EndTID {
		a = append(a, Attr{KeyStartThreadID, int64(s.StartTID)})
	}
	if s.ParentGoID != 0 && s.ParentGoID != s.GoID {
		a = append(a, Attr{KeyParentGoroutineID, int64(s.ParentGoID)})
	}
	if s.Unwound {
		a = append(a, Attr{KeyUnwound, true})
	}
	if s.Orphan {
		a = append(a, Attr{KeyParentMissing, true})
	}
	if s.Time != nil {
		a = s.Time.appendAttributes(a)
	}
	return append(a, s.Attrs...)
}

// Attributes returns the process's resource attributes.
func (p *Process) Attributes() []Attr {
	host, _ := os.Hostname()
	return append([]Attr{
		{string(semconv.ServiceNameKey), p.ServiceName},
		{string(semconv.ProcessPIDKey), int64(p.PID)},
		{string(semconv.ProcessExecutableNameKey), p.Executable},
		{string(semconv.ProcessRuntimeNameKey), "go"},
		{string(semconv.ProcessRuntimeVersionKey), p.GoVersion},
		{string(semconv.HostNameKey), host},
	}, p.Resource...)
}
