// Package otlp exports spans over OTLP (gRPC or HTTP/protobuf) with the
// OpenTelemetry Go exporters, configured like any OpenTelemetry component
// by the standard OTEL_EXPORTER_OTLP_* environment variables.
//
// Spans are queued (bounded; drops are counted, never silent), sent in
// batches, and retried with backoff by the exporters themselves.
package otlp

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/latscope/latscope/agent/span"
)

// Options tune batching; zero values take the defaults.
type Options struct {
	QueueSize    int           // spans waiting to be sent; default 65536
	BatchSize    int           // spans per export; default 512
	BatchTimeout time.Duration // longest a span waits for its batch; default 1s
}

// Exporter is a span.Exporter sending OTLP.
type Exporter struct {
	exp   *otlptrace.Exporter
	opts  Options
	queue chan *span.Span
	done  chan struct{}

	dropped  atomic.Uint64
	exported atomic.Uint64
	failed   atomic.Uint64

	mu        sync.Mutex
	resources map[*span.Process]*resource.Resource
	closeOnce sync.Once
	lastErr   atomic.Value
}

// Enabled reports whether the environment names an OTLP endpoint.
func Enabled() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// New starts an exporter for the protocol OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
// or OTEL_EXPORTER_OTLP_PROTOCOL names: "grpc" (default) or
// "http/protobuf".
func New(ctx context.Context, opts Options) (*Exporter, error) {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 65536
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 512
	}
	if opts.BatchTimeout <= 0 {
		opts.BatchTimeout = time.Second
	}
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var exp *otlptrace.Exporter
	var err error
	switch strings.ToLower(proto) {
	case "", "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	default:
		return nil, fmt.Errorf("OTLP protocol %q: latscope speaks grpc and http/protobuf", proto)
	}
	if err != nil {
		return nil, fmt.Errorf("create OTLP exporter: %w", err)
	}
	e := &Exporter{exp: exp, opts: opts, queue: make(chan *span.Span, opts.QueueSize), done: make(chan struct{}), resources: map[*span.Process]*resource.Resource{}}
	go e.loop()
	return e, nil
}

// Export queues spans; when the queue is full they are dropped and
// counted (Stats).
func (e *Exporter) Export(spans []*span.Span) error {
	for _, s := range spans {
		select {
		case e.queue <- s:
		default:
			e.dropped.Add(1)
		}
	}
	return nil
}

// Stats returns spans exported, dropped at the full queue, and lost
// because an export failed after the exporter's retries.
func (e *Exporter) Stats() (exported, dropped, failed uint64) {
	return e.exported.Load(), e.dropped.Load(), e.failed.Load()
}

// Close sends what is queued, then shuts the exporter down.
func (e *Exporter) Close() error {
	e.closeOnce.Do(func() { close(e.queue) })
	<-e.done
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := e.exp.Shutdown(ctx)
	if err == nil {
		if last, ok := e.lastErr.Load().(error); ok {
			err = last
		}
	}
	if _, dropped, failed := e.Stats(); dropped+failed > 0 {
		err = fmt.Errorf("OTLP: %d spans dropped at the full queue, %d lost to failed exports: %v", dropped, failed, err)
	}
	return err
}

func (e *Exporter) loop() {
	defer close(e.done)
	batch := make([]*span.Span, 0, e.opts.BatchSize)
	timer := time.NewTimer(e.opts.BatchTimeout)
	defer timer.Stop()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		e.send(batch)
		batch = batch[:0]
	}
	for {
		select {
		case s, ok := <-e.queue:
			if !ok {
				flush()
				return
			}
			batch = append(batch, s)
			if len(batch) >= e.opts.BatchSize {
				flush()
			}
		case <-timer.C:
			flush()
			timer.Reset(e.opts.BatchTimeout)
		}
	}
}

func (e *Exporter) send(batch []*span.Span) {
	ro := make([]sdktrace.ReadOnlySpan, len(batch))
	for i, s := range batch {
		ro[i] = e.readOnly(s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.exp.ExportSpans(ctx, ro); err != nil {
		e.failed.Add(uint64(len(batch)))
		e.lastErr.Store(fmt.Errorf("export %d spans: %w", len(batch), err))
		return
	}
	e.exported.Add(uint64(len(batch)))
}

var scope = instrumentation.Scope{Name: span.Scope.Name, Version: span.Scope.Version}

// readOnly converts a span to the SDK's read-only form.
func (e *Exporter) readOnly(s *span.Span) sdktrace.ReadOnlySpan {
	stub := tracetest.SpanStub{
		Name: s.Name,
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID(s.TraceID), SpanID: trace.SpanID(s.SpanID), TraceFlags: trace.FlagsSampled,
		}),
		SpanKind:             trace.SpanKind(s.Kind),
		StartTime:            s.Start,
		EndTime:              s.End,
		Attributes:           attributes(s.Attributes()),
		Resource:             e.resource(s.Process),
		InstrumentationScope: scope,
	}
	if !s.ParentID.IsZero() {
		stub.Parent = trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID(s.TraceID), SpanID: trace.SpanID(s.ParentID), TraceFlags: trace.FlagsSampled, Remote: s.RemoteParent,
		})
	}
	switch s.Status {
	case span.StatusError:
		stub.Status = sdktrace.Status{Code: 2, Description: s.StatusMessage}
	case span.StatusOK:
		stub.Status = sdktrace.Status{Code: 1}
	}
	return stub.Snapshot()
}

func (e *Exporter) resource(p *span.Process) *resource.Resource {
	e.mu.Lock()
	defer e.mu.Unlock()
	if r, ok := e.resources[p]; ok {
		return r
	}
	var attrs []attribute.KeyValue
	if p != nil {
		attrs = attributes(p.Attributes())
	}
	attrs = append(attrs, attribute.String("telemetry.distro.name", "latscope"), attribute.String("telemetry.distro.version", span.Scope.Version))
	r := resource.NewSchemaless(attrs...)
	e.resources[p] = r
	return r
}

func attributes(in []span.Attr) []attribute.KeyValue {
	out := make([]attribute.KeyValue, 0, len(in))
	for _, a := range in {
		k := attribute.Key(a.Key)
		switch v := a.Value.(type) {
		case string:
			out = append(out, k.String(v))
		case int64:
			out = append(out, k.Int64(v))
		case int:
			out = append(out, k.Int(v))
		case float64:
			out = append(out, k.Float64(v))
		case bool:
			out = append(out, k.Bool(v))
		default:
			out = append(out, k.String(fmt.Sprint(v)))
		}
	}
	return out
}
