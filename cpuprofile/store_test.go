package cpuprofile

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/analysis/criticalpath"
	"github.com/latscope/latscope/analysis/flame"
	"github.com/latscope/latscope/span"
)

var (
	base    = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	catalog = &span.Process{PID: 2, ServiceName: "catalog"}
	pricing = &span.Process{PID: 3, ServiceName: "pricing"}
	period  = 10 * time.Millisecond
)

func at(ms float64) int64 { return base.Add(time.Duration(ms * float64(time.Millisecond))).UnixNano() }

// request is trace n: catalog GET /product/{id} [0, 100 ms] at offset
// off ms, calling catalog main.render [10, 40] and pricing GetPrice
// [50, 90] (another process).
func request(n int, off float64, op string) []*span.Span {
	tid := span.TraceID{byte(n), 1}
	mk := func(id, parent byte, name string, p *span.Process, start, end float64) *span.Span {
		s := &span.Span{TraceID: tid, SpanID: span.SpanID{id, byte(n)}, Name: name, Process: p,
			Start: time.Unix(0, at(off+start)), End: time.Unix(0, at(off+end))}
		if parent != 0 {
			s.ParentID = span.SpanID{parent, byte(n)}
		}
		return s
	}
	return []*span.Span{
		mk(1, 0, op, catalog, 0, 100),
		mk(2, 1, "main.render", catalog, 10, 40),
		mk(3, 1, "demo.Pricing/GetPrice", pricing, 50, 90),
	}
}

// code interns a stack given outermost first, each frame one function.
func code(s *Store, funcs ...string) []LocationID {
	var out []LocationID
	for i := len(funcs) - 1; i >= 0; i-- {
		out = append(out, s.Location([]Line{{Function: funcs[i], File: "main.go", Line: 10 + i}}))
	}
	return out
}

// stacks renders a CPU profile's samples as "frame;frame;… samples/ns",
// outermost first, sorted.
func stacks(p *profile.Profile) []string {
	var out []string
	for _, s := range p.Sample {
		var names []string
		for i := len(s.Location) - 1; i >= 0; i-- {
			l := s.Location[i].Line
			for j := len(l) - 1; j >= 0; j-- {
				names = append(names, l[j].Function.Name)
			}
		}
		lbl := ""
		if v := s.Label[SpawnedLabel]; len(v) > 0 {
			lbl = " " + SpawnedLabel + "=" + v[0]
		}
		out = append(out, fmt.Sprintf("%s %d/%d%s", strings.Join(names, ";"), s.Value[0], s.Value[1], lbl))
	}
	sort.Strings(out)
	return out
}

func TestLocationInterning(t *testing.T) {
	s := New(1<<20, period)
	a := s.Location([]Line{{Function: "main.a", File: "a.go", Line: 3}})
	b := s.Location([]Line{{Function: "main.a", File: "a.go", Line: 4}})
	c := s.Location([]Line{{Function: "main.a", File: "a.go", Line: 3}})
	inl := s.Location([]Line{{Function: "main.small", File: "a.go", Line: 9}, {Function: "main.a", File: "a.go", Line: 3}})
	if a != c || a == b || inl == a {
		t.Errorf("ids %d %d %d %d", a, b, c, inl)
	}
	// A tiny budget: the table takes a quarter; then "[unknown]".
	small := New(1000, period)
	var last LocationID
	for i := range 10 {
		last = small.Location([]Line{{Function: fmt.Sprint("f", i)}})
	}
	if st := small.Stats(); st.LocationsFull == 0 || small.locs[last].lines[0].Function != "[unknown]" {
		t.Errorf("stats %+v, last location %+v", st, small.locs[last])
	}
}

// The profile of the selected requests holds their spans' samples, code
// under the span path; another operation's requests are absent.
func TestProfile(t *testing.T) {
	s := New(1<<20, period)
	slow, fast := request(1, 0, "GET /product/{id}"), request(2, 1000, "GET /ping")
	traces := [][]*span.Span{slow, fast}
	for i := range 3 {
		s.Add(slow[0].TraceID, slow[0].SpanID, at(float64(1+i)), 0, code(s, "main.handle", "main.parse"))
	}
	s.Add(slow[1].TraceID, slow[1].SpanID, at(12), 0, code(s, "main.handle", "main.render", "main.spinA"))
	s.Add(slow[1].TraceID, slow[1].SpanID, at(13), Kernel, code(s, "main.handle", "main.render", "syscall.write"))
	s.Add(slow[1].TraceID, slow[1].SpanID, at(14), Spawned, code(s, "main.helper"))
	s.Add(slow[2].TraceID, slow[2].SpanID, at(60), 0, code(s, "main.price"))
	s.Add(fast[0].TraceID, fast[0].SpanID, at(1001), 0, code(s, "main.ping"))

	res, err := s.Profile(traces, flame.Query{Service: "catalog", Operation: "GET /product/{id}"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	p := roundTrip(t, res.Profile)
	ms := int64(period)
	got := stacks(p)
	want := []string{
		fmt.Sprintf("catalog GET /product/{id};catalog main.render;main.handle;main.render;main.spinA 1/%d", ms),
		fmt.Sprintf("catalog GET /product/{id};catalog main.render;main.handle;main.render;syscall.write;[kernel] 1/%d", ms),
		fmt.Sprintf("catalog GET /product/{id};catalog main.render;main.helper 1/%d goroutine=spawned", ms),
		fmt.Sprintf("catalog GET /product/{id};main.handle;main.parse 3/%d", 3*ms),
		fmt.Sprintf("catalog GET /product/{id};pricing demo.Pricing/GetPrice;main.price 1/%d", ms),
	}
	if !slices.Equal(got, want) {
		t.Errorf("stacks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if res.Requests != 1 || res.Samples != 7 || p.Period != ms || p.DefaultSampleType != SampleCPU ||
		p.SampleType[0].Type != "samples" || p.SampleType[0].Unit != "count" || p.SampleType[1].Type != "cpu" || p.SampleType[1].Unit != "nanoseconds" {
		t.Errorf("requests %d samples %d period %d types %v default %q", res.Requests, res.Samples, p.Period, p.SampleType, p.DefaultSampleType)
	}
	// Lines and files reach pprof.
	if l := p.Sample[0].Location[0].Line[0]; l.Function.Filename != "main.go" && l.Function.Name != KernelFrame {
		t.Errorf("leaf line %+v", l)
	}

	// The slowest 50% of each operation over both: only the slow one's.
	res, err = s.Profile(traces, flame.Query{Service: "catalog", Slowest: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 2 || res.Samples != 8 {
		t.Errorf("per-operation slowest: %d requests, %d samples", res.Requests, res.Samples)
	}
	if _, err := s.Profile(traces, flame.Query{Slowest: 3}); err == nil {
		t.Error("a bad query was accepted")
	}
}

// roundTrip writes p as gzipped protobuf and parses it back with pprof.
func roundTrip(t *testing.T, p *profile.Profile) *profile.Profile {
	t.Helper()
	if err := p.CheckValid(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	q, err := profile.Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// The budget evicts the oldest spans first; samples whose span never
// arrived are counted as unmatched, not those of spans exported before
// or after their samples came.
func TestEviction(t *testing.T) {
	s := New(20000, period)
	loc := code(s, "main.a")
	spanOf := func(i int) *span.Span {
		return &span.Span{SpanID: span.SpanID{byte(i), byte(i >> 8), 0, 0, 0, 0, byte(i), byte(i >> 8)}}
	}
	// Span 0 arrives before its samples, span 1 after; span 2 never.
	s.Export([]*span.Span{spanOf(0)})
	for i := range 3 {
		for range 10 {
			s.Add(span.TraceID{}, spanOf(i).SpanID, 1, 0, loc)
		}
	}
	s.Export([]*span.Span{spanOf(1)})
	for i := 3; i < 200; i++ { // push the first three out
		s.Add(span.TraceID{}, spanOf(i).SpanID, 1, 0, loc)
		s.Export([]*span.Span{spanOf(i)})
	}
	st := s.Stats()
	if st.Bytes > 20000 || st.Evicted < 30 || st.Unmatched != 10 || st.Held != int(st.Samples-st.Evicted) || st.Stacks != 1 {
		t.Errorf("stats %+v: want within 20000 bytes, the first 30 evicted, 10 of them unmatched, one stack", st)
	}
	n := 0
	s.Samples(spanOf(0).SpanID, func(int64, Flags, [][]Line) { n++ })
	s.Samples(spanOf(199).SpanID, func(_ int64, _ Flags, st [][]Line) {
		if st[0][0].Function == "main.a" {
			n += 100
		}
	})
	if n != 100 {
		t.Errorf("the oldest span kept, or the newest lost (%d)", n)
	}
	// Stacks nobody holds are freed and their ids reused.
	s2 := New(2000, period)
	for i := range 100 {
		s2.Add(span.TraceID{}, spanOf(i).SpanID, 1, 0, code(s2, fmt.Sprint("f", i)))
	}
	if st := s2.Stats(); st.Stacks > st.Spans || len(s2.stacks) > st.Spans+len(s2.free) {
		t.Errorf("stacks %d for %d spans (table %d, free %d)", st.Stacks, st.Spans, len(s2.stacks), len(s2.free))
	}
}

// Split puts a segment's own-goroutine samples under [on cpu] as code,
// by time; with measured on-CPU time from another split, the stacks
// share it.
func TestSplit(t *testing.T) {
	const period = time.Millisecond
	s := New(1<<20, period)
	tr := request(1, 0, "GET /product/{id}")
	root := tr[0]
	for i := range 3 { // [0, 10): before render; 3 samples of A
		s.Add(root.TraceID, root.SpanID, at(float64(1+2*i)), 0, code(s, "main.handle", "main.spinA"))
	}
	s.Add(root.TraceID, root.SpanID, at(9), 0, code(s, "main.handle", "main.spinB"))
	s.Add(root.TraceID, root.SpanID, at(8), Spawned, code(s, "main.helper")) // not the span's own
	s.Add(root.TraceID, root.SpanID, at(45), 0, code(s, "main.handle", "main.spinB"))
	ms := time.Millisecond
	leaf := "catalog GET /product/{id}"

	res, err := flame.Build([][]*span.Span{tr}, flame.Query{}, s.Split(nil))
	if err != nil {
		t.Fatal(err)
	}
	got := flameStacks(res.Profile)
	for _, want := range []string{
		fmt.Sprintf("%s;[on cpu];main.handle;main.spinA %d", leaf, 3*period),
		fmt.Sprintf("%s;[on cpu];main.handle;main.spinB %d", leaf, 2*period), // one at 9 ms, one at 45 ms
	} {
		if !slices.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, strings.Join(got, "\n"))
		}
	}
	if strings.Contains(strings.Join(got, "\n"), "main.helper") {
		t.Errorf("a spawned goroutine's sample counted as the span's own time:\n%s", strings.Join(got, "\n"))
	}
	var sum int64
	for _, smp := range res.Profile.Sample {
		sum += smp.Value[0]
	}
	if sum != int64(100*ms) {
		t.Errorf("total %d, want the request's 100 ms", sum)
	}

	// Another split measured 8 ms on CPU in the first segment [0, 10),
	// which holds 4 samples (3 A, 1 B): A gets 6 ms, B 2 ms.
	measured := func(p *criticalpath.Path, seg criticalpath.Segment) []flame.Cause {
		if seg.Start.UnixNano() == at(0) {
			return []flame.Cause{{Name: flame.OnCPU, Duration: 8 * ms}}
		}
		return nil
	}
	res, err = flame.Build([][]*span.Span{tr}, flame.Query{}, s.Split(measured))
	if err != nil {
		t.Fatal(err)
	}
	got = flameStacks(res.Profile)
	for _, want := range []string{
		fmt.Sprintf("%s;[on cpu];main.handle;main.spinA %d", leaf, 6*ms),
		fmt.Sprintf("%s;[on cpu];main.handle;main.spinB %d", leaf, 2*ms+1*ms), // 2 of the measured 8, 1 sampled at 45 ms
	} {
		if !slices.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, strings.Join(got, "\n"))
		}
	}
}

// Samples standing for more than their segment share it in proportion:
// capping them in order would always cut the rarest stack.
func TestSplitCapped(t *testing.T) {
	const period = 10 * time.Millisecond
	s := New(1<<20, period)
	tr := request(1, 0, "GET /product/{id}")
	root := tr[0]
	// [0, 10 ms): 3 samples of A, 1 of B: 40 ms of samples in 10 ms.
	for _, at_ := range []float64{1, 3, 5} {
		s.Add(root.TraceID, root.SpanID, at(at_), 0, code(s, "main.spinA"))
	}
	s.Add(root.TraceID, root.SpanID, at(7), 0, code(s, "main.spinB"))
	res, err := flame.Build([][]*span.Span{tr}, flame.Query{}, s.Split(nil))
	if err != nil {
		t.Fatal(err)
	}
	got := flameStacks(res.Profile)
	ms := time.Millisecond
	for _, want := range []string{
		fmt.Sprintf("catalog GET /product/{id};[on cpu];main.spinA %d", 7500*time.Microsecond),
		fmt.Sprintf("catalog GET /product/{id};[on cpu];main.spinB %d", 2500*time.Microsecond),
	} {
		if !slices.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, strings.Join(got, "\n"))
		}
	}
	var sum int64
	for _, smp := range res.Profile.Sample {
		sum += smp.Value[0]
	}
	if sum != int64(100*ms) {
		t.Errorf("total %d, want the request's 100 ms", sum)
	}
}

func flameStacks(p *profile.Profile) []string {
	var out []string
	for _, s := range p.Sample {
		var names []string
		for i := len(s.Location) - 1; i >= 0; i-- {
			names = append(names, s.Location[i].Line[0].Function.Name)
		}
		if s.Value[0] != 0 {
			out = append(out, fmt.Sprintf("%s %d", strings.Join(names, ";"), s.Value[0]))
		}
	}
	sort.Strings(out)
	return out
}
