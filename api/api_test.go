package api_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/store"
)

func fetch(t *testing.T, method, url string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

type agentStatus struct {
	Version   string `json:"version"`
	Processes []int  `json:"processes"`
}

func TestAgentEndpoints(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		io.WriteString(w, "# HELP latscope_spans_total Spans exported.\n# TYPE latscope_spans_total counter\nlatscope_spans_total 7\n")
	})
	ready := errors.New("discovery has not scanned /proc yet")
	srv := httptest.NewServer(api.New(api.Options{
		Store:   store.New(1 << 20),
		Status:  func() any { return agentStatus{Version: "v0.3.0", Processes: []int{4101, 4202}} },
		Metrics: metrics,
		Ready:   func() error { return ready },
	}))
	defer srv.Close()

	tests := []struct {
		method, path string
		status       int
		body         string // the body contains it
		contentType  string
	}{
		{"GET", "/healthz", 200, "ok", "text/plain; charset=utf-8"},
		{"GET", "/readyz", 503, "not ready: discovery has not scanned /proc yet", "text/plain; charset=utf-8"},
		{"GET", "/metrics", 200, "latscope_spans_total 7", "text/plain; version=0.0.4"},
		{"GET", "/api/status", 200, `"version":"v0.3.0"`, "application/json"},
		{"GET", "/nope", 404, "404 page not found", ""},
		{"GET", "/api/nope", 404, `"errors":[{"code":404,"msg":"no API endpoint at /api/nope"}]`, "application/json"},
		{"GET", "/api/traces/", 404, `"code":404`, "application/json"},
		{"POST", "/api/traces", 405, "", ""},
		{"DELETE", "/healthz", 405, "", ""},
		{"GET", "/debug/pprof/", 200, "goroutine", "text/html; charset=utf-8"},
		{"GET", "/debug/pprof/heap?debug=1", 200, "heap profile", "text/plain; charset=utf-8"},
	}
	for _, tt := range tests {
		status, header, body := fetch(t, tt.method, srv.URL+tt.path)
		if status != tt.status || !strings.Contains(body, tt.body) {
			t.Errorf("%s %s: %d %q, want %d containing %q", tt.method, tt.path, status, body, tt.status, tt.body)
		}
		if ct := header.Get("Content-Type"); tt.contentType != "" && ct != tt.contentType {
			t.Errorf("%s %s: Content-Type %q, want %q", tt.method, tt.path, ct, tt.contentType)
		}
	}

	// /api/status is exactly Status() marshalled.
	_, _, body := fetch(t, "GET", srv.URL+"/api/status")
	var st agentStatus
	strict(t, []byte(body), &st)
	if want := (agentStatus{Version: "v0.3.0", Processes: []int{4101, 4202}}); !reflect.DeepEqual(st, want) {
		t.Errorf("status = %+v, want %+v", st, want)
	}

	ready = nil
	if status, _, body := fetch(t, "GET", srv.URL+"/readyz"); status != 200 || body != "ok\n" {
		t.Errorf("/readyz when ready: %d %q", status, body)
	}
}

func TestOptionalEndpoints(t *testing.T) {
	srv := httptest.NewServer(api.New(api.Options{}))
	defer srv.Close()
	for _, path := range []string{"/metrics", "/api/services", "/api/traces", "/api/status"} {
		if status, _, _ := fetch(t, "GET", srv.URL+path); status != 404 {
			t.Errorf("%s without its option: %d, want 404", path, status)
		}
	}
	if status, _, body := fetch(t, "GET", srv.URL+"/readyz"); status != 200 || body != "ok\n" {
		t.Errorf("/readyz without Ready: %d %q", status, body)
	}
}

func TestStatusEncodeFailure(t *testing.T) {
	srv := httptest.NewServer(api.New(api.Options{Status: func() any { return func() {} }}))
	defer srv.Close()
	status, _, body := fetch(t, "GET", srv.URL+"/api/status")
	var env structuredResponse
	strict(t, []byte(body), &env)
	if status != 500 || len(env.Errors) != 1 || !strings.Contains(env.Errors[0].Msg, "encode response") {
		t.Errorf("unencodable status: %d %s", status, body)
	}
}
