// Package telemetry owns the OpenTelemetry SDK setup shared by the two demo
// services that carry tracing code, gateway and reviews. Everything is
// configured by the standard environment variables:
//
//   - OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: the resource;
//   - OTEL_TRACES_EXPORTER: "otlp" (default) or "none";
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL:
//     "http/protobuf" (default) or "grpc";
//   - OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
//     OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_INSECURE, ...: read by
//     the exporters themselves;
//   - OTEL_BSP_*: the batch span processor.
//
// The propagator is W3C tracecontext.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Setup installs a global TracerProvider and the W3C tracecontext
// propagator. defaultName is service.name unless OTEL_SERVICE_NAME or
// OTEL_RESOURCE_ATTRIBUTES set one. The returned function flushes buffered
// spans and stops the exporter; call it on shutdown.
func Setup(ctx context.Context, log *slog.Logger, defaultName string) (shutdown func(context.Context) error, err error) {
	// Later options override earlier ones, so the environment wins over
	// the default name.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", defaultName)),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("build otel resource: %w", err)
	}

	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	exporterName := strings.ToLower(envFirst("otlp", "OTEL_TRACES_EXPORTER"))
	protocol := strings.ToLower(envFirst("http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"))
	switch exporterName {
	case "none":
		// Spans are still created, so trace context still propagates.
	case "otlp":
		var exp sdktrace.SpanExporter
		switch protocol {
		case "http/protobuf":
			exp, err = otlptracehttp.New(ctx)
		case "grpc":
			exp, err = otlptracegrpc.New(ctx)
		default:
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q is not supported: use http/protobuf or grpc", protocol)
		}
		if err != nil {
			return nil, fmt.Errorf("create otlp %s trace exporter: %w", protocol, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q is not supported: use otlp or none", exporterName)
	}

	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("opentelemetry", "err", err)
	}))
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	if exporterName == "none" {
		log.Info("tracing", "exporter", exporterName)
	} else {
		log.Info("tracing", "exporter", exporterName, "protocol", protocol)
	}
	return tp.Shutdown, nil
}

// envFirst returns the first non-empty variable among keys, else def.
func envFirst(def string, keys ...string) string {
	for _, k := range keys {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return def
}
