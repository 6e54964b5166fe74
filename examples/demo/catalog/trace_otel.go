//go:build otel

package main

import (
	"context"
	"log/slog"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc"

	"github.com/latscope/latscope/examples/demo/internal/telemetry"
)

// catalog instrumented in-process with the OpenTelemetry SDK, as a team
// would without latscope: otelhttp on its server and its HTTP client,
// otelgrpc on its gRPC client, spans exported over OTLP (configured by
// the OTEL_* environment variables, see internal/telemetry).

func setupTracing(ctx context.Context, log *slog.Logger) (func(context.Context) error, error) {
	return telemetry.Setup(ctx, log, "catalog")
}

func tracedHandler(h http.Handler) http.Handler {
	return otelhttp.NewHandler(h, "catalog", otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
		return r.Method + " /product/{id}"
	}))
}

func tracedTransport(rt http.RoundTripper) http.RoundTripper { return otelhttp.NewTransport(rt) }

func tracedDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler())}
}
