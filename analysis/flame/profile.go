// Package flame aggregates the critical paths of many requests into pprof
// profiles (built with github.com/google/pprof/profile), so that pprof's
// flame graph, top and graph views show where slow requests waited,
// across services: each stack runs from the request's span down through
// the spans on its critical path, one frame per span, named "service
// operation"; a sample's value is the critical-path time spent in the
// leaf's own work.
//
// Sample types: critical_path/nanoseconds (the default) and
// requests/count, one per request, counted on the request's own frame
// (the stack holding only the root). The critical_path total is exactly
// the sum of the selected requests' durations.
//
// Select picks the requests (Query: window, service, operation, latency
// floor or slowest share, errors), Builder aggregates their paths, Diff
// sets a spike against a baseline, Normalize divides by the request count.
package flame

import (
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/analysis/criticalpath"
)

// Sample types of the profiles built here.
const (
	SampleCriticalPath = "critical_path" // nanoseconds
	SampleRequests     = "requests"      // count
)

// Cause is a part of a segment's time with a cause finer than the span:
// it becomes a leaf frame under the span's, named Name ("[on cpu]",
// "[gc assist]", "[blocked: chan]").
type Cause struct {
	Name     string
	Duration time.Duration
	// Stacks split the cause's time by code: frames under the cause's,
	// outermost first (function names, from CPU samples). What they leave
	// of Duration stays on the cause's own frame; what they claim beyond
	// it is cut, in order.
	Stacks []CodeStack
}

// CodeStack is a code path and the part of a cause's time spent on it.
type CodeStack struct {
	Frames   []string // outermost first
	Duration time.Duration
}

// OnCPU names the cause "running on a CPU": CPU samples put their code
// frames under it.
const OnCPU = "[on cpu]"

// SelfSplit splits a segment's time (the span's own work on the path,
// p.Nodes[seg.Node].Span) by cause. The causes' durations should sum to
// the segment's; what they leave stays the span's own frame, and what
// they claim beyond the segment is cut (in order), so the profile's total
// stays exact. Nil (or no causes) keeps the whole segment on the span.
type SelfSplit func(p *criticalpath.Path, seg criticalpath.Segment) []Cause

// Builder aggregates critical paths into a calling-context tree: stacks
// are nodes of a trie over frames, so memory grows with the distinct
// stacks, not with the requests. The zero value is not usable: see
// NewBuilder. A Builder is not safe for concurrent use.
type Builder struct {
	split SelfSplit

	frames map[frameKey]int32
	names  []string

	nodes      map[nodeKey]int32
	nodeParent []int32 // -1: a request's root frame
	nodeFrame  []int32
	value      []int64 // critical-path ns in the node's own frame
	count      []int64 // requests rooted here

	requests int64
	total    time.Duration
	onPath   []int32 // scratch: trie node of each path node
}

type frameKey struct {
	service, name string
	cause         bool
}

type nodeKey struct{ parent, frame int32 }

// NewBuilder returns an empty builder; split may be nil (see SelfSplit).
func NewBuilder(split SelfSplit) *Builder {
	return &Builder{split: split, frames: make(map[frameKey]int32), nodes: make(map[nodeKey]int32)}
}

// Requests is how many paths were added.
func (b *Builder) Requests() int64 { return b.requests }

// Total is the sum of the added paths' lengths.
func (b *Builder) Total() time.Duration { return b.total }

// Add aggregates one request's critical path. The path is not kept.
func (b *Builder) Add(p *criticalpath.Path) {
	if p == nil || len(p.Nodes) == 0 {
		return
	}
	b.onPath = b.onPath[:0]
	for _, n := range p.Nodes {
		parent := int32(-1)
		if n.Parent >= 0 {
			parent = b.onPath[n.Parent]
		}
		svc := "unknown_service"
		if n.Span.Process != nil && n.Span.Process.ServiceName != "" {
			svc = n.Span.Process.ServiceName
		}
		b.onPath = append(b.onPath, b.node(parent, b.frame(frameKey{service: svc, name: n.Span.Name})))
	}
	b.count[b.onPath[0]]++
	b.requests++
	b.total += p.Total()
	for _, seg := range p.Segments {
		node := b.onPath[seg.Node]
		left := int64(seg.Duration())
		if b.split != nil {
			for _, c := range b.split(p, seg) {
				d := min(int64(c.Duration), left)
				if d <= 0 {
					continue
				}
				cn := b.node(node, b.frame(frameKey{name: c.Name, cause: true}))
				b.value[cn] += d - b.addCode(cn, c.Stacks, d)
				left -= d
			}
		}
		b.value[node] += left
	}
}

// addCode puts code stacks under node, claiming at most d in all, and
// returns what they claimed.
func (b *Builder) addCode(node int32, stacks []CodeStack, d int64) int64 {
	claimed := int64(0)
	for _, cs := range stacks {
		v := min(int64(cs.Duration), d-claimed)
		if v <= 0 {
			continue
		}
		n := node
		for _, f := range cs.Frames {
			n = b.node(n, b.frame(frameKey{name: f, cause: true}))
		}
		b.value[n] += v
		claimed += v
	}
	return claimed
}

func (b *Builder) frame(k frameKey) int32 {
	if f, ok := b.frames[k]; ok {
		return f
	}
	f := int32(len(b.names))
	name := k.name
	if !k.cause {
		name = k.service + " " + k.name
	}
	b.names = append(b.names, name)
	b.frames[k] = f
	return f
}

func (b *Builder) node(parent, frame int32) int32 {
	k := nodeKey{parent, frame}
	if n, ok := b.nodes[k]; ok {
		return n
	}
	n := int32(len(b.nodeFrame))
	b.nodes[k] = n
	b.nodeParent = append(b.nodeParent, parent)
	b.nodeFrame = append(b.nodeFrame, frame)
	b.value = append(b.value, 0)
	b.count = append(b.count, 0)
	return n
}

// Profile returns what was added as a pprof profile covering [start, end]
// (its time and duration; zero times leave them unset), with comments
// (the query, say) added. Each distinct stack is one sample.
func (b *Builder) Profile(start, end time.Time, comments ...string) *profile.Profile {
	m := &profile.Mapping{ID: 1, File: "latscope critical path", HasFunctions: true}
	p := &profile.Profile{
		SampleType: []*profile.ValueType{
			{Type: SampleCriticalPath, Unit: "nanoseconds"},
			{Type: SampleRequests, Unit: "count"},
		},
		DefaultSampleType: SampleCriticalPath,
		PeriodType:        &profile.ValueType{Type: SampleCriticalPath, Unit: "nanoseconds"},
		Period:            1,
		Mapping:           []*profile.Mapping{m},
		Comments:          comments,
	}
	if !start.IsZero() {
		p.TimeNanos = start.UnixNano()
		if end.After(start) {
			p.DurationNanos = end.Sub(start).Nanoseconds()
		}
	}
	locs := make([]*profile.Location, len(b.names))
	for i, name := range b.names {
		fn := &profile.Function{ID: uint64(i + 1), Name: name, SystemName: name}
		p.Function = append(p.Function, fn)
		locs[i] = &profile.Location{ID: uint64(i + 1), Mapping: m, Line: []profile.Line{{Function: fn}}}
	}
	p.Location = locs
	for n := range b.nodeFrame {
		if b.value[n] == 0 && b.count[n] == 0 {
			continue
		}
		var stack []*profile.Location // leaf first, as pprof wants
		for i := int32(n); i >= 0; i = b.nodeParent[i] {
			stack = append(stack, locs[b.nodeFrame[i]])
		}
		p.Sample = append(p.Sample, &profile.Sample{Location: stack, Value: []int64{b.value[n], b.count[n]}})
	}
	return p
}
