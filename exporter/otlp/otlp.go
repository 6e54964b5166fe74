// Package otlp exports spans over OTLP (gRPC or HTTP/protobuf) with the
// OpenTelemetry Go exporters, configured like any OpenTelemetry component
// by the standard OTEL_EXPORTER_OTLP_* environment variables.
//
// Export encodes spans into OTLP's protobuf form at once (encode.go:
// cheaper than building the proto messages) and queues them in batches
// (bounded; drops are counted, never silent); the exporters' clients
// send each batch and retry it with backoff.
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

	"github.com/latscope/latscope/span"
)

// Options tune batching; zero values take the defaults.
type Options struct {
	// QueueSize: spans waiting to be sent besides the batch being
	// filled, in whole batches (rounded up to BatchSize); default 65536.
	QueueSize    int
	BatchSize    int           // spans per export; default 512
	BatchTimeout time.Duration // longest a span waits for its batch; default 1s
	// Log, if set, is told of failed exports, at most once a minute
	// (every failure is counted: Stats).
	Log *slog.Logger
}

// Exporter is a span.Exporter sending OTLP. Export encodes the spans
// before it returns: it keeps nothing of them, so its caller may reuse
// their memory (callchain.Options.ReuseSpans).
type Exporter struct {
	client otlptrace.Client
	opts   Options

	mu        sync.Mutex // guards what Export fills and the resources
	fill      *batch     // the batch Export adds to
	closed    bool
	resources map[*span.Process][]byte // ResourceSpans.resource fields
	attrs     []span.Attr              // Export's, reused

	// full holds the batches waiting for the sender: the queue.
	full  chan *batch
	spare chan *batch // sent batches, for reuse
	stop  chan struct{}
	done  chan struct{}

	queued   atomic.Int64 // spans in fill and full
	dropped  atomic.Uint64
	exported atomic.Uint64
	failed   atomic.Uint64

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
	e := &Exporter{
		client: client, opts: opts, fill: newBatch(), resources: map[*span.Process][]byte{},
		// The queue holds whole batches: QueueSize rounded up, plus the
		// one being filled.
		full:  make(chan *batch, (opts.QueueSize+opts.BatchSize-1)/opts.BatchSize),
		spare: make(chan *batch, spareBatches),
		stop:  make(chan struct{}), done: make(chan struct{}),
	}
	go e.loop()
	return e, nil
}

// spareBatches bounds the sent batches kept for reuse (each holds its
// encoded spans' buffers): the steady state needs two or three; the rest
// of a burst's go to the garbage collector.
const spareBatches = 4

// Export encodes spans into the batch being filled and queues full
// batches for the sender; when the queue is full (or the exporter
// closed) spans are dropped and counted (Stats). Nil spans are skipped.
func (e *Exporter) Export(spans []*span.Span) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range spans {
		if s == nil {
			continue
		}
		if e.closed || e.fill.n >= e.opts.BatchSize && !e.handOff() {
			e.dropped.Add(1)
			continue
		}
		e.attrs = s.AppendAttributes(e.attrs[:0])
		if err := e.fill.add(s, e.attrs, e.resource); err != nil {
			// A resource protobuf could not encode: counted as failed,
			// as its batch would have been.
			e.failed.Add(1)
			e.lastErr.Store(err)
			continue
		}
		e.queued.Add(1)
	}
	clear(e.attrs) // holds no span's values until the next call
	return nil
}

// handOff queues the full batch being filled and starts another, or
// reports that the queue is full. Under mu.
func (e *Exporter) handOff() bool {
	select {
	case e.full <- e.fill:
	default:
		return false
	}
	select {
	case e.fill = <-e.spare:
	default:
		e.fill = newBatch()
	}
	return true
}

// takeFill returns the batch being filled, if it holds spans, and starts
// another.
func (e *Exporter) takeFill() *batch {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fill.n == 0 {
		return nil
	}
	b := e.fill
	select {
	case e.fill = <-e.spare:
	default:
		e.fill = newBatch()
	}
	return b
}

// Stats returns spans exported, dropped at the full queue, and lost
// because an export failed after the exporter's retries.
func (e *Exporter) Stats() (exported, dropped, failed uint64) {
	return e.exported.Load(), e.dropped.Load(), e.failed.Load()
}

// Close sends what is queued, then shuts the exporter down; spans
// exported after it are dropped (counted). Later calls return the same
// result.
func (e *Exporter) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		close(e.stop)
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

// loop sends the full batches as they come, and the one being filled
// every BatchTimeout; on Close, everything queued.
func (e *Exporter) loop() {
	defer close(e.done)
	tick := time.NewTicker(e.opts.BatchTimeout)
	defer tick.Stop()
	for {
		select {
		case b := <-e.full:
			e.send(b)
		case <-tick.C:
			if b := e.takeFill(); b != nil {
				e.send(b)
			}
		case <-e.stop:
			// Closed: Export hands off no more batches.
			for drained := false; !drained; {
				select {
				case b := <-e.full:
					e.send(b)
				default:
					drained = true
				}
			}
			if b := e.takeFill(); b != nil {
				e.send(b)
			}
			return
		}
	}
}

func (e *Exporter) send(b *batch) {
	e.queued.Add(-int64(b.n))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	// UploadTraces marshals the request before it returns (the gRPC and
	// HTTP clients alike, retries included): b is free again after it.
	err := e.client.UploadTraces(ctx, b.request())
	cancel()
	if err != nil {
		e.failed.Add(uint64(b.n))
		e.lastErr.Store(fmt.Errorf("export %d spans: %w", b.n, err))
		if e.opts.Log != nil && time.Since(e.saidFailed) >= time.Minute {
			e.saidFailed = time.Now()
			e.opts.Log.Warn("OTLP export failed: spans lost after the exporter's retries (counted; said at most once a minute)", "spans", b.n, "failed_so_far", e.failed.Load(), "err", err)
		}
	} else {
		e.exported.Add(uint64(b.n))
	}
	b.reset()
	select {
	case e.spare <- b:
	default:
	}
}

// resource returns the ResourceSpans.resource field of p's spans. Under
// mu.
func (e *Exporter) resource(p *span.Process) ([]byte, error) {
	if r, ok := e.resources[p]; ok {
		return r, nil
	}
	r, err := resourceField(p)
	if err != nil {
		return nil, fmt.Errorf("OTLP resource of process %v: %w", p, err)
	}
	// A node agent sees processes come and go: the cache is rebuilt
	// rather than kept for every process ever traced.
	if len(e.resources) >= maxResources {
		clear(e.resources)
	}
	e.resources[p] = r
	return r, nil
}

// maxResources bounds the resource cache (one entry per traced process).
const maxResources = 4096

// Queued is the number of spans waiting to be sent.
func (e *Exporter) Queued() int { return int(e.queued.Load()) }
