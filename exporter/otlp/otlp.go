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
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/latscope/latscope/span"
)

// Options tune batching; zero values take the defaults.
type Options struct {
	QueueSize    int           // spans waiting to be sent; default 65536
	BatchSize    int           // spans per export; default 512
	BatchTimeout time.Duration // longest a span waits for its batch; default 1s
	// Log, if set, is told of failed exports, at most once a minute
	// (every failure is counted: Stats).
	Log *slog.Logger
}

// Exporter is a span.Exporter sending OTLP.
type Exporter struct {
	client otlptrace.Client
	opts   Options
	queue  chan *span.Span
	done   chan struct{}

	dropped  atomic.Uint64
	exported atomic.Uint64
	failed   atomic.Uint64

	mu        sync.Mutex
	resources map[*span.Process]*resourcepb.Resource
	closeOnce sync.Once
	// saidFailed: when the log last heard of a failed export (the send
	// loop's only).
	saidFailed time.Time
	stopErr    error // the client's, from the first Close
	lastErr    atomic.Value
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
	var client otlptrace.Client
	switch strings.ToLower(proto) {
	case "", "grpc":
		client = otlptracegrpc.NewClient()
	case "http/protobuf":
		client = otlptracehttp.NewClient()
	default:
		return nil, fmt.Errorf("OTLP protocol %q: latscope speaks grpc and http/protobuf", proto)
	}
	if err := client.Start(ctx); err != nil {
		return nil, fmt.Errorf("create OTLP exporter: %w", err)
	}
	e := &Exporter{client: client, opts: opts, queue: make(chan *span.Span, opts.QueueSize), done: make(chan struct{}), resources: map[*span.Process]*resourcepb.Resource{}}
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

// Close sends what is queued, then shuts the exporter down. Later calls
// return the same result.
func (e *Exporter) Close() error {
	e.closeOnce.Do(func() {
		close(e.queue)
		<-e.done
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.stopErr = e.client.Stop(ctx)
	})
	err := e.stopErr
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.client.UploadTraces(ctx, e.resourceSpans(batch)); err != nil {
		e.failed.Add(uint64(len(batch)))
		e.lastErr.Store(fmt.Errorf("export %d spans: %w", len(batch), err))
		if e.opts.Log != nil && time.Since(e.saidFailed) >= time.Minute {
			e.saidFailed = time.Now()
			e.opts.Log.Warn("OTLP export failed: spans lost after the exporter's retries (counted; said at most once a minute)", "spans", len(batch), "failed_so_far", e.failed.Load(), "err", err)
		}
		return
	}
	e.exported.Add(uint64(len(batch)))
}

var scope = &commonpb.InstrumentationScope{Name: span.Scope.Name, Version: span.Scope.Version}

// resourceSpans builds the OTLP request body straight from latscope's
// spans, one ResourceSpans per process. (Going through the SDK's
// ReadOnlySpan and the exporter's transform instead cost about as much as
// the gRPC marshalling: boxed attributes, resources hashed per span.)
func (e *Exporter) resourceSpans(batch []*span.Span) []*tracepb.ResourceSpans {
	var out []*tracepb.ResourceSpans
	byProc := map[*span.Process]*tracepb.ScopeSpans{}
	spans := make([]tracepb.Span, len(batch))
	for i, s := range batch {
		ss, ok := byProc[s.Process]
		if !ok {
			ss = &tracepb.ScopeSpans{Scope: scope}
			byProc[s.Process] = ss
			out = append(out, &tracepb.ResourceSpans{Resource: e.resource(s.Process), ScopeSpans: []*tracepb.ScopeSpans{ss}})
		}
		protoSpan(&spans[i], s)
		ss.Spans = append(ss.Spans, &spans[i])
	}
	return out
}

// protoSpan fills p with s. Kinds and status codes share OpenTelemetry's
// numbering.
func protoSpan(p *tracepb.Span, s *span.Span) {
	traceID, spanID := s.TraceID, s.SpanID
	p.TraceId = traceID[:]
	p.SpanId = spanID[:]
	if !s.ParentID.IsZero() {
		parentID := s.ParentID
		p.ParentSpanId = parentID[:]
	}
	// The W3C flags of the parent context (sampled) and whether it came
	// from another process, as the SDK's exporter sets them.
	p.Flags = uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK)
	if s.RemoteParent {
		p.Flags |= uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)
	}
	p.Name = s.Name
	p.Kind = tracepb.Span_SpanKind(s.Kind)
	p.StartTimeUnixNano = uint64(max(0, s.Start.UnixNano()))
	p.EndTimeUnixNano = uint64(max(0, s.End.UnixNano()))
	p.Attributes = keyValues(s.Attributes())
	switch s.Status {
	case span.StatusError:
		p.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: s.StatusMessage}
	case span.StatusOK:
		p.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_OK}
	}
}

func (e *Exporter) resource(p *span.Process) *resourcepb.Resource {
	e.mu.Lock()
	defer e.mu.Unlock()
	if r, ok := e.resources[p]; ok {
		return r
	}
	var attrs []span.Attr
	if p != nil {
		attrs = p.Attributes()
	}
	attrs = append(attrs, span.Attr{Key: "telemetry.distro.name", Value: "latscope"}, span.Attr{Key: "telemetry.distro.version", Value: span.Scope.Version})
	r := &resourcepb.Resource{Attributes: keyValues(attrs)}
	// A node agent sees processes come and go: the cache is rebuilt
	// rather than kept for every process ever traced.
	if len(e.resources) >= maxResources {
		clear(e.resources)
	}
	e.resources[p] = r
	return r
}

// maxResources bounds the resource cache (one entry per traced process).
const maxResources = 4096

// Queued is the number of spans waiting in the queue.
func (e *Exporter) Queued() int { return len(e.queue) }

// keyValues converts attributes, allocating the values of one span
// together.
func keyValues(in []span.Attr) []*commonpb.KeyValue {
	kvs := make([]commonpb.KeyValue, len(in))
	vals := make([]commonpb.AnyValue, len(in))
	out := make([]*commonpb.KeyValue, len(in))
	for i, a := range in {
		v := &vals[i]
		switch x := a.Value.(type) {
		case string:
			v.Value = &commonpb.AnyValue_StringValue{StringValue: x}
		case int64:
			v.Value = &commonpb.AnyValue_IntValue{IntValue: x}
		case int:
			v.Value = &commonpb.AnyValue_IntValue{IntValue: int64(x)}
		case float64:
			v.Value = &commonpb.AnyValue_DoubleValue{DoubleValue: x}
		case bool:
			v.Value = &commonpb.AnyValue_BoolValue{BoolValue: x}
		default:
			v.Value = &commonpb.AnyValue_StringValue{StringValue: fmt.Sprint(x)}
		}
		kvs[i] = commonpb.KeyValue{Key: a.Key, Value: v}
		out[i] = &kvs[i]
	}
	return out
}
