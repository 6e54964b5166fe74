package agent

import (
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/agent/config"
	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/analysis/flame"
	"github.com/latscope/latscope/internal/fixture"
)

// cpuProfile GETs the agent's CPU profile for query and parses it.
func cpuProfile(t *testing.T, n *Node, path string) (*profile.Profile, int) {
	t.Helper()
	resp, err := http.Get("http://" + n.Addr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", path, resp.Status, b)
	}
	p, err := profile.Parse(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	reqs, _ := strconv.Atoi(resp.Header.Get("X-Latscope-Requests"))
	return p, reqs
}

// samplesIn sums a profile's samples (value 0) by the spin function on
// their stack.
func samplesIn(p *profile.Profile, value int, funcs ...string) map[string]int64 {
	out := map[string]int64{}
	for _, s := range p.Sample {
		for _, l := range s.Location {
			for _, line := range l.Line {
				for _, f := range funcs {
					if line.Function.Name == f {
						out[f] += s.Value[value]
					}
				}
			}
		}
	}
	return out
}

// The CPU profile test of the issue: a handler spending its CPU in two
// known functions in a 3:1 ratio (cpuwork's /work: spinA 3 units, spinB
// 1) yields a profile filtered to its span with both functions in that
// ratio within ±20%; requests that did not run them (/other: spinC) are
// absent from it, and the other way round. Real BPF and perf events, the
// service stripped (pclntab only), built with the oldest and the newest
// Go; the newest also as a stripped PIE (run-time addresses). The flame
// graph of the same requests has the code under [on cpu].
func TestCPUProfileOfSpans(t *testing.T) {
	fixture.RequireRoot(t)
	oldest, newest := fixture.Toolchains[0], fixture.Toolchains[len(fixture.Toolchains)-1]
	for _, tc := range []struct {
		toolchain string
		mode      fixture.Mode
	}{{oldest, fixture.Stripped}, {newest, fixture.Stripped}, {newest, fixture.StrippedPIE}} {
		t.Run(tc.toolchain+"/"+string(tc.mode), func(t *testing.T) {
			dir := t.TempDir()
			bin := copyBinary(t, fixture.Build(t, "cpuwork", tc.toolchain, tc.mode), dir, "cpuwork")
			n := testNode(t, func(c *config.Config) {
				c.Selectors = []discovery.Selector{{Exe: bin}}
				c.Funcs = []string{"main.handle*"}
				c.Profile.CPUHz = 999
			})
			svc := startService(t, bin, "-unit", "1000000") // ~1 ms of CPU a unit, unloaded
			waitFor(t, 10*time.Second, "the service to be traced", func() bool { return n.traced(svc.pid()) != nil })

			// Both endpoints, interleaved, on two connections, until /work
			// holds 400 samples of spinB (a ratio of counts near 3:1 then
			// has a relative spread of ~6% if samples fell as a Poisson
			// process; ±20% is 3.5 of them), or for two minutes.
			var work, other int
			var mu sync.Mutex
			deadline := time.Now().Add(2 * time.Minute)
			var wp *profile.Profile
			for round := 0; ; round++ {
				var wg sync.WaitGroup
				for c := range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range 40 {
							path := "/work"
							if (i+c)%2 == 1 {
								path = "/other"
							}
							resp, err := http.Get("http://" + svc.addr + path)
							if err != nil {
								t.Error(err)
								return
							}
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							mu.Lock()
							if path == "/work" {
								work++
							} else {
								other++
							}
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				var reqs int
				waitFor(t, 10*time.Second, "every request's spans", func() bool {
					wp, reqs = cpuProfile(t, n, "/api/profile/cpu?operation=main.handleWork")
					return reqs == work
				})
				got := samplesIn(wp, 0, "main.spinA", "main.spinB")
				if got["main.spinB"] >= 400 || time.Now().After(deadline) {
					break
				}
			}
			time.Sleep(100 * time.Millisecond) // the last samples' reader round
			wp, _ = cpuProfile(t, n, "/api/profile/cpu?operation=main.handleWork")
			op, oreqs := cpuProfile(t, n, "/api/profile/cpu?operation=main.handleOther")
			w := samplesIn(wp, 0, "main.spinA", "main.spinB", "main.spinC", "main.handleOther")
			o := samplesIn(op, 0, "main.spinA", "main.spinB", "main.spinC")
			var total int64
			for _, s := range wp.Sample {
				total += s.Value[0]
			}
			ratio := float64(w["main.spinA"]) / float64(w["main.spinB"])
			t.Logf("%d /work requests: %d samples, spinA %d, spinB %d (ratio %.2f); %d /other: spinC %d", work, total, w["main.spinA"], w["main.spinB"], ratio, oreqs, o["main.spinC"])
			if w["main.spinB"] < 100 || ratio < 3*0.8 || ratio > 3*1.2 {
				t.Errorf("spinA:spinB = %d:%d (%.2f), want 3:1 ±20%% over at least 100 samples of spinB", w["main.spinA"], w["main.spinB"], ratio)
			}
			if w["main.spinC"] != 0 || w["main.handleOther"] != 0 {
				t.Errorf("the /work profile holds /other's code: %v", w)
			}
			if o["main.spinC"] == 0 || o["main.spinA"] != 0 || o["main.spinB"] != 0 {
				t.Errorf("the /other profile: %v, want spinC only", o)
			}
			if oreqs != other {
				t.Errorf("/other profile of %d requests, %d made", oreqs, other)
			}
			// Frame-pointer unwinding reaches the goroutine's start (the
			// connection's serve loop) for most samples.
			deep := samplesIn(wp, 0, "net/http.(*conn).serve")["net/http.(*conn).serve"]
			if deep < total*8/10 {
				t.Errorf("%d of %d samples unwind to net/http.(*conn).serve", deep, total)
			}
			// pprof's CPU profile conventions.
			if wp.PeriodType.Type != "cpu" || wp.PeriodType.Unit != "nanoseconds" || wp.Period != int64(time.Second/999) ||
				wp.SampleType[0].Type != "samples" || wp.SampleType[1].Type != "cpu" {
				t.Errorf("period %v %d, sample types %v", wp.PeriodType, wp.Period, wp.SampleType)
			}

			// The flame graph of /work has the spin functions under [on
			// cpu], about 3:1 too, and nothing of /other.
			resp, err := http.Get("http://" + n.Addr() + "/api/flame?" + url.Values{"operation": {"main.handleWork"}}.Encode())
			if err != nil {
				t.Fatal(err)
			}
			fp, err := profile.Parse(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			onCPU := map[string]int64{}
			for _, s := range fp.Sample {
				var names []string
				for _, l := range s.Location {
					names = append(names, l.Line[0].Function.Name)
				}
				path := strings.Join(names, ";")
				if !strings.Contains(path, flame.OnCPU) {
					continue
				}
				for _, f := range []string{"main.spinA", "main.spinB", "main.spinC"} {
					if strings.Contains(path, f+";") || strings.HasPrefix(path, f) {
						onCPU[f] += s.Value[0]
					}
				}
			}
			fr := float64(onCPU["main.spinA"]) / float64(onCPU["main.spinB"])
			t.Logf("flame graph [on cpu]: spinA %v, spinB %v (ratio %.2f)", time.Duration(onCPU["main.spinA"]), time.Duration(onCPU["main.spinB"]), fr)
			if onCPU["main.spinC"] != 0 || fr < 3*0.8 || fr > 3*1.2 {
				t.Errorf("flame graph [on cpu] code: %v (spinA:spinB %.2f)", onCPU, fr)
			}

			var st Status
			apiGet(t, n, "/api/status", &st)
			counters := map[string]uint64{}
			for _, c := range st.Counters {
				counters[c.Name] = c.Value
			}
			for _, name := range []string{"cpu_samples_no_tls", "cpu_samples_read_g_failed", "cpu_samples_lost_ringbuf_full", "cpu_samples_unknown_process", "cpu_samples_bad_records", "cpu_samples_unmatched"} {
				if v, ok := counters[name]; !ok || v != 0 {
					t.Errorf("%s = %d (reported: %v)", name, v, ok)
				}
			}
			if counters["cpu_samples_sent"] == 0 || counters["cpu_samples_stored"] == 0 {
				t.Errorf("counters %v", counters)
			}
			t.Logf("counters: sent %d, not in span %d, no goroutine %d, without stack %d, unsymbolized PCs %d", counters["cpu_samples_sent"],
				counters["cpu_samples_not_in_span"], counters["cpu_samples_no_goroutine"], counters["cpu_samples_without_stack"], counters["cpu_samples_unsymbolized_pcs"])
		})
	}
}
