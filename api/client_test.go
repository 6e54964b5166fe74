package api_test

import (
	"net/http"
	"testing"

	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/span"
)

// DecodeTraces reads back what the API wrote: ids, parents, times at µs,
// kind, status, the Go facts and attributes.
func TestDecodeTracesRoundTrip(t *testing.T) {
	f := newFixture(t)
	want := checkout(2, f.start[2], 500, ms(50))
	resp, err := http.Get(f.url + "/api/traces/" + traceID(2).String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	traces, err := api.DecodeTraces(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if len(traces) != 1 || len(traces[0]) != len(want) {
		t.Fatalf("decoded %d traces, want 1 of %d spans", len(traces), len(want))
	}
	got := map[span.SpanID]*span.Span{}
	for _, s := range traces[0] {
		got[s.SpanID] = s
	}
	for _, w := range want {
		g := got[w.SpanID]
		if g == nil {
			t.Fatalf("span %s missing", w.SpanID)
		}
		if g.TraceID != w.TraceID || g.ParentID != w.ParentID || g.Name != w.Name || g.Kind != w.Kind || g.Status != w.Status ||
			g.StatusMessage != w.StatusMessage || g.GoID != w.GoID || g.File != w.File || g.Line != w.Line || g.Function != w.Function {
			t.Errorf("span %s: got %+v\nwant %+v", w.SpanID, g, w)
		}
		if !g.Start.Equal(w.Start.Truncate(1000)) || g.Duration().Microseconds() != w.Duration().Microseconds() {
			t.Errorf("span %s: %v+%v, want %v+%v", w.SpanID, g.Start, g.Duration(), w.Start, w.Duration())
		}
		if g.Process == nil || g.Process.ServiceName != w.Process.ServiceName || g.Process.PID != w.Process.PID {
			t.Errorf("span %s: process %+v, want %+v", w.SpanID, g.Process, w.Process)
		}
		for _, a := range w.Attrs {
			found := false
			for _, b := range g.Attrs {
				found = found || b.Key == a.Key && b.Value == a.Value
			}
			if !found {
				t.Errorf("span %s: attribute %s=%v (%T) not decoded: %v", w.SpanID, a.Key, a.Value, a.Value, g.Attrs)
			}
		}
	}
	// Errors in the envelope come back as errors.
	resp2, err := http.Get(f.url + "/api/traces?minDuration=abc")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	if _, err := api.DecodeTraces(resp2.Body); err == nil {
		t.Error("a 400 answer decoded without error")
	}
}
