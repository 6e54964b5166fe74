package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/kubernetes"

	"github.com/latscope/latscope/agent/callchain"
	"github.com/latscope/latscope/agent/config"
	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/agent/pods"
	"github.com/latscope/latscope/analysis/flame"
	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/attribution"
	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/cpuprofile"
	"github.com/latscope/latscope/exporter/otlp"
	"github.com/latscope/latscope/metrics"
	"github.com/latscope/latscope/sampling"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
	"github.com/latscope/latscope/ui"
)

// Node is `latscope agent`: one per node, it traces every Go process its
// selectors pick, from the exec of each (discovery's exec tracepoint; a
// slow /proc rescan is only the safety net) until it exits, with one set
// of programs and one set of probes per executable file. Completed spans
// go to the embedded trace store, the RED metrics and, through the keep
// policy, to OTLP when OTEL_EXPORTER_OTLP_* names an endpoint. Its HTTP
// API serves the store in Jaeger's query API shapes, /metrics,
// /api/status and the web UI (package ui).
//
// Data flows one way: kernel → tracer → builder → store, metrics,
// exporter; the API only reads.
type Node struct {
	log     *slog.Logger
	self    int    // the agent's own pid: never traced
	selfExe fileID // nor a process running the agent's binary
	started time.Time

	tracer  *Tracer
	watcher *discovery.Watcher
	// pods resolves processes' pods; nil without Kubernetes. podsChanged
	// says a pod was added or updated (nil without Kubernetes).
	pods        *pods.Resolver
	podsChanged chan struct{}

	bmu     sync.Mutex // guards builder: the ring reader adds, discovery adds and removes processes
	builder *callchain.Builder
	wall    int64 // added to kernel CLOCK_MONOTONIC times for Unix times: spans' and CPU samples'

	samples  *cpuprofile.Store // CPU samples by span; nil when sampling is off
	memLimit *memoryLimit      // follows the samples' bytes (housekeeping)

	store   *store.Store
	red     *metrics.RED
	history *metrics.History // recent RED per operation, for the UI
	reg     *prometheus.Registry
	otlp    *otlp.Exporter    // nil without an OTLP endpoint
	sampler *sampling.Waiting // in front of otlp
	sinks   []span.Exporter
	spans   atomic.Uint64 // spans the builder emitted
	// trigger switches deep attribution on when a p99 crosses
	// attribution.auto.p99Above; nil when off.
	trigger *attribution.Trigger

	httpLn  net.Listener
	httpSrv *http.Server

	reload chan *config.Config

	mu    sync.Mutex // guards what discovery changes and status reads:
	cfg   *config.Config
	sel   discovery.Selectors
	procs procTable
}

// StartNode loads the programs, starts process discovery and the HTTP
// API, and returns once the node is ready to trace: errors here are the
// ones a user must fix before the agent can run (permissions, kernel, an
// address in use, a bad OTLP setting, an unreachable Kubernetes API when
// kubernetes.enabled is true). Run then traces until its context is done.
func StartNode(cfg *config.Config, log *slog.Logger) (*Node, error) {
	return StartNodeWith(cfg, NodeOptions{Log: log})
}

// NodeOptions are what a node takes besides its configuration.
type NodeOptions struct {
	Log *slog.Logger // nil: slog.Default()
	// Kubernetes is the API client pod metadata comes from (a fake
	// clientset in tests); nil builds one from the configuration (the
	// pod's service account, or kubernetes.kubeconfig). Given, it turns
	// pod metadata on unless kubernetes.enabled is false.
	Kubernetes kubernetes.Interface
}

// StartNodeWith is StartNode with options.
func StartNodeWith(cfg *config.Config, opts NodeOptions) (n *Node, err error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	n = &Node{log: log, self: os.Getpid(), started: time.Now(), cfg: cfg, reload: make(chan *config.Config, 1)}
	n.sel = discovery.Selectors{Include: cfg.Selectors, Exclude: cfg.Exclude}
	n.procs.init()
	n.memLimit = newMemoryLimit(int64(cfg.Store.Size), otlp.Enabled(), log)
	if n.selfExe, err = exeID(n.self); err != nil {
		return nil, err
	}
	partial := n // the returns below set n to nil
	defer func() {
		if err != nil {
			partial.closeAll()
		}
	}()

	// Listen first: an address in use is the commonest start failure and
	// costs nothing to find out.
	if n.httpLn, err = net.Listen("tcp", cfg.HTTP); err != nil {
		return nil, fmt.Errorf("listen on %s for the agent's API: %w (choose another address with --http)", cfg.HTTP, err)
	}
	if n.tracer, err = New(Config{
		MinDuration:   cfg.MinDuration,
		RingBytes:     int(cfg.RingSize),
		MaxGoroutines: cfg.MaxGoroutines,
		Inject:        cfg.Inject,
		SettleReturns: cfg.SettleReturns,
		ProfileHz:     cfg.Profile.CPUHz,
		// A long-running agent drains less often than a `latscope trace`
		// session: each wakeup is a round through Go's scheduler and
		// poller (at 20 ms, a fifth of its CPU at 20k spans/s).
		PollInterval: nodePoll,
		Logger:       log,
	}); err != nil {
		return nil, err
	}
	n.wall = n.tracer.MonoToWall() // the tracer's: records of every kind line up with spans
	// Every sink copies what it keeps (the OTLP sampler the spans it
	// holds; the OTLP exporter encodes them in Export): the builder reuses
	// span memory. The spans of a drain of the ring go out together, at
	// its Tick (Expire).
	n.builder = callchain.New(n.emit, n.wall, callchain.Options{Libraries: libraryDecoders(), Salt: n.tracer.IDSalt(), ReuseSpans: true, Deferred: true})
	n.trigger = attribution.NewTrigger(cfg.Attribution.Auto, func(d time.Duration, reason string) {
		if _, err := n.tracer.StartDeep(d, reason); err != nil {
			log.Warn("deep attribution not started", "reason", reason, "err", err)
		}
	})

	n.store = store.New(int64(cfg.Store.Size))
	n.reg = prometheus.NewRegistry()
	if n.red, err = metrics.NewRED(n.reg, metrics.Options{PodLabel: cfg.Metrics.PodLabel}); err != nil {
		return nil, fmt.Errorf("RED metrics: %w", err)
	}
	n.reg.MustRegister(metrics.NewAgentCollector(n.snapshot), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "latscope_agent"}))
	n.history = metrics.NewHistory(metrics.HistoryOptions{})
	n.sinks = []span.Exporter{n.store, n.red, n.history}
	if p := n.tracer.SamplePeriod(); p > 0 {
		// A sink too: it learns which spans arrived (samples whose span
		// never does are counted).
		n.samples = cpuprofile.New(int64(cfg.Profile.StoreSize), p)
		n.sinks = append(n.sinks, n.samples)
	}
	if otlp.Enabled() {
		policy := cfg.Keep
		if n.otlp, err = otlp.New(context.Background(), otlp.Options{Log: log}); err != nil {
			return nil, err
		}
		n.sampler = sampling.NewWaiting(policy, n.otlp, sampling.DefaultDecisionWait)
		n.sinks = append(n.sinks, n.sampler)
		log.Info("exporting spans over OTLP", "endpoint", otlpEndpoint(), "keep", policy.String())
	}

	if n.watcher, err = discovery.Watch(discovery.Options{}); err != nil {
		return nil, err
	}
	if err = n.startPods(cfg.Kubernetes, opts.Kubernetes); err != nil {
		return nil, err
	}
	status := func() any { return n.Status() }
	// Segments split by their spans' time splits (latency attribution),
	// code under [on cpu] from CPU samples.
	split := flame.SelfSplit(flame.TimeCauses)
	if n.samples != nil {
		split = n.samples.Split(flame.TimeCauses)
	}
	pages, err := ui.New(ui.Options{Store: n.store, History: n.history, Status: status, Split: split, JaegerQueryURL: cfg.Export.JaegerQueryURL, Log: log})
	if err != nil {
		return nil, err
	}
	n.httpSrv = &http.Server{
		Handler: api.New(api.Options{Store: n.store, History: n.history, Status: status, Metrics: metrics.Handler(n.reg), Ready: n.ready, Attribution: n.tracer, Log: log,
			Samples: n.samples, UI: pages}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		if err := n.httpSrv.Serve(n.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("agent API stopped", "err", err)
		}
	}()
	log.Info("agent API listening", "url", "http://"+n.httpLn.Addr().String(), "ui", "http://"+n.httpLn.Addr().String()+"/")
	return n, nil
}

// Addr is the address the HTTP API listens on.
func (n *Node) Addr() string { return n.httpLn.Addr().String() }

// Reload replaces the selectors with those of cfg (SIGHUP): processes
// already traced stay traced; every running process is considered again.
// Other settings need a restart: they are named in the log.
func (n *Node) Reload(cfg *config.Config) {
	select {
	case n.reload <- cfg:
	default:
		// A reload is pending: this one replaces it.
		select {
		case <-n.reload:
		default:
		}
		n.reload <- cfg
	}
}

// Run traces until ctx is done, then detaches every process, drains the
// ring buffer, flushes the builder and the exporters, and stops the API.
func (n *Node) Run(ctx context.Context) error {
	readCtx, stopRead := context.WithCancel(context.Background())
	defer stopRead()
	readErr := make(chan error, 1)
	go func() { readErr <- n.tracer.Run(readCtx, nodeSink{n}) }()
	profErr := make(chan error, 1)
	go func() { profErr <- n.tracer.RunProfile(readCtx, n.samples, n.wall) }()

	err := n.discover(ctx, readErr)

	// Detach first so nothing new arrives, then drain the ring buffer.
	n.detachAll()
	stopRead()
	if rerr := <-readErr; rerr != nil && err == nil {
		err = rerr
	}
	if perr := <-profErr; perr != nil && err == nil {
		err = perr
	}
	n.bmu.Lock()
	n.builder.Flush()
	n.bmu.Unlock()
	return errors.Join(err, n.closeAll())
}

// closeAll stops what StartNode started; safe on a partly started node.
func (n *Node) closeAll() error {
	var errs []error
	if n.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, n.httpSrv.Shutdown(ctx))
		cancel()
	} else if n.httpLn != nil {
		n.httpLn.Close()
	}
	for _, s := range n.sinks {
		if err := s.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close exporter: %w", err))
		}
	}
	n.sinks = nil
	if n.watcher != nil {
		errs = append(errs, n.watcher.Close())
	}
	if n.pods != nil {
		n.pods.Close()
	}
	if n.tracer != nil {
		errs = append(errs, n.tracer.Close())
	}
	return errors.Join(errs...)
}

// emit hands the builder's spans to every sink; it runs with bmu held.
func (n *Node) emit(spans []*span.Span) {
	n.spans.Add(uint64(len(spans)))
	n.tracer.Attribute(spans)
	n.trigger.Observe(spans)
	for _, s := range n.sinks {
		if err := s.Export(spans); err != nil {
			n.log.Error("export spans", "err", err)
		}
	}
}

// ready answers the readiness probe: the programs are loaded and the
// first scan of running processes is done.
func (n *Node) ready() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.procs.scanned {
		return errors.New("first scan of running processes not done yet")
	}
	return nil
}

// nodeSink feeds the node's builder from the ring reader.
type nodeSink struct{ n *Node }

func (s nodeSink) Call(ev *calltracer.Event) {
	s.n.bmu.Lock()
	s.n.builder.Add(ev)
	s.n.bmu.Unlock()
}

func (s nodeSink) Lib(raw []byte) {
	s.n.bmu.Lock()
	s.n.builder.AddLib(raw)
	s.n.bmu.Unlock()
}

func (s nodeSink) Tick() {
	s.n.bmu.Lock()
	s.n.builder.Expire(callchain.MonoNow())
	s.n.bmu.Unlock()
}

// otlpEndpoint is where OTLP export goes, as the environment names it.
func otlpEndpoint() string {
	if e := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); e != "" {
		return e
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
}

// nodePoll is how often the agent drains its ring buffers without a
// wakeup; a span reaches the store that much later at most.
const nodePoll = 50 * time.Millisecond

// workingSet is the least heap the agent gets besides its stores:
// programs' user side, parsed binaries, builder state, metrics, and room
// for garbage (~180 bytes per span: the builder reuses span memory; at
// 20k spans/s ~0.7 collections a second). OTLP export adds exportSet:
// its batches in the steady state (the one filled, the one sent and up
// to four spares, ~210 KiB each for 512 net/http spans), ~60 bytes of
// garbage per exported span, and gRPC's marshal buffer (~210 KiB a
// batch, from a pool every collection empties: with 4 MiB the collector
// ran 11-15 times a second and export cost 5-7 µs a span; with 8 MiB
// 0.4 a second and 2.2 µs, benchagent -sections 4). (It was 16 MiB while
// the exporter made ~3 KB of garbage per span; a queue that fills while
// the collector is away grows the live heap, and the limit with it.)
const (
	workingSet = 32 << 20
	exportSet  = 8 << 20
)

// memoryLimit keeps the Go runtime's soft memory limit
// (debug.SetMemoryLimit) at the data the agent holds plus room for the
// rest: the trace store's budget (it fills and stays full), the bytes the
// CPU samples take now (that store fills only as fast as samples arrive),
// and twice the rest of the live heap, at least workingSet (+exportSet):
// what GOGC=100 would give the rest, which grows with the binaries traced
// (their parsed tables) while a fixed allowance would leave the collector
// running back to back. Without a limit GOGC lets the heap reach twice
// the live store. The stores hold no pointers (store/codec.go), so
// collecting often costs little. A GOMEMLIMIT in the environment wins.
type memoryLimit struct {
	store   int64 // the trace store's budget; 0: GOMEMLIMIT set
	minRest int64 // workingSet (+ exportSet)
	set     int64 // the limit in force
	log     *slog.Logger
}

// limitStep rounds the limit: it moves only by whole steps (setting it
// stops the world briefly).
const limitStep = 1 << 20

func newMemoryLimit(store int64, export bool, log *slog.Logger) *memoryLimit {
	m := &memoryLimit{log: log}
	if os.Getenv("GOMEMLIMIT") == "" {
		m.store, m.minRest = store, workingSet
		if export {
			m.minRest += exportSet
		}
		m.update(0, 0)
	}
	return m
}

// update sets the limit for what the stores hold now (bytes: the trace
// store's, the CPU samples'), with the live heap of the last collection
// (runtime/metrics) telling the rest.
func (m *memoryLimit) update(stored, samples int64) {
	if m.store == 0 {
		return
	}
	live := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(live)
	var rest int64
	if live[0].Value.Kind() == rtmetrics.KindUint64 {
		rest = int64(live[0].Value.Uint64()) - stored - samples
	}
	limit := memoryLimitFor(m.store, samples, rest, m.minRest)
	if limit == m.set {
		return
	}
	m.set = limit
	debug.SetMemoryLimit(limit)
	m.log.Debug("memory limit", "bytes", limit, "samples", samples, "rest", rest)
}

// memoryLimitFor is the limit for a store budget, the samples' bytes and
// rest, the live heap besides the stores: budget + samples + max(2×rest,
// minRest), rounded up to limitStep.
func memoryLimitFor(budget, samples, rest, minRest int64) int64 {
	l := budget + samples + max(2*rest, minRest)
	return (l + limitStep - 1) / limitStep * limitStep
}
