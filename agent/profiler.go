package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/bpf/profile"
	"github.com/latscope/latscope/cpuprofile"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/symbolizer"
)

// CPU profiles of spans.
//
// A cpu-clock perf event on every CPU runs bpf/profile's program at
// Config.ProfileHz. In a traced process it reads the goroutine the thread
// runs for (thread-local storage: g, or m.curg on the system stack) and
// that goroutine's open traced calls in the call tracer's goroutine table,
// and sends the span id of the innermost with the user stack (frame
// pointers). Here each stack is symbolized from the binary's pclntab
// (stripped binaries too), once per program counter, and the sample goes
// to a cpuprofile.Store under its span: no matching by time, and samples
// that come before their span is complete simply wait there.

// profiler reads and symbolizes CPU samples.
type profiler struct {
	objs   *profile.ProfileObjects
	events *profile.Events
	reader *ringbuf.Reader
	waiter *ringWaiter // nil: the reader blocks in epoll_wait itself (see ringwait.go)
	period time.Duration

	// Touched only by RunProfile's goroutine.
	pcs map[*image]map[uint64]cpuprofile.LocationID // per image, by link-time PC (return addresses −1)

	mu             sync.Mutex // guards the counters Counters reads
	unknownProcess uint64     // samples of a process no longer traced
	unsymbolized   uint64     // PCs in no function of the binary (C, the vDSO)
	bad            uint64     // records that do not decode
}

// startProfiler loads the sampling program on the call tracer's maps and
// starts sampling every CPU.
func (t *Tracer) startProfiler(hz int, opts calltracer.Options) error {
	if runtime.GOARCH != "amd64" {
		return fmt.Errorf("CPU profiles: reading goroutines from thread-local storage is implemented for amd64 only, not %s (turn sampling off with --profile-hz 0)", runtime.GOARCH)
	}
	if hz < 1 || hz > 1000 {
		return fmt.Errorf("CPU sampling rate %d Hz: give 1 to 1000 (99 is the usual)", hz)
	}
	objs, err := profile.Load(profile.Options{Tracer: opts}, t.objs.SharedMaps())
	if err != nil {
		return err
	}
	p := &profiler{objs: objs, period: time.Second / time.Duration(hz), pcs: make(map[*image]map[uint64]cpuprofile.LocationID)}
	if p.reader, err = ringbuf.NewReader(objs.Samples); err != nil {
		objs.Close()
		return fmt.Errorf("open the CPU samples ring buffer: %w", err)
	}
	if p.waiter, err = newRingWaiter(objs.Samples); err != nil {
		t.log.Debug("the CPU samples ring is waited for in a blocking system call", "reason", err)
	}
	if p.events, err = objs.Attach(p.period); err != nil {
		if p.waiter != nil {
			p.waiter.Close()
		}
		p.reader.Close()
		objs.Close()
		return fmt.Errorf("%w (turn CPU sampling off with --profile-hz 0)", err)
	}
	t.prof = p
	return nil
}

// tlsOffset is where bin's threads keep their g (symbolizer.GTLS); 0
// when it cannot be read, said once per executable when sampling is on.
func (t *Tracer) tlsOffset(bin *symbolizer.Binary) int64 {
	g, err := bin.GTLS()
	if err != nil {
		if t.prof != nil {
			t.log.Warn("CPU samples of this executable cannot name their goroutine: none will be attributed (counted as cpu_samples_no_tls)", "exe", bin.Path, "err", err)
		}
		return 0
	}
	return g.Offset
}

// SamplePeriod is the CPU time one sample stands for; 0 when sampling is
// off.
func (t *Tracer) SamplePeriod() time.Duration {
	if t.prof == nil {
		return 0
	}
	return t.prof.period
}

// RunProfile reads CPU samples into out until ctx is done, then drains
// what is left; monoToWall is added to the kernel's CLOCK_MONOTONIC times
// (the builder's, so samples and spans share a clock). It returns at once
// when sampling is off.
func (t *Tracer) RunProfile(ctx context.Context, out *cpuprofile.Store, monoToWall int64) error {
	p := t.prof
	if p == nil {
		return nil
	}
	var rec ringbuf.Record
	var locs []cpuprofile.LocationID
	for {
		done := ctx.Err() != nil
		deadline := time.Now().Add(t.cfg.PollInterval)
		if p.waiter != nil && !done {
			// Parked on the poller, then drain without blocking, as Run.
			if err := p.waiter.wait(deadline, func() bool { return p.reader.AvailableBytes() > 0 }); err != nil {
				return fmt.Errorf("wait for CPU samples: %w", err)
			}
			deadline = time.Now()
		}
		p.reader.SetDeadline(deadline)
		if done {
			p.reader.SetDeadline(time.Now())
		}
		for {
			err := p.reader.ReadInto(&rec)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return fmt.Errorf("read CPU samples: %w", err)
			}
			s, stack, ok := profile.Decode(rec.RawSample)
			if !ok {
				p.count(&p.bad)
				continue
			}
			t.mu.Lock()
			proc := t.procs[int(s.Pid)]
			t.mu.Unlock()
			if proc == nil {
				p.count(&p.unknownProcess)
				continue
			}
			locs = p.symbolize(proc, stack, out, locs[:0])
			var trace span.TraceID
			binary.BigEndian.PutUint64(trace[:8], s.TraceHi)
			binary.BigEndian.PutUint64(trace[8:], s.TraceLo)
			var id span.SpanID
			binary.BigEndian.PutUint64(id[:], s.SpanId)
			var flags cpuprofile.Flags
			if s.Flags&profile.FlagKernel != 0 {
				flags |= cpuprofile.Kernel
			}
			if s.Flags&profile.FlagSpawned != 0 {
				flags |= cpuprofile.Spawned
			}
			out.Add(trace, id, int64(s.KtimeNs)+monoToWall, flags, locs)
		}
		p.forgetClosedImages()
		if done {
			return nil
		}
	}
}

// symbolize appends the locations of a sampled stack (the sampled PC,
// then return addresses) to locs.
func (p *profiler) symbolize(proc *Process, stack []uint64, out *cpuprofile.Store, locs []cpuprofile.LocationID) []cpuprofile.LocationID {
	cache := p.pcs[proc.img]
	if cache == nil {
		cache = make(map[uint64]cpuprofile.LocationID)
		p.pcs[proc.img] = cache
	}
	for i, pc := range stack {
		if i > 0 {
			pc-- // a return address: the call instruction's line and inlining
		}
		pc -= proc.bias
		id, ok := cache[pc]
		if !ok {
			id = out.Location(p.lines(proc.Binary, pc))
			cache[pc] = id
		}
		locs = append(locs, id)
	}
	return locs
}

// unknownPC is the location of a PC in no function of the binary.
var unknownPC = []cpuprofile.Line{{Function: "[unknown]"}}

func (p *profiler) lines(bin *symbolizer.Binary, pc uint64) []cpuprofile.Line {
	frames, ok := bin.PCFrames(pc)
	if !ok {
		p.count(&p.unsymbolized)
		return unknownPC
	}
	out := make([]cpuprofile.Line, len(frames))
	for i, f := range frames {
		out[i] = cpuprofile.Line{Function: f.Function, File: f.File, Line: f.Line}
	}
	return out
}

// forgetClosedImages drops the PC caches of executables no longer traced.
func (p *profiler) forgetClosedImages() {
	for im := range p.pcs {
		im.mu.Lock()
		closed := im.closed
		im.mu.Unlock()
		if closed {
			delete(p.pcs, im)
		}
	}
}

func (p *profiler) count(c *uint64) {
	p.mu.Lock()
	*c++
	p.mu.Unlock()
}

// counters are the kernel's sampling counters and the reader's.
func (p *profiler) counters() ([]Counter, error) {
	vals, err := profile.ReadStats(p.objs.ProfileStats)
	if err != nil {
		return nil, err
	}
	var out []Counter
	for i, v := range vals {
		st := profile.Stats[i]
		out = append(out, Counter{st.Name, v, st.Loss, st.Help})
	}
	// The kernel runs one BPF program at a time per CPU: a tick that
	// lands while a probe's program runs is skipped, and counted there.
	if st, err := p.objs.SampleCpu.Stats(); err == nil {
		out = append(out, Counter{"cpu_samples_missed_in_bpf", st.RecursionMisses, true, "CPU samples the kernel skipped: the tick came while another BPF program (a probe) ran on that CPU"})
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return append(out,
		Counter{"cpu_samples_unknown_process", p.unknownProcess, true, "CPU samples of a process whose tracing stopped before they were read"},
		Counter{"cpu_samples_unsymbolized_pcs", p.unsymbolized, false, "program counters of CPU samples in no Go function of their binary (C code, the vDSO): shown as [unknown]"},
		Counter{"cpu_samples_bad_records", p.bad, true, "CPU sample records too short to decode (never expected)"},
	), nil
}

func (p *profiler) close() error {
	errs := []error{p.events.Close(), p.reader.Close()}
	if p.waiter != nil {
		errs = append(errs, p.waiter.Close())
	}
	return errors.Join(append(errs, p.objs.Close())...)
}
