//go:build !otel

package main

import (
	"context"
	"log/slog"
	"net/http"

	"google.golang.org/grpc"
)

// The catalog latscope traces has no tracing code: these hooks do
// nothing. Built with -tags otel (trace_otel.go) they instrument catalog
// in-process with the OpenTelemetry SDK instead, the comparison point of
// scripts/benchdemo.

func setupTracing(context.Context, *slog.Logger) (func(context.Context) error, error) {
	return func(context.Context) error { return nil }, nil
}

func tracedHandler(h http.Handler) http.Handler { return h }

func tracedTransport(rt http.RoundTripper) http.RoundTripper { return rt }

func tracedDialOptions() []grpc.DialOption { return nil }
