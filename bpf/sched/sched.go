// Package sched holds latscope's latency-attribution BPF programs
// (sched.c) and their generated Go bindings: the Go runtime's
// stop-the-world and GC-assist hooks (always on), its status hook and
// the kernel's sched_switch tracepoint (deep mode), which send
// where the time of goroutines inside traced calls went as RECORD_SCHED
// records on the call tracer's ring. The attribution package turns them
// into each span's time split.
package sched

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type sched_event -type sched_kind -type sched_stat -type sched_proc Sched sched.c -- -I../include

import (
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/latscope/latscope/bpf/calltracer"
)

// Event is one RECORD_SCHED record, as the kernel sends it.
type Event = SchedSchedEvent

// EventSize is the size of a sched_event record.
const EventSize = int(unsafe.Sizeof(Event{}))

// Kinds of Event.
const (
	KindOff        = uint8(SchedSchedKindSCHED_OFF)
	KindOSRunnable = uint8(SchedSchedKindSCHED_OS_RUNNABLE)
	KindOSBlocked  = uint8(SchedSchedKindSCHED_OS_BLOCKED)
	KindSTW        = uint8(SchedSchedKindSCHED_STW)
	KindAssist     = uint8(SchedSchedKindSCHED_ASSIST)
)

// Reasons of a KindOff event that are not the park's traceBlockReason.
const (
	ReasonNone    = 0xff // not parked: preempted, yielded, out of a syscall without a P
	ReasonUnknown = 0xfe // parked, its M unreadable
)

// Proc is what the programs need per process (the sched_procs map).
type Proc = SchedSchedProc

// Decode returns the event a ring buffer record holds, in place (the
// result aliases raw).
func Decode(raw []byte) (*Event, bool) {
	if len(raw) < EventSize || raw[0] != uint8(calltracer.TracerRecordTypeRECORD_SCHED) {
		return nil, false
	}
	return (*Event)(unsafe.Pointer(&raw[0])), true
}

// Encode returns the record bytes of ev (tests, recordings).
func Encode(ev *Event) []byte {
	ev.Type = uint8(calltracer.TracerRecordTypeRECORD_SCHED)
	return unsafe.Slice((*byte)(unsafe.Pointer(ev)), EventSize)
}

// Objects are the loaded programs and maps. SchedSwitch is nil where the
// object has none (arm64: only amd64 threads' g is read from TLS).
type Objects struct {
	coll *ebpf.Collection

	// Always on.
	STWStart, STWEnd, AssistStart, AssistEnd *ebpf.Program
	// Deep mode.
	GoStatus, SchedSwitch *ebpf.Program

	Procs *ebpf.Map // sched_procs: pid → Proc
	// Deep mode's state, cleared when it starts: goroutines and threads
	// off CPU.
	Goff, Toff *ebpf.Map
	Stats      *ebpf.Map
}

// Load loads the programs with opts applied, sharing the call tracer's
// maps (its ring, its goroutines: shared must hold them).
func Load(opts calltracer.Options, shared map[string]*ebpf.Map) (*Objects, error) {
	spec, err := LoadSched()
	if err != nil {
		return nil, fmt.Errorf("read sched BPF object: %w", err)
	}
	if err := calltracer.Configure(spec, opts); err != nil {
		return nil, fmt.Errorf("sched: %w", err)
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: calltracer.Replacements(spec, shared)})
	if err != nil {
		return nil, fmt.Errorf("load sched BPF programs (latency attribution): %w", err)
	}
	o := &Objects{
		coll:     coll,
		STWStart: coll.Programs["stw_start"], STWEnd: coll.Programs["stw_end"],
		AssistStart: coll.Programs["assist_start"], AssistEnd: coll.Programs["assist_end"],
		GoStatus:    coll.Programs["go_status"],
		SchedSwitch: coll.Programs["sched_switch"],
		Procs:       coll.Maps["sched_procs"], Goff: coll.Maps["goff"], Toff: coll.Maps["toff"],
		Stats: coll.Maps["sched_stats"],
	}
	for name, p := range map[string]*ebpf.Program{"stw_start": o.STWStart, "stw_end": o.STWEnd, "assist_start": o.AssistStart,
		"assist_end": o.AssistEnd, "go_status": o.GoStatus} {
		if p == nil {
			coll.Close()
			return nil, fmt.Errorf("sched BPF object has no program %s", name)
		}
	}
	return o, nil
}

// Close unloads the programs and maps.
func (o *Objects) Close() { o.coll.Close() }

// ClearDeep empties deep mode's state (goroutines and threads off CPU)
// left from an earlier deep period, so the next one starts clean.
func (o *Objects) ClearDeep() error {
	for _, m := range []*ebpf.Map{o.Goff, o.Toff} {
		var keys [][]byte
		var k, v []byte
		it := m.Iterate()
		for it.Next(&k, &v) {
			keys = append(keys, append([]byte(nil), k...))
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("read %s: %w", m, err)
		}
		for _, k := range keys {
			if err := m.Delete(k); err != nil {
				return fmt.Errorf("clear %s: %w", m, err)
			}
		}
	}
	return nil
}

// Stat describes one of the programs' counters.
type Stat struct {
	Name string
	Loss bool // counts data that was lost: some spans' splits are off
	Help string
}

// Stats describes every counter, indexed by SchedSchedStat.
var Stats = [SchedSchedStatSSTAT_MAX]Stat{
	SchedSchedStatSSTAT_SENT:            {"attribution_records_sent", false, "runtime and scheduler records sent for latency attribution"},
	SchedSchedStatSSTAT_RINGBUF_FULL:    {"attribution_lost_ringbuf_full", true, "attribution records lost: the ring buffer was full (raise --ring-size)"},
	SchedSchedStatSSTAT_READ_G_FAILED:   {"attribution_lost_read_g_failed", true, "runtime hook hits whose goroutine could not be read"},
	SchedSchedStatSSTAT_TABLE_FULL:      {"attribution_lost_table_full", true, "off-CPU episodes or assists not followed: too many goroutines inside spans off CPU at once"},
	SchedSchedStatSSTAT_STW_NOT_PAIRED:  {"attribution_stw_not_paired", false, "starts of the world without their stop (attached during a pause)"},
	SchedSchedStatSSTAT_TLS_READ_FAILED: {"attribution_lost_tls_read_failed", true, "context switches of traced threads whose goroutine could not be read from TLS"},
}

// ReadStats sums the per-CPU counters.
func ReadStats(m *ebpf.Map) ([SchedSchedStatSSTAT_MAX]uint64, error) {
	var out [SchedSchedStatSSTAT_MAX]uint64
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
