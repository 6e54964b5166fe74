package criticalpath

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/span"
)

var (
	base    = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	procA   = &span.Process{PID: 10, ServiceName: "catalog"}
	procB   = &span.Process{PID: 20, ServiceName: "pricing"}
	traceID = span.TraceID{1}
)

// ms is a time on the test clock, in (fractional) milliseconds.
func ms(v float64) time.Time { return base.Add(time.Duration(v * float64(time.Millisecond))) }

// sp builds span name (its id from the name) under parent ("" for none).
func sp(name, parent string, start, end float64, p *span.Process) *span.Span {
	s := &span.Span{TraceID: traceID, SpanID: id(name), Name: name, Start: ms(start), End: ms(end), Process: p}
	if parent != "" {
		s.ParentID = id(parent)
	}
	return s
}

func id(name string) span.SpanID {
	var out span.SpanID
	copy(out[:], name)
	return out
}

func remote(s *span.Span) *span.Span { s.RemoteParent = true; return s }

// selfTimes renders a path's exclusive times as "name=ms ..." in node order.
func selfTimes(p *Path) string {
	var parts []string
	for _, n := range p.Nodes {
		parts = append(parts, fmt.Sprintf("%s=%g", n.Span.Name, float64(n.Self)/float64(time.Millisecond)))
	}
	return strings.Join(parts, " ")
}

// segments renders a path's segments as "name[start,end] ..." in ms.
func segments(p *Path) string {
	var parts []string
	for _, s := range p.Segments {
		parts = append(parts, fmt.Sprintf("%s[%g,%g]", p.Nodes[s.Node].Span.Name,
			float64(s.Start.Sub(base))/float64(time.Millisecond), float64(s.End.Sub(base))/float64(time.Millisecond)))
	}
	return strings.Join(parts, " ")
}

// Hand-computed critical paths.
func TestCompute(t *testing.T) {
	cases := []struct {
		name      string
		spans     []*span.Span
		self, seg string
	}{
		{
			name:  "single span",
			spans: []*span.Span{sp("R", "", 0, 50, procA)},
			self:  "R=50", seg: "R[0,50]",
		},
		{
			name:  "serial chain",
			spans: []*span.Span{sp("R", "", 0, 100, procA), sp("A", "R", 10, 90, procA), sp("B", "A", 20, 80, procA)},
			self:  "R=20 A=20 B=60", seg: "R[0,10] A[10,20] B[20,80] A[80,90] R[90,100]",
		},
		{
			// Only the child that gates the parent counts: B ends last and
			// started with A; A and C finished while B still ran.
			name: "parallel fan-out",
			spans: []*span.Span{sp("R", "", 0, 100, procA), sp("A", "R", 10, 50, procA),
				sp("B", "R", 10, 90, procA), sp("C", "R", 20, 60, procA)},
			self: "R=20 B=80", seg: "R[0,10] B[10,90] R[90,100]",
		},
		{
			// B gates the end; A was still running when B started, so it
			// did not gate B's start: the time before B is R's own.
			name:  "overlapping siblings",
			spans: []*span.Span{sp("R", "", 0, 100, procA), sp("A", "R", 10, 60, procA), sp("B", "R", 50, 90, procA)},
			self:  "R=60 B=40", seg: "R[0,50] B[50,90] R[90,100]",
		},
		{
			// C gates the end, B overlaps C's start and is skipped, A ended
			// before C started and is followed.
			name: "overlapping then earlier sibling",
			spans: []*span.Span{sp("R", "", 0, 100, procA), sp("A", "R", 5, 40, procA),
				sp("B", "R", 30, 70, procA), sp("C", "R", 60, 95, procA)},
			self: "R=30 C=35 A=35", seg: "R[0,5] A[5,40] R[40,60] C[60,95] R[95,100]",
		},
		{
			// A ends exactly when B starts: A is B's predecessor (jaeger
			// #9148 skipped it with a strict comparison).
			name:  "back-to-back siblings",
			spans: []*span.Span{sp("R", "", 0, 100, procA), sp("A", "R", 10, 50, procA), sp("B", "R", 50, 90, procA)},
			self:  "R=20 B=40 A=40", seg: "R[0,10] A[10,50] B[50,90] R[90,100]",
		},
		{
			// C outlives P: it counts up to P's end. D starts after P ended:
			// async, off the path. X starts after the root ended.
			name: "async child outliving its parent",
			spans: []*span.Span{sp("R", "", 0, 100, procA), sp("P", "R", 10, 60, procA),
				sp("C", "P", 50, 120, procA), sp("D", "P", 70, 80, procA), sp("X", "R", 150, 200, procA)},
			self: "R=50 P=40 C=10", seg: "R[0,10] P[10,50] C[50,60] R[60,100]",
		},
		{
			// The server span in another process starts 5 ms before its
			// client span: moved, with its subtree, to start with it.
			name: "skewed child starting before its parent",
			spans: []*span.Span{sp("R", "", 0, 100, procA), sp("K", "R", 10, 90, procA),
				remote(sp("S", "K", 5, 85, procB)), sp("Q", "S", 20, 60, procB)},
			self: "R=20 K=0 S=40 Q=40", seg: "R[0,10] S[10,25] Q[25,65] S[65,90] R[90,100]",
		},
		{
			// Ends 0.5 ms after its client span, within the tolerance
			// (1 ms): moved back to end with it.
			name: "skewed child ending after its parent",
			spans: []*span.Span{sp("R", "", 0, 100, procA), sp("K", "R", 10, 90, procA),
				remote(sp("S", "K", 15, 90.5, procB)), sp("Q", "S", 20, 60, procB)},
			self: "R=20 K=4.5 S=35.5 Q=40", seg: "R[0,10] K[10,14.5] S[14.5,19.5] Q[19.5,59.5] S[59.5,90] R[90,100]",
		},
		{
			// 5 ms past its parent's end is beyond the tolerance: clipped.
			name: "child in another process outliving its parent",
			spans: []*span.Span{sp("R", "", 0, 100, procA), sp("K", "R", 10, 90, procA),
				remote(sp("S", "K", 15, 95, procB))},
			self: "R=20 K=5 S=75", seg: "R[0,10] K[10,15] S[15,90] R[90,100]",
		},
		{
			// M is missing: G's parent is not in the trace, so G is another
			// local root and the gap stays R's own time.
			name:  "missing middle span",
			spans: []*span.Span{sp("R", "", 0, 100, procA), sp("G", "M", 20, 80, procA)},
			self:  "R=100", seg: "R[0,100]",
		},
		{
			// Two children ending together: the longer one is followed.
			name:  "equal ends",
			spans: []*span.Span{sp("R", "", 0, 100, procA), sp("A", "R", 30, 80, procA), sp("B", "R", 10, 80, procA)},
			self:  "R=30 B=70", seg: "R[0,10] B[10,80] R[80,100]",
		},
		{
			name:  "zero-length root",
			spans: []*span.Span{sp("R", "", 10, 10, procA), sp("A", "R", 10, 10, procA)},
			self:  "R=0", seg: "",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Any order: reverse what is listed.
			spans := slices.Clone(tc.spans)
			slices.Reverse(spans)
			p := Compute(spans)
			if got := selfTimes(p); got != tc.self {
				t.Errorf("self times\n got %s\nwant %s", got, tc.self)
			}
			if got := segments(p); got != tc.seg {
				t.Errorf("segments\n got %s\nwant %s", got, tc.seg)
			}
			checkInvariants(t, p)
			if p.Root() != tc.spans[0] {
				t.Errorf("root %s, want %s", p.Root().Name, tc.spans[0].Name)
			}
		})
	}
}

// checkInvariants: segments back to back over the root's interval, none
// negative, self times summing to the root's duration exactly.
func checkInvariants(t *testing.T, p *Path) {
	t.Helper()
	root := p.Root()
	want := max(root.End.Sub(root.Start), 0)
	var sum, segSum time.Duration
	for _, n := range p.Nodes {
		if n.Self < 0 {
			t.Fatalf("%s: negative self time %v", n.Span.Name, n.Self)
		}
		sum += n.Self
	}
	for i, s := range p.Segments {
		if s.Duration() <= 0 {
			t.Fatalf("segment %d of %s: duration %v", i, p.Nodes[s.Node].Span.Name, s.Duration())
		}
		if i > 0 && !s.Start.Equal(p.Segments[i-1].End) {
			t.Fatalf("segment %d starts at %v, the previous ended at %v", i, s.Start, p.Segments[i-1].End)
		}
		segSum += s.Duration()
	}
	if len(p.Segments) > 0 && (!p.Segments[0].Start.Equal(root.Start) || !p.Segments[len(p.Segments)-1].End.Equal(root.Start.Add(want))) {
		t.Fatalf("segments span %v..%v, root %v..%v", p.Segments[0].Start, p.Segments[len(p.Segments)-1].End, root.Start, root.End)
	}
	if sum != want || segSum != want || p.Total() != want {
		t.Fatalf("self times sum to %v, segments to %v, Total %v; root duration %v", sum, segSum, p.Total(), want)
	}
	for i, n := range p.Nodes {
		if i > 0 && (n.Parent < 0 || n.Parent >= i) {
			t.Fatalf("node %d (%s): parent index %d", i, n.Span.Name, n.Parent)
		}
	}
}

// Several local roots: Compute takes the earliest; Tree.Path walks any.
func TestRoots(t *testing.T) {
	spans := []*span.Span{
		remote(sp("C", "elsewhere", 30, 60, procB)), sp("Q", "C", 35, 50, procB),
		sp("R", "", 0, 100, procA), sp("A", "R", 10, 20, procA),
	}
	var tr Tree
	tr.Reset(spans)
	if got := tr.Roots(); !slices.Equal(got, []int{0, 2}) {
		t.Fatalf("roots %v, want [0 2]", got)
	}
	if r := tr.Root(); r != 2 {
		t.Fatalf("Root %d, want 2 (R, the earliest)", r)
	}
	if got := selfTimes(Compute(spans)); got != "R=90 A=10" {
		t.Errorf("earliest root: %s", got)
	}
	p := tr.Path(0, Options{})
	checkInvariants(t, p)
	if got := selfTimes(p); got != "C=15 Q=15" {
		t.Errorf("other root: %s", got)
	}
	if tr.Parent(1) != 0 || !slices.Equal(tr.Children(2), []int32{3}) {
		t.Errorf("parent of Q %d, children of R %v", tr.Parent(1), tr.Children(2))
	}
}

// A large trace uses the id map: same answer as a scan.
func TestLargeTrace(t *testing.T) {
	spans := []*span.Span{sp("root", "", 0, 1000, procA)}
	for i := range 100 {
		spans = append(spans, sp(fmt.Sprintf("c%02d", i), "root", float64(i*10), float64(i*10+5), procA))
	}
	p := Compute(spans)
	checkInvariants(t, p)
	if len(p.Nodes) != 101 || p.Nodes[0].Self != 500*time.Millisecond {
		t.Errorf("%d nodes, root self %v: want 101, 500ms", len(p.Nodes), p.Nodes[0].Self)
	}
}

// Annotate copies the spans on the path; the originals stay as they were.
func TestAnnotate(t *testing.T) {
	spans := []*span.Span{sp("R", "", 0, 100, procA), sp("A", "R", 10, 90, procA), sp("X", "R", 20, 30, procA)}
	spans[0].Attrs = make([]span.Attr, 1, 4) // spare capacity must not be written
	spans[0].Attrs[0] = span.Attr{Key: "k", Value: "v"}
	p := Compute(spans)
	out := Annotate(spans, p)
	if out[2] != spans[2] {
		t.Error("a span off the path was copied")
	}
	if out[0] == spans[0] || out[1] == spans[1] {
		t.Fatal("spans on the path were not copied")
	}
	if len(spans[0].Attrs) != 1 || spans[0].Attrs[:2][1].Key != "" || len(spans[1].Attrs) != 0 {
		t.Fatalf("stored spans modified: %v / %v", spans[0].Attrs[:2], spans[1].Attrs)
	}
	want := []span.Attr{{Key: "k", Value: "v"}, {Key: KeySelf, Value: int64(20 * time.Millisecond)}, {Key: KeyTotal, Value: int64(100 * time.Millisecond)}}
	if !slices.Equal(out[0].Attrs, want) {
		t.Errorf("root attrs %v, want %v", out[0].Attrs, want)
	}
	if !slices.Equal(out[1].Attrs, []span.Attr{{Key: KeySelf, Value: int64(80 * time.Millisecond)}}) {
		t.Errorf("child attrs %v", out[1].Attrs)
	}
	if got := p.Stack(1); len(got) != 2 || got[0] != spans[0] || got[1] != spans[1] {
		t.Errorf("stack %v", got)
	}
	if d, ok := p.Self(spans[1].SpanID); !ok || d != 80*time.Millisecond {
		t.Errorf("Self(A) = %v, %v", d, ok)
	}
}

// randomTrace builds a random tree of n spans: children anywhere around
// their parents (inside, overlapping, outside, negative durations), some in
// another process, some remote, some with missing parents.
func randomTrace(r *rand.Rand, n int) []*span.Span {
	procs := []*span.Process{procA, procB, {PID: 30, ServiceName: "reviews"}, nil}
	spans := make([]*span.Span, 0, n)
	for i := range n {
		s := &span.Span{TraceID: traceID, Name: fmt.Sprint("s", i), Process: procs[r.IntN(len(procs))]}
		s.SpanID[0], s.SpanID[1] = byte(i+1), byte((i+1)>>8)
		start := r.Int64N(1_000_000)
		if i > 0 {
			p := spans[r.IntN(len(spans))]
			start = p.Start.UnixNano() - base.UnixNano() + r.Int64N(400_000) - 100_000
			switch r.IntN(10) {
			case 0:
				s.ParentID = span.SpanID{0xff, byte(i)} // missing parent
			default:
				s.ParentID = p.SpanID
				s.RemoteParent = r.IntN(4) == 0
			}
		}
		s.Start = base.Add(time.Duration(start))
		s.End = s.Start.Add(time.Duration(r.Int64N(500_000) - 20_000))
		spans = append(spans, s)
	}
	r.Shuffle(len(spans), func(i, j int) { spans[i], spans[j] = spans[j], spans[i] })
	return spans
}

// Property: on random trees, from every local root, the exclusive times
// sum to the root's duration, and no segment is negative.
func TestRandomTrees(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var tr Tree
	var p Path
	for i := range 2000 {
		spans := randomTrace(r, 1+r.IntN(60))
		tr.Reset(spans)
		for _, root := range tr.Roots() {
			tol := []time.Duration{0, -1, 50 * time.Microsecond}[i%3]
			tr.PathInto(&p, root, Options{SkewTolerance: tol})
			checkInvariants(t, &p)
		}
	}
}

func FuzzPath(f *testing.F) {
	f.Add(uint64(1), uint8(10))
	f.Add(uint64(42), uint8(200))
	f.Fuzz(func(t *testing.T, seed uint64, n uint8) {
		spans := randomTrace(rand.New(rand.NewPCG(seed, seed>>1)), 1+int(n))
		var tr Tree
		tr.Reset(spans)
		for _, root := range tr.Roots() {
			checkInvariants(t, tr.Path(root, Options{}))
		}
	})
}

// Explain names the largest parts first, through a client span to the
// server span it called.
func TestExplain(t *testing.T) {
	spans := []*span.Span{
		sp("GET /product/{id}", "", 0, 100, procA),
		sp("SELECT", "GET /product/{id}", 2, 10, procA),
		sp("demo.Pricing/GetPrice", "GET /product/{id}", 10, 90, procA),
		remote(sp("server", "demo.Pricing/GetPrice", 11, 89, procB)),
		sp("redis GET", "server", 20, 70, procB),
	}
	spans[3].Name = "demo.Pricing/GetPrice"
	e := Explain(Compute(spans))
	want := []string{
		"78% (78ms) waiting on pricing demo.Pricing/GetPrice; inside it 64% pricing redis GET",
		"22% (22ms) catalog own work: catalog GET /product/{id} 12%, catalog SELECT 8%, catalog demo.Pricing/GetPrice 2%",
	}
	if !slices.Equal(e.Lines, want) {
		t.Errorf("lines\n got %q\nwant %q", e.Lines, want)
	}
	if e.Total != 100*time.Millisecond || e.Root != "catalog GET /product/{id}" {
		t.Errorf("total %v root %q", e.Total, e.Root)
	}
	c := e.Contributors[0]
	if c.Frame != "pricing redis GET" || c.Self != 50*time.Millisecond || c.Share != 0.5 || len(c.Stack) != 4 {
		t.Errorf("largest contributor %+v", c)
	}
	if !strings.HasPrefix(e.String(), "100ms critical path of catalog GET /product/{id}\n  78% (78ms)") {
		t.Errorf("text:\n%s", e)
	}
}

// Calls made within a call to another service are indented under it.
func TestExplainNested(t *testing.T) {
	gw := &span.Process{PID: 5, ServiceName: "gateway"}
	spans := []*span.Span{
		sp("gw", "", 0, 100, gw),
		sp("gwc", "gw", 5, 95, gw),
		remote(sp("cat", "gwc", 6, 94, procA)),
		sp("call", "cat", 10, 90, procA),
		remote(sp("price", "call", 11, 89, procB)),
	}
	e := Explain(Compute(spans))
	want := []string{
		"88% (88ms) waiting on catalog cat; inside it 91% catalog call",
		"  78% (78ms) waiting on pricing price",
		"  10% (10ms) catalog own work: catalog cat 8%, catalog call 2%",
		"12% (12ms) gateway own work: gateway gw 10%, gateway gwc 2%",
	}
	if !slices.Equal(e.Lines, want) {
		t.Errorf("lines\n got %q\nwant %q", e.Lines, want)
	}
}
