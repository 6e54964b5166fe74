package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestRate: with -rate no request starts before its turn (i/rate seconds
// in), so a run of d seconds sends at most rate·d + 1 requests however
// fast the server answers (a bound by construction, not a timing).
func TestRate(t *testing.T) {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { served.Add(1) }))
	defer srv.Close()
	cfg := config{pattern: srv.URL + "/x/%d", lo: 1, hi: 5, requests: 1 << 20, duration: 300 * time.Millisecond, concurrency: 4, rate: 100, timeout: time.Second}
	res := run(context.Background(), cfg)
	if max := int(cfg.rate*cfg.duration.Seconds()) + 1; res.Requests > max || served.Load() > int64(max) {
		t.Errorf("-rate 100 for 300ms: %d requests answered, %d served; at most %d may start", res.Requests, served.Load(), max)
	}
	if res.Requests == 0 || res.Errors != 0 {
		t.Errorf("-rate 100: %d requests, %d errors", res.Requests, res.Errors)
	}
	if err := (config{pattern: "x", lo: 1, hi: 1, requests: 1, duration: time.Second, concurrency: 1, timeout: time.Second, rate: -1}).check(); err == nil {
		t.Error("a negative -rate must be refused")
	}
}
