// Package api is the agent's HTTP API: Jaeger's HTTP query API over the
// embedded trace store (so Jaeger's UI and Grafana's Jaeger data source read
// the agent as they read Jaeger), critical paths and their flame-graph
// profiles (pprof's format and web UI), the agent's status, its Prometheus
// metrics, and health and readiness probes.
//
// Routes (anything else is 404):
//
//	GET /healthz                          200 "ok" while the process serves
//	GET /readyz                           200 "ok", or 503 with what is not ready
//	GET /metrics                          Options.Metrics, when set
//	GET /api/status                       Options.Status() as JSON, when set
//	GET /api/services                     Jaeger: service names
//	GET /api/services/{service}/operations  Jaeger: operation names of a service
//	GET /api/operations?service=&spanKind=  Jaeger: operations with their span kinds
//	GET /api/traces?…                     Jaeger: search (see parseSearch)
//	GET /api/traces/{traceID}             Jaeger: one trace
//	GET /api/traces/{traceID}/critical-path  its critical path (CriticalPath, JSON)
//	GET /api/flame?…                      critical-path profile, gzipped profile.proto (see ParseFlame)
//	GET /api/requests?…                   the slowest requests of a query (Requests, see ParseRequests)
//	GET /api/overview?…                   every operation's RED over a window and the one before (Overview, see ParseOverview)
//	GET /api/timeline?…                   one operation's RED step by step (Timeline)
//	GET /api/profile/cpu?…                CPU profile of the selected requests' spans, gzipped profile.proto (Options.Samples)
//	GET /pprof/…?…                        pprof's web UI over the same profile (flamegraph, top, graph)
//	GET /api/attribution                  deep latency attribution's state (AttributionState, JSON)
//	POST /api/attribution/deep?for=60s    deep attribution on for that long (1s–1h), or extended
//	DELETE /api/attribution/deep          deep attribution off now
//	anything else                         Options.UI, when set (the web UI's pages)
//
// Jaeger answers use Jaeger's envelope, {"data", "total", "limit",
// "offset", "errors"}; an error answer has data null and errors
// [{"code", "msg"}], the message naming the parameter at fault.
package api

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/analysis/flame"
	"github.com/latscope/latscope/attribution"
	"github.com/latscope/latscope/cpuprofile"
	"github.com/latscope/latscope/metrics"
	"github.com/latscope/latscope/store"
)

// Options configures the handler New returns. Every field is optional.
type Options struct {
	// Store is the trace store the Jaeger API reads; without it the Jaeger
	// routes are not served (404).
	Store *store.Store
	// Samples are the CPU samples of spans: they give flame graphs code
	// frames under [on cpu] and serve /api/profile/cpu. Without them
	// (CPU sampling off) that route answers 404 saying so.
	Samples *cpuprofile.Store
	// Status reports the agent's state; its result is JSON-marshalled at
	// GET /api/status. Without it that route is 404.
	Status func() any
	// Metrics serves GET /metrics (a Prometheus handler). Without it that
	// route is 404.
	Metrics http.Handler
	// Ready reports whether the agent is ready: nil for 200 "ok", an error
	// for 503 with its message. Without it /readyz is always 200.
	Ready func() error
	// Attribution switches deep latency attribution on and off; without
	// it the /api/attribution routes are 404.
	Attribution attribution.Switch
	// Log receives what the handler cannot tell the client (a response it
	// failed to encode). Nil discards.
	Log *slog.Logger
	// History is the recent RED per operation /api/overview and
	// /api/timeline read; without it those routes are 404.
	History *metrics.History
	// UI serves every path the API does not route (the web UI's pages and
	// assets; see package ui). Without it those paths are 404.
	UI http.Handler
}

// New returns the agent's HTTP handler.
func New(opts Options) http.Handler {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	debugRoutes(mux)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if opts.Ready != nil {
			if err := opts.Ready(); err != nil {
				writeText(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
				return
			}
		}
		writeText(w, http.StatusOK, "ok")
	})
	if opts.Metrics != nil {
		mux.Handle("GET /metrics", opts.Metrics)
	}
	if opts.Status != nil {
		mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, log, http.StatusOK, opts.Status())
		})
	}
	if opts.Store != nil {
		q := &query{store: opts.Store, log: log, now: time.Now}
		mux.HandleFunc("GET /api/services", q.services)
		mux.HandleFunc("GET /api/services/{service}/operations", q.serviceOperations)
		mux.HandleFunc("GET /api/operations", q.operations)
		mux.HandleFunc("GET /api/traces", q.search)
		mux.HandleFunc("GET /api/traces/{traceID}", q.trace)
		// Segments split by their spans' time splits (latency
		// attribution), code under [on cpu] from CPU samples.
		f := &flameAPI{q: q, samples: opts.Samples, split: flame.TimeCauses}
		if opts.Samples != nil {
			f.split = opts.Samples.Split(flame.TimeCauses)
		}
		mux.HandleFunc("GET /api/traces/{traceID}/critical-path", f.criticalPath)
		mux.HandleFunc("GET /api/flame", f.profile)
		mux.HandleFunc("GET /api/requests", q.requests)
		mux.HandleFunc("GET /api/profile/cpu", f.cpuProfile)
		ui := &pprofUI{now: q.now, log: log, build: func(req FlameRequest) (*profile.Profile, error) {
			res, err := Flame(req, StoreSource(opts.Store), f.split)
			if err != nil {
				return nil, err
			}
			return res.Profile, nil
		}}
		mux.Handle("GET "+strings.TrimSuffix(PprofPrefix, "/"), ui)
		mux.Handle("GET "+PprofPrefix, ui)
	}
	if opts.History != nil {
		h := &historyAPI{h: opts.History, log: log}
		mux.HandleFunc("GET /api/overview", h.overview)
		mux.HandleFunc("GET /api/timeline", h.timeline)
	}
	if opts.UI != nil {
		mux.Handle("/", opts.UI)
	}
	if opts.Attribution != nil {
		a := &attributionAPI{sw: opts.Attribution, log: log}
		mux.HandleFunc("GET /api/attribution", a.state)
		mux.HandleFunc("POST /api/attribution/deep", a.start)
		mux.HandleFunc("DELETE /api/attribution/deep", a.stop)
	}
	// Unknown API paths answer in Jaeger's envelope, so a client reading
	// it sees why.
	mux.HandleFunc("GET /api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, log, http.StatusNotFound, "no API endpoint at "+r.URL.Path)
	})
	return mux
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	w.Write([]byte(msg + "\n"))
}

// writeJSON marshals v before writing anything, so a value that cannot be
// encoded becomes a 500 rather than a truncated body.
func writeJSON(w http.ResponseWriter, log *slog.Logger, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		log.Error("encode API response", "err", err)
		code = http.StatusInternalServerError
		b, _ = json.Marshal(response{Errors: []apiError{{Code: code, Msg: "encode response: " + err.Error()}}})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// writeData answers with data in Jaeger's envelope; total is how many
// items data holds.
func writeData(w http.ResponseWriter, log *slog.Logger, data any, total int) {
	writeJSON(w, log, http.StatusOK, response{Data: data, Total: total})
}

func writeError(w http.ResponseWriter, log *slog.Logger, code int, msg string) {
	writeJSON(w, log, code, response{Errors: []apiError{{Code: code, Msg: msg}}})
}
