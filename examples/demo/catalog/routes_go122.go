//go:debug httpmuxgo121=0
//go:build go1.22

package main

import "net/http"

// routes registers catalog's handlers under Go 1.22 ServeMux patterns.
// The pattern that matched is the request's route (Request.Pattern, Go ≥
// 1.23): latscope names the server span after it ("GET /product/{id}",
// attribute http.route), so every product request is one operation
// rather than one per id, and percentiles and flame graphs aggregate.
//
// The module's go line is 1.21 (so the demo builds with every toolchain
// latscope supports), which would keep Go 1.21's prefix-only ServeMux
// (GODEBUG httpmuxgo121=1) even on newer toolchains; the //go:debug line
// above asks for the patterns wherever the toolchain has them. Go 1.21
// builds use routes_go121.go.
func routes(mux *http.ServeMux, h *handler) {
	mux.Handle("GET /product/{id}", h)
	mux.HandleFunc("GET /ping/{id}", ping)
	mux.HandleFunc("GET /work/{id}", h.work)
}
