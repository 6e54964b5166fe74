package cpuprofile

import (
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/analysis/criticalpath"
	"github.com/latscope/latscope/analysis/flame"
	"github.com/latscope/latscope/span"
)

// Sample types of the CPU profiles built here: pprof's own for CPU
// profiles (what `go tool pprof` shows for runtime/pprof's).
const (
	SampleSamples = "samples" // count
	SampleCPU     = "cpu"     // nanoseconds
)

// KernelFrame is the leaf of samples taken while the thread was in the
// kernel.
const KernelFrame = "[kernel]"

// SpawnedLabel labels samples taken on a goroutine the span started
// (Spawned): pprof's -tagfocus goroutine=spawned shows them alone.
const SpawnedLabel = "goroutine"

// Result is a CPU profile with what it was made of.
type Result struct {
	Profile  *profile.Profile
	Requests int64 // requests selected
	Samples  int64 // samples in the profile
	// Thresholds are the durations Slowest computed, per operation
	// ("service operation"); nil without Slowest.
	Thresholds map[string]time.Duration
}

// Profile builds the pprof CPU profile of the requests of traces (each
// one trace's spans) that q selects, as the critical-path flame graph
// selects them (flame.Each). Every sample of a span at or under a request
// — on any of its goroutines, in any process on this node the request
// crossed — is one sample of Period CPU time. Its stack is the code, from
// the sampled function (under "[kernel]" when the thread was in the
// kernel) out to the goroutine's start, then the spans from the one the
// sample ran in up to the request, each a "service operation" frame as
// in flame graphs. Sample types samples/count and cpu/nanoseconds (the
// default); period cpu/nanoseconds. comments are written into the
// profile.
func (s *Store) Profile(traces [][]*span.Span, q flame.Query, comments ...string) (*Result, error) {
	res := &Result{}
	var paths spanPaths
	var want []spanAt // spans to read samples of, with their path node
	var err error
	res.Thresholds, err = flame.Each(traces, q, func(t *criticalpath.Tree, req int) {
		res.Requests++
		paths.walk(t, req, -1, t.Len(), &want)
	})
	if err != nil {
		return nil, err
	}

	type key struct {
		path  int32
		stack uint32
		flags Flags
	}
	counts := make(map[key]int64)
	var order []key
	var stacks map[uint32][]LocationID
	locs := make(map[LocationID][]Line)
	s.mu.Lock()
	stacks = make(map[uint32][]LocationID)
	for _, w := range want {
		e := s.spans[w.id]
		if e == nil {
			continue
		}
		for _, smp := range e.samples {
			k := key{w.path, smp.stack, smp.flags & (Kernel | Spawned)}
			if counts[k] == 0 {
				order = append(order, k)
				if _, ok := stacks[smp.stack]; !ok {
					st := s.stacks[smp.stack].locs
					stacks[smp.stack] = st
					for _, l := range st {
						locs[l] = s.locs[l].lines
					}
				}
			}
			counts[k]++
		}
	}
	s.mu.Unlock()

	pb := newProfileBuilder(s.period, q, comments)
	for _, k := range order {
		var stack []*profile.Location // leaf first
		if k.flags&Kernel != 0 {
			stack = append(stack, pb.frame(KernelFrame))
		}
		for _, l := range stacks[k.stack] {
			stack = append(stack, pb.location(l, locs[l]))
		}
		for n := k.path; n >= 0; n = paths.parent[n] {
			stack = append(stack, pb.frame(paths.name[n]))
		}
		n := counts[k]
		smp := &profile.Sample{Location: stack, Value: []int64{n, n * int64(s.period)}}
		if k.flags&Spawned != 0 {
			smp.Label = map[string][]string{SpawnedLabel: {"spawned"}}
		}
		pb.p.Sample = append(pb.p.Sample, smp)
		res.Samples += n
	}
	res.Profile = pb.p
	return res, nil
}

// spanAt is a span whose samples go under a node of the span paths.
type spanAt struct {
	id   span.SpanID
	path int32
}

// spanPaths is a trie of span frames ("service operation") from requests
// down to the spans under them.
type spanPaths struct {
	nodes  map[pathKey]int32
	parent []int32
	name   []string
}

type pathKey struct {
	parent int32
	name   string
}

func (sp *spanPaths) node(parent int32, name string) int32 {
	if sp.nodes == nil {
		sp.nodes = make(map[pathKey]int32)
	}
	k := pathKey{parent, name}
	if n, ok := sp.nodes[k]; ok {
		return n
	}
	n := int32(len(sp.parent))
	sp.nodes[k] = n
	sp.parent = append(sp.parent, parent)
	sp.name = append(sp.name, name)
	return n
}

// walk adds span i and the spans under it (depth bounds the walk against
// malformed trees).
func (sp *spanPaths) walk(t *criticalpath.Tree, i int, parent int32, depth int, out *[]spanAt) {
	n := sp.node(parent, criticalpath.Frame(t.Span(i)))
	*out = append(*out, spanAt{t.Span(i).SpanID, n})
	if depth <= 0 {
		return
	}
	for _, c := range t.Children(i) {
		sp.walk(t, int(c), n, depth-1, out)
	}
}

// profileBuilder makes the pprof profile's functions and locations.
type profileBuilder struct {
	p       *profile.Profile
	m       *profile.Mapping
	funcs   map[[2]string]*profile.Function
	codes   map[LocationID]*profile.Location
	frames  map[string]*profile.Location
	nextLoc uint64
}

func newProfileBuilder(period time.Duration, q flame.Query, comments []string) *profileBuilder {
	m := &profile.Mapping{ID: 1, File: "latscope", HasFunctions: true, HasFilenames: true, HasLineNumbers: true, HasInlineFrames: true}
	p := &profile.Profile{
		SampleType: []*profile.ValueType{
			{Type: SampleSamples, Unit: "count"},
			{Type: SampleCPU, Unit: "nanoseconds"},
		},
		DefaultSampleType: SampleCPU,
		PeriodType:        &profile.ValueType{Type: SampleCPU, Unit: "nanoseconds"},
		Period:            int64(period),
		Mapping:           []*profile.Mapping{m},
		Comments:          comments,
	}
	if !q.Start.IsZero() {
		p.TimeNanos = q.Start.UnixNano()
		if q.End.After(q.Start) {
			p.DurationNanos = q.End.Sub(q.Start).Nanoseconds()
		}
	}
	return &profileBuilder{p: p, m: m, funcs: make(map[[2]string]*profile.Function), codes: make(map[LocationID]*profile.Location), frames: make(map[string]*profile.Location)}
}

func (b *profileBuilder) function(name, file string) *profile.Function {
	k := [2]string{name, file}
	if f, ok := b.funcs[k]; ok {
		return f
	}
	f := &profile.Function{ID: uint64(len(b.p.Function) + 1), Name: name, SystemName: name, Filename: file}
	b.p.Function = append(b.p.Function, f)
	b.funcs[k] = f
	return f
}

func (b *profileBuilder) newLocation(lines []profile.Line) *profile.Location {
	b.nextLoc++
	l := &profile.Location{ID: b.nextLoc, Mapping: b.m, Line: lines}
	b.p.Location = append(b.p.Location, l)
	return l
}

// location is a code location: one program counter's calls, innermost
// first, as pprof lists inlined calls.
func (b *profileBuilder) location(id LocationID, lines []Line) *profile.Location {
	if l, ok := b.codes[id]; ok {
		return l
	}
	pl := make([]profile.Line, len(lines))
	for i, l := range lines {
		pl[i] = profile.Line{Function: b.function(l.Function, l.File), Line: int64(l.Line)}
	}
	l := b.newLocation(pl)
	b.codes[id] = l
	return l
}

// frame is a location standing for a span or a pseudo-frame.
func (b *profileBuilder) frame(name string) *profile.Location {
	if l, ok := b.frames[name]; ok {
		return l
	}
	l := b.newLocation([]profile.Line{{Function: b.function(name, "")}})
	b.frames[name] = l
	return l
}
