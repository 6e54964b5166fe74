package api

import (
	"net/http"
	"net/http/pprof"
)

// debugRoutes serves the agent's own Go profiles at Go's usual paths
// (/debug/pprof/, /debug/pprof/profile?seconds=N, heap, goroutine, …), so
// the agent's cost can be profiled where it runs: `go tool pprof
// http://127.0.0.1:7070/debug/pprof/profile?seconds=10`.
func debugRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
