package agent

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/agent/pods"
	"github.com/latscope/latscope/attribution"
	"github.com/latscope/latscope/metrics"
	"github.com/latscope/latscope/sampling"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
)

// Status is what /api/status answers and `latscope status` prints: the
// agent, the processes it traces and those it cannot, and every counter.
type Status struct {
	Version   string              `json:"version"`
	PID       int                 `json:"pid"`
	Started   time.Time           `json:"started"`
	API       string              `json:"api"`
	Selectors discovery.Selectors `json:"selectors"`
	Funcs     []string            `json:"funcs,omitempty"`
	// ProbeLinks says how probes are attached: "uprobe_multi" (one link
	// per program and executable) or "perf_event" (one per site).
	ProbeLinks string            `json:"probeLinks"`
	Processes  []ProcessStatus   `json:"processes"`
	Skipped    []SkippedProcess  `json:"skipped"`
	Counters   []metrics.Counter `json:"counters"`
	Gauges     []metrics.Gauge   `json:"gauges"`
	Store      store.Stats       `json:"store"`
	Export     *ExportStatus     `json:"export,omitempty"`
	// Kubernetes is the pod resolver's state; absent without Kubernetes.
	Kubernetes *pods.Stats `json:"kubernetes,omitempty"`
	// Deep is deep latency attribution's state.
	Deep attribution.Deep `json:"deep"`
}

// ProcessStatus is one traced process.
type ProcessStatus struct {
	PID       int       `json:"pid"`
	Service   string    `json:"service"`
	Exe       string    `json:"exe"`
	GoVersion string    `json:"goVersion"`
	Functions int       `json:"functions"` // traced functions, libraries' included
	Libraries []string  `json:"libraries"`
	Probes    int       `json:"probes"`   // probe sites in its executable, shared with its replicas
	Links     int       `json:"links"`    // kernel links holding them
	Replicas  int       `json:"replicas"` // traced processes running the same executable file
	Attached  time.Time `json:"attached"`
	// ExecToAttachedNS: from the kernel's exec event to probes attached,
	// in ns; 0 when it was found by a scan (it ran before the agent).
	ExecToAttachedNS int64 `json:"execToAttachedNs"`
	// Pod is the pod and container it runs in; absent outside a pod.
	Pod *pods.Metadata `json:"pod,omitempty"`
}

// ExportStatus is the OTLP export and its keep policy.
type ExportStatus struct {
	Endpoint string         `json:"endpoint"`
	Keep     string         `json:"keep"`
	Queued   int            `json:"queued"`
	Exported uint64         `json:"exported"`
	Dropped  uint64         `json:"dropped"` // at the full queue
	Failed   uint64         `json:"failed"`  // lost to failed exports
	Sampling sampling.Stats `json:"sampling"`
}

// Status reports the node's state now.
func (n *Node) Status() Status {
	snap := n.snapshot()
	st := Status{
		Version:    span.Scope.Version,
		PID:        n.self,
		Started:    n.started,
		API:        "http://" + n.Addr(),
		ProbeLinks: "perf_event",
		Counters:   snap.Counters,
		Gauges:     snap.Gauges,
		Store:      n.store.Stats(),
		Processes:  []ProcessStatus{},
		Skipped:    []SkippedProcess{},
		Deep:       n.tracer.DeepState(),
	}
	if n.tracer.multi {
		st.ProbeLinks = "uprobe_multi"
	}
	if n.pods != nil {
		ks := n.pods.Stats()
		st.Kubernetes = &ks
	}
	n.mu.Lock()
	st.Selectors = n.sel
	st.Funcs = slices.Clone(n.cfg.Funcs)
	replicas := map[*image]int{}
	for _, p := range n.procs.traced {
		replicas[p.img]++
	}
	for pid, p := range n.procs.traced {
		st.Processes = append(st.Processes, ProcessStatus{
			PID: pid, Service: p.Info.ServiceName, Exe: p.exe, GoVersion: p.Binary.GoVersion,
			Functions: len(p.Funcs), Libraries: p.Libraries(), Probes: p.Probes(), Links: p.Links(),
			Replicas: replicas[p.img], Attached: p.attached, ExecToAttachedNS: int64(p.execToAttached), Pod: p.pod,
		})
	}
	for _, s := range n.procs.skipped {
		st.Skipped = append(st.Skipped, s)
	}
	n.mu.Unlock()
	sort.Slice(st.Processes, func(i, j int) bool { return st.Processes[i].PID < st.Processes[j].PID })
	sort.Slice(st.Skipped, func(i, j int) bool { return st.Skipped[i].PID < st.Skipped[j].PID })
	if n.otlp != nil {
		ex := &ExportStatus{Endpoint: otlpEndpoint(), Keep: n.cfg.Keep.String(), Queued: n.otlp.Queued(), Sampling: n.sampler.Stats()}
		ex.Exported, ex.Dropped, ex.Failed = n.otlp.Stats()
		st.Export = ex
	}
	return st
}

// snapshot gathers every counter and gauge for /metrics and the status.
func (n *Node) snapshot() metrics.Snapshot {
	var s metrics.Snapshot
	if cs, err := n.tracer.Counters(); err == nil {
		for _, c := range cs {
			s.Counters = append(s.Counters, metrics.Counter{Name: c.Name, Help: c.Help, Value: c.Value, Loss: c.Loss})
		}
	} else {
		n.log.Warn("read kernel counters", "err", err)
	}
	for _, c := range n.watcher.Counters() {
		s.Counters = append(s.Counters, metrics.Counter{Name: c.Name, Help: c.Help, Value: c.Value, Loss: c.Loss})
	}
	n.bmu.Lock()
	b := n.builder.Stats()
	n.bmu.Unlock()
	st := n.store.Stats()
	s.Counters = append(s.Counters,
		metrics.Counter{Name: "calls_received", Help: "calls read from the ring buffer", Value: b.Calls},
		metrics.Counter{Name: "spans_built", Help: "spans rebuilt from calls and handed to the store, metrics and export", Value: n.spans.Load()},
		metrics.Counter{Name: "spans_orphaned", Help: "spans emitted without their parent (filtered by --min-duration, or lost)", Value: b.Orphans},
		metrics.Counter{Name: "spans_evicted_early", Help: "orphans emitted early because the builder's pending bound was reached", Value: b.Evicted},
		metrics.Counter{Name: "calls_unknown_process", Help: "calls of a process the builder does not know (detached before they were read)", Value: b.UnknownProcess, Loss: true},
		metrics.Counter{Name: "calls_unknown_function", Help: "calls with a function id the process does not have", Value: b.UnknownFunc, Loss: true},
		metrics.Counter{Name: "lib_records_unknown", Help: "library records of an unknown library or process", Value: b.LibUnknown, Loss: true},
		metrics.Counter{Name: "lib_records_dropped", Help: "library records whose call never arrived", Value: b.LibDropped, Loss: true},
		metrics.Counter{Name: "store_evicted_traces", Help: "traces evicted from the store to stay within --store-size, oldest first", Value: uint64(st.EvictedTraces)},
		metrics.Counter{Name: "store_evicted_spans", Help: "spans of evicted traces", Value: uint64(st.EvictedSpans)},
	)
	hs := n.history.Stats()
	s.Counters = append(s.Counters,
		metrics.Counter{Name: "history_operations_overflow", Help: fmt.Sprintf("spans of operations beyond the UI history's %d, counted in their service's _other operation", metrics.DefaultMaxOperations), Value: hs.Overflow},
		metrics.Counter{Name: "history_spans_late", Help: "spans that ended more than 2h ago when they arrived: not in the UI's rates and percentiles", Value: hs.Late, Loss: true},
	)
	n.mu.Lock()
	s.Counters = append(s.Counters,
		metrics.Counter{Name: "processes_attached", Help: "processes whose tracing started", Value: n.procs.attached},
		metrics.Counter{Name: "processes_detached", Help: "processes whose tracing stopped (exit, exec)", Value: n.procs.detached},
		metrics.Counter{Name: "processes_not_traceable", Help: "selected processes that could not be traced (see /api/status skipped)", Value: n.procs.failed},
	)
	if n.pods != nil {
		s.Counters = append(s.Counters, metrics.Counter{Name: "k8s_pod_unresolved", Help: "processes in a pod's cgroup matched without pod metadata: the API did not name their pod and container within 30s (or 1024 waited already)", Value: n.procs.podUnresolved, Loss: true})
		s.Gauges = append(s.Gauges, metrics.Gauge{Name: "k8s_processes_waiting", Help: "processes in a pod waiting for the API to name it before they are matched", Value: float64(len(n.procs.podWaiting))})
	}
	traced, skipped := len(n.procs.traced), len(n.procs.skipped)
	images, probes, links := map[*image]bool{}, 0, 0
	for _, p := range n.procs.traced {
		if !images[p.img] {
			images[p.img] = true
			probes += p.Probes()
			links += p.Links()
		}
	}
	n.mu.Unlock()
	ring := n.tracer.Ring()
	s.Counters = append(s.Counters, metrics.Counter{Name: "ringbuf_read_bytes", Help: "bytes read from the ring buffer, record headers included: its rate sizes --ring-size", Value: ring.Read, Standalone: true})
	s.Gauges = append(s.Gauges,
		metrics.Gauge{Name: "processes_traced", Help: "processes traced now", Value: float64(traced)},
		metrics.Gauge{Name: "processes_skipped", Help: "selected processes that cannot be traced, now", Value: float64(skipped)},
		metrics.Gauge{Name: "executables_traced", Help: "executable files probed (replicas share one)", Value: float64(len(images))},
		metrics.Gauge{Name: "probes_attached", Help: "probe sites attached", Value: float64(probes)},
		metrics.Gauge{Name: "probe_links", Help: "kernel links holding the probes", Value: float64(links)},
		metrics.Gauge{Name: "ringbuf_size_bytes", Help: "ring buffer size", Value: float64(ring.Size)},
		metrics.Gauge{Name: "ringbuf_pending_bytes", Help: "bytes written by the kernel not read yet", Value: float64(ring.Pending)},
		metrics.Gauge{Name: "ringbuf_pending_bytes_highest", Help: "most bytes pending when a drain began, since the start: how close the ring came to full (--ring-size)", Value: float64(ring.HighestPending)},
		metrics.Gauge{Name: "store_bytes", Help: "bytes the trace store accounts for", Value: float64(st.Bytes)},
		metrics.Gauge{Name: "store_budget_bytes", Help: "the trace store's budget (--store-size)", Value: float64(st.Budget)},
		metrics.Gauge{Name: "store_traces", Help: "traces in the store", Value: float64(st.Traces)},
		metrics.Gauge{Name: "store_spans", Help: "spans in the store", Value: float64(st.Spans)},
	)
	if n.pods != nil {
		ks := n.pods.Stats()
		s.Counters = append(s.Counters,
			metrics.Counter{Name: "k8s_pod_events", Help: "pod adds, updates and deletes the informer received", Value: ks.Events},
			metrics.Counter{Name: "k8s_owner_lookups", Help: "GETs of a pod's ReplicaSet or Job, for its Deployment or CronJob", Value: ks.OwnerLookups},
			metrics.Counter{Name: "k8s_owner_lookups_failed", Help: "owner GETs that failed (RBAC, network): workload names stay partial", Value: ks.OwnerLookupsFailed, Loss: true},
		)
		s.Gauges = append(s.Gauges, metrics.Gauge{Name: "k8s_pods", Help: "pods of this node cached", Value: float64(ks.Pods)})
	}
	n.profileSnapshot(&s)
	if n.otlp != nil {
		exported, dropped, failed := n.otlp.Stats()
		ss := n.sampler.Stats()
		s.Counters = append(s.Counters,
			metrics.Counter{Name: "otlp_spans_exported", Help: "spans sent over OTLP", Value: exported},
			metrics.Counter{Name: "otlp_spans_dropped", Help: "spans dropped at the full OTLP queue", Value: dropped, Loss: true},
			metrics.Counter{Name: "otlp_spans_failed", Help: "spans lost to failed OTLP exports (after retries)", Value: failed, Loss: true},
			metrics.Counter{Name: "keep_spans_dropped", Help: "spans not exported by the keep policy (--keep); the store and metrics have them", Value: ss.SpansDropped},
		)
		s.Gauges = append(s.Gauges, metrics.Gauge{Name: "export_queue_spans", Help: "spans waiting in the OTLP queue", Value: float64(n.otlp.Queued())})
	}
	return s
}
