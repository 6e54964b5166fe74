// Package calltracer holds latscope's call-tracing BPF program
// (calltracer.c) and its generated Go bindings: entry and exit probes for
// chosen Go functions, paired per goroutine in the kernel, plus the
// runtime hooks that link goroutines to the frame that created them.
package calltracer

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type call_event -type lib_header -type tracer_stat -type call_flags -type record_type -type proc_config -type lib_key -type lib_fields -type ret_site_event -type ret_key -type ret_site_state Tracer calltracer.c -- -I../include

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
)

// Event is one completed (or unwound) call, as the kernel sends it.
type Event = TracerCallEvent

// LibKey and LibFields key and hold a library's struct offsets per process.
type (
	LibKey    = TracerLibKey
	LibFields = TracerLibFields
)

// Flag values of Event.Flags.
const (
	FlagUnwound = uint16(TracerCallFlagsCALL_UNWOUND)
	FlagSpawned = uint16(TracerCallFlagsCALL_SPAWNED)
	// FlagExitMissed: the call's return was not seen; it was closed when a
	// later call started on its goroutine (its end time is late).
	FlagExitMissed = uint16(TracerCallFlagsCALL_EXIT_MISSED)
)

// Options tunes the program at load time.
type Options struct {
	MinDuration   uint64 // ns; shorter calls are not sent (counted)
	RingBytes     uint32 // ring buffer size, a power of two multiple of the page size
	WakeupBytes   uint64 // pending bytes that make the kernel wake the reader early
	MaxGoroutines uint32 // goroutines with traced state at once, per node
	CountHits     bool   // count probe hits per attach cookie (tests, diagnostics)
	IDSalt        uint64 // span ids are derived from call ids with it (agent/callchain)
	Inject        bool   // put trace context on outgoing requests (libraries that can)
	// UprobeMulti loads the uprobe programs to be attached as uprobe_multi
	// links (Linux ≥ 6.6): a program loaded so cannot be a perf-event
	// uprobe, and the other way round.
	UprobeMulti bool
}

// Load loads and verifies the program with opts applied.
func Load(opts Options) (*TracerObjects, error) {
	spec, err := LoadTracer()
	if err != nil {
		return nil, fmt.Errorf("read calltracer BPF object: %w", err)
	}
	if err := Configure(spec, opts); err != nil {
		return nil, err
	}
	var objs TracerObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, fmt.Errorf("load calltracer BPF programs (need root or CAP_BPF+CAP_PERFMON, kernel >= 5.17 with BTF): %w", err)
	}
	return &objs, nil
}

// Configure applies opts to spec: the call tracer's or that of any object
// built on frames.h (an instrumented library), whose shared maps must then
// be replaced by the call tracer's (SharedMaps).
func Configure(spec *ebpf.CollectionSpec, opts Options) error {
	consts := map[string]any{
		"min_duration_ns": opts.MinDuration,
		"count_hits":      boolByte(opts.CountHits),
		"id_salt":         opts.IDSalt,
	}
	if _, ok := spec.Variables["inject_enabled"]; ok {
		consts["inject_enabled"] = boolByte(opts.Inject)
	}
	if opts.WakeupBytes > 0 {
		consts["wakeup_bytes"] = opts.WakeupBytes
	}
	for name, v := range consts {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	if opts.UprobeMulti {
		for _, ps := range spec.Programs {
			if ps.Type == ebpf.Kprobe && strings.HasPrefix(ps.SectionName, "uprobe") {
				ps.AttachType = ebpf.AttachTraceUprobeMulti
			}
		}
	}
	if opts.RingBytes > 0 {
		spec.Maps["events"].MaxEntries = opts.RingBytes
	}
	if opts.MaxGoroutines > 0 {
		spec.Maps["goroutines"].MaxEntries = opts.MaxGoroutines
		spec.Maps["links"].MaxEntries = opts.MaxGoroutines
	}
	return nil
}

// SharedMaps are the maps of frames.h, to pass as MapReplacements when
// loading an object built on it, so it shares stacks, ring and counters.
func (o *TracerObjects) SharedMaps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		"events": o.Events, "procs": o.Procs, "goroutines": o.Goroutines, "links": o.Links,
		"live_roots": o.LiveRoots, "gstate_scratch": o.GstateScratch, "words_scratch": o.WordsScratch,
		"stats": o.Stats, "call_seq": o.CallSeq, "hits": o.Hits,
		"lib_offsets": o.LibOffsets, "ret_sites": o.RetSites,
	}
}

// Replacements keeps the maps of shared that spec declares, as
// MapReplacements for loading spec (which must name only those).
func Replacements(spec *ebpf.CollectionSpec, shared map[string]*ebpf.Map) map[string]*ebpf.Map {
	out := make(map[string]*ebpf.Map, len(shared))
	for name, m := range shared {
		if _, ok := spec.Maps[name]; ok {
			out[name] = m
		}
	}
	return out
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// Stat describes one of the program's counters.
type Stat struct {
	Name string
	Loss bool // counts data that was lost or could not be attributed
	Help string
}

// Stats describes every counter, indexed by TracerTracerStat.
var Stats = [TracerTracerStatSTAT_MAX]Stat{
	TracerTracerStatSTAT_CALLS:                {"calls_sent", false, "completed calls sent to user space"},
	TracerTracerStatSTAT_FILTERED_SHORT:       {"calls_below_min_duration", false, "calls shorter than --min-duration, not sent by request"},
	TracerTracerStatSTAT_UNWOUND:              {"frames_unwound", false, "frames closed without their own return (panic, Goexit)"},
	TracerTracerStatSTAT_GOROUTINE_LINKS:      {"goroutines_linked", false, "goroutines linked to the traced frame that created them"},
	TracerTracerStatSTAT_RINGBUF_FULL:         {"lost_ringbuf_full", true, "calls lost: the ring buffer was full (raise --ring-size)"},
	TracerTracerStatSTAT_STACK_TOO_DEEP:       {"lost_stack_too_deep", true, "calls not recorded: more than 32 traced frames on one goroutine"},
	TracerTracerStatSTAT_EXIT_WITHOUT_ENTRY:   {"exit_without_entry", true, "returns whose entry was not seen (attached mid-call)"},
	TracerTracerStatSTAT_GOROUTINE_TABLE_FULL: {"lost_goroutine_table_full", true, "calls lost: too many goroutines with traced frames (raise --max-goroutines)"},
	TracerTracerStatSTAT_READ_G_FAILED:        {"lost_read_g_failed", true, "probe hits whose goroutine could not be read"},
	TracerTracerStatSTAT_UNKNOWN_PROCESS:      {"hits_untraced_process", false, "probe hits in a process latscope does not trace that runs an executable it traces (not selected, or not attached yet): probes are shared per executable file and filtered per process in the kernel"},
	TracerTracerStatSTAT_SYSTEM_STACK:         {"hits_on_system_stack", true, "probe hits on a system stack (g0): not a goroutine"},
	TracerTracerStatSTAT_LINKS_EXPIRED:        {"goroutine_links_expired", false, "goroutines outlived the request that created them; their later calls start new traces"},
	TracerTracerStatSTAT_ROOTS_TABLE_FULL:     {"lost_roots_table_full", true, "requests in flight beyond the live-roots table: their goroutine links are dropped"},
	TracerTracerStatSTAT_LIB_READ_FAILED:      {"lib_read_failed", true, "library data (method, path, status...) could not be read; spans kept without it"},
	TracerTracerStatSTAT_INJECTED:             {"propagation_injected", false, "outgoing requests given a traceparent naming their client span"},
	TracerTracerStatSTAT_INJECT_PRESENT:       {"propagation_already_present", false, "outgoing requests that carried a traceparent the application set (not a copy of one their request received): left unchanged"},
	TracerTracerStatSTAT_INJECT_REPLACED:      {"propagation_replaced", false, "outgoing requests that carried a copy of the traceparent their own request received (a proxy forwarding the incoming headers): the copy was made to name their client span"},
	TracerTracerStatSTAT_INJECT_FAILED:        {"propagation_failed", true, "outgoing requests whose traceparent could not be inserted: not an HTTP/1 request head, a head longer than 4 KiB, HTTP/2 frames continued, padded or too large, an HTTP/2 header block that could not be read through"},
	TracerTracerStatSTAT_INJECT_TLS:           {"propagation_tls", true, "outgoing requests over TLS: the bytes on the socket are encrypted, so no traceparent can be put in them without writing into the process's memory, which kernel lockdown refuses; the next service starts its own trace"},
	TracerTracerStatSTAT_INJECT_NO_CONN:       {"propagation_no_connection", true, "client calls that ended before their request reached a connection latscope follows: the dial failed or the call was cancelled first, or an HTTP/2 implementation other than net/http's own sent it (golang.org/x/net/http2's transport)"},
	TracerTracerStatSTAT_INJECT_CONN_UNKNOWN:  {"propagation_conn_unknown", true, "outgoing requests whose socket could not be found: the socket program cannot read which goroutine writes in this binary (g's thread-local slot not found in it, or arm64) and the connection is not a *net.TCPConn"},
	TracerTracerStatSTAT_INJECT_OFF:           {"propagation_off", false, "outgoing requests sent without a traceparent because injection is off (--no-inject, or unavailable: see the log)"},
	TracerTracerStatSTAT_EXIT_MISSED:          {"exit_missed", true, "calls whose return no exit probe saw, closed late when a later call started (please report: a return path is not covered)"},
	TracerTracerStatSTAT_INJECT_UNSENT:        {"propagation_unsent", true, "outgoing requests whose traceparent was ready but which were never seen leaving: connections latscope does not follow (not TCP; opened before attach and not adoptable) or HTTP/2 frames it could not follow"},
	TracerTracerStatSTAT_RET_SITES_REPORTED:   {"return_sites_reported", false, "new call sites of functions whose returns are probed where their callers resume, reported to the agent to probe"},
	TracerTracerStatSTAT_RET_SITES_FULL:       {"return_sites_table_full", true, "calls whose new call site could not be reported (the ret_sites table is full): seen at the function's RET while it is probed, else closed late"},
	TracerTracerStatSTAT_RET_SITE_LATE:        {"return_site_late", true, "calls from a call site met after their function's own RET probes were detached, made before the agent probed it: closed late, flagged"},
	TracerTracerStatSTAT_STREAM_START_UNSEEN:  {"stream_end_without_start", true, "gRPC client streams that ended without their start seen (opened before latscope attached, or while more were open than its stream table holds): no client span"},
	TracerTracerStatSTAT_INJECT_SOCKET_BUSY:   {"propagation_socket_busy", true, "connections another socket program owns (a second latscope injecting on this node?): requests on them get no traceparent"},
	TracerTracerStatSTAT_INCOMING_UNREAD:      {"propagation_incoming_unread", true, "incoming HTTP/1 requests whose headers latscope could not look through to the end for a traceparent: a header map larger than it reads per request (32 buckets or groups: requests with more than ~100 header lines, duplicates counted), or one it could not read; none of the headers looked at was a traceparent. If such a request carried one, its server span started a new trace"},
	TracerTracerStatSTAT_DB_SERVER_UNKNOWN:    {"db_server_unknown", false, "database/sql calls on a connection whose driver latscope cannot read (not one COMPATIBILITY.md lists, wrapped, or its struct offsets unknown: see the log): spans without server.address, server.port, db.namespace"},
}

// ReadStats sums the per-CPU counters.
func ReadStats(m *ebpf.Map) ([TracerTracerStatSTAT_MAX]uint64, error) {
	var out [TracerTracerStatSTAT_MAX]uint64
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

// Cookie packs what a probe site tells the program (see COOKIE_* in
// calltracer.c): the function id, how far SP at the site is below SP at
// the function's entry, and a site index that tells the function's sites
// apart so hits can be counted per site (0 for its entry sites, which
// share one cookie when it is entered at its callers' CALLs).
func Cookie(funcID uint32, spDelta int64, site uint16) (uint64, error) {
	if spDelta < -0x8000 || spDelta > 0x7fff {
		return 0, fmt.Errorf("SP delta %d does not fit the attach cookie", spDelta)
	}
	if site > maxSite {
		return 0, fmt.Errorf("site index %d does not fit the attach cookie", site)
	}
	return uint64(funcID) | uint64(uint16(spDelta))<<32 | uint64(site)<<48, nil
}

// maxSite bounds site indexes: the cookie's top bits are Shared's and
// Learn's.
const maxSite = 0x3fff

// Shared marks an exit site's cookie: the site also runs on paths that
// did not call the function (COOKIE_SHARED), as some resume sites do
// (symbolizer.ResumeSite).
func Shared(cookie uint64) uint64 { return cookie | 1<<63 }

// Learn marks an entry site's cookie: the function's returns are probed
// where each call site's caller resumes, learned as call sites show up
// (COOKIE_LEARN; RetSite records ask, the RetSites map answers).
func Learn(cookie uint64) uint64 { return cookie | 1<<62 }

// EventSize is the size of a call_event record.
const EventSize = int(unsafe.Sizeof(Event{}))

// LibHeader starts a library record; the library's payload follows.
type LibHeader = TracerLibHeader

// LibHeaderSize is the size of a lib_header.
const LibHeaderSize = int(unsafe.Sizeof(LibHeader{}))

// Record types: the first byte of every ring buffer record.
const (
	RecordCall = uint8(TracerRecordTypeRECORD_CALL)
	RecordLib  = uint8(TracerRecordTypeRECORD_LIB)
	// RecordRetSite asks the agent about a learned function's call site.
	RecordRetSite = uint8(TracerRecordTypeRECORD_RET_SITE)
)

// RetSiteEvent is a RecordRetSite record.
type RetSiteEvent = TracerRetSiteEvent

// RetKey keys the RetSites map; RetSite* are its values.
type RetKey = TracerRetKey

// Answers in the RetSites map.
const (
	RetSitePending = uint8(TracerRetSiteStateRET_SITE_PENDING)
	RetSiteProbed  = uint8(TracerRetSiteStateRET_SITE_PROBED)
	RetSiteTail    = uint8(TracerRetSiteStateRET_SITE_TAIL)
	RetSiteRefused = uint8(TracerRetSiteStateRET_SITE_REFUSED)
)

// DecodeRetSite returns the call site a RecordRetSite record reports.
func DecodeRetSite(raw []byte) (*RetSiteEvent, bool) {
	if len(raw) < int(unsafe.Sizeof(RetSiteEvent{})) || raw[0] != RecordRetSite {
		return nil, false
	}
	return (*RetSiteEvent)(unsafe.Pointer(&raw[0])), true
}

// Decode returns the call a ring buffer record holds, in place: the record
// is the C struct call_event, whose Go twin bpf2go generated. The result
// aliases raw.
func Decode(raw []byte) (*Event, bool) {
	if len(raw) < EventSize || raw[0] != RecordCall {
		return nil, false
	}
	return (*Event)(unsafe.Pointer(&raw[0])), true
}

// DecodeLib returns the header of a library record, in place.
func DecodeLib(raw []byte) (*LibHeader, bool) {
	if len(raw) < LibHeaderSize || raw[0] != RecordLib {
		return nil, false
	}
	return (*LibHeader)(unsafe.Pointer(&raw[0])), true
}

// Encode returns the record bytes of ev (recordings, tests).
func Encode(ev *Event) []byte {
	ev.Type = RecordCall
	return unsafe.Slice((*byte)(unsafe.Pointer(ev)), EventSize)
}

// WriteRecord appends one raw ring buffer record to a recording: a
// little-endian uint32 length, then the bytes.
func WriteRecord(w io.Writer, raw []byte) error {
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(raw)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	_, err := w.Write(raw)
	return err
}

// ReadRecords splits a recording into its records.
func ReadRecords(data []byte) ([][]byte, error) {
	var recs [][]byte
	for len(data) > 0 {
		if len(data) < 4 {
			return recs, fmt.Errorf("recording truncated in a length")
		}
		n := int(binary.LittleEndian.Uint32(data))
		if len(data) < 4+n {
			return recs, fmt.Errorf("recording truncated in a %d-byte record", n)
		}
		recs = append(recs, data[4:4+n:4+n])
		data = data[4+n:]
	}
	return recs, nil
}
