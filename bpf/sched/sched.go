// Package sched holds latscope's latency-attribution BPF programs
// (sched.c) and their generated Go bindings: the Go runtime's
// stop-the-world and GC-assist hooks, which send the pauses of traced
// processes and the assists of goroutines inside traced calls as
// RECORD_SCHED records on the call tracer's ring. The attribution
// package turns them into each span's time split.
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
	KindSTW    = uint8(SchedSchedKindSCHED_STW)
	KindAssist = uint8(SchedSchedKindSCHED_ASSIST)
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

// Objects are the loaded programs and maps.
type Objects struct {
	coll *ebpf.Collection

	STWStart, STWEnd, AssistStart, AssistEnd *ebpf.Program

	Procs *ebpf.Map // sched_procs: pid → Proc
	Stats *ebpf.Map
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
		Procs: coll.Maps["sched_procs"], Stats: coll.Maps["sched_stats"],
	}
	for name, p := range map[string]*ebpf.Program{"stw_start": o.STWStart, "stw_end": o.STWEnd, "assist_start": o.AssistStart,
		"assist_end": o.AssistEnd} {
		if p == nil {
			coll.Close()
			return nil, fmt.Errorf("sched BPF object has no program %s", name)
		}
	}
	return o, nil
}

// Close unloads the programs and maps.
func (o *Objects) Close() { o.coll.Close() }

// Stat describes one of the programs' counters.
type Stat struct {
	Name string
	Loss bool // counts data that was lost: some spans' splits are off
	Help string
}

// Stats describes every counter, indexed by SchedSchedStat.
var Stats = [SchedSchedStatSSTAT_MAX]Stat{
	SchedSchedStatSSTAT_SENT:           {"attribution_records_sent", false, "runtime and scheduler records sent for latency attribution"},
	SchedSchedStatSSTAT_RINGBUF_FULL:   {"attribution_lost_ringbuf_full", true, "attribution records lost: the ring buffer was full (raise --ring-size)"},
	SchedSchedStatSSTAT_READ_G_FAILED:  {"attribution_lost_read_g_failed", true, "runtime hook hits whose goroutine could not be read"},
	SchedSchedStatSSTAT_TABLE_FULL:     {"attribution_lost_table_full", true, "assists not followed: too many goroutines inside spans assisting at once"},
	SchedSchedStatSSTAT_STW_NOT_PAIRED: {"attribution_stw_not_paired", false, "starts of the world without their stop (attached during a pause)"},
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
