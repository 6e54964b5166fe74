package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
)

func TestServices(t *testing.T) {
	f := newFixture(t)
	env := get(t, f.url+"/api/services", http.StatusOK)
	var svcs []string
	strict(t, env.Data, &svcs)
	if want := []string{"frontend", "inventory", "payments"}; !slices.Equal(svcs, want) || env.Total != 3 {
		t.Errorf("services = %q (total %d), want %q", svcs, env.Total, want)
	}

	empty := httptest.NewServer(api.New(api.Options{Store: store.New(1 << 20)}))
	defer empty.Close()
	env = get(t, empty.URL+"/api/services", http.StatusOK)
	if string(env.Data) != "[]" {
		t.Errorf("services of an empty store: data %s, want []", env.Data)
	}
}

func TestServiceOperations(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		service string
		want    []string
	}{
		{"frontend", []string{"GET /checkout/{id}", "POST"}},
		{"payments", []string{"POST /charge", "main.charge"}},
		{"nope", []string{}},
	}
	for _, tt := range tests {
		env := get(t, f.url+"/api/services/"+url.PathEscape(tt.service)+"/operations", http.StatusOK)
		var ops []string
		strict(t, env.Data, &ops)
		if ops == nil || !slices.Equal(ops, tt.want) || env.Total != len(tt.want) {
			t.Errorf("operations of %s = %q (total %d), want %q", tt.service, ops, env.Total, tt.want)
		}
	}
}

func TestOperations(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		query string
		want  []uiOperation
	}{
		{"service=payments", []uiOperation{{"POST /charge", "server"}, {"main.charge", "internal"}}},
		{"service=payments&spanKind=internal", []uiOperation{{"main.charge", "internal"}}},
		{"service=frontend&spanKind=client", []uiOperation{{"POST", "client"}}},
		{"service=inventory", []uiOperation{{"main.restock", ""}}},
		{"service=frontend&spanKind=producer", []uiOperation{}},
	}
	for _, tt := range tests {
		env := get(t, f.url+"/api/operations?"+tt.query, http.StatusOK)
		var ops []uiOperation
		strict(t, env.Data, &ops)
		if ops == nil || !reflect.DeepEqual(ops, tt.want) || env.Total != len(tt.want) {
			t.Errorf("operations?%s = %+v, want %+v", tt.query, ops, tt.want)
		}
	}
	if msg := errorMsg(t, f.url+"/api/operations", http.StatusBadRequest); !strings.Contains(msg, "parameter service") {
		t.Errorf("no service: %q does not name the parameter", msg)
	}
	if msg := errorMsg(t, f.url+"/api/operations?service=payments&spanKind=rpc", http.StatusBadRequest); !strings.Contains(msg, "parameter spanKind") {
		t.Errorf("bad spanKind: %q does not name the parameter", msg)
	}
}

func TestSearch(t *testing.T) {
	f := newFixture(t)
	micros := func(tm time.Time) string { return strconv.FormatInt(tm.UnixMicro(), 10) }
	tests := []struct {
		name  string
		query url.Values
		want  []uint64
	}{
		{"everything, newest first", url.Values{}, []uint64{5, 4, 3, 2, 1}},
		{"service", url.Values{"service": {"frontend"}}, []uint64{4, 3, 2, 1}},
		{"operation of a service", url.Values{"service": {"payments"}, "operation": {"main.charge"}}, []uint64{4, 3, 2, 1}},
		{"operation of another service", url.Values{"service": {"frontend"}, "operation": {"main.charge"}}, nil},
		{"tags JSON", url.Values{"tags": {`{"http.response.status_code":"500"}`}}, []uint64{2}},
		{"tags JSON, two on one span", url.Values{"tags": {`{"http.response.status_code":"500","http.route":"/charge"}`}}, []uint64{2}},
		{"tags JSON, error", url.Values{"tags": {`{"error":"true"}`}}, []uint64{2}},
		{"repeated tag", url.Values{"tag": {"http.route:/charge", "http.response.status_code:404"}}, []uint64{4}},
		{"tag with a colon in the value", url.Values{"tag": {"url.full:http://payments:8080/charge"}}, []uint64{4, 3, 2, 1}},
		{"tags and tag together", url.Values{"tags": {`{"http.route":"/charge"}`}, "tag": {"http.response.status_code:500"}}, []uint64{2}},
		{"minDuration", url.Values{"minDuration": {"100ms"}}, []uint64{3}},
		{"maxDuration", url.Values{"maxDuration": {"2ms"}}, []uint64{4}},
		{"duration range", url.Values{"minDuration": {"40ms"}, "maxDuration": {"0.06s"}}, []uint64{2}},
		{"start", url.Values{"start": {micros(f.start[3])}}, []uint64{5, 4, 3}},
		{"start and end", url.Values{"start": {micros(f.start[2])}, "end": {micros(f.start[3])}}, []uint64{3, 2}},
		{"lookback", url.Values{"lookback": {"1h"}}, []uint64{5, 4, 3}},
		{"lookback in minutes", url.Values{"lookback": {"150m"}}, []uint64{5, 4, 3, 2}},
		{"lookback in days", url.Values{"lookback": {"2d"}}, []uint64{5, 4, 3, 2, 1}},
		{"lookback ignored with start", url.Values{"lookback": {"1h"}, "start": {micros(f.start[1])}}, []uint64{5, 4, 3, 2, 1}},
		{"Grafana: lookback=custom with µs start and end", url.Values{
			"service": {"frontend"}, "lookback": {"custom"}, "limit": {"20"},
			"start": {micros(f.now.Add(-150 * time.Minute))}, "end": {micros(f.now.Add(-20 * time.Minute))},
		}, []uint64{3, 2}},
		{"limit", url.Values{"limit": {"2"}}, []uint64{5, 4}},
		{"limit 0 is no limit", url.Values{"limit": {"0"}}, []uint64{5, 4, 3, 2, 1}},
		{"error=true", url.Values{"error": {"true"}}, []uint64{2}},
		{"error=false", url.Values{"error": {"false"}, "service": {"frontend"}}, []uint64{4, 3, 1}},
		{"by trace ids", url.Values{"traceID": {fixtureIDs[3].String(), "5", "ffff"}}, []uint64{3, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			traces := getTraces(t, f.url+"/api/traces?"+tt.query.Encode())
			var got, want []string
			for _, tr := range traces {
				got = append(got, tr.TraceID)
			}
			for _, n := range tt.want {
				want = append(want, strings.TrimLeft(fixtureIDs[n].String(), "0"))
			}
			for i := range got {
				got[i] = strings.TrimLeft(got[i], "0")
			}
			if !slices.Equal(got, want) {
				t.Errorf("traces = %q, want %q (traces %v)", got, want, tt.want)
			}
		})
	}
}

func TestSearchDefaultLimit(t *testing.T) {
	s := store.New(64 << 20)
	start := time.Now().Add(-time.Minute)
	for n := range uint64(150) {
		s.Export(checkout(n+1, start.Add(time.Duration(n)*time.Millisecond), 200, ms(1)))
	}
	srv := httptest.NewServer(api.New(api.Options{Store: s}))
	defer srv.Close()
	traces := getTraces(t, srv.URL+"/api/traces?service=frontend")
	if len(traces) != 100 {
		t.Fatalf("%d traces without a limit, want Jaeger's default 100", len(traces))
	}
	if want := traceID(150).String(); traces[0].TraceID != want {
		t.Errorf("first trace %s, want the newest %s", traces[0].TraceID, want)
	}
}

func TestSearchBadParameters(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		query string
		want  string // the message contains it
	}{
		{"minDuration=abc", `parameter minDuration: "abc" is not a duration (e.g. 250ms, 1.5s)`},
		{"maxDuration=10", `parameter maxDuration: "10" is not a duration`},
		{"minDuration=-1s", `parameter minDuration: "-1s" is negative`},
		{"minDuration=2s&maxDuration=1s", "parameters minDuration and maxDuration: minDuration 2s is above maxDuration 1s"},
		{"start=yesterday", `parameter start: "yesterday" is not a time in microseconds since the Unix epoch`},
		{"end=1.5", `parameter end: "1.5" is not a time in microseconds`},
		{"start=2000&end=1000", "parameters start and end: start"},
		{"lookback=forever", `parameter lookback: "forever" is not a duration (e.g. 1h, 2d, 1w) or custom`},
		{"lookback=0d", `parameter lookback: "0d"`},
		{"limit=-1", `parameter limit: "-1" is not a whole number ≥ 0`},
		{"limit=ten", `parameter limit: "ten"`},
		{"tags=status=500", `parameter tags: "status=500" is not a JSON object of strings`},
		{"tags=" + url.QueryEscape(`{"http.response.status_code":500}`), "parameter tags:"},
		{"tag=status", `parameter tag: "status" is not key:value`},
		{"error=maybe", `parameter error: "maybe" is not true or false`},
		{"traceID=xyz", `parameter traceID: trace ID "xyz": want 1 to 32 hex digits`},
	}
	for _, tt := range tests {
		msg := errorMsg(t, f.url+"/api/traces?"+tt.query, http.StatusBadRequest)
		if !strings.Contains(msg, tt.want) {
			t.Errorf("?%s: message %q, want it to contain %q", tt.query, msg, tt.want)
		}
	}
}

func TestTraceByID(t *testing.T) {
	f := newFixture(t)
	short := fixtureIDs[5]
	tests := []struct {
		path   string
		status int
		want   string // trace id in the answer, or a message the error contains
	}{
		{"/api/traces/" + fixtureIDs[2].String(), http.StatusOK, fixtureIDs[2].String()},
		{"/api/traces/" + strings.ToUpper(fixtureIDs[2].String()), http.StatusOK, fixtureIDs[2].String()},
		{"/api/traces/" + short.String(), http.StatusOK, "0000000000000005"},
		{"/api/traces/0000000000000005", http.StatusOK, "0000000000000005"},
		{"/api/traces/5", http.StatusOK, "0000000000000005"},
		// Grafana sends the range it searched, in ms.
		{"/api/traces/5?start=" + strconv.FormatInt(f.now.Add(-time.Hour).UnixMilli(), 10) + "&end=" + strconv.FormatInt(f.now.UnixMilli(), 10), http.StatusOK, "0000000000000005"},
		{"/api/traces/6", http.StatusNotFound, "trace not found"},
		{"/api/traces/xyz", http.StatusBadRequest, `trace ID "xyz": want 1 to 32 hex digits`},
		{"/api/traces/" + strings.Repeat("a", 33), http.StatusBadRequest, "want 1 to 32 hex digits"},
		{"/api/traces/5?start=today", http.StatusBadRequest, `parameter start: "today" is not a time in milliseconds since the Unix epoch`},
		{"/api/traces/5?end=1.5", http.StatusBadRequest, `parameter end: "1.5"`},
	}
	for _, tt := range tests {
		env := get(t, f.url+tt.path, tt.status)
		if tt.status != http.StatusOK {
			if len(env.Errors) == 0 || !strings.Contains(env.Errors[0].Msg, tt.want) {
				t.Errorf("%s: errors %+v, want a message containing %q", tt.path, env.Errors, tt.want)
			}
			continue
		}
		var traces []uiTrace
		strict(t, env.Data, &traces)
		if len(traces) != 1 || traces[0].TraceID != tt.want || env.Total != 1 {
			t.Errorf("%s: %d traces (total %d), want one with id %s", tt.path, len(traces), env.Total, tt.want)
		}
	}
	// Jaeger's exact 404 body.
	env := get(t, f.url+"/api/traces/6", http.StatusNotFound)
	if !reflect.DeepEqual(env.Errors, []structuredError{{Code: 404, Msg: "trace not found"}}) {
		t.Errorf("404 errors = %+v", env.Errors)
	}
}

// TestTraceJSON checks the error trace field by field against Jaeger's model.
func TestTraceJSON(t *testing.T) {
	f := newFixture(t)
	id := fixtureIDs[2].String()
	traces := getTraces(t, f.url+"/api/traces/"+id)
	if len(traces) != 1 {
		t.Fatalf("%d traces", len(traces))
	}
	tr := traces[0]
	if tr.TraceID != id || len(id) != 32 || tr.Warnings != nil {
		t.Errorf("traceID %q, warnings %q", tr.TraceID, tr.Warnings)
	}
	spans := checkout(2, f.start[2], 500, ms(50))
	server, client, remote, internal := spans[3], spans[2], spans[1], spans[0]
	// Sorted by start; frontend is p1 (first seen), payments p2.
	want := []struct {
		sp        *span.Span
		processID string
		parent    string
	}{
		{server, "p1", ""},
		{client, "p1", server.SpanID.String()},
		{remote, "p2", client.SpanID.String()},
		{internal, "p2", remote.SpanID.String()},
	}
	if len(tr.Spans) != len(want) {
		t.Fatalf("%d spans, want %d", len(tr.Spans), len(want))
	}
	for i, w := range want {
		got := tr.Spans[i]
		if got.TraceID != id || got.SpanID != w.sp.SpanID.String() || len(got.SpanID) != 16 || got.Flags != 1 ||
			got.OperationName != w.sp.Name || got.ProcessID != w.processID || got.ParentSpanID != "" || got.Process != nil {
			t.Errorf("span %d: %+v", i, got)
		}
		if got.StartTime != uint64(w.sp.Start.UnixMicro()) || got.Duration != uint64(w.sp.Duration().Microseconds()) {
			t.Errorf("span %s: startTime %d, duration %d; want %d, %d", w.sp.Name, got.StartTime, got.Duration, w.sp.Start.UnixMicro(), w.sp.Duration().Microseconds())
		}
		var refs []uiReference
		if w.parent != "" {
			refs = []uiReference{{RefType: "CHILD_OF", TraceID: id, SpanID: w.parent}}
		}
		if got.References == nil || !(len(got.References) == len(refs) && (len(refs) == 0 || reflect.DeepEqual(got.References, refs))) {
			t.Errorf("span %s: references %+v, want %+v", w.sp.Name, got.References, refs)
		}
		if got.Logs == nil || len(got.Logs) != 0 || got.Warnings != nil {
			t.Errorf("span %s: logs %v, warnings %v; want [], null", w.sp.Name, got.Logs, got.Warnings)
		}
	}

	// Every tag of payments' server span, in order, typed.
	wantTags := []uiKeyValue{
		{"thread.id", "int64", json.Number("3")},
		{"latscope.goroutine.id", "int64", json.Number("40")},
		{"code.function.name", "string", "net/http.serverHandler.ServeHTTP"},
		{"http.request.method", "string", "POST"},
		{"http.route", "string", "/charge"},
		{"http.response.status_code", "int64", json.Number("500")},
		{"span.kind", "string", "server"},
		{"otel.status_code", "string", "ERROR"},
		{"otel.status_description", "string", "HTTP 500"},
		{"error", "bool", true},
		{"otel.scope.name", "string", span.Scope.Name},
		{"otel.scope.version", "string", span.Scope.Version},
	}
	if got := tr.Spans[2].Tags; !reflect.DeepEqual(got, wantTags) {
		t.Errorf("payments server span tags:\n got %+v\nwant %+v", got, wantTags)
	}
	// The internal span's code location and goroutine facts.
	for key, want := range map[string]any{
		"code.file.path":               "/src/payments/charge.go",
		"code.line.number":             json.Number("42"),
		"latscope.goroutine.parent_id": json.Number("40"),
		"latscope.thread.start_id":     json.Number("3"),
		"span.kind":                    "internal",
	} {
		if v, _, ok := tag(tr.Spans[3].Tags, key); !ok || v != want {
			t.Errorf("internal span tag %s = %v, want %v", key, v, want)
		}
	}
	if _, _, ok := tag(tr.Spans[3].Tags, "error"); ok {
		t.Error("span without error status has an error tag")
	}

	wantProcesses := map[string]uiProcess{
		"p1": {ServiceName: "frontend", Tags: []uiKeyValue{
			{"process.pid", "int64", json.Number("4101")},
			{"process.executable.name", "string", "frontend"},
			{"process.runtime.name", "string", "go"},
			{"process.runtime.version", "string", "go1.26.0"},
		}},
		"p2": {ServiceName: "payments", Tags: []uiKeyValue{
			{"process.pid", "int64", json.Number("4202")},
			{"process.executable.name", "string", "payments"},
			{"process.runtime.name", "string", "go"},
			{"process.runtime.version", "string", "go1.25.3"},
		}},
	}
	if !reflect.DeepEqual(tr.Processes, wantProcesses) {
		t.Errorf("processes:\n got %+v\nwant %+v", tr.Processes, wantProcesses)
	}
}

// TestTagValues checks values at JSON's edges and a status OK span.
func TestTagValues(t *testing.T) {
	f := newFixture(t)
	traces := getTraces(t, f.url+"/api/traces/5")
	if len(traces) != 1 || len(traces[0].Spans) != 1 {
		t.Fatalf("got %+v", traces)
	}
	sp := traces[0].Spans[0]
	tests := []struct {
		key, typ string
		value    any
	}{
		{"app.items", "int64", json.Number("12")},
		{"app.big", "int64", "1152921504606846976"}, // past 2^53: a string, as Jaeger writes it
		{"app.ratio", "float64", json.Number("0.25")},
		{"app.nan", "string", "NaN"},
		{"app.partial", "bool", true},
		{"otel.status_code", "string", "OK"},
	}
	for _, tt := range tests {
		v, typ, ok := tag(sp.Tags, tt.key)
		if !ok || typ != tt.typ || v != tt.value {
			t.Errorf("tag %s = %v (%s), want %v (%s)", tt.key, v, typ, tt.value, tt.typ)
		}
	}
	for _, absent := range []string{"span.kind", "error", "otel.status_description"} {
		if _, _, ok := tag(sp.Tags, absent); ok {
			t.Errorf("tag %s present on an unspecified-kind span with status OK", absent)
		}
	}
	if len(sp.References) != 0 || sp.References == nil {
		t.Errorf("root span references %v, want []", sp.References)
	}
}

// sort=duration returns the longest traces first, so limit picks the
// slowest of the window (latscope traces asks for N, not for all).
func TestSearchLongestFirst(t *testing.T) {
	f := newFixture(t)
	code, _, body := fetch(t, "GET", f.url+"/api/traces?limit=2&sort=duration&lookback=24h")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	traces, err := api.DecodeTraces(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	// Checkout 3 (charge 200ms) and 2 (50ms) are the longest.
	if len(traces) != 2 || traces[0][0].TraceID != traceID(3) || traces[1][0].TraceID != traceID(2) {
		var got []string
		for _, tr := range traces {
			got = append(got, tr[0].TraceID.String())
		}
		t.Errorf("longest two: %v, want checkouts 3 and 2", got)
	}
}

// Parameters the query string cannot carry are refused, never dropped:
// an unescaped % (slowest=1%) would otherwise read as no parameter.
func TestBadQueryEncoding(t *testing.T) {
	f := newFixture(t)
	for _, path := range []string{"/api/traces?sort=newest", "/api/traces?service=frontend&minDuration=1%", "/api/flame?slowest=10%", "/api/operations?service=%zz"} {
		code, _, body := fetch(t, "GET", f.url+path)
		if code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", path, code, body)
		}
	}
}
