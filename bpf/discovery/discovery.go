// Package discovery holds latscope's process-discovery BPF program
// (discovery.c) and its generated Go bindings: the exec and exit
// tracepoints that tell the agent, within a millisecond, that a process
// started a new program or ended. The watcher built on it is
// agent/discovery.
package discovery

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type event -type event_type -type discovery_stat Discovery discovery.c -- -I../include

import (
	"fmt"
	"os"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Event is one exec or exit, as the kernel sends it: Type (EventExec,
// EventExit), Pid (the thread-group id), KtimeNs (CLOCK_MONOTONIC ns) and
// StartBoottime (the process's start, ns since boot).
type Event = DiscoveryEvent

// EventSize is the size of an event record.
const EventSize = int(unsafe.Sizeof(Event{}))

// Event types.
const (
	EventExec = uint8(DiscoveryEventTypeEVENT_EXEC)
	EventExit = uint8(DiscoveryEventTypeEVENT_EXIT)
)

// DefaultRingBytes is the ring buffer size when Options.RingBytes is 0:
// 8192 events.
const DefaultRingBytes = 256 << 10

// Options tunes the program at load time.
type Options struct {
	// RingBytes sizes the ring buffer: a power of two multiple of the page
	// size; 0 means DefaultRingBytes.
	RingBytes uint32
}

// Requirement names what loading needs, for error messages.
const Requirement = "root or CAP_BPF+CAP_PERFMON, and a kernel >= 5.8 with BTF (/sys/kernel/btf/vmlinux)"

// Load loads and verifies the programs with opts applied. It does not
// attach them (Attach).
func Load(opts Options) (*DiscoveryObjects, error) {
	spec, err := LoadDiscovery()
	if err != nil {
		return nil, fmt.Errorf("read discovery BPF object: %w", err)
	}
	if n := opts.RingBytes; n > 0 {
		if n&(n-1) != 0 || int(n) < os.Getpagesize() {
			return nil, fmt.Errorf("discovery ring buffer size %d: must be a power of two and at least %d", n, os.Getpagesize())
		}
		spec.Maps["events"].MaxEntries = n
	}
	var objs DiscoveryObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, fmt.Errorf("load discovery BPF programs (need %s): %w", Requirement, err)
	}
	return &objs, nil
}

// Attach attaches the exec and exit programs to their tracepoints. The
// caller closes the links (before the objects).
func (o *DiscoveryObjects) Attach() ([]link.Link, error) {
	var links []link.Link
	for _, p := range []struct {
		name string
		prog *ebpf.Program
	}{{"sched_process_exec", o.ProcessExec}, {"sched_process_exit", o.ProcessExit}} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p.prog})
		if err != nil {
			for _, l := range links {
				l.Close()
			}
			return nil, fmt.Errorf("attach to tracepoint %s (need %s): %w", p.name, Requirement, err)
		}
		links = append(links, l)
	}
	return links, nil
}

// Decode returns the event a ring buffer record holds, in place (the
// result aliases raw).
func Decode(raw []byte) (*Event, bool) {
	if len(raw) < EventSize {
		return nil, false
	}
	e := (*Event)(unsafe.Pointer(&raw[0]))
	if e.Type != EventExec && e.Type != EventExit {
		return nil, false
	}
	return e, true
}

// Stat describes one of the program's counters.
type Stat struct {
	Name string
	Loss bool // counts events that were lost
	Help string
}

// Stats describes every counter, indexed by DiscoveryDiscoveryStat.
var Stats = [DiscoveryDiscoveryStatSTAT_MAX]Stat{
	DiscoveryDiscoveryStatSTAT_EXEC_SENT:         {"exec_events_sent", false, "exec events sent to user space"},
	DiscoveryDiscoveryStatSTAT_EXIT_SENT:         {"exit_events_sent", false, "process exit events sent to user space (a process whose last threads exit together may count twice)"},
	DiscoveryDiscoveryStatSTAT_EXEC_RINGBUF_FULL: {"lost_exec_ringbuf_full", true, "exec events lost: the ring buffer was full (the /proc rescan finds these processes later)"},
	DiscoveryDiscoveryStatSTAT_EXIT_RINGBUF_FULL: {"lost_exit_ringbuf_full", true, "exit events lost: the ring buffer was full (the /proc rescan notices these exits later)"},
	DiscoveryDiscoveryStatSTAT_EXIT_READ_FAILED:  {"lost_exit_read_failed", true, "thread exits whose thread group could not be read: process exits may be missed (please report, with the kernel version)"},
	DiscoveryDiscoveryStatSTAT_START_READ_FAILED: {"start_time_read_failed", true, "events sent without the process start time (please report, with the kernel version)"},
}

// ReadStats sums the per-CPU counters.
func ReadStats(m *ebpf.Map) ([DiscoveryDiscoveryStatSTAT_MAX]uint64, error) {
	var out [DiscoveryDiscoveryStatSTAT_MAX]uint64
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
