// Package agent loads latscope's BPF programs, attaches them to Go
// processes and streams their completed calls to user space.
package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/latscope/latscope/agent/callchain"
	"github.com/latscope/latscope/attribution"
	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/bpf/propagation"
	"github.com/latscope/latscope/bpf/sched"
)

// Config tunes a Tracer.
type Config struct {
	// MinDuration: calls shorter than this are not sent by the kernel
	// (counted as calls_below_min_duration).
	MinDuration time.Duration
	// RingBytes is the ring buffer size (power of two, >= page size).
	// Default 8 MiB.
	RingBytes int
	// MaxGoroutines bounds goroutines with traced state at once. Default 16384.
	MaxGoroutines int
	// PollInterval is how often the reader drains the ring buffer without
	// a wakeup: the kernel submits silently and only wakes the reader once
	// a quarter of the ring is pending. It bounds how late an event is
	// seen. Default 20ms (the node agent uses 50ms: nodePoll).
	PollInterval time.Duration
	// CountHits counts probe hits per site (tests, diagnostics).
	CountHits bool
	// Inject puts a traceparent naming the client span on outgoing
	// requests (HTTP/1) so the next service continues the trace. Needs
	// cgroup v2 and CAP_NET_ADMIN; when unavailable it is said once and
	// counted (propagation_off).
	Inject bool
	// IDSalt derives span ids from call ids, in the kernel and in
	// callchain.Builder (Options.Salt) alike; random when zero.
	IDSalt uint64
	// Record, if set, receives every ring buffer record as the kernel
	// sent it, framed by calltracer.WriteRecord (bug reports, replays).
	Record io.Writer
	// PerfUprobes attaches one perf-event uprobe per probe site even
	// where the kernel offers uprobe_multi links (≥ 6.6): only to compare
	// them (benchmarks); they take ~85 ms each to detach here, serially.
	PerfUprobes bool
	// NaiveSites probes each function's first byte and its RET
	// instructions instead of the chosen sites: only to measure what the
	// site choice saves (scripts/probecost).
	NaiveSites bool
	// SettleReturns: a function whose returns are learned per call site
	// (it is reached through interfaces, func values or tail calls; see
	// learn.go) keeps its own RET probes, single-stepped, until no new
	// call site has shown up for this long. Default 10s; negative turns
	// learning off (the RET probes stay).
	SettleReturns time.Duration
	// ProfileHz samples the on-CPU stacks of traced processes this many
	// times a second on every CPU (1–1000; 0: off): see profiler.go and
	// RunProfile.
	ProfileHz int
	// NoAttribution loads no latency-attribution programs (spans get no
	// time split, deep mode is unavailable): only to measure what
	// attribution costs (scripts/benchattr).
	NoAttribution bool
	Logger        *slog.Logger
}

// Tracer owns the loaded programs, their maps and the ring buffer reader.
type Tracer struct {
	cfg  Config
	log  *slog.Logger
	objs *calltracer.TracerObjects
	libs []*ebpf.Collection // indexed like Libraries
	prop *propagation.PropagationObjects
	// injectLinks hold the socket programs that put trace context on
	// outgoing requests; empty when injection is off or unavailable.
	injectLinks []link.Link
	reader      *ringbuf.Reader
	waiter      *ringWaiter // nil: the reader blocks in epoll_wait itself
	prof        *profiler   // CPU sampling; nil when off

	// multi: probes are uprobe_multi links (one per program and
	// executable), else perf-event uprobes (one per site).
	multi bool

	attachMu sync.Mutex // one Attach at a time; Detach's image bookkeeping
	mu       sync.Mutex
	procs    map[int]*Process
	images   map[fileID]*image // traced executables, shared by their processes
	binaries binaryCache       // parsed binaries of recently traced executables

	retSites    retSiteQueue // call sites the kernel reported, for learnReturns
	stopLearner chan struct{}
	learnerDone chan struct{}

	openAtDetach uint64 // calls still running when their process was detached

	// Latency attribution (attribution.go, deep.go): its programs (nil
	// when they did not load), the collector of their records, the
	// clock offset spans are built with, deep mode.
	sched        *sched.Objects
	attr         *attribution.Collector
	wall         int64
	deep         deepMode
	deepDetached atomic.Uint64

	short uint64 // records too short to be an event (never expected)
	// ring: what the reader saw of the ring buffer, for sizing it (Ring).
	ringRead    atomic.Uint64 // bytes read, record headers included
	ringHighest atomic.Int64  // most bytes pending at the start of a drain
	unsent      uint64        // client calls' contexts never seen leaving (SweepPending)
	swept       time.Time     // last SweepPending
}

// New loads the call tracer.
func New(cfg Config) (*Tracer, error) {
	if cfg.RingBytes == 0 {
		cfg.RingBytes = 8 << 20
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IDSalt == 0 {
		cfg.IDSalt = callchain.NewSalt()
	}
	if cfg.SettleReturns == 0 {
		cfg.SettleReturns = 10 * time.Second
	}
	if cfg.RingBytes&(cfg.RingBytes-1) != 0 || cfg.RingBytes < os.Getpagesize() {
		return nil, fmt.Errorf("ring buffer size %d: must be a power of two and at least %d", cfg.RingBytes, os.Getpagesize())
	}
	opts := calltracer.Options{
		MinDuration:   uint64(cfg.MinDuration),
		RingBytes:     uint32(cfg.RingBytes),
		WakeupBytes:   uint64(cfg.RingBytes / 4),
		MaxGoroutines: uint32(cfg.MaxGoroutines),
		CountHits:     cfg.CountHits,
		IDSalt:        cfg.IDSalt,
	}
	opts.Inject = cfg.Inject
	opts.UprobeMulti = !cfg.PerfUprobes && uprobeMultiSupported()
	t, err := load(cfg, opts)
	if errors.Is(err, errSocketPrograms) {
		// Without CAP_NET_ADMIN the socket programs do not load: trace
		// without injection rather than not at all.
		cfg.Logger.Warn("trace context propagation unavailable: outgoing requests are traced but not linked to the next service (counted as propagation_off)", "reason", err)
		opts.Inject = false
		t, err = load(cfg, opts)
	}
	if err != nil {
		return nil, err
	}
	if opts.Inject {
		if err := t.enableInjection(); err != nil {
			cfg.Logger.Warn("trace context propagation unavailable: outgoing requests are traced but not linked to the next service (counted as propagation_off)", "reason", err)
			t.closeInjection()
			t.closeObjects()
			opts.Inject = false
			if t, err = load(cfg, opts); err != nil {
				return nil, err
			}
		}
	}
	if t.reader, err = ringbuf.NewReader(t.objs.Events); err != nil {
		t.closeObjects()
		return nil, fmt.Errorf("open ring buffer reader: %w", err)
	}
	if t.waiter, err = newRingWaiter(t.objs.Events); err != nil {
		cfg.Logger.Debug("the ring buffer is waited for in a blocking system call", "reason", err)
	}
	if cfg.ProfileHz > 0 {
		if err := t.startProfiler(cfg.ProfileHz, opts); err != nil {
			if t.waiter != nil {
				t.waiter.Close()
			}
			t.reader.Close()
			t.closeInjection()
			t.closeObjects()
			return nil, err
		}
	}
	t.retSites.wake = make(chan struct{}, 1)
	t.stopLearner, t.learnerDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(t.learnerDone)
		t.learnReturns(t.stopLearner)
	}()
	return t, nil
}

func load(cfg Config, opts calltracer.Options) (*Tracer, error) {
	objs, err := calltracer.Load(opts)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("%w\nlatscope needs root, or CAP_BPF and CAP_PERFMON (and CAP_SYS_PTRACE to start commands)", err)
		}
		return nil, err
	}
	t := &Tracer{cfg: cfg, log: cfg.Logger, objs: objs, multi: opts.UprobeMulti, procs: make(map[int]*Process), images: make(map[fileID]*image), wall: callchain.MonoToWall()}
	// Without injection only the map libraries leave contexts in is
	// needed: the socket programs need CAP_NET_ADMIN to load.
	loadProp := propagation.Load
	if !opts.Inject {
		loadProp = propagation.LoadMaps
	}
	if t.prop, err = loadProp(opts, objs.SharedMaps()); err != nil {
		objs.Close()
		return nil, fmt.Errorf("%w: %w", errSocketPrograms, err)
	}
	if err := t.loadLibraries(opts); err != nil {
		t.closeObjects()
		return nil, err
	}
	t.loadAttribution(opts)
	return t, nil
}

// errSocketPrograms: the trace-context socket programs did not load.
var errSocketPrograms = errors.New("socket programs")

// loadLibraries loads every instrumented library's object sharing the
// call tracer's maps and those where client calls leave their context.
func (t *Tracer) loadLibraries(opts calltracer.Options) error {
	shared := t.objs.SharedMaps()
	maps.Copy(shared, t.prop.SharedMaps())
	for id, lib := range Libraries {
		spec, err := lib.Spec()
		if err != nil {
			return fmt.Errorf("read %s BPF object: %w", lib.Name, err)
		}
		if err := calltracer.Configure(spec, opts); err != nil {
			return fmt.Errorf("%s: %w", lib.Name, err)
		}
		if err := spec.Variables["lib_id"].Set(uint8(id)); err != nil {
			return fmt.Errorf("%s: set lib_id: %w", lib.Name, err)
		}
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: calltracer.Replacements(spec, shared)})
		if err != nil {
			return fmt.Errorf("load %s BPF programs: %w", lib.Name, err)
		}
		t.libs = append(t.libs, coll)
	}
	return nil
}

func (t *Tracer) closeObjects() {
	if t.sched != nil {
		t.sched.Close()
	}
	for _, c := range t.libs {
		c.Close()
	}
	if t.prop != nil {
		t.prop.Close()
	}
	t.objs.Close()
}

// Sink receives what the kernel sends; it must not keep the pointers or
// the payload past the call.
type Sink interface {
	Call(ev *calltracer.Event)
	Lib(raw []byte) // a library record (calltracer.DecodeLib)
	// Tick runs after every drain of the ring buffer.
	Tick()
}

// Run reads records until ctx is done. Detach processes before cancelling
// ctx: Run drains what is left in the ring once more before it returns,
// so nothing sent is lost.
func (t *Tracer) Run(ctx context.Context, sink Sink) error {
	var rec ringbuf.Record
	for {
		done := ctx.Err() != nil
		deadline := time.Now().Add(t.cfg.PollInterval)
		if t.waiter != nil && !done {
			// Wait parked, then drain what is there without blocking.
			if err := t.waiter.wait(deadline, func() bool { return t.reader.AvailableBytes() > 0 }); err != nil {
				return fmt.Errorf("wait for the ring buffer: %w", err)
			}
			deadline = time.Now()
		}
		t.reader.SetDeadline(deadline)
		if done {
			t.reader.SetDeadline(time.Now())
		}
		if pending := int64(t.reader.AvailableBytes()); pending > t.ringHighest.Load() {
			t.ringHighest.Store(pending)
		}
		var read uint64
		for {
			err := t.reader.ReadInto(&rec)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return fmt.Errorf("read ring buffer: %w", err)
			}
			read += uint64(len(rec.RawSample)) + ringHeader
			if t.cfg.Record != nil {
				if err := calltracer.WriteRecord(t.cfg.Record, rec.RawSample); err != nil {
					return fmt.Errorf("record: %w", err)
				}
			}
			if ev, ok := calltracer.Decode(rec.RawSample); ok {
				sink.Call(ev)
			} else if _, ok := calltracer.DecodeLib(rec.RawSample); ok {
				sink.Lib(rec.RawSample)
			} else if e, ok := calltracer.DecodeRetSite(rec.RawSample); ok {
				t.retSites.push(*e)
			} else if e, ok := sched.Decode(rec.RawSample); ok {
				t.attr.Add(e)
			} else {
				t.short++
			}
		}
		t.ringRead.Add(read)
		sink.Tick()
		if time.Since(t.swept) >= time.Second || done {
			n, err := t.prop.SweepPending(done)
			if err != nil {
				return fmt.Errorf("sweep pending trace contexts: %w", err)
			}
			t.unsent += n
			t.swept = time.Now()
			t.attr.Expire(callchain.MonoNow())
		}
		if done {
			return nil
		}
	}
}

// IDSalt is the salt span ids are derived with (Config.IDSalt).
func (t *Tracer) IDSalt() uint64 { return t.cfg.IDSalt }

// Counter is one named count.
type Counter struct {
	Name  string
	Value uint64
	Loss  bool
	Help  string
}

// Counters returns the kernel's per-reason counters and the reader's.
func (t *Tracer) Counters() ([]Counter, error) {
	vals, err := calltracer.ReadStats(t.objs.Stats)
	if err != nil {
		return nil, err
	}
	var out []Counter
	// Contexts the kernel never saw leave are counted there when a newer
	// one replaces them, here when they are swept out.
	vals[calltracer.TracerTracerStatSTAT_INJECT_UNSENT] += t.unsent
	for i, v := range vals {
		st := calltracer.Stats[i]
		out = append(out, Counter{st.Name, v, st.Loss, st.Help})
	}
	attr, err := t.attributionCounters()
	if err != nil {
		return nil, err
	}
	out = append(out, attr...)
	out = append(out, Counter{"lost_bad_records", t.short, true, "ring buffer records of unknown type or too short to decode"})
	out = append(out, Counter{"calls_open_at_detach", t.openAtDetach, false, "calls still running when tracing of their process stopped (it exited or was detached mid-call): no span"})
	if t.prof != nil {
		cs, err := t.prof.counters()
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
	}
	return out, nil
}

// Hits returns probe hits per attach cookie (Config.CountHits).
func (t *Tracer) Hits() (map[uint64]uint64, error) {
	out := make(map[uint64]uint64)
	var key uint64
	var perCPU []uint64
	it := t.objs.Hits.Iterate()
	for it.Next(&key, &perCPU) {
		for _, v := range perCPU {
			out[key] += v
		}
	}
	return out, it.Err()
}

// Close detaches every process and unloads the programs.
func (t *Tracer) Close() error {
	close(t.stopLearner)
	<-t.learnerDone
	t.StopDeep()
	t.mu.Lock()
	procs := make([]*Process, 0, len(t.procs))
	for _, p := range t.procs {
		procs = append(procs, p)
	}
	t.mu.Unlock()
	var errs []error
	for _, p := range procs {
		errs = append(errs, t.Detach(p))
	}
	errs = append(errs, t.closeInjection(), t.reader.Close())
	if t.waiter != nil {
		errs = append(errs, t.waiter.Close())
	}
	if t.prof != nil {
		errs = append(errs, t.prof.close())
	}
	t.binaries.closeAll()
	t.closeObjects()
	return errors.Join(errs...)
}

// forgetGoroutines deletes the kernel's goroutine state and links of pid.
func (t *Tracer) forgetGoroutines(pid uint32) error {
	var errs []error
	// live_roots' keys (pid, call id) have gkey's layout.
	for _, m := range []*ebpf.Map{t.objs.Goroutines, t.objs.Links, t.objs.LiveRoots} {
		var key calltracer.TracerGkey
		var keys []calltracer.TracerGkey
		it := m.Iterate()
		var val []byte
		for it.Next(&key, &val) {
			if key.Pid == pid {
				keys = append(keys, key)
				// struct gstate starts with its frame count: calls that
				// never returned while traced (the process exited, or was
				// detached, mid-call) get no span; they are counted.
				if m == t.objs.Goroutines && len(val) >= 4 {
					t.openAtDetach += uint64(min(binary.LittleEndian.Uint32(val), uint32(len(calltracer.TracerGstate{}.Frames))))
				}
			}
		}
		errs = append(errs, it.Err())
		for _, k := range keys {
			if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// RingStats is what the reader knows of the ring buffer; sizes in bytes.
type RingStats struct {
	Size    int // the ring's data size (a power of two)
	Pending int // written by the kernel, not read yet, now
	// HighestPending is the most that was pending when a drain began,
	// since the start: against Size, how close the ring came to full
	// (drops then count as lost_ringbuf_full).
	HighestPending int
	// Read is the bytes read so far, each record with its 8-byte header;
	// the kernel's padding of records to 8 bytes and records a program
	// reserved then discarded are not counted.
	Read uint64
}

// ringHeader is the kernel's header before each ring buffer record
// (struct bpf_ringbuf_hdr: length and page offset).
const ringHeader = 8

// Ring returns the ring buffer's statistics.
func (t *Tracer) Ring() RingStats {
	return RingStats{
		Size:           t.reader.BufferSize(),
		Pending:        t.reader.AvailableBytes(),
		HighestPending: int(t.ringHighest.Load()),
		Read:           t.ringRead.Load(),
	}
}
