package api_test

import (
	"slices"
	"testing"
	"time"

	"github.com/latscope/latscope/internal/jaegertest"
)

// TestJaegerClientReadsAgent points the project's client for a real
// Jaeger's query API (internal/jaegertest, used by the end-to-end tests) at
// the agent: it must read the agent's /api/services, /api/traces and
// /api/traces/{id} exactly as it reads Jaeger's.
func TestJaegerClientReadsAgent(t *testing.T) {
	f := newFixture(t)
	j := &jaegertest.Jaeger{Query: f.url} // only the query address: no Jaeger is started

	if got := j.Services(t); !slices.Equal(got, []string{"frontend", "inventory", "payments"}) {
		t.Errorf("Services = %q", got)
	}

	// Within the last hour: traces 4 and 3, newest first.
	traces := j.Traces(t, "frontend", 10, time.Hour)
	if len(traces) != 2 || traces[0].TraceID != fixtureIDs[4].String() || traces[1].TraceID != fixtureIDs[3].String() {
		t.Fatalf("Traces(frontend, last hour) = %+v", traces)
	}

	tr := j.Trace(t, fixtureIDs[2].String())
	if tr.TraceID != fixtureIDs[2].String() || len(tr.Spans) != 4 {
		t.Fatalf("Trace = %+v", tr)
	}
	spans := checkout(2, f.start[2], 500, ms(50))
	server, client, remote, internal := spans[3], spans[2], spans[1], spans[0]
	want := []struct {
		op, service, parent string
	}{
		{server.Name, "frontend", ""},
		{client.Name, "frontend", server.SpanID.String()},
		{remote.Name, "payments", client.SpanID.String()},
		{internal.Name, "payments", remote.SpanID.String()},
	}
	for i, w := range want {
		s := tr.Spans[i]
		if s.OperationName != w.op || s.ServiceName != w.service || s.Parent() != w.parent {
			t.Errorf("span %d: %s of %s under %q; want %s of %s under %q", i, s.OperationName, s.ServiceName, s.Parent(), w.op, w.service, w.parent)
		}
	}
	s, ok := tr.Span("POST /charge")
	if !ok {
		t.Fatal("no POST /charge span")
	}
	checks := map[string]struct{ got, want any }{
		"startTime":                 {s.StartTime, remote.Start.UnixMicro()},
		"duration":                  {s.Duration, remote.Duration().Microseconds()},
		"http.response.status_code": {s.Tags["http.response.status_code"], int64(500)},
		"http.route":                {s.Tags["http.route"], "/charge"},
		"error":                     {s.Tags["error"], true},
		"span.kind":                 {s.Tags["span.kind"], "server"},
		"process.pid":               {s.ProcessTags["process.pid"], int64(4202)},
		"process.runtime.name":      {s.ProcessTags["process.runtime.name"], "go"},
	}
	for name, c := range checks {
		if c.got != c.want {
			t.Errorf("POST /charge %s = %#v, want %#v", name, c.got, c.want)
		}
	}

	// A 16-hex-digit id, and a value past 2^53 written as a string.
	short := j.Trace(t, "0000000000000005")
	if len(short.Spans) != 1 || short.Spans[0].Tags["app.big"] != int64(1<<60) {
		t.Errorf("Trace(5) = %+v", short)
	}
}
