//go:build !go1.22

package main

import "net/http"

// routes registers catalog's handlers by path prefix: Go 1.21's ServeMux
// has no method or wildcard patterns. Each handler checks the rest of the
// path itself. (Built with Go ≥ 1.22, routes_go122.go registers patterns.)
func routes(mux *http.ServeMux, h *handler) {
	mux.Handle("/product/", h)
	mux.HandleFunc("/ping/", ping)
	mux.HandleFunc("/work/", h.work)
}
