// Command benchattr measures what latency attribution costs a real
// service: the demo catalog under a fixed-concurrency loopback load on GET
// /work/{id} (~200 µs of CPU and one GET to reviews, the shape the goals
// are set for) and GET /ping/{id} (a trivial handler), in four variants
// run in turn each round (each round starting one variant later), side
// by side:
//
//   - untraced: the plain catalog (reference);
//   - plain tracing: latscope with every library probe, attribution's
//     programs not loaded (agent.Config.NoAttribution);
//   - always-on attribution: the default, stop-the-world and GC-assist
//     hooks;
//   - deep attribution: always-on plus runtime.gopark, runtime.casgstatus
//     and sched_switch (agent.Session.Deep).
//
// Spans go to a discarding exporter (export costs the same in every
// traced variant). Each traced run starts after a warm-up load once the
// learned call sites settled. The table shows medians of catalog's CPU per
// request (/proc/PID/stat: it includes the BPF programs and uprobe traps,
// which run in catalog's context) and the extra over plain tracing. With
// -pin (the default) catalog runs alone on CPU 1, the tracer, the load
// generator and reviews on CPU 0: catalog's CPU is its own. Needs root.
//
//	go run ./scripts/benchattr [-rounds 5] [-seconds 8] [-c 8] [-variants plain,always-on,deep] [-bpfstats]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/latscope/latscope/internal/benchproc"
	"github.com/latscope/latscope/internal/cpupin"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/bpfstats"
	"github.com/latscope/latscope/span"
)

type result struct {
	RPS   float64 `json:"rps"`
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	Reqs  int     `json:"requests"`
	Errs  int     `json:"errors"`
	cpuUS float64 // catalog CPU µs per request
	full  float64 // share of server spans with a full time split
}

type variant struct {
	name   string
	traced bool
	cfg    agent.Config
	deep   bool
}

func main() {
	rounds := flag.Int("rounds", 5, "rounds (each runs every variant once)")
	seconds := flag.Int("seconds", 8, "load per run")
	conc := flag.Int("c", 8, "concurrent requests")
	scenario := flag.String("scenario", "", "run only the scenario whose path starts with this (/work, /ping)")
	bpfStats := flag.Bool("bpfstats", false, "print each BPF program's runs and run time per request of the first deep run of each scenario")
	only := flag.String("variants", "untraced,plain,always-on,deep", "the variants to run, in this order each round")
	pin := flag.Bool("pin", true, "run catalog alone on CPU 1 and everything else (the tracer, the load generator, reviews) on CPU 0")
	flag.Parse()
	// onCPU1 starts catalog: on CPU 1 alone with -pin.
	onCPU1 := func(argv ...string) []string { return argv }
	if *pin {
		if err := cpupin.Self(0); err != nil {
			log.Fatalf("-pin: %v (run with -pin=false)", err)
		}
		onCPU1 = func(argv ...string) []string { return cpupin.Command(1, argv...) }
	}
	bin, err := os.MkdirTemp("", "benchattr")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(bin)
	build := exec.Command("go", "build", "-o", bin+"/", "./catalog", "./reviews", "./loadgen")
	build.Dir = "examples/demo"
	build.Env = append(os.Environ(), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		log.Fatalf("build demo: %v\n%s", err, out)
	}
	reviews, reviewsAddr := benchproc.MustStart([]string{filepath.Join(bin, "reviews")}, nil, "-delay", "0")
	defer stop(reviews)
	// /work and /ping call neither pricing nor inventory: nothing listens there.
	catalog, catalogAddr := benchproc.MustStart(onCPU1(filepath.Join(bin, "catalog")), nil, "-pricing", "127.0.0.1:1", "-reviews", "http://"+reviewsAddr, "-inventory", "http://127.0.0.1:1")
	defer stop(catalog)
	pid := catalog.Process.Pid

	load := func(path string, seconds int) result {
		before := benchproc.MustCPUTicks(pid)
		out, err := exec.Command(filepath.Join(bin, "loadgen"), "-url", "http://"+catalogAddr+path, "-ids", "1-50",
			"-c", strconv.Itoa(*conc), "-n", "100000000", "-duration", fmt.Sprintf("%ds", seconds), "-json").Output()
		if err != nil {
			log.Fatalf("loadgen: %v", err)
		}
		var r result
		if err := json.Unmarshal(out, &r); err != nil {
			log.Fatalf("loadgen output %q: %v", out, err)
		}
		r.cpuUS = float64(benchproc.MustCPUTicks(pid)-before) * 1e6 / 100 / float64(r.Reqs) // USER_HZ = 100
		return r
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	all := map[string]variant{
		"untraced":  {name: "untraced"},
		"plain":     {name: "plain tracing", traced: true, cfg: agent.Config{NoAttribution: true}},
		"always-on": {name: "always-on attribution", traced: true},
		"deep":      {name: "deep attribution", traced: true, deep: true},
	}
	var variants []variant
	plainAt := -1
	for _, name := range strings.Split(*only, ",") {
		v, ok := all[name]
		if !ok {
			log.Fatalf("-variants: no variant %q (untraced, plain, always-on, deep)", name)
		}
		if name == "plain" {
			plainAt = len(variants)
		}
		variants = append(variants, v)
	}
	if plainAt < 0 {
		log.Fatal("-variants must include plain: the other variants are measured against it")
	}
	traced := func(v variant, path string, stats bool) result {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ready := make(chan *agent.Process, 1)
		sink := &counting{}
		v.cfg.SettleReturns = 2 * time.Second
		s := &agent.Session{PIDs: []int{pid}, Tracer: v.cfg, Exporters: []span.Exporter{sink}, Log: quiet,
			Ready: func(p *agent.Process) { ready <- p }}
		if v.deep {
			s.Deep = time.Hour
		}
		done := make(chan error, 1)
		go func() {
			res, err := s.Run(ctx)
			if err == nil && res.Lost() > 0 {
				log.Printf("%s: lost %d (counters: %v)", v.name, res.Lost(), lossCounters(res))
			}
			done <- err
		}()
		var p *agent.Process
		select {
		case p = <-ready:
		case err := <-done:
			log.Fatalf("latscope: %v", err)
		}
		settle(p, func() { load(path, 2) })
		sink.reset()
		var st io.Closer
		if stats {
			var err error
			if st, err = bpfstats.Enable(); err != nil {
				log.Fatalf("enable BPF stats: %v", err)
			}
		}
		r := load(path, *seconds)
		if st != nil {
			bpfstats.Print(os.Stdout, "BPF program (deep run)", r.Reqs)
			st.Close()
		}
		r.full = sink.fullShare()
		cancel()
		if err := <-done; err != nil {
			log.Fatalf("latscope: %v", err)
		}
		return r
	}
	scenarios := []struct{ name, path string }{
		{"GET /work/{id}: ~200 µs of CPU and one GET to reviews (the goals' reference shape)", "/work/%d"},
		{"GET /ping/{id}: a trivial handler", "/ping/%d"},
	}
	fmt.Printf("## Latency attribution: catalog, %d concurrent, %d s per run, %d rounds (medians; the variants run in turn each round), %s\n\n", *conc, *seconds, *rounds, time.Now().Format("2006-01-02"))
	for _, sc := range scenarios {
		if !strings.HasPrefix(sc.path, *scenario) {
			continue
		}
		load(sc.path, *seconds) // warm caches and connections
		runs := make([][]result, len(variants))
		for i := 0; i < *rounds; i++ {
			// Each round starts one variant later, so none always runs
			// first or right after another.
			for k := range variants {
				j := (i + k) % len(variants)
				v := variants[j]
				if v.traced {
					runs[j] = append(runs[j], traced(v, sc.path, *bpfStats && v.deep && i == 0))
				} else {
					runs[j] = append(runs[j], load(sc.path, *seconds))
				}
			}
		}
		fmt.Printf("### %s\n\n", sc.name)
		fmt.Println("| variant | requests/s | p50 ms | p99 ms | catalog CPU µs/request | over plain tracing | server spans with a full split | errors |")
		fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|")
		plain := med(runs[plainAt], func(r result) float64 { return r.cpuUS })
		for j, v := range variants {
			rs := runs[j]
			cpu := med(rs, func(r result) float64 { return r.cpuUS })
			over := "—"
			if v.traced && j != plainAt {
				over = fmt.Sprintf("%+.1f µs (%+.1f%%)", cpu-plain, 100*(cpu-plain)/plain)
			}
			full := "—"
			if v.traced {
				full = fmt.Sprintf("%.0f%%", 100*med(rs, func(r result) float64 { return r.full }))
			}
			errs := 0
			for _, r := range rs {
				errs += r.Errs
			}
			var cpus []string
			for _, r := range rs {
				cpus = append(cpus, fmt.Sprintf("%.0f", r.cpuUS))
			}
			fmt.Printf("| %s | %.0f | %.2f | %.2f | %.1f (%s) | %s | %s | %d |\n", v.name,
				med(rs, func(r result) float64 { return r.RPS }), med(rs, func(r result) float64 { return r.P50ms }),
				med(rs, func(r result) float64 { return r.P99ms }), cpu, strings.Join(cpus, " "), over, full, errs)
		}
		fmt.Println()
	}
}

// counting is an exporter that counts server spans and those with a
// full time split.
type counting struct {
	mu           chan struct{}
	server, full int
}

func (c *counting) lock() {
	if c.mu == nil {
		c.mu = make(chan struct{}, 1)
	}
	c.mu <- struct{}{}
}

func (c *counting) Export(spans []*span.Span) error {
	c.lock()
	defer func() { <-c.mu }()
	for _, s := range spans {
		if s.Kind == span.KindServer {
			c.server++
			if s.Time != nil && s.Time.Full {
				c.full++
			}
		}
	}
	return nil
}

func (c *counting) Close() error { return nil }

func (c *counting) reset() {
	c.lock()
	c.server, c.full = 0, 0
	<-c.mu
}

func (c *counting) fullShare() float64 {
	c.lock()
	defer func() { <-c.mu }()
	if c.server == 0 {
		return 0
	}
	return float64(c.full) / float64(c.server)
}

func lossCounters(r *agent.Result) map[string]uint64 {
	out := map[string]uint64{}
	for _, c := range r.Counters {
		if c.Loss && c.Value > 0 {
			out[c.Name] = c.Value
		}
	}
	return out
}

// settle warms the traced catalog up until every function whose returns
// latscope learns per call site has settled: the runs measure the steady
// state (as scripts/benchdemo does).
func settle(p *agent.Process, warm func()) {
	warm()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		unsettled := 0
		for _, l := range p.Learned() {
			if !l.Settled() {
				unsettled++
			}
		}
		if unsettled == 0 || time.Now().After(deadline) {
			return
		}
	}
}

func med(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}
