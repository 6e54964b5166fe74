// Command gateway is the demo's edge service: GET /product/{id} is answered
// by catalog's GET /product/{id}. It is instrumented with the OpenTelemetry
// SDK and otelhttp on both its server and its client, so its request to
// catalog carries a W3C traceparent header.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/latscope/latscope/examples/demo/internal/service"
	"github.com/latscope/latscope/examples/demo/internal/telemetry"
)

func main() {
	listen := flag.String("listen", service.Env("LISTEN_ADDR", "127.0.0.1:8080"), "HTTP listen address (env LISTEN_ADDR)")
	catalogURL := flag.String("catalog", service.Env("CATALOG_URL", "http://127.0.0.1:8081"), "catalog base URL (env CATALOG_URL)")
	timeout := flag.Duration("upstream-timeout", 5*time.Second, "deadline of each call to catalog")
	flag.Parse()

	log := service.Logger("gateway")
	if err := run(log, *listen, strings.TrimSuffix(*catalogURL, "/"), *timeout); err != nil {
		log.Error("exit", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, listen, catalogURL string, timeout time.Duration) error {
	ctx, stop := service.SignalContext()
	defer stop()

	shutdown, err := telemetry.Setup(ctx, log, "gateway")
	if err != nil {
		return err
	}
	defer func() {
		flushCtx, cancel := context.WithTimeout(context.Background(), service.ShutdownTimeout)
		defer cancel()
		if err := shutdown(flushCtx); err != nil {
			log.Warn("flush spans", "err", err)
		}
	}()

	h := &handler{
		catalogURL: catalogURL,
		// otelhttp.NewTransport makes a client span per request and
		// injects traceparent into the outgoing headers.
		client: &http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport), Timeout: timeout},
		log:    log,
	}
	mux := http.NewServeMux()
	mux.Handle("/product/", h)
	traced := otelhttp.NewHandler(mux, "gateway",
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " /product/{id}"
		}))
	return service.ServeHTTP(ctx, log, listen, traced)
}

type handler struct {
	catalogURL string
	client     *http.Client
	log        *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		service.WriteError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	id, ok := service.PathID(r.URL.Path, "/product/")
	if !ok {
		service.WriteError(w, http.StatusNotFound, "want /product/{id} with a positive integer id")
		return
	}
	url := fmt.Sprintf("%s/product/%d", h.catalogURL, id)
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, url, nil)
	if err != nil {
		service.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	resp, err := h.client.Do(req)
	if err != nil {
		if r.Context().Err() == nil { // else the caller gave up: not our failure
			h.log.Warn("call catalog", "url", url, "err", err)
		}
		service.WriteError(w, http.StatusBadGateway, fmt.Sprintf("call catalog: %v", err))
		return
	}
	defer resp.Body.Close()
	// Pass catalog's answer through: its JSON body and its status (200,
	// 404 for an unknown id, 502 when one of its upstreams failed).
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body) // the client went away; nothing to do
}
