// Package profile holds latscope's CPU-sampling BPF program (profile.c)
// and its generated Go bindings: a cpu-clock perf event on every CPU
// samples the on-CPU user stacks of traced Go processes, and each sample
// names the span it ran in, read from the call tracer's goroutine state.
// The agent symbolizes them and keeps them by span (agent/profiler.go).
package profile

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type cpu_sample -type sample_flags -type profile_stat Profile profile.c -- -I../include

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/latscope/latscope/bpf/calltracer"
)

// Sample is one sample's header as the kernel sends it; its stack follows
// it in the record (Decode).
type Sample = ProfileCpuSample

// SampleSize is the size of a sample's header.
const SampleSize = int(unsafe.Sizeof(Sample{}))

// Flags of Sample.Flags.
const (
	// FlagKernel: the thread was in the kernel (a system call, a page
	// fault); the stack is the user stack it entered from.
	FlagKernel = uint8(ProfileSampleFlagsSAMPLE_KERNEL)
	// FlagSpawned: the goroutine ran no traced call of its own; the
	// sample belongs to the call that started it.
	FlagSpawned = uint8(ProfileSampleFlagsSAMPLE_SPAWNED)
)

// DefaultRingBytes is the samples ring's size when Options.RingBytes is
// 0: ~5000 samples of a 50-frame stack.
const DefaultRingBytes = 2 << 20

// Options tunes the program at load time.
type Options struct {
	// RingBytes sizes the samples ring: a power of two multiple of the
	// page size; 0 means DefaultRingBytes.
	RingBytes uint32
	// Tracer are the call tracer's load options: the program computes
	// span ids with its salt and skips calls below its minimum duration.
	Tracer calltracer.Options
}

// Requirement names what loading and attaching need, for error messages.
const Requirement = "root or CAP_BPF+CAP_PERFMON, and a kernel >= 5.17 with BTF"

// Load loads and verifies the program with opts applied, sharing the call
// tracer's maps (calltracer.TracerObjects.SharedMaps): it reads the
// traced processes and their goroutines' frames from them.
func Load(opts Options, shared map[string]*ebpf.Map) (*ProfileObjects, error) {
	spec, err := LoadProfile()
	if err != nil {
		return nil, fmt.Errorf("read profile BPF object: %w", err)
	}
	if err := calltracer.Configure(spec, opts.Tracer); err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	ring := opts.RingBytes
	if ring == 0 {
		ring = DefaultRingBytes
	}
	if ring&(ring-1) != 0 || int(ring) < os.Getpagesize() {
		return nil, fmt.Errorf("samples ring size %d: must be a power of two and at least %d", ring, os.Getpagesize())
	}
	spec.Maps["samples"].MaxEntries = ring
	// Wake the reader early once a quarter of the ring is pending;
	// otherwise it drains on its timer.
	if err := spec.Variables["sample_wakeup_bytes"].Set(uint64(ring / 4)); err != nil {
		return nil, fmt.Errorf("set sample_wakeup_bytes: %w", err)
	}
	var objs ProfileObjects
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: calltracer.Replacements(spec, shared)}); err != nil {
		return nil, fmt.Errorf("load profile BPF program (need %s): %w", Requirement, err)
	}
	return &objs, nil
}

// Events are the perf events that run the sampling program, one per
// online CPU.
type Events struct {
	fds   []int
	links []link.Link
}

// Attach opens a cpu-clock perf event on every online CPU, firing every
// period of CPU time, and attaches the sampling program to each. CPUs
// brought online later are not sampled.
func (o *ProfileObjects) Attach(period time.Duration) (*Events, error) {
	if period <= 0 {
		return nil, fmt.Errorf("sampling period %s: must be positive", period)
	}
	cpus, err := onlineCPUs()
	if err != nil {
		return nil, err
	}
	ev := &Events{}
	for _, cpu := range cpus {
		attr := unix.PerfEventAttr{
			Type:   unix.PERF_TYPE_SOFTWARE,
			Config: unix.PERF_COUNT_SW_CPU_CLOCK,
			Size:   uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
			Sample: uint64(period.Nanoseconds()),
		}
		fd, err := unix.PerfEventOpen(&attr, -1, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
		if err != nil {
			ev.Close()
			return nil, fmt.Errorf("open cpu-clock perf event on CPU %d (need %s): %w", cpu, Requirement, err)
		}
		ev.fds = append(ev.fds, fd)
		l, err := link.AttachRawLink(link.RawLinkOptions{Target: fd, Program: o.SampleCpu, Attach: ebpf.AttachPerfEvent})
		if err != nil {
			ev.Close()
			return nil, fmt.Errorf("attach the sampling program to CPU %d's perf event (need %s): %w", cpu, Requirement, err)
		}
		ev.links = append(ev.links, l)
	}
	return ev, nil
}

// CPUs is the number of CPUs sampled.
func (e *Events) CPUs() int { return len(e.fds) }

// Close detaches the program and closes the events.
func (e *Events) Close() error {
	var errs []error
	for _, l := range e.links {
		errs = append(errs, l.Close())
	}
	for _, fd := range e.fds {
		errs = append(errs, unix.Close(fd))
	}
	e.links, e.fds = nil, nil
	return errors.Join(errs...)
}

// onlineCPUs reads /sys/devices/system/cpu/online ("0-3,5").
func onlineCPUs() ([]int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return nil, fmt.Errorf("list online CPUs: %w", err)
	}
	return parseCPUList(strings.TrimSpace(string(b)))
}

func parseCPUList(s string) ([]int, error) {
	var out []int
	for _, r := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("CPU list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("CPU list %q: bad range %q", s, r)
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	return out, nil
}

// Decode returns the sample a ring buffer record holds, in place (the
// result aliases raw), and its stack: the sampled PC, then return
// addresses, innermost first.
func Decode(raw []byte) (*Sample, []uint64, bool) {
	if len(raw) < SampleSize || (len(raw)-SampleSize)%8 != 0 {
		return nil, nil, false
	}
	s := (*Sample)(unsafe.Pointer(&raw[0]))
	st := raw[SampleSize:]
	stack := make([]uint64, len(st)/8)
	for i := range stack {
		stack[i] = binary.LittleEndian.Uint64(st[8*i:])
	}
	return s, stack, true
}

// Stat describes one of the program's counters.
type Stat struct {
	Name string
	Loss bool // counts samples of traced work that were lost
	Help string
}

// Stats describes every counter, indexed by ProfileProfileStat.
var Stats = [ProfileProfileStatPROFILE_MAX]Stat{
	ProfileProfileStatPROFILE_SENT:          {"cpu_samples_sent", false, "CPU samples of traced processes sent to user space, each naming its span"},
	ProfileProfileStatPROFILE_SPAWNED:       {"cpu_samples_spawned", false, "of them, samples of goroutines with no traced call of their own, given to the traced call that started them"},
	ProfileProfileStatPROFILE_NOT_IN_SPAN:   {"cpu_samples_not_in_span", false, "CPU samples of traced processes taken outside every traced call (background goroutines, idle connections): no span to give them to"},
	ProfileProfileStatPROFILE_TOO_YOUNG:     {"cpu_samples_below_min_duration", false, "CPU samples taken only inside calls younger than --min-duration (their span may never be sent): not attributed"},
	ProfileProfileStatPROFILE_NO_GOROUTINE:  {"cpu_samples_no_goroutine", false, "CPU samples of traced processes' threads running no goroutine (the scheduler, GC workers, idle threads)"},
	ProfileProfileStatPROFILE_NO_TLS:        {"cpu_samples_no_tls", true, "CPU samples of processes whose goroutine cannot be read from thread-local storage (see the log: an unsupported architecture or linking)"},
	ProfileProfileStatPROFILE_READ_G_FAILED: {"cpu_samples_read_g_failed", true, "CPU samples whose goroutine could not be read (please report, with the Go version)"},
	ProfileProfileStatPROFILE_RINGBUF_FULL:  {"cpu_samples_lost_ringbuf_full", true, "CPU samples lost: the samples ring buffer was full"},
	ProfileProfileStatPROFILE_STACK_FAILED:  {"cpu_samples_without_stack", true, "CPU samples sent without a stack: the kernel could not unwind it"},
}

// ReadStats sums the per-CPU counters.
func ReadStats(m *ebpf.Map) ([ProfileProfileStatPROFILE_MAX]uint64, error) {
	var out [ProfileProfileStatPROFILE_MAX]uint64
	for i := range out {
		var perCPU []uint64
		if err := m.Lookup(uint32(i), &perCPU); err != nil {
			return out, fmt.Errorf("read counter %s: %w", Stats[i].Name, err)
		}
		for _, v := range perCPU {
			out[i] += v
		}
	}
	return out, nil
}
