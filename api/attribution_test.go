package api_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/attribution"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
)

// fakeSwitch stands for the agent's deep-attribution switch.
type fakeSwitch struct {
	state attribution.Deep
	err   error
	asked time.Duration
}

func (f *fakeSwitch) StartDeep(d time.Duration, reason string) (attribution.Deep, error) {
	if f.err != nil {
		return f.state, f.err
	}
	f.asked = d
	f.state = attribution.Deep{On: true, Reason: reason, Periods: 1}
	return f.state, nil
}

func (f *fakeSwitch) StopDeep() (attribution.Deep, error) {
	f.state.On = false
	return f.state, nil
}

func (f *fakeSwitch) DeepState() attribution.Deep { return f.state }

func TestAttributionRoutes(t *testing.T) {
	sw := &fakeSwitch{}
	srv := httptest.NewServer(api.New(api.Options{Attribution: sw}))
	defer srv.Close()
	do := func(method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		method, path string
		code         int
		want         string
	}{
		{"GET", "/api/attribution", 200, `{"deep":{"on":false,"periods":0,"ended":0,"linksAttached":0,"linksDetached":0}}`},
		{"POST", "/api/attribution/deep", 200, `"on":true,"reason":"api"`},
		{"POST", "/api/attribution/deep?for=90s", 200, `"on":true`},
		{"POST", "/api/attribution/deep?for=500ms", 400, `for=500ms: give a duration from 1s to 1h0m0s, e.g. for=60s`},
		{"POST", "/api/attribution/deep?for=soon", 400, `for=soon`},
		{"DELETE", "/api/attribution/deep", 200, `"on":false`},
	} {
		code, body := do(tc.method, tc.path)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s: %d %s; want %d and %s", tc.method, tc.path, code, body, tc.code, tc.want)
		}
	}
	if sw.asked != 90*time.Second {
		t.Errorf("asked for %v", sw.asked)
	}
	sw.err = errors.New("latency attribution is unavailable in this agent")
	if code, body := do("POST", "/api/attribution/deep"); code != 503 || !strings.Contains(body, "unavailable") {
		t.Errorf("unavailable: %d %s", code, body)
	}
	// Without a switch the routes are not there.
	bare := httptest.NewServer(api.New(api.Options{}))
	defer bare.Close()
	if resp, err := http.Get(bare.URL + "/api/attribution"); err != nil || resp.StatusCode != 404 {
		t.Errorf("no switch: %v %v", resp.Status, err)
	}
}

// A span's time split goes out as latscope.time.* tags and comes back
// the same (full, or GC-only with only its measured categories); the
// critical path's explanation names the causes.
func TestTimeSplitRoundTrip(t *testing.T) {
	start := time.Now().Truncate(time.Millisecond)
	svc := &span.Process{PID: 3, ServiceName: "catalog"}
	root := &span.Span{TraceID: span.TraceID{9}, SpanID: span.SpanID{1}, Name: "GET /cart", Kind: span.KindServer, Process: svc,
		Start: start, End: start.Add(10 * time.Millisecond), GoID: 5,
		Time: &span.TimeSplit{Full: true}}
	root.Time.NS[span.TimeBlockedSync] = int64(8 * time.Millisecond)
	root.Time.NS[span.TimeOnCPU] = int64(2 * time.Millisecond)
	gc := &span.Span{TraceID: span.TraceID{9}, SpanID: span.SpanID{2}, ParentID: root.SpanID, Name: "main.save", Kind: span.KindInternal, Process: svc,
		Start: start.Add(time.Millisecond), End: start.Add(2 * time.Millisecond), GoID: 6, Time: &span.TimeSplit{}}
	gc.Time.NS[span.TimeGCSTW] = 300_000
	st := store.New(1 << 20)
	st.Export([]*span.Span{root, gc})
	srv := httptest.NewServer(api.New(api.Options{Store: st}))
	defer srv.Close()
	traces, err := api.FetchTraces(t.Context(), http.DefaultClient, srv.URL+"/api/traces/"+root.TraceID.String())
	if err != nil || len(traces) != 1 {
		t.Fatalf("fetch: %v %d", err, len(traces))
	}
	for _, s := range traces[0] {
		want := root
		if s.SpanID == gc.SpanID {
			want = gc
		}
		if s.Time == nil || *s.Time != *want.Time {
			t.Errorf("%s: time split %+v, want %+v", s.Name, s.Time, want.Time)
		}
		for _, a := range s.Attrs {
			if strings.HasPrefix(a.Key, span.TimeKeyPrefix) {
				t.Errorf("%s: %s left in the attributes", s.Name, a.Key)
			}
		}
	}
	resp, err := http.Get(srv.URL + "/api/traces/" + root.TraceID.String() + "/critical-path")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var cp api.CriticalPath
	if err := json.NewDecoder(resp.Body).Decode(&cp); err != nil {
		t.Fatal(err)
	}
	if len(cp.Explanation.Causes) == 0 || cp.Explanation.Causes[0].String() != "catalog: 72% blocked on mutex or other sync in GET /cart" {
		t.Errorf("causes %+v", cp.Explanation.Causes)
	}
	if !strings.Contains(cp.Summary, "why (runtime attribution):") {
		t.Errorf("summary:\n%s", cp.Summary)
	}
}
