package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
)

// collector is an in-memory span.Exporter.
type collector struct {
	mu     sync.Mutex
	spans  []*span.Span
	closed bool
}

func (c *collector) Export(s []*span.Span) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.spans = append(c.spans, s...)
	return nil
}

func (c *collector) Close() error { c.closed = true; return nil }

// fixtureFuncs are the functions of the calls fixture the tests trace.
var fixtureFuncs = []string{
	"main.nested", "main.middle", "main.leaf", "main.recurse",
	"main.fanOut", "main.worker", "main.spawner", "main.spawnChildren",
	"main.stackGrowth", "main.growRoot", "main.deepLeaf",
	"main.catcher", "main.catcher.func1", "main.thrower", "main.bottom",
	"main.inlineUse", "main.tiny", "main.request", "main.job",
	"main.shapes", "main.(*circle).area", "main.(*circle).perimeter",
	"main.twice", "main.sq",
}

// TestTraceFixtures traces the calls fixture, built with every toolchain
// of the matrix and every link mode, and checks the exact call trees,
// that every probe fired once per call, and that the program behaved
// exactly as it does untraced.
func TestTraceFixtures(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range fixture.Matrix() {
		for _, mode := range fixture.Modes {
			t.Run(tc+"/"+string(mode), func(t *testing.T) { traceCallsFixture(t, tc, mode) })
		}
	}
}

// traceCallsFixture traces the calls fixture built with toolchain tc in
// mode and checks everything TestTraceFixtures promises.
func traceCallsFixture(t *testing.T, tc string, mode fixture.Mode) {
	bin := fixture.Build(t, "calls", tc, mode)
	want, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("untraced run: %v", err)
	}
	var stdout bytes.Buffer
	col := &collector{}
	s := &agent.Session{
		Command:   []string{bin},
		Stdout:    &stdout,
		Patterns:  fixtureFuncs,
		Exporters: []span.Exporter{col},
		Tracer:    agent.Config{CountHits: true},
	}
	var hits map[uint64]uint64
	var proc *agent.Process
	s.Ready = func(p *agent.Process) { proc = p }
	res, err := runSession(t, s, &hits)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("traced program exited %d", res.ExitCode)
	}
	if got := stdout.String(); got != string(want) {
		t.Fatalf("traced output differs:\n got %q\nwant %q", got, want)
	}
	if !col.closed {
		t.Error("exporter not closed")
	}
	if lost := res.Lost(); lost > 0 {
		t.Errorf("lost %d events: %+v", lost, res.Counters)
	}
	if got := res.Counter("goroutine_links_expired"); got != 1 {
		t.Errorf("goroutine_links_expired = %d, want 1 (the pool worker)", got)
	}
	checkTrees(t, col.spans)
	checkHits(t, proc, hits, col.spans)
	checkExits(t, proc, "main.middle", true)
	// Called through an interface whose itab is built at run time.
	checkExits(t, proc, "main.(*circle).area", false)
	for _, f := range proc.Funcs {
		inlined := f.Inline.Known && slices.Contains(f.Inline.Callers, "main.inlineUse")
		if (f.Func.Name == "main.tiny") != inlined {
			t.Errorf("%s: inline info %+v", f.Func.Name, f.Inline)
		}
	}
}

// runSession runs s and reads the probe hit counters before they go away.
func runSession(t *testing.T, s *agent.Session, hits *map[uint64]uint64) (*agent.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s.Hits = func(h map[uint64]uint64) { *hits = h }
	return s.Run(ctx)
}

type node struct {
	s    *span.Span
	kids []*node
}

// shape renders a subtree as name(children...) with "go " marking a
// goroutine hop and "!" an unwound frame, children sorted by name.
func shape(n *node) string {
	var parts []string
	for _, k := range n.kids {
		p := shape(k)
		if k.s.GoID != n.s.GoID {
			p = "go " + p
		}
		parts = append(parts, p)
	}
	sort.Strings(parts)
	name := strings.TrimPrefix(n.s.Name, "main.")
	if n.s.Unwound {
		name += "!"
	}
	if len(parts) == 0 {
		return name
	}
	return name + "(" + strings.Join(parts, " ") + ")"
}

func checkTrees(t *testing.T, spans []*span.Span) {
	t.Helper()
	byID := map[span.SpanID]*node{}
	for _, s := range spans {
		if byID[s.SpanID] != nil {
			t.Fatalf("duplicate span id %s (%s)", s.SpanID, s.Name)
		}
		byID[s.SpanID] = &node{s: s}
	}
	var roots []*node
	for _, s := range spans {
		n := byID[s.SpanID]
		if s.ParentID.IsZero() {
			roots = append(roots, n)
			continue
		}
		p := byID[s.ParentID]
		if p == nil {
			t.Fatalf("span %s: parent %s missing", s.Name, s.ParentID)
		}
		if s.TraceID != p.s.TraceID {
			t.Errorf("span %s is in trace %s, its parent %s in %s", s.Name, s.TraceID, p.s.Name, p.s.TraceID)
		}
		if s.ParentGoID != p.s.GoID {
			t.Errorf("span %s: parent goroutine %d, parent span ran on %d", s.Name, s.ParentGoID, p.s.GoID)
		}
		if s.GoID == p.s.GoID && s.Depth != p.s.Depth+1 {
			t.Errorf("span %s depth %d under %s depth %d", s.Name, s.Depth, p.s.Name, p.s.Depth)
		}
		if s.GoID == p.s.GoID && (s.Start.Before(p.s.Start) || s.End.After(p.s.End)) {
			t.Errorf("span %s [%v, %v] outside its parent %s [%v, %v]", s.Name, s.Start, s.End, p.s.Name, p.s.Start, p.s.End)
		}
		p.kids = append(p.kids, n)
	}
	var got []string
	for _, r := range roots {
		if r.s.Orphan {
			t.Errorf("orphan root %s", r.s.Name)
		}
		got = append(got, shape(r))
	}
	sort.Strings(got)
	recurse := "recurse"
	for i := 0; i < 19; i++ {
		recurse = "recurse(" + recurse + ")"
	}
	want := []string{
		"catcher(thrower!(bottom!(catcher.func1)))",
		"fanOut(go worker(leaf) go worker(leaf) go worker(leaf) go worker(leaf))",
		"inlineUse(tiny)",
		"nested(middle(leaf leaf) middle(leaf leaf) middle(leaf leaf))",
		recurse,
		"spawner(go spawnChildren(go worker(leaf) go worker(leaf)))",
		"stackGrowth(go growRoot(deepLeaf))",
		// area is called through an interface: its exit stays on its RET.
		"shapes((*circle).area (*circle).perimeter)",
		// sq is entered at twice's CALLs; its first return is seen at
		// the second CALL, probed for both.
		"twice(sq sq)",
		// The pool worker was started under request(0): only its first
		// job belongs to it; later jobs start traces of their own.
		"request(go job(leaf))", "request", "request", "job(leaf)", "job(leaf)",
	}
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("call trees:\n got %q\nwant %q", got, want)
	}
}

// checkExits proves where fn's returns were probed: in its callers
// (emulated resume sites) or at its own RETs.
func checkExits(t *testing.T, p *agent.Process, fn string, inCallers bool) {
	t.Helper()
	for _, f := range p.Funcs {
		if f.Func.Name != fn {
			continue
		}
		for _, e := range f.Exits {
			inside := e.Addr >= f.Func.Entry && e.Addr < f.Func.End
			if inCallers && (inside || !e.Emulated) || !inCallers && !inside {
				t.Errorf("%s: exit probed at %#x (%s); want it in its callers: %v", fn, e.Addr, e.Insn, inCallers)
			}
		}
		return
	}
	t.Errorf("%s not traced", fn)
}

// checkHits proves every probe fired exactly once per call: each
// function's entry probe fired once per span, its exit probes once per
// span that returned (unwound spans never reached an exit).
func checkHits(t *testing.T, p *agent.Process, hits map[uint64]uint64, spans []*span.Span) {
	t.Helper()
	calls, returned := map[string]uint64{}, map[string]uint64{}
	for _, s := range spans {
		calls[s.Name]++
		if !s.Unwound {
			returned[s.Name]++
		}
	}
	for _, f := range p.Funcs {
		entry := hits[f.Cookies[0]]
		var exits, shared uint64
		for i, c := range f.Cookies[1:] {
			if f.Exits[i].Shared {
				shared += hits[c] // also runs on paths that did not call f
			} else {
				exits += hits[c]
			}
		}
		name := f.Func.Name
		if shared > 0 && exits < returned[name] && exits+shared >= returned[name] {
			exits = returned[name]
		}
		if entry != calls[name] || exits != returned[name] {
			t.Errorf("%s: entry probe fired %d times, exit probes %d; want %d and %d", name, entry, exits, calls[name], returned[name])
		}
	}
}
