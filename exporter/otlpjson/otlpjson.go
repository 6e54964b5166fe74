// Package otlpjson writes spans as OTLP/JSON: one ExportTraceServiceRequest
// per line, the encoding the OpenTelemetry Collector's file exporter
// writes and its otlpjsonfile receiver reads.
package otlpjson

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/latscope/latscope/span"
)

// Writer is a span.Exporter writing to an io.Writer.
type Writer struct {
	mu sync.Mutex
	bw *bufio.Writer
	c  io.Closer
}

// New returns a Writer on w; Close closes w if it is an io.Closer.
func New(w io.Writer) *Writer {
	c, _ := w.(io.Closer)
	return &Writer{bw: bufio.NewWriterSize(w, 1<<16), c: c}
}

// Export writes spans as one request, grouped by process.
func (w *Writer) Export(spans []*span.Span) error {
	if len(spans) == 0 {
		return nil
	}
	b, err := json.Marshal(Request(spans))
	if err != nil {
		return fmt.Errorf("encode OTLP/JSON: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bw.Write(b)
	return w.bw.WriteByte('\n')
}

// Close flushes and closes the destination.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.bw.Flush()
	if w.c != nil {
		if cerr := w.c.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// The OTLP/JSON shapes (opentelemetry-proto's JSON mapping: ids in hex,
// 64-bit integers as strings, enums as numbers).
type (
	request struct {
		ResourceSpans []resourceSpans `json:"resourceSpans"`
	}
	resourceSpans struct {
		Resource   resource     `json:"resource"`
		ScopeSpans []scopeSpans `json:"scopeSpans"`
	}
	resource struct {
		Attributes []keyValue `json:"attributes"`
	}
	scopeSpans struct {
		Scope scope      `json:"scope"`
		Spans []jsonSpan `json:"spans"`
	}
	scope struct {
		Name    string `json:"name"`
		Version string `json:"version,omitempty"`
	}
	jsonSpan struct {
		TraceID           string     `json:"traceId"`
		SpanID            string     `json:"spanId"`
		ParentSpanID      string     `json:"parentSpanId,omitempty"`
		Name              string     `json:"name"`
		Kind              int        `json:"kind"`
		StartTimeUnixNano string     `json:"startTimeUnixNano"`
		EndTimeUnixNano   string     `json:"endTimeUnixNano"`
		Attributes        []keyValue `json:"attributes,omitempty"`
		Status            status     `json:"status"`
	}
	status struct {
		Message string `json:"message,omitempty"`
		Code    int    `json:"code,omitempty"`
	}
	keyValue struct {
		Key   string   `json:"key"`
		Value anyValue `json:"value"`
	}
	anyValue struct {
		StringValue *string  `json:"stringValue,omitempty"`
		IntValue    *string  `json:"intValue,omitempty"`
		DoubleValue *float64 `json:"doubleValue,omitempty"`
		BoolValue   *bool    `json:"boolValue,omitempty"`
	}
)

// Request builds the ExportTraceServiceRequest for spans, one resource
// per process, in order of first appearance.
func Request(spans []*span.Span) any {
	var req request
	index := make(map[*span.Process]int)
	for _, s := range spans {
		i, ok := index[s.Process]
		if !ok {
			i = len(req.ResourceSpans)
			index[s.Process] = i
			rs := resourceSpans{ScopeSpans: []scopeSpans{{Scope: scope{span.Scope.Name, span.Scope.Version}}}}
			if s.Process != nil {
				rs.Resource.Attributes = attrs(s.Process.Attributes())
			}
			req.ResourceSpans = append(req.ResourceSpans, rs)
		}
		ss := &req.ResourceSpans[i].ScopeSpans[0]
		js := jsonSpan{
			TraceID:           s.TraceID.String(),
			SpanID:            s.SpanID.String(),
			Name:              s.Name,
			Kind:              int(s.Kind),
			StartTimeUnixNano: strconv.FormatInt(s.Start.UnixNano(), 10),
			EndTimeUnixNano:   strconv.FormatInt(s.End.UnixNano(), 10),
			Attributes:        attrs(s.Attributes()),
			Status:            status{Code: int(s.Status), Message: s.StatusMessage},
		}
		if !s.ParentID.IsZero() {
			js.ParentSpanID = s.ParentID.String()
		}
		ss.Spans = append(ss.Spans, js)
	}
	return req
}

func attrs(in []span.Attr) []keyValue {
	out := make([]keyValue, 0, len(in))
	for _, a := range in {
		var v anyValue
		switch x := a.Value.(type) {
		case string:
			v.StringValue = &x
		case int64:
			s := strconv.FormatInt(x, 10)
			v.IntValue = &s
		case int:
			s := strconv.Itoa(x)
			v.IntValue = &s
		case float64:
			v.DoubleValue = &x
		case bool:
			v.BoolValue = &x
		default:
			s := fmt.Sprint(x)
			v.StringValue = &s
		}
		out = append(out, keyValue{Key: a.Key, Value: v})
	}
	return out
}
