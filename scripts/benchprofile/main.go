// Command benchprofile measures what CPU sampling (CPU profiles of
// spans, the agent's profile.cpuHz) costs a traced service: the demo
// catalog under a fixed-concurrency loopback load on GET /work/{id}
// (~200 µs of CPU and one GET to reviews: the overhead goal's shape) and
// GET /ping/{id} (a trivial handler), traced by `latscope agent` (a
// process of its own, as deployed) with sampling off, at 99 Hz and at
// 999 Hz. Within each round the variants run in turn, each with a fresh
// agent, a warm-up load while its learned return sites settle, then the
// measured load; the tables show medians over rounds (min–max).
//
// Per request: requests/s; catalog's CPU (utime+stime from
// /proc/PID/stat, 10 ms ticks; the sampling program runs in the context
// of the thread it interrupts, so its share in catalog lands there); the
// agent's CPU (reading, symbolizing and keeping samples); the sampling
// program's run time on all CPUs (the kernel's BPF statistics, on for
// every variant); and samples taken. The first is what the goal is
// stated in; on a shared VM its spread between identical runs is larger
// than the cost sought, which the last two measure directly. With -pin
// (the default) catalog runs alone on CPU 1, the agent, the load
// generator and reviews on CPU 0.
//
// Needs root. Every process it starts is stopped when it ends.
//
//	go run ./scripts/benchprofile [-rounds 5] [-seconds 8] [-c 8] [-hz 0,99,999] [-rate 2000] [-scenario /work]
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/latscope/latscope/internal/benchproc"
	"github.com/latscope/latscope/internal/cpupin"
)

// procs are the processes started, stopped on exit and on Ctrl-C.
var procs []*exec.Cmd

func main() {
	rounds := flag.Int("rounds", 5, "rounds; each runs every variant once per scenario")
	seconds := flag.Int("seconds", 8, "seconds of measured load per run")
	warm := flag.Duration("warmup", 4*time.Second, "load before measuring, while the agent's learned return sites settle (it runs with --settle-returns 2s)")
	conc := flag.Int("c", 8, "concurrent requests")
	hzList := flag.String("hz", "0,99,999", "sampling rates compared (0: off)")
	only := flag.String("scenario", "", "run only the scenario whose path starts with this (/work, /ping)")
	flag.Float64Var(&loadRate, "rate", 0, "requests/s the load generator sends at most (0: as fast as -c allows). Below what every variant sustains, catalog does the same work in the same time in each, and idles alike: its CPU per request is then comparable")
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
	var hzs []int
	for _, s := range strings.Split(*hzList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 {
			log.Fatalf("-hz %q: not a list of rates", *hzList)
		}
		hzs = append(hzs, n)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; stopAll(); os.Exit(1) }()
	defer stopAll()

	dir, err := os.MkdirTemp("", "benchprofile")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	build(dir, ".", "-o", filepath.Join(dir, "latscope"), "./cmd/latscope")
	build(dir, "examples/demo", "-o", dir+"/", "./catalog", "./reviews", "./loadgen")

	// BPF run-time statistics for the whole run, so every variant pays
	// their (small) cost alike.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		log.Fatalf("enable BPF statistics: %v", err)
	}
	defer stats.Close()

	_, reviewsAddr := startService([]string{filepath.Join(dir, "reviews")}, "-delay", "0")
	catalog, catalogAddr := startService(onCPU1(filepath.Join(dir, "catalog")), "-reviews", "http://"+reviewsAddr, "-pricing", "127.0.0.1:1", "-inventory", "http://127.0.0.1:1")

	for _, sc := range []struct{ name, path string }{
		{"GET /work/{id}: ~200 µs of CPU and one downstream GET", "/work/%d"},
		{"GET /ping/{id}: a trivial handler", "/ping/%d"},
	} {
		if !strings.HasPrefix(sc.path, *only) {
			continue
		}
		res := make([][]run, len(hzs))
		for r := range *rounds {
			// Each round starts one variant later: a drift within a
			// round (the second run always after the first) does not
			// land on one variant.
			for k := range hzs {
				i := (k + r) % len(hzs)
				hz := hzs[i]
				res[i] = append(res[i], measure(dir, catalog, catalogAddr, sc.path, hz, *warm, *seconds, *conc))
				last := res[i][len(res[i])-1]
				fmt.Fprintf(os.Stderr, "round %d %s %s: %.0f req/s, catalog %.1f µs/req, agent %.2f µs/req, sampling %.3f µs/req, %.3f samples/req\n",
					r+1, sc.path, variant(hz), last.rps, last.catalogUS, last.agentUS, last.progUS, last.samples)
			}
		}
		printTable(sc.name, hzs, res)
	}
}

// run is one measured load.
type run struct {
	rps, p99ms float64
	catalogUS  float64 // catalog CPU per request
	agentUS    float64 // agent CPU per request
	progUS     float64 // the sampling program's run time per request, all CPUs
	samples    float64 // samples sent per request
	lost       uint64  // loss counters of the agent
}

func variant(hz int) string {
	if hz == 0 {
		return "sampling off"
	}
	return fmt.Sprintf("sampling %d Hz", hz)
}

// measure starts an agent tracing catalog with sampling at hz, warms up,
// and measures one load.
func measure(dir string, catalog *exec.Cmd, addr, path string, hz int, warm time.Duration, seconds, conc int) run {
	step := func(what string) {
		fmt.Fprintf(os.Stderr, "%s %s %s: %s\n", time.Now().Format("15:04:05"), path, variant(hz), what)
	}
	step("starting the agent")
	before := programIDs()
	agent, url := startAgent(dir, "--exe", filepath.Join(dir, "catalog"), "--settle-returns", "2s", "--profile-hz", strconv.Itoa(hz))
	defer stop(agent)
	deadline := time.Now().Add(30 * time.Second)
	for !traces(url, catalog.Process.Pid) {
		if time.Now().After(deadline) {
			log.Fatalf("the agent did not trace catalog within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var prog *ebpf.Program
	if hz > 0 {
		prog = samplingProgram(before)
		defer prog.Close()
	}
	step("traced; warming up")
	load(dir, addr, path, int(warm.Seconds()), conc)
	step("measuring")

	cat0, ag0 := benchproc.MustCPUTicks(catalog.Process.Pid), benchproc.MustCPUTicks(agent.Process.Pid)
	rt0, _ := progRuntime(prog)
	sent0 := counter(url, "cpu_samples_sent")
	lg := load(dir, addr, path, seconds, conc)
	rt1, _ := progRuntime(prog)
	r := run{rps: lg.RPS, p99ms: lg.P99ms}
	n := float64(lg.Reqs)
	r.catalogUS = float64(benchproc.MustCPUTicks(catalog.Process.Pid)-cat0) * 1e4 / n // USER_HZ = 100
	r.agentUS = float64(benchproc.MustCPUTicks(agent.Process.Pid)-ag0) * 1e4 / n
	r.progUS = float64(rt1-rt0) / 1e3 / n
	r.samples = float64(counter(url, "cpu_samples_sent")-sent0) / n
	for name, v := range losses(url) {
		if v > 0 {
			fmt.Fprintf(os.Stderr, "  %s %s: loss counter %s = %d\n", path, variant(hz), name, v)
			r.lost += v
		}
	}
	return r
}

// programIDs lists the BPF programs loaded now, true for those named
// sample_cpu.
func programIDs() map[ebpf.ProgramID]bool {
	out := map[ebpf.ProgramID]bool{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return out
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		p.Close()
		out[id] = err == nil && info.Name == "sample_cpu"
	}
}

// samplingProgram is the sample_cpu program loaded since before: the
// agent's.
func samplingProgram(before map[ebpf.ProgramID]bool) *ebpf.Program {
	for id, isSampler := range programIDs() {
		if _, old := before[id]; old || !isSampler {
			continue
		}
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			log.Fatalf("open the agent's sampling program: %v", err)
		}
		return p
	}
	log.Fatal("the agent loaded no sample_cpu program")
	return nil
}

func progRuntime(p *ebpf.Program) (time.Duration, uint64) {
	if p == nil {
		return 0, 0
	}
	st, err := p.Stats()
	if err != nil {
		log.Fatalf("read the sampling program's statistics: %v", err)
	}
	return st.Runtime, st.RunCount
}

// loadResult is what the demo's loadgen prints with -json.
type loadResult struct {
	RPS   float64 `json:"rps"`
	P99ms float64 `json:"p99_ms"`
	Reqs  int     `json:"requests"`
	Errs  int     `json:"errors"`
}

// loadRate is -rate.
var loadRate float64

func load(dir, addr, path string, seconds, conc int) loadResult {
	out, err := exec.Command(filepath.Join(dir, "loadgen"), "-url", "http://"+addr+path, "-ids", "1-50",
		"-c", strconv.Itoa(conc), "-n", "100000000", "-duration", fmt.Sprintf("%ds", seconds), "-json",
		"-rate", strconv.FormatFloat(loadRate, 'f', -1, 64)).Output()
	if err != nil {
		log.Fatalf("loadgen: %v", err)
	}
	var r loadResult
	if err := json.Unmarshal(out, &r); err != nil || r.Reqs == 0 {
		log.Fatalf("loadgen output %q: %v", out, err)
	}
	if r.Errs > 0 {
		log.Fatalf("loadgen: %d errors", r.Errs)
	}
	return r
}

// status is the part of /api/status read here.
type status struct {
	Processes []struct {
		PID int `json:"pid"`
	} `json:"processes"`
	Counters []struct {
		Name  string `json:"name"`
		Value uint64 `json:"value"`
		Loss  bool   `json:"loss"`
	} `json:"counters"`
}

func getStatus(url string) status {
	resp, err := http.Get(url + "/api/status")
	if err != nil {
		log.Fatalf("agent status: %v", err)
	}
	defer resp.Body.Close()
	var st status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		log.Fatalf("agent status: %v", err)
	}
	return st
}

func traces(url string, pid int) bool {
	return slices.ContainsFunc(getStatus(url).Processes, func(p struct {
		PID int `json:"pid"`
	}) bool {
		return p.PID == pid
	})
}

func counter(url, name string) uint64 {
	for _, c := range getStatus(url).Counters {
		if c.Name == name {
			return c.Value
		}
	}
	return 0
}

func losses(url string) map[string]uint64 {
	out := map[string]uint64{}
	for _, c := range getStatus(url).Counters {
		if c.Loss {
			out[c.Name] = c.Value
		}
	}
	return out
}

func printTable(title string, hzs []int, res [][]run) {
	fmt.Printf("\n### %s\n\n", title)
	fmt.Println("| variant | requests/s | p99 ms | catalog CPU µs/request | vs off | agent CPU µs/request | sampling program µs/request | samples/request | losses |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	col := func(rs []run, f func(run) float64, prec int) string {
		var v []float64
		for _, r := range rs {
			v = append(v, f(r))
		}
		slices.Sort(v)
		med := v[len(v)/2]
		if len(v)%2 == 0 {
			med = (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		return fmt.Sprintf("%.*f (%.*f–%.*f)", prec, med, prec, v[0], prec, v[len(v)-1])
	}
	med := func(rs []run, f func(run) float64) float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, f(r))
		}
		slices.Sort(v)
		if len(v)%2 == 0 {
			return (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		return v[len(v)/2]
	}
	off := math.NaN()
	for i, hz := range hzs {
		if hz == 0 {
			off = med(res[i], func(r run) float64 { return r.catalogUS })
		}
	}
	for i, hz := range hzs {
		rs := res[i]
		var lost uint64
		for _, r := range rs {
			lost += r.lost
		}
		vs := "—"
		if hz != 0 && !math.IsNaN(off) {
			vs = fmt.Sprintf("%+.1f %%", (med(rs, func(r run) float64 { return r.catalogUS })/off-1)*100)
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", variant(hz),
			col(rs, func(r run) float64 { return r.rps }, 0), col(rs, func(r run) float64 { return r.p99ms }, 2),
			col(rs, func(r run) float64 { return r.catalogUS }, 1), vs,
			col(rs, func(r run) float64 { return r.agentUS }, 2), col(rs, func(r run) float64 { return r.progUS }, 3),
			col(rs, func(r run) float64 { return r.samples }, 4), lost)
	}
}

func build(dir, in string, args ...string) {
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Dir = in
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		log.Fatalf("go build %s in %s: %v\n%s", strings.Join(args, " "), in, err, out)
	}
}

var listeningRE = regexp.MustCompile(`msg="agent API listening" url=(\S+)`)

// startAgent runs `latscope agent` and returns it with its API URL.
func startAgent(dir string, args ...string) (*exec.Cmd, string) {
	cmd := exec.Command(filepath.Join(dir, "latscope"), append([]string{"agent", "--http", "127.0.0.1:0"}, args...)...)
	for _, kv := range os.Environ() { // no OTLP export, whatever this shell exports
		if !strings.HasPrefix(kv, "OTEL_EXPORTER_OTLP_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		log.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Fatalf("start the agent: %v", err)
	}
	procs = append(procs, cmd)
	sc := bufio.NewScanner(errPipe)
	for sc.Scan() {
		if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
			go func() {
				for sc.Scan() {
					if !strings.Contains(sc.Text(), "level=INFO") {
						fmt.Fprintln(os.Stderr, "agent:", sc.Text())
					}
				}
			}()
			return cmd, m[1]
		}
		if !strings.Contains(sc.Text(), "level=INFO") {
			fmt.Fprintln(os.Stderr, "agent:", sc.Text())
		}
	}
	log.Fatal("the agent exited before listening")
	return nil, ""
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	procs = slices.DeleteFunc(procs, func(c *exec.Cmd) bool { return c == cmd })
}

func stopAll() {
	for _, c := range slices.Clone(procs) {
		stop(c)
	}
}

// startService starts a demo service (benchproc.MustStart) and keeps it
// to stop at the end.
func startService(argv []string, args ...string) (*exec.Cmd, string) {
	cmd, addr := benchproc.MustStart(argv, nil, args...)
	procs = append(procs, cmd)
	return cmd, addr
}
