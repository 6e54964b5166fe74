package flame

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
	"github.com/latscope/latscope/span"
)

var (
	base    = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	gateway = &span.Process{PID: 1, ServiceName: "gateway"}
	catalog = &span.Process{PID: 2, ServiceName: "catalog"}
	pricing = &span.Process{PID: 3, ServiceName: "pricing"}
)

func ms(v float64) time.Time { return base.Add(time.Duration(v * float64(time.Millisecond))) }

// demoTrace is one request through the demo, starting at `at` ms, with
// pricing's redis call taking redis ms: gateway → catalog → (SELECT;
// pricing → redis GET, in parallel with reviews).
func demoTrace(n int, at, redis float64) []*span.Span {
	tid := span.TraceID{byte(n), byte(n >> 8), byte(n >> 16), 1}
	mk := func(id byte, parent byte, name string, p *span.Process, start, end float64) *span.Span {
		s := &span.Span{TraceID: tid, SpanID: span.SpanID{id, byte(n), byte(n >> 8), byte(n >> 16)}, Name: name, Process: p, Start: ms(at + start), End: ms(at + end)}
		if parent != 0 {
			s.ParentID = span.SpanID{parent, byte(n), byte(n >> 8), byte(n >> 16)}
		}
		return s
	}
	end := 12 + redis
	return []*span.Span{
		mk(1, 0, "GET", gateway, 0, end+4),
		mk(2, 1, "GET", gateway, 1, end+3),
		mk(3, 2, "GET /product/{id}", catalog, 2, end+2),
		mk(4, 3, "SELECT", catalog, 3, 5),
		mk(5, 3, "demo.Pricing/GetPrice", catalog, 6, end+1),
		mk(6, 5, "demo.Pricing/GetPrice", pricing, 7, end),
		mk(7, 6, "redis GET", pricing, 8, 8+redis),
		mk(8, 3, "GET", catalog, 6, 9), // reviews call, done before pricing
	}
}

// stacks renders a profile's samples as "frame;frame;… value/count",
// sorted.
func stacks(p *profile.Profile) []string {
	var out []string
	for _, s := range p.Sample {
		var names []string
		for i := len(s.Location) - 1; i >= 0; i-- {
			names = append(names, s.Location[i].Line[0].Function.Name)
		}
		out = append(out, fmt.Sprintf("%s %d/%d", strings.Join(names, ";"), s.Value[0], s.Value[1]))
	}
	sort.Strings(out)
	return out
}

func total(p *profile.Profile, i int) int64 {
	var t int64
	for _, s := range p.Sample {
		t += s.Value[i]
	}
	return t
}

// roundTrip writes p as gzipped protobuf and parses it back with pprof.
func roundTrip(t *testing.T, p *profile.Profile) *profile.Profile {
	t.Helper()
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

func TestBuildStacks(t *testing.T) {
	traces := [][]*span.Span{demoTrace(1, 0, 10), demoTrace(2, 100, 30)}
	res, err := Build(traces, Query{}, nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	p := roundTrip(t, res.Profile)
	if err := p.CheckValid(); err != nil {
		t.Fatal(err)
	}
	ms := int64(time.Millisecond)
	want := []string{
		fmt.Sprintf("gateway GET %d/2", 2*2*ms), // [0,1] and [end+3,end+4], twice
		fmt.Sprintf("gateway GET;gateway GET %d/0", 2*2*ms),
		fmt.Sprintf("gateway GET;gateway GET;catalog GET /product/{id} %d/0", 2*3*ms), // [2,3], [5,6], [end+1,end+2]
		fmt.Sprintf("gateway GET;gateway GET;catalog GET /product/{id};catalog demo.Pricing/GetPrice %d/0", 2*2*ms),
		fmt.Sprintf("gateway GET;gateway GET;catalog GET /product/{id};catalog demo.Pricing/GetPrice;pricing demo.Pricing/GetPrice %d/0", 2*5*ms), // [7,8], [8+redis,end]
		fmt.Sprintf("gateway GET;gateway GET;catalog GET /product/{id};catalog demo.Pricing/GetPrice;pricing demo.Pricing/GetPrice;pricing redis GET %d/0", 40*ms),
		fmt.Sprintf("gateway GET;gateway GET;catalog GET /product/{id};catalog SELECT %d/0", 2*2*ms),
	}
	sort.Strings(want)
	if got := stacks(p); !slices.Equal(got, want) {
		t.Errorf("stacks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The total is exactly the requests' durations: 26 ms + 46 ms.
	if got := total(p, 0); got != 72*ms || res.Total != 72*time.Millisecond || res.Requests != 2 || total(p, 1) != 2 {
		t.Errorf("total %d ns, Result.Total %v, requests %d / %d", got, res.Total, res.Requests, total(p, 1))
	}
	if p.DefaultSampleType != SampleCriticalPath || p.SampleType[0].Unit != "nanoseconds" || p.SampleType[1].Type != SampleRequests || !slices.Equal(p.Comments, []string{"test"}) {
		t.Errorf("sample types %v default %q comments %q", p.SampleType, p.DefaultSampleType, p.Comments)
	}
}

// The cause hook adds leaf frames under a span's own; whatever the causes
// claim, the total stays exact.
func TestSelfSplit(t *testing.T) {
	split := func(p *criticalpath.Path, seg criticalpath.Segment) []Cause {
		if p.Nodes[seg.Node].Span.Name != "redis GET" {
			return nil
		}
		d := seg.Duration()
		// 60% on CPU, 30% GC assist; then a cause claiming too much.
		return []Cause{{Name: OnCPU, Duration: d * 6 / 10}, {Name: "[gc assist]", Duration: d * 3 / 10}, {Name: "[blocked: chan]", Duration: d}}
	}
	res, err := Build([][]*span.Span{demoTrace(1, 0, 10)}, Query{}, split)
	if err != nil {
		t.Fatal(err)
	}
	ms := int64(time.Millisecond)
	leaf := "gateway GET;gateway GET;catalog GET /product/{id};catalog demo.Pricing/GetPrice;pricing demo.Pricing/GetPrice;pricing redis GET"
	got := stacks(res.Profile)
	for _, want := range []string{
		fmt.Sprintf("%s;[on cpu] %d/0", leaf, 6*ms),
		fmt.Sprintf("%s;[gc assist] %d/0", leaf, 3*ms),
		fmt.Sprintf("%s;[blocked: chan] %d/0", leaf, 1*ms),
	} {
		if !slices.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, strings.Join(got, "\n"))
		}
	}
	for _, s := range got {
		if strings.HasPrefix(s, leaf+" ") {
			t.Errorf("the span's own frame kept time the causes covered: %s", s)
		}
	}
	if total(res.Profile, 0) != 26*ms {
		t.Errorf("total %d, want %d", total(res.Profile, 0), 26*ms)
	}
}

// Code stacks under a cause split its time; what they leave stays on the
// cause, what they claim beyond it is cut, and the total stays exact.
func TestSelfSplitCode(t *testing.T) {
	ms := time.Millisecond
	split := func(p *criticalpath.Path, seg criticalpath.Segment) []Cause {
		if p.Nodes[seg.Node].Span.Name != "redis GET" {
			return nil
		}
		// 10 ms segment: 8 ms on CPU, of which code for 3+2 ms, then a
		// stack claiming more than is left.
		return []Cause{{Name: OnCPU, Duration: 8 * ms, Stacks: []CodeStack{
			{Frames: []string{"main.main", "main.a"}, Duration: 3 * ms},
			{Frames: []string{"main.main", "main.b"}, Duration: 2 * ms},
			{Frames: []string{"main.c"}, Duration: 9 * ms},
		}}}
	}
	res, err := Build([][]*span.Span{demoTrace(1, 0, 10)}, Query{}, split)
	if err != nil {
		t.Fatal(err)
	}
	leaf := "gateway GET;gateway GET;catalog GET /product/{id};catalog demo.Pricing/GetPrice;pricing demo.Pricing/GetPrice;pricing redis GET"
	got := stacks(res.Profile)
	for _, want := range []string{
		fmt.Sprintf("%s;[on cpu];main.main;main.a %d/0", leaf, 3*ms),
		fmt.Sprintf("%s;[on cpu];main.main;main.b %d/0", leaf, 2*ms),
		fmt.Sprintf("%s;[on cpu];main.c %d/0", leaf, 3*ms),
		fmt.Sprintf("%s %d/0", leaf, 2*ms),
	} {
		if !slices.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, strings.Join(got, "\n"))
		}
	}
	for _, s := range got {
		if strings.HasPrefix(s, leaf+";[on cpu] ") {
			t.Errorf("[on cpu] kept time its stacks covered: %s", s)
		}
	}
	if total(res.Profile, 0) != int64(26*ms) {
		t.Errorf("total %d, want %d", total(res.Profile, 0), 26*ms)
	}
}

// Each selects what Build aggregates.
func TestEach(t *testing.T) {
	var traces [][]*span.Span
	for i := range 10 {
		traces = append(traces, demoTrace(i, float64(i)*100, float64(i+1)))
	}
	q := Query{Service: "pricing", Slowest: 0.2}
	var got []string
	th, err := Each(traces, q, func(tree *criticalpath.Tree, i int) {
		got = append(got, fmt.Sprintf("%s %v", criticalpath.Frame(tree.Span(i)), tree.Span(i).Duration()))
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pricing demo.Pricing/GetPrice 14ms", "pricing demo.Pricing/GetPrice 15ms"} // 6..15 ms
	if !slices.Equal(got, want) || th["pricing demo.Pricing/GetPrice"] != 14*time.Millisecond {
		t.Errorf("Each = %q (thresholds %v), want %q", got, th, want)
	}
	if _, err := Each(traces, Query{Slowest: 2}, func(*criticalpath.Tree, int) {}); err == nil {
		t.Error("a bad query was not refused")
	}
}

// Filters select exactly the expected requests.
func TestQuery(t *testing.T) {
	var traces [][]*span.Span
	for i := range 100 {
		traces = append(traces, demoTrace(i, float64(i)*100, float64(i+1))) // redis 1..100 ms
	}
	// Trace 7 has an error in redis.
	traces[7][6].Status = span.StatusError
	// Trace 8 calls catalog twice in a row: catalog's second server span
	// under gateway's root is another catalog request; its nested catalog
	// spans are not.
	second := demoTrace(8, 800, 1)
	for _, s := range second {
		s.SpanID[3] = 0xee
		if !s.ParentID.IsZero() {
			s.ParentID[3] = 0xee
		}
		s.TraceID = traces[8][0].TraceID
	}
	second[2].ParentID = traces[8][0].SpanID
	traces[8] = append(traces[8], second[2:]...)

	dur := func(i int) time.Duration { return time.Duration(13+i) * time.Millisecond } // catalog's server span
	cases := []struct {
		name     string
		q        Query
		requests int64
		total    time.Duration
	}{
		{"every trace from its root", Query{}, 100, 0},
		{"catalog requests", Query{Service: "catalog"}, 101, 0},
		{"catalog operation", Query{Service: "catalog", Operation: "GET /product/{id}"}, 101, 0},
		{"operation in any service", Query{Operation: "redis GET"}, 101, 0},
		{"window", Query{Service: "catalog", Start: ms(1000), End: ms(2000)}, 10, 0}, // traces 10..19 start their catalog span at i·100+2
		{"min duration", Query{Service: "catalog", MinDuration: dur(89)}, 11, 0},     // traces 89..99
		{"slowest 5%", Query{Service: "catalog", Slowest: 0.05}, 6, dur(95) + dur(96) + dur(97) + dur(98) + dur(99) + dur(94)},
		{"slowest 1% of redis", Query{Operation: "redis GET", Slowest: 0.01}, 2, 100*time.Millisecond + 99*time.Millisecond},
		{"errors", Query{Service: "catalog", Errors: true}, 1, dur(7)},
		{"nothing", Query{Service: "nope"}, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Build(traces, tc.q, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != tc.requests || total(res.Profile, 1) != tc.requests {
				t.Errorf("%d requests (%d counted in the profile), want %d", res.Requests, total(res.Profile, 1), tc.requests)
			}
			if tc.total != 0 && res.Total != tc.total {
				t.Errorf("total %v, want %v", res.Total, tc.total)
			}
			if got := time.Duration(total(res.Profile, 0)); got != res.Total {
				t.Errorf("profile total %v, Result.Total %v", got, res.Total)
			}
		})
	}
	if _, err := Build(traces, Query{Slowest: 1.5}, nil); err == nil || !strings.Contains(err.Error(), "slowest") {
		t.Errorf("Slowest 1.5: err %v", err)
	}
}

// A diff holds the spike, and the baseline negated under pprof's base
// label; normalized profiles compare per request.
func TestDiffNormalize(t *testing.T) {
	var baseT, spikeT [][]*span.Span
	for i := range 10 {
		baseT = append(baseT, demoTrace(i, float64(i)*100, 10))
	}
	for i := range 20 { // twice the rate, and pricing slower
		spikeT = append(spikeT, demoTrace(100+i, 5000+float64(i)*100, 50))
	}
	b, _ := Build(baseT, Query{}, nil)
	s, _ := Build(spikeT, Query{}, nil)
	d, err := Diff(s.Profile, b.Profile)
	if err != nil {
		t.Fatal(err)
	}
	d = roundTrip(t, d)
	var pos, neg, labelled int64
	for _, smp := range d.Sample {
		if smp.DiffBaseSample() {
			labelled++
			neg += smp.Value[0]
		} else {
			pos += smp.Value[0]
		}
	}
	if pos != int64(s.Total) || neg != -int64(b.Total) || labelled == 0 {
		t.Errorf("diff: spike %d (want %d), base %d (want %d), %d base samples", pos, s.Total, neg, -b.Total, labelled)
	}
	if total(s.Profile, 0) == 0 || len(b.Profile.Sample) == 0 {
		t.Fatal("inputs emptied")
	}
	nb, ns := Normalize(b.Profile, b.Requests), Normalize(s.Profile, s.Requests)
	if got := total(nb, 0); got != int64(26*time.Millisecond) {
		t.Errorf("normalized baseline: %d ns per request, want 26ms", got)
	}
	if got := total(ns, 0); got != int64(66*time.Millisecond) {
		t.Errorf("normalized spike: %d ns per request, want 66ms", got)
	}
	if total(nb, 1) != 1 || total(b.Profile, 1) != 10 {
		t.Errorf("normalized requests %d, original %d", total(nb, 1), total(b.Profile, 1))
	}
	nd, err := Diff(ns, nb)
	if err != nil {
		t.Fatal(err)
	}
	// Per request, only redis changed: +40 ms.
	for _, smp := range nd.Sample {
		leaf := smp.Location[0].Line[0].Function.Name
		if leaf == "pricing redis GET" && !smp.DiffBaseSample() && smp.Value[0] != int64(50*time.Millisecond) {
			t.Errorf("spike redis per request %d", smp.Value[0])
		}
	}
	if got := total(nd, 0); got != int64(40*time.Millisecond) {
		t.Errorf("normalized diff total %d, want +40ms", got)
	}
}
