// Package cpuprofile holds the CPU samples the agent attributes to spans:
// on-CPU stacks of traced processes, sampled by the kernel at a fixed
// period (bpf/profile), symbolized from each binary's pclntab and keyed
// by the span each one ran in. A Store keeps them within a byte budget,
// builds pprof CPU profiles of the requests a flame.Query selects
// (Profile: real function stacks under the span path), and puts their
// code frames under the "[on cpu]" leaves of critical-path flame graphs
// (Split).
//
// A sample is one sampling period of CPU time, its stack a list of
// locations, each a program counter resolved to its function, file and
// line, with the calls inlined there.
package cpuprofile

import (
	"encoding/binary"
	"sync"
	"time"
	"unsafe"

	"github.com/latscope/latscope/span"
)

// Line is one call a location stands for: the function and where in it.
type Line struct {
	Function string
	File     string
	Line     int
}

// LocationID names an interned location (Store.Location).
type LocationID uint32

// Flags qualify a sample.
type Flags uint8

const (
	// Kernel: the thread was in the kernel (a system call, a page
	// fault); the stack is where it entered. Profiles show a "[kernel]"
	// leaf.
	Kernel Flags = 1 << iota
	// Spawned: the sample ran on a goroutine the span's call started
	// (one with no traced call of its own), not on the span's goroutine.
	// It counts in CPU profiles; flame graphs leave it out of the span's
	// "[on cpu]" time, which is its own goroutine's.
	Spawned
)

// Stats counts what a Store holds and lost.
type Stats struct {
	Samples uint64 // samples added
	// Evicted samples were dropped, oldest spans first, to stay within
	// the budget.
	Evicted uint64
	// Unmatched samples were evicted without their span ever arriving
	// (Export): their call was lost or is still running. A loss.
	Unmatched uint64
	Spans     int   // spans holding samples now
	Held      int   // samples held now
	Locations int   // distinct locations (interned, never evicted)
	Stacks    int   // distinct stacks held now
	Bytes     int64 // the budget's use
	// LocationsFull counts locations that did not fit the location
	// table (a quarter of the budget): their samples show "[unknown]"
	// there.
	LocationsFull uint64
}

// Store keeps CPU samples by span. It is safe for concurrent use: the
// agent adds samples from its sample reader and spans from its builder;
// the API reads.
type Store struct {
	period time.Duration
	max    int64

	mu       sync.Mutex
	locs     []location
	locIDs   map[string]LocationID
	locBytes int64 // what the location table takes of the budget

	stacks   []stack
	stackIDs map[string]uint32
	free     []uint32 // stack ids to reuse

	spans map[span.SpanID]*entry
	order []span.SpanID // spans in the order their first sample came: eviction order
	head  int           // order[head:] are live (or evicted since: skipped)

	// seen holds recently exported span ids, direct-mapped by their low
	// bits: a sample read after its span was exported (the samples and
	// calls rings are read apart) still finds it seen.
	seen [1 << 14]span.SpanID

	bytes int64
	stats Stats
}

type location struct {
	lines []Line // innermost first
}

type stack struct {
	locs []LocationID // innermost first
	key  string
	refs int
}

type entry struct {
	trace   span.TraceID
	samples []sample
	seen    bool // the span arrived (Export)
}

type sample struct {
	at    int64 // Unix ns, on the span's process clock
	stack uint32
	flags Flags
}

// Byte costs of what the store holds, for its budget (measured shapes:
// map entries and slice elements with their share of overhead).
const (
	entryBytes    = 160
	sampleBytes   = int64(unsafe.Sizeof(sample{}))
	stackBytes    = 96
	locationBytes = 96
)

// New returns a store of samples taken every period, holding at most
// about maxBytes.
func New(maxBytes int64, period time.Duration) *Store {
	return &Store{
		period: period, max: maxBytes,
		locIDs: make(map[string]LocationID), stackIDs: make(map[string]uint32),
		spans: make(map[span.SpanID]*entry),
	}
}

// Period is the CPU time one sample stands for.
func (s *Store) Period() time.Duration { return s.period }

// unknownLocation is what a location the table has no room for becomes.
var unknownLocation = []Line{{Function: "[unknown]"}}

// Location interns a location: the calls one program counter stands for,
// innermost first (lines must not be changed afterwards). The same lines
// give the same id. Locations are never evicted (they are bounded by the
// traced binaries' code); once they take a quarter of the budget, new
// ones are "[unknown]" (counted).
func (s *Store) Location(lines []Line) LocationID {
	key := locationKey(lines)
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.locIDs[key]; ok {
		return id
	}
	cost := locationBytes + int64(len(key))
	if s.locBytes+cost > s.max/4 {
		s.stats.LocationsFull++
		lines, key, cost = unknownLocation, locationKey(unknownLocation), 0
		if id, ok := s.locIDs[key]; ok {
			return id
		}
	}
	id := LocationID(len(s.locs))
	s.locs = append(s.locs, location{lines: lines})
	s.locIDs[key] = id
	s.locBytes += cost
	s.bytes += cost
	return id
}

func locationKey(lines []Line) string {
	var b []byte
	for _, l := range lines {
		b = append(b, l.Function...)
		b = append(b, 0)
		b = append(b, l.File...)
		b = binary.AppendUvarint(append(b, 0), uint64(l.Line))
	}
	return string(b)
}

// Add records one sample of span id (in trace) taken at t (Unix ns, the
// span's process clock) with its stack, innermost location first.
func (s *Store) Add(trace span.TraceID, id span.SpanID, t int64, flags Flags, locs []LocationID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Samples++
	e := s.spans[id]
	if e == nil {
		e = &entry{trace: trace, seen: s.seen[seenSlot(id)] == id}
		s.spans[id] = e
		s.order = append(s.order, id)
		s.bytes += entryBytes
	}
	e.samples = append(e.samples, sample{at: t, stack: s.internStack(locs), flags: flags})
	s.bytes += sampleBytes
	for s.bytes > s.max && s.evictOldest() {
	}
}

// internStack returns the id of the stack locs, counting one more
// reference to it.
func (s *Store) internStack(locs []LocationID) uint32 {
	key := unsafe.String((*byte)(unsafe.Pointer(unsafe.SliceData(locs))), len(locs)*4)
	if id, ok := s.stackIDs[key]; ok {
		s.stacks[id].refs++
		return id
	}
	st := stack{locs: append([]LocationID(nil), locs...), refs: 1}
	st.key = unsafe.String((*byte)(unsafe.Pointer(unsafe.SliceData(st.locs))), len(st.locs)*4)
	var id uint32
	if n := len(s.free); n > 0 {
		id, s.free = s.free[n-1], s.free[:n-1]
		s.stacks[id] = st
	} else {
		id = uint32(len(s.stacks))
		s.stacks = append(s.stacks, st)
	}
	s.stackIDs[st.key] = id
	s.bytes += stackBytes + int64(len(st.key))
	s.stats.Stacks++
	return id
}

func (s *Store) releaseStack(id uint32) {
	st := &s.stacks[id]
	if st.refs--; st.refs > 0 {
		return
	}
	delete(s.stackIDs, st.key)
	s.bytes -= stackBytes + int64(len(st.key))
	*st = stack{}
	s.free = append(s.free, id)
	s.stats.Stacks--
}

// evictOldest drops the span whose first sample is the oldest; false when
// none is left.
func (s *Store) evictOldest() bool {
	for s.head < len(s.order) {
		id := s.order[s.head]
		s.head++
		e := s.spans[id]
		if e == nil {
			continue
		}
		delete(s.spans, id)
		n := uint64(len(e.samples))
		s.stats.Evicted += n
		if !e.seen && s.seen[seenSlot(id)] != id {
			s.stats.Unmatched += n
		}
		for _, smp := range e.samples {
			s.releaseStack(smp.stack)
		}
		s.bytes -= entryBytes + int64(len(e.samples))*sampleBytes
		s.compactOrder()
		return true
	}
	return false
}

// compactOrder drops the evicted prefix of order once it is most of it.
func (s *Store) compactOrder() {
	if s.head > 1024 && s.head > len(s.order)/2 {
		s.order = append(s.order[:0], s.order[s.head:]...)
		s.head = 0
	}
}

func seenSlot(id span.SpanID) int {
	return int(binary.LittleEndian.Uint16(id[6:]) & (1<<14 - 1))
}

// Export marks the spans as arrived: their samples are attributed (the
// Store is a span.Exporter beside the trace store). It holds no span.
func (s *Store) Export(spans []*span.Span) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sp := range spans {
		s.seen[seenSlot(sp.SpanID)] = sp.SpanID
		if e := s.spans[sp.SpanID]; e != nil {
			e.seen = true
		}
	}
	return nil
}

// Close does nothing: the store stays readable.
func (s *Store) Close() error { return nil }

// Stats returns the counters and what the store holds now.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Spans = len(s.spans)
	st.Locations = len(s.locs)
	st.Bytes = s.bytes
	st.Held = int(st.Samples - st.Evicted)
	return st
}

// Samples calls fn for each sample of span id, with its time (Unix ns on
// the span's clock), flags and stack (innermost location first, each
// location's lines innermost first; valid during the call only).
func (s *Store) Samples(id span.SpanID, fn func(at int64, flags Flags, stack [][]Line)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.spans[id]
	if e == nil {
		return
	}
	var lines [][]Line
	for _, smp := range e.samples {
		lines = lines[:0]
		for _, l := range s.stacks[smp.stack].locs {
			lines = append(lines, s.locs[l].lines)
		}
		fn(smp.at, smp.flags, lines)
	}
}
