// Package service holds what every demo service shares: flag defaults
// taken from the environment, a slog logger, a context cancelled by
// SIGINT/SIGTERM, and an HTTP server that drains on that signal.
//
// Nothing here imports OpenTelemetry: catalog and pricing use this package
// and must stay free of tracing code.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ShutdownTimeout bounds how long a server drains in-flight requests after
// SIGINT/SIGTERM before it closes them.
const ShutdownTimeout = 5 * time.Second

// Env returns the environment variable key, or def when it is unset or
// empty. Services use it as the default of a flag, so a flag always wins.
func Env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// Logger returns a text logger on stderr tagged with the service name, and
// installs it as slog's default.
func Logger(name string) *slog.Logger {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", name)
	slog.SetDefault(log)
	return log
}

// SignalContext returns a context cancelled by the first SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Listen opens a TCP listener on addr and logs the address it bound, so
// "-listen 127.0.0.1:0" works: the chosen port is in the "listening" line.
func Listen(log *slog.Logger, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (is another process using it? pick another with -listen)", addr, err)
	}
	log.Info("listening", "addr", ln.Addr().String())
	return ln, nil
}

// ServeHTTP serves h on addr until ctx is cancelled, then drains in-flight
// requests for up to ShutdownTimeout. It returns nil after a clean shutdown.
func ServeHTTP(ctx context.Context, log *slog.Logger, addr string, h http.Handler) error {
	ln, err := Listen(log, addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Still-running requests, or connections a client opened but sent
		// nothing on (net/http counts those as active for 5s).
		log.Warn("connections still open after the drain timeout; closing them", "timeout", ShutdownTimeout, "err", err)
		srv.Close()
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	}
	return nil
}

// WriteJSON writes v as the JSON body of a response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}

// WriteError writes {"error": msg} with the given status.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"error": msg})
}

// PathID returns the positive integer that follows prefix in path, as in
// "/product/7" with prefix "/product/". Routing is by prefix rather than
// Go 1.22 ServeMux patterns so the services build with Go 1.21.
func PathID(path, prefix string) (int64, bool) {
	rest, ok := strings.CutPrefix(path, prefix)
	if !ok || rest == "" || strings.Contains(rest, "/") {
		return 0, false
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || id < 1 {
		return 0, false
	}
	return id, true
}
