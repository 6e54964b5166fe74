package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"slices"
	"testing"
)

// The types below mirror Jaeger's documented JSON model
// (jaegertracing/jaeger internal/uimodel: Trace, Span, Reference, KeyValue,
// Process, Log) and its query service's structuredResponse envelope. Every
// response is decoded into them with unknown fields disallowed, so a field
// the agent invents, misspells or nests wrongly fails the test.

type structuredResponse struct {
	Data   json.RawMessage   `json:"data"`
	Total  int               `json:"total"`
	Limit  int               `json:"limit"`
	Offset int               `json:"offset"`
	Errors []structuredError `json:"errors"`
}

type structuredError struct {
	Code    int    `json:"code,omitempty"`
	Msg     string `json:"msg"`
	TraceID string `json:"traceID,omitempty"`
}

type uiTrace struct {
	TraceID   string               `json:"traceID"`
	Spans     []uiSpan             `json:"spans"`
	Processes map[string]uiProcess `json:"processes"`
	Warnings  []string             `json:"warnings"`
}

type uiSpan struct {
	TraceID       string        `json:"traceID"`
	SpanID        string        `json:"spanID"`
	ParentSpanID  string        `json:"parentSpanID,omitempty"` // deprecated
	Flags         uint32        `json:"flags,omitempty"`
	OperationName string        `json:"operationName"`
	References    []uiReference `json:"references"`
	StartTime     uint64        `json:"startTime"`
	Duration      uint64        `json:"duration"`
	Tags          []uiKeyValue  `json:"tags"`
	Logs          []uiLog       `json:"logs"`
	ProcessID     string        `json:"processID,omitempty"`
	Process       *uiProcess    `json:"process,omitempty"`
	Warnings      []string      `json:"warnings"`
}

type uiReference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

type uiProcess struct {
	ServiceName string       `json:"serviceName"`
	Tags        []uiKeyValue `json:"tags"`
}

type uiLog struct {
	Timestamp uint64       `json:"timestamp"`
	Fields    []uiKeyValue `json:"fields"`
}

type uiKeyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type,omitempty"`
	Value any    `json:"value"` // json.Number for numbers (decoded with UseNumber)
}

type uiOperation struct {
	Name     string `json:"name"`
	SpanKind string `json:"spanKind"`
}

// strict decodes b into v, refusing unknown fields and trailing data, with
// numbers kept exact as json.Number.
func strict(t *testing.T, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %T strictly: %v\n%.2000s", v, err, b)
	}
	if dec.More() {
		t.Fatalf("decode %T: trailing data after the value\n%.2000s", v, b)
	}
}

// get fetches url and decodes Jaeger's envelope strictly, checking that it
// has exactly Jaeger's five keys, that a success has errors null, and that
// a failure has data null and one error with the status code.
func get(t *testing.T, url string, wantStatus int) structuredResponse {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s: %s, want %d\n%s", url, resp.Status, wantStatus, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q, want application/json", url, ct)
	}
	var keys map[string]json.RawMessage
	strict(t, body, &keys)
	if got := slices.Sorted(maps.Keys(keys)); !slices.Equal(got, []string{"data", "errors", "limit", "offset", "total"}) {
		t.Errorf("GET %s: envelope keys %q", url, got)
	}
	var env structuredResponse
	strict(t, body, &env)
	if env.Limit != 0 || env.Offset != 0 {
		t.Errorf("GET %s: limit %d, offset %d; want 0, 0", url, env.Limit, env.Offset)
	}
	if wantStatus == http.StatusOK {
		if string(keys["errors"]) != "null" {
			t.Errorf("GET %s: errors %s, want null", url, keys["errors"])
		}
	} else {
		if string(env.Data) != "null" || env.Total != 0 {
			t.Errorf("GET %s: data %s, total %d on error; want null, 0", url, env.Data, env.Total)
		}
		if len(env.Errors) != 1 || env.Errors[0].Code != wantStatus {
			t.Errorf("GET %s: errors %+v, want one with code %d", url, env.Errors, wantStatus)
		}
	}
	return env
}

// getTraces fetches traces and decodes them strictly, checking total.
func getTraces(t *testing.T, url string) []uiTrace {
	t.Helper()
	env := get(t, url, http.StatusOK)
	var traces []uiTrace
	strict(t, env.Data, &traces)
	if traces == nil {
		t.Errorf("GET %s: data %s, want a list", url, env.Data)
	}
	if env.Total != len(traces) {
		t.Errorf("GET %s: total %d for %d traces", url, env.Total, len(traces))
	}
	return traces
}

// errorMsg fetches url expecting status and returns the error's message.
func errorMsg(t *testing.T, url string, status int) string {
	t.Helper()
	env := get(t, url, status)
	if len(env.Errors) == 0 {
		return ""
	}
	return env.Errors[0].Msg
}

// tag returns the value and type of the tag key, and false if absent.
func tag(tags []uiKeyValue, key string) (any, string, bool) {
	for _, kv := range tags {
		if kv.Key == key {
			return kv.Value, kv.Type, true
		}
	}
	return nil, "", false
}
