package jaegertest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Trace is one trace as Jaeger's HTTP query API returns it.
type Trace struct {
	TraceID string // 32 hex digits
	Spans   []Span
}

// Span is one stored span, its process folded in.
type Span struct {
	TraceID       string
	SpanID        string // 16 hex digits
	OperationName string
	References    []Reference
	StartTime     int64 // microseconds since the Unix epoch
	Duration      int64 // microseconds
	// Tags holds the span's attributes (plus what Jaeger derives, such as
	// span.kind and otel.scope.name) as string, bool, int64, float64 or,
	// for binary values, []byte.
	Tags        map[string]any
	ServiceName string         // the process's service.name
	ProcessTags map[string]any // the other resource attributes
}

// Reference links a span to another; RefType is "CHILD_OF" or "FOLLOWS_FROM".
type Reference struct {
	RefType string
	TraceID string
	SpanID  string
}

// Parent returns the span ID the span is a CHILD_OF, or "" for a root.
func (s Span) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Span returns the trace's span named op, and false if there is none.
func (t Trace) Span(op string) (Span, bool) {
	for _, s := range t.Spans {
		if s.OperationName == op {
			return s, true
		}
	}
	return Span{}, false
}

// Services lists the services Jaeger has spans from.
func (j *Jaeger) Services(tb testing.TB) []string {
	tb.Helper()
	var services []string
	if err := j.get("/api/services", nil, &services); err != nil {
		tb.Fatalf("query Jaeger: %v", err)
	}
	sort.Strings(services)
	return services
}

// Traces returns up to limit traces of service that started within lookback
// of now, newest first.
func (j *Jaeger) Traces(tb testing.TB, service string, limit int, lookback time.Duration) []Trace {
	tb.Helper()
	traces, err := j.traces(service, limit, lookback)
	if err != nil {
		tb.Fatalf("query Jaeger: %v", err)
	}
	return traces
}

// Trace returns the trace with the given ID (32 hex digits).
func (j *Jaeger) Trace(tb testing.TB, traceID string) Trace {
	tb.Helper()
	var traces []apiTrace
	if err := j.get("/api/traces/"+url.PathEscape(traceID), nil, &traces); err != nil {
		tb.Fatalf("query Jaeger: %v", err)
	}
	if len(traces) != 1 {
		tb.Fatalf("query Jaeger: trace %s: got %d traces, want 1", traceID, len(traces))
	}
	t, err := traces[0].decode()
	if err != nil {
		tb.Fatalf("query Jaeger: trace %s: %v", traceID, err)
	}
	return t
}

// WaitForTraces polls until Jaeger holds at least n traces of service from
// the last hour and returns them, newest first; it fails the test after
// timeout.
func (j *Jaeger) WaitForTraces(tb testing.TB, service string, n int, timeout time.Duration) []Trace {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		traces, err := j.traces(service, max(n, 100), time.Hour)
		if err == nil && len(traces) >= n {
			return traces
		}
		if time.Now().After(deadline) {
			if err != nil {
				tb.Fatalf("wait for %d traces of %q in Jaeger: %v", n, service, err)
			}
			tb.Fatalf("wait for %d traces of %q in Jaeger: %d after %s", n, service, len(traces), timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (j *Jaeger) traces(service string, limit int, lookback time.Duration) ([]Trace, error) {
	q := url.Values{
		"service": {service},
		"limit":   {strconv.Itoa(limit)},
		// The API takes start and end in µs; lookback is only the UI's.
		"start": {strconv.FormatInt(time.Now().Add(-lookback).UnixMicro(), 10)},
	}
	var raw []apiTrace
	if err := j.get("/api/traces", q, &raw); err != nil {
		return nil, err
	}
	traces := make([]Trace, 0, len(raw))
	for _, r := range raw {
		t, err := r.decode()
		if err != nil {
			return nil, fmt.Errorf("trace %s: %w", r.TraceID, err)
		}
		traces = append(traces, t)
	}
	return traces, nil
}

// get fetches path and decodes the response envelope's data into v.
func (j *Jaeger) get(path string, q url.Values, v any) error {
	u := j.Query + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	var env struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Code int    `json:"code"`
			Msg  string `json:"msg"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("GET %s: %s: %w: %.200s", u, resp.Status, err, body)
	}
	if len(env.Errors) > 0 || resp.StatusCode != http.StatusOK {
		var msgs []string
		for _, e := range env.Errors {
			msgs = append(msgs, fmt.Sprintf("%d %s", e.Code, e.Msg))
		}
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.Join(msgs, "; "))
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return nil
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		return fmt.Errorf("GET %s: decode data: %w", u, err)
	}
	return nil
}

// apiTrace and the types below mirror the JSON of Jaeger's HTTP API
// (jaeger/internal/uimodel), which this package reads without importing
// Jaeger.
type apiTrace struct {
	TraceID   string                `json:"traceID"`
	Spans     []apiSpan             `json:"spans"`
	Processes map[string]apiProcess `json:"processes"`
}

type apiSpan struct {
	TraceID       string         `json:"traceID"`
	SpanID        string         `json:"spanID"`
	OperationName string         `json:"operationName"`
	References    []apiReference `json:"references"`
	StartTime     int64          `json:"startTime"`
	Duration      int64          `json:"duration"`
	Tags          []apiKeyValue  `json:"tags"`
	ProcessID     string         `json:"processID"`
}

type apiReference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

type apiProcess struct {
	ServiceName string        `json:"serviceName"`
	Tags        []apiKeyValue `json:"tags"`
}

type apiKeyValue struct {
	Key   string          `json:"key"`
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

func (a apiTrace) decode() (Trace, error) {
	t := Trace{TraceID: a.TraceID}
	for _, s := range a.Spans {
		p, ok := a.Processes[s.ProcessID]
		if !ok {
			return Trace{}, fmt.Errorf("span %s: no process %q", s.SpanID, s.ProcessID)
		}
		tags, err := decodeTags(s.Tags)
		if err != nil {
			return Trace{}, fmt.Errorf("span %s: %w", s.SpanID, err)
		}
		ptags, err := decodeTags(p.Tags)
		if err != nil {
			return Trace{}, fmt.Errorf("span %s: process: %w", s.SpanID, err)
		}
		span := Span{
			TraceID:       s.TraceID,
			SpanID:        s.SpanID,
			OperationName: s.OperationName,
			StartTime:     s.StartTime,
			Duration:      s.Duration,
			Tags:          tags,
			ServiceName:   p.ServiceName,
			ProcessTags:   ptags,
		}
		for _, r := range s.References {
			span.References = append(span.References, Reference(r))
		}
		t.Spans = append(t.Spans, span)
	}
	return t, nil
}

func decodeTags(kvs []apiKeyValue) (map[string]any, error) {
	tags := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		v, err := decodeValue(kv)
		if err != nil {
			return nil, fmt.Errorf("tag %s: %w", kv.Key, err)
		}
		tags[kv.Key] = v
	}
	return tags, nil
}

func decodeValue(kv apiKeyValue) (any, error) {
	switch kv.Type {
	case "", "string":
		var s string
		err := json.Unmarshal(kv.Value, &s)
		return s, err
	case "bool":
		var b bool
		err := json.Unmarshal(kv.Value, &b)
		return b, err
	case "int64":
		// A number, parsed as such so values past 2^53 stay exact.
		return strconv.ParseInt(strings.Trim(string(kv.Value), `"`), 10, 64)
	case "float64":
		var f float64
		err := json.Unmarshal(kv.Value, &f)
		return f, err
	case "binary":
		var s string
		if err := json.Unmarshal(kv.Value, &s); err != nil {
			return nil, err
		}
		return base64.StdEncoding.DecodeString(s)
	}
	return nil, fmt.Errorf("unknown type %q", kv.Type)
}
