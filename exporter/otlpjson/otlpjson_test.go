package otlpjson

import (
	"bufio"
	"bytes"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/latscope/latscope/span"
)

// The output must parse with the OpenTelemetry Collector's own OTLP/JSON
// decoder (what its otlpjsonfile receiver uses) and keep every field.
func TestCollectorReadsOutput(t *testing.T) {
	proc := &span.Process{PID: 42, ServiceName: "checkout", Executable: "checkout", GoVersion: "go1.26.8"}
	start := time.Unix(1700000000, 123456789)
	root := &span.Span{
		TraceID: span.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:  span.SpanID{1, 1, 1, 1, 1, 1, 1, 1},
		Name:    "main.handle", Kind: span.KindInternal, Start: start, End: start.Add(3 * time.Millisecond),
		Process: proc, GoID: 1, EndTID: 42, StartTID: 42, File: "/src/main.go", Line: 10,
	}
	child := &span.Span{
		TraceID: root.TraceID, SpanID: span.SpanID{2, 2, 2, 2, 2, 2, 2, 2}, ParentID: root.SpanID,
		Name: "main.bottom", Kind: span.KindInternal, Start: start.Add(time.Millisecond), End: start.Add(2 * time.Millisecond),
		Process: proc, GoID: 7, ParentGoID: 1, Unwound: true, Status: span.StatusError, StatusMessage: "unwound",
	}
	var buf bytes.Buffer
	w := New(&buf)
	if err := w.Export([]*span.Span{root, child}); err != nil {
		t.Fatal(err)
	}
	if err := w.Export([]*span.Span{root}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&buf)
	sc.Buffer(nil, 1<<20)
	var lines int
	var un ptrace.JSONUnmarshaler
	for sc.Scan() {
		lines++
		td, err := un.UnmarshalTraces(sc.Bytes())
		if err != nil {
			t.Fatalf("collector cannot read line %d: %v\n%s", lines, err, sc.Bytes())
		}
		if lines > 1 {
			continue
		}
		rs := td.ResourceSpans().At(0)
		if v, _ := rs.Resource().Attributes().Get("service.name"); v.Str() != "checkout" {
			t.Errorf("service.name %q", v.Str())
		}
		if v, _ := rs.Resource().Attributes().Get("process.pid"); v.Int() != 42 {
			t.Errorf("process.pid %d", v.Int())
		}
		ss := rs.ScopeSpans().At(0)
		if ss.Scope().Name() != span.Scope.Name {
			t.Errorf("scope %q", ss.Scope().Name())
		}
		if n := ss.Spans().Len(); n != 2 {
			t.Fatalf("%d spans", n)
		}
		r, c := ss.Spans().At(0), ss.Spans().At(1)
		if r.TraceID() != [16]byte(root.TraceID) || r.SpanID() != [8]byte(root.SpanID) || !r.ParentSpanID().IsEmpty() {
			t.Errorf("root ids %s %s %s", r.TraceID(), r.SpanID(), r.ParentSpanID())
		}
		if c.ParentSpanID() != [8]byte(root.SpanID) {
			t.Errorf("child parent %s", c.ParentSpanID())
		}
		if !r.StartTimestamp().AsTime().Equal(start) || !r.EndTimestamp().AsTime().Equal(root.End) {
			t.Errorf("times %v %v", r.StartTimestamp().AsTime(), r.EndTimestamp().AsTime())
		}
		if r.Kind() != ptrace.SpanKindInternal || r.Name() != "main.handle" {
			t.Errorf("kind %v name %q", r.Kind(), r.Name())
		}
		if v, _ := r.Attributes().Get("code.line.number"); v.Int() != 10 {
			t.Errorf("code.line.number %v", v.AsRaw())
		}
		if v, _ := c.Attributes().Get(span.KeyGoroutineID); v.Int() != 7 {
			t.Errorf("goroutine id %v", v.AsRaw())
		}
		if v, _ := c.Attributes().Get(span.KeyUnwound); !v.Bool() {
			t.Error("unwound attribute missing")
		}
		if c.Status().Code() != ptrace.StatusCodeError || c.Status().Message() != "unwound" {
			t.Errorf("status %v %q", c.Status().Code(), c.Status().Message())
		}
	}
	if lines != 2 {
		t.Errorf("%d lines, want one request per Export", lines)
	}
}
