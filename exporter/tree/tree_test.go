package tree

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/span"
)

func TestWriteTree(t *testing.T) {
	t0 := time.Unix(100, 0)
	mk := func(id, parent byte, name string, g uint64, start, dur time.Duration) *span.Span {
		s := &span.Span{SpanID: span.SpanID{id}, Name: name, GoID: g, Start: t0.Add(start), End: t0.Add(start + dur), File: "/x/main.go", Line: int(id)}
		if parent != 0 {
			s.ParentID = span.SpanID{parent}
		}
		return s
	}
	spans := []*span.Span{
		mk(3, 1, "main.second", 1, 5*time.Millisecond, time.Millisecond),
		mk(2, 1, "main.first", 1, time.Millisecond, 1500*time.Microsecond),
		mk(4, 2, "main.worker", 9, 2*time.Millisecond, 20*time.Microsecond),
		mk(1, 0, "main.root", 1, 0, 10*time.Millisecond),
	}
	spans[2].Unwound = true
	var buf bytes.Buffer
	Write(&buf, spans)
	want := `trace 00000000000000000000000000000000  pid 0  4 spans
  main.root  10.00ms  g1  main.go:1
    main.first  1.50ms  g1  main.go:2
      go main.worker  20.0µs  g9  main.go:4  [unwound by panic]
    main.second  1.00ms  g1  main.go:3
`
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}

// A child in another process is a remote call, not a go statement.
func TestWriteTreeAcrossProcesses(t *testing.T) {
	t0 := time.Unix(100, 0)
	a, b := &span.Process{PID: 10}, &span.Process{PID: 20}
	client := &span.Span{SpanID: span.SpanID{1}, Name: "GET", GoID: 5, Process: a, Start: t0, End: t0.Add(time.Millisecond)}
	server := &span.Span{SpanID: span.SpanID{2}, ParentID: span.SpanID{1}, Name: "GET /x", GoID: 7, Process: b, Start: t0, End: t0.Add(time.Millisecond)}
	var buf bytes.Buffer
	Write(&buf, []*span.Span{client, server})
	if out := buf.String(); !strings.Contains(out, "\n    GET /x  ") {
		t.Errorf("the remote server span is marked as a goroutine:\n%s", out)
	}
}

func TestPrinterWaitsForLateSpans(t *testing.T) {
	var buf bytes.Buffer
	p := New(&buf, time.Hour)
	root := &span.Span{TraceID: span.TraceID{1}, SpanID: span.SpanID{1}, Name: "main.root"}
	late := &span.Span{TraceID: span.TraceID{1}, SpanID: span.SpanID{2}, ParentID: span.SpanID{1}, Name: "main.late"}
	p.Export([]*span.Span{root})
	p.Export([]*span.Span{late})
	if buf.Len() != 0 {
		t.Fatal("printed before the trace was quiet")
	}
	p.Close()
	if out := buf.String(); strings.Count(out, "trace ") != 1 || !strings.Contains(out, "    main.late") {
		t.Errorf("late span not printed in its trace:\n%s", out)
	}
}
