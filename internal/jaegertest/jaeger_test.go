package jaegertest

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

const service = "jaegertest"

// TestRoundTrip sends a parent and a child span to a real Jaeger over each
// OTLP transport and reads them back through the query API.
func TestRoundTrip(t *testing.T) {
	j := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	transports := []struct {
		name     string
		exporter func() (sdktrace.SpanExporter, error)
	}{
		{"grpc", func() (sdktrace.SpanExporter, error) {
			return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(j.OTLPGRPC), otlptracegrpc.WithInsecure())
		}},
		{"http", func() (sdktrace.SpanExporter, error) {
			return otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(j.OTLPHTTP+"/v1/traces"))
		}},
	}
	// Fixed timestamps make every start and duration exact in µs.
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	sent := map[string]trace.SpanContext{} // transport → parent span
	for _, tr := range transports {
		exp, err := tr.exporter()
		if err != nil {
			t.Fatalf("%s exporter: %v", tr.name, err)
		}
		// Spans are recorded, then exported by hand, so that an
		// unreachable Jaeger is an error here rather than a log line.
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(
			sdktrace.WithSpanProcessor(rec),
			sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(service), attribute.String("host.name", "loopback"))),
		)
		tracer := tp.Tracer("latscope/jaegertest")
		pctx, parent := tracer.Start(ctx, "parent-"+tr.name, trace.WithTimestamp(t0))
		_, child := tracer.Start(pctx, "child-"+tr.name,
			trace.WithTimestamp(t0.Add(time.Millisecond)),
			trace.WithAttributes(
				attribute.String("transport", tr.name),
				attribute.Int64("items", 3),
				attribute.Int64("big", 1<<60), // past float64's exact integers
				attribute.Bool("cached", true),
				attribute.Float64("ratio", 0.25),
			))
		child.End(trace.WithTimestamp(t0.Add(3 * time.Millisecond)))
		parent.End(trace.WithTimestamp(t0.Add(5 * time.Millisecond)))
		if err := exp.ExportSpans(ctx, rec.Ended()); err != nil {
			t.Fatalf("export over %s to Jaeger: %v", tr.name, err)
		}
		if err := exp.Shutdown(ctx); err != nil {
			t.Errorf("%s exporter shutdown: %v", tr.name, err)
		}
		tp.Shutdown(ctx)
		sent[tr.name] = parent.SpanContext()
	}

	traces := j.WaitForTraces(t, service, len(transports), 30*time.Second)
	if len(traces) != len(transports) {
		t.Errorf("got %d traces of %s, want %d", len(traces), service, len(transports))
	}
	if got := j.Services(t); !slices.Contains(got, service) {
		t.Errorf("services = %v, want %s among them", got, service)
	}

	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			sc := sent[tr.name]
			got := j.Trace(t, sc.TraceID().String())
			if got.TraceID != sc.TraceID().String() || len(got.Spans) != 2 {
				t.Fatalf("trace %s: got ID %s with %d spans, want 2 spans", sc.TraceID(), got.TraceID, len(got.Spans))
			}
			parent, ok := got.Span("parent-" + tr.name)
			if !ok {
				t.Fatalf("no span parent-%s in %+v", tr.name, got.Spans)
			}
			child, ok := got.Span("child-" + tr.name)
			if !ok {
				t.Fatalf("no span child-%s in %+v", tr.name, got.Spans)
			}
			if parent.SpanID != sc.SpanID().String() || parent.Parent() != "" {
				t.Errorf("parent: span ID %s, parent %q; want %s, none", parent.SpanID, parent.Parent(), sc.SpanID())
			}
			want := []Reference{{RefType: "CHILD_OF", TraceID: got.TraceID, SpanID: parent.SpanID}}
			if !reflect.DeepEqual(child.References, want) {
				t.Errorf("child references = %+v, want %+v", child.References, want)
			}
			for _, s := range []Span{parent, child} {
				if s.ServiceName != service || s.ProcessTags["host.name"] != "loopback" {
					t.Errorf("%s: service %q, process tags %v; want %s, host.name=loopback", s.OperationName, s.ServiceName, s.ProcessTags, service)
				}
			}
			times := [][2]int64{{parent.StartTime, parent.Duration}, {child.StartTime, child.Duration}}
			wantTimes := [][2]int64{{t0.UnixMicro(), 5000}, {t0.UnixMicro() + 1000, 2000}}
			if !reflect.DeepEqual(times, wantTimes) {
				t.Errorf("[start µs, duration µs] of parent, child = %v, want %v", times, wantTimes)
			}
			wantTags := map[string]any{
				"transport": tr.name,
				"items":     int64(3),
				"big":       int64(1 << 60),
				"cached":    true,
				"ratio":     0.25,
			}
			for k, v := range wantTags {
				if child.Tags[k] != v {
					t.Errorf("child tag %s = %#v, want %#v (all: %v)", k, child.Tags[k], v, child.Tags)
				}
			}
		})
	}
}

func TestDecodeValue(t *testing.T) {
	tests := []struct {
		typ, value string
		want       any
	}{
		{"string", `"x"`, "x"},
		{"", `"untyped"`, "untyped"},
		{"bool", `false`, false},
		{"int64", `1152921504606846976`, int64(1 << 60)},
		{"int64", `"-7"`, int64(-7)},
		{"float64", `1.5`, 1.5},
		{"binary", `"AQI="`, []byte{1, 2}},
	}
	for _, tt := range tests {
		got, err := decodeValue(apiKeyValue{Key: "k", Type: tt.typ, Value: json.RawMessage(tt.value)})
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("decodeValue(%s %s) = %#v, %v; want %#v", tt.typ, tt.value, got, err, tt.want)
		}
	}
	if _, err := decodeValue(apiKeyValue{Type: "complex", Value: json.RawMessage(`1`)}); err == nil {
		t.Error("decodeValue of an unknown type succeeded")
	}
}
