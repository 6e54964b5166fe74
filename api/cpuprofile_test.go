package api_test

import (
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/cpuprofile"
)

// cpuFixture is newFixture's store with CPU samples (period 1 ms) in
// payments' main.charge: main.hash in checkout 3 (the slowest), main.other
// in checkout 1.
func cpuFixture(t *testing.T) (*fixture, *cpuprofile.Store) {
	t.Helper()
	f := newFixture(t)
	cpu := cpuprofile.New(1<<20, time.Millisecond)
	loc := func(fn string) cpuprofile.LocationID {
		return cpu.Location([]cpuprofile.Line{{Function: fn, File: "/src/payments/charge.go", Line: 50}})
	}
	stack := func(fns ...string) []cpuprofile.LocationID { // innermost first
		var out []cpuprofile.LocationID
		for _, fn := range fns {
			out = append(out, loc(fn))
		}
		return out
	}
	add := func(n uint64, at time.Time, fns ...string) {
		cpu.Add(traceID(n), spanID(n, 4), at.UnixNano(), 0, stack(fns...))
	}
	for i := range 5 {
		add(3, f.start[3].Add(ms(2+float64(i))), "main.hash", "main.charge")
	}
	add(1, f.start[1].Add(ms(2)), "main.other", "main.charge")
	add(1, f.start[1].Add(ms(3)), "main.other", "main.charge")
	srv := httptest.NewServer(api.New(api.Options{Store: f.store, Samples: cpu}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f, cpu
}

// funcStacks renders samples as "frame;frame;… samples", outermost
// first, sorted.
func funcStacks(p *profile.Profile, value int) []string {
	var out []string
	for _, s := range p.Sample {
		var names []string
		for i := len(s.Location) - 1; i >= 0; i-- {
			names = append(names, s.Location[i].Line[0].Function.Name)
		}
		if s.Value[value] != 0 {
			out = append(out, strings.Join(names, ";")+" "+time.Duration(s.Value[value]).String())
		}
	}
	slices.Sort(out)
	return out
}

func TestCPUProfileAPI(t *testing.T) {
	f, _ := cpuFixture(t)
	p := fetchProfile(t, f.url+"/api/profile/cpu?service=frontend&slowest=25%25")
	got := funcStacks(p, 1)
	want := []string{"frontend GET /checkout/{id};frontend POST;payments POST /charge;payments main.charge;main.charge;main.hash 5ms"}
	if !slices.Equal(got, want) {
		t.Errorf("slowest 25%%: %q, want %q", got, want)
	}
	if p.Period != int64(time.Millisecond) || p.PeriodType.Type != "cpu" || p.SampleType[0].Type != "samples" {
		t.Errorf("period %d %v, types %v", p.Period, p.PeriodType, p.SampleType)
	}
	code, h, _ := fetch(t, "GET", f.url+"/api/profile/cpu?service=frontend")
	if code != 200 || h.Get("X-Latscope-Requests") != "4" || h.Get("X-Latscope-Samples") != "7" {
		t.Errorf("all frontend requests: %d, requests %s, samples %s", code, h.Get("X-Latscope-Requests"), h.Get("X-Latscope-Samples"))
	}
	for q, want := range map[string]string{
		"baselineSince=1h": "parameter baselineSince: a CPU profile is one window",
		"slowest=200%25":   "parameter slowest",
		"since=soon":       "parameter since",
	} {
		code, _, body := fetch(t, "GET", f.url+"/api/profile/cpu?"+q)
		if code != 400 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %s, want 400 with %q", q, code, body, want)
		}
	}
	// Without samples (sampling off) the route says so.
	off := newFixture(t)
	code, _, body := fetch(t, "GET", off.url+"/api/profile/cpu?service=frontend")
	if code != 404 || !strings.Contains(body, "CPU sampling is off") {
		t.Errorf("sampling off: %d %s", code, body)
	}
}

// The flame graph's [on cpu] leaf under payments main.charge holds the
// samples' code, for the requests the query selects.
func TestFlameCodeFrames(t *testing.T) {
	f, _ := cpuFixture(t)
	p := fetchProfile(t, f.url+"/api/flame?service=frontend&slowest=25%25")
	got := funcStacks(p, 0)
	want := "frontend GET /checkout/{id};frontend POST;payments POST /charge;payments main.charge;[on cpu];main.charge;main.hash 5ms"
	if !slices.Contains(got, want) || strings.Contains(strings.Join(got, "\n"), "main.other") {
		t.Errorf("flame stacks:\n%s\nwant among them %q, and no main.other", strings.Join(got, "\n"), want)
	}
	var total int64
	for _, s := range p.Sample {
		total += s.Value[0]
	}
	if total != int64(ms(203)) {
		t.Errorf("total %v, want the request's 203ms", time.Duration(total))
	}
}
