// Command benchdemo measures what tracing costs a real service: the demo
// catalog under a fixed-concurrency loopback load, on GET /product/{id}
// (net/http server, SQLite, a gRPC call to pricing, an HTTP call to
// reviews and inventory, three goroutines per request), on GET /work/{id}
// (~200 µs of CPU and one GET to reviews, the shape the overhead goal is
// set for), on GET /work/{id}?rounds=1500 (the same with ~1 ms of CPU) and
// on GET /ping/{id} (a trivial handler), in three variants run in turn,
// several rounds; the tables show medians:
//
//   - untraced: the plain catalog;
//   - latscope: the same process traced by latscope with every library
//     probe and the user functions of -funcs (default main.compute, the
//     handlers' computation: one span per request on /work), injection on,
//     spans exported over OTLP to Jaeger, measured once its learned call
//     sites have settled (a 2 s warm-up load, then
//     agent.Config.SettleReturns);
//   - OTel SDK: catalog built with -tags otel, instrumented in-process with
//     otelhttp (server, client) and otelgrpc (client), exporting to the
//     same Jaeger.
//
// Requests/s, latency percentiles, catalog's CPU per request (utime+stime
// of all its threads from /proc/PID/stat; it includes the BPF programs and
// uprobe traps, which run in catalog's context) and its ratio to
// untraced, spans per request, and latscope's own user-space CPU per span
// (reading the ring, rebuilding, exporting over OTLP). With -pin (the
// default) catalog runs alone on CPU 1 and everything else (this process,
// so the tracer, Jaeger, the load generator and catalog's backends) on
// CPU 0, so that catalog's CPU is its own. Needs root, redis-server and
// the Jaeger build of internal/jaegertest.
//
// With -rate a scenario's runs are all held at one request rate (loadgen
// -rate): on this kind of VM a service's CPU per request depends on its
// load (waking from idle is charged per request: catalog's /work costs
// 275 µs a request when it saturates its CPU, 347 µs at 2 000
// requests/s; /ping 10 µs against 73 µs at 1 000 requests/s).
// Saturated, the traced variant (held back by CPU 0) idles where the
// untraced one does not, which counts against it; at a low rate both pay
// a wake-up per request, which flatters every ratio. A rate a little
// below the traced variant's saturated rate compares like with like.
//
//	go run ./scripts/benchdemo [-rounds 3] [-seconds 10] [-c 8] [-scenario work,ping] [-rate work=2000] [-bpfstats]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/exporter/otlp"
	"github.com/latscope/latscope/internal/benchproc"
	"github.com/latscope/latscope/internal/bpfstats"
	"github.com/latscope/latscope/internal/cpupin"
	"github.com/latscope/latscope/internal/jaegertest"
	"github.com/latscope/latscope/span"
)

type result struct {
	RPS      float64 `json:"rps"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	Reqs     int     `json:"requests"`
	Errs     int     `json:"errors"`
	cpuUS    float64 // catalog CPU µs per request
	agentUS  float64 // latscope's (this process's) CPU µs per request
	jaegerUS float64 // Jaeger's CPU µs per request (storing the spans)
	spans    float64 // spans latscope exported per request
}

// spanCounter counts the spans a session hands its exporters.
type spanCounter struct{ n atomic.Uint64 }

func (c *spanCounter) Export(spans []*span.Span) error { c.n.Add(uint64(len(spans))); return nil }
func (c *spanCounter) Close() error                    { return nil }

func main() {
	rounds := flag.Int("rounds", 3, "untraced/traced pairs")
	seconds := flag.Int("seconds", 10, "load per run")
	conc := flag.Int("c", 8, "concurrent requests")
	inject := flag.Bool("inject", true, "trace context injection on (sock_ops + sk_msg)")
	cpuProfile := flag.String("cpuprofile", "", "write latscope's CPU profile during the first traced run of the first scenario to this file")
	only := flag.String("scenario", "", "run only these scenarios, comma-separated: product, work, work1ms, ping (default all)")
	funcs := flag.String("funcs", "main.compute", "user functions latscope traces besides the libraries (comma-separated patterns as in latscope trace --funcs; empty: none)")
	pin := flag.Bool("pin", true, "run catalog alone on CPU 1 and everything else on CPU 0")
	perfData := flag.String("perf", "", "record catalog with perf (call graphs, kernel included) during the first untraced and traced runs of the first scenario, to FILE.untraced and FILE.traced")
	bpfStats := flag.Bool("bpfstats", false, "print each BPF program's runs and run time per request of each scenario's first traced run (kernel BPF statistics)")
	rates := map[string]float64{"product": 0, "work": 0, "work1ms": 0, "ping": 0}
	flag.Func("rate", "`SCENARIO=RPS[,...]`: the request rate a scenario's every run is held at (loadgen -rate; 0, the default = as fast as -c allows). A service's CPU per request depends on its load on this kind of VM (waking from idle is charged per request): saturated, the untraced variant never idles while the traced one, held back by CPU 0, does; at a low rate both pay a wake-up per request, which shrinks every ratio. Pick a rate a little below what the traced variant serves saturated", func(v string) error {
		for _, kv := range strings.Split(v, ",") {
			k, n, ok := strings.Cut(strings.TrimSpace(kv), "=")
			r, err := strconv.ParseFloat(n, 64)
			if _, known := rates[k]; !ok || !known || err != nil || r < 0 {
				return fmt.Errorf("%q: want SCENARIO=RPS with a scenario of product, work, work1ms, ping and a rate >= 0", kv)
			}
			rates[k] = r
		}
		return nil
	})
	flag.Parse()
	var patterns []string
	if *funcs != "" {
		patterns = strings.Split(*funcs, ",")
	}
	// onCPU1 starts catalog and catalog-otel: on CPU 1 alone with -pin.
	onCPU1 := func(argv ...string) []string { return argv }
	if *pin {
		if err := cpupin.Self(0); err != nil {
			log.Fatalf("-pin: %v (run with -pin=false)", err)
		}
		onCPU1 = func(argv ...string) []string { return cpupin.Command(1, argv...) }
	}
	bin, err := os.MkdirTemp("", "benchdemo")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(bin)
	for _, args := range [][]string{
		{"-o", bin + "/", "./catalog", "./pricing", "./reviews", "./inventory", "./loadgen"},
		{"-tags", "otel", "-o", filepath.Join(bin, "catalog-otel"), "./catalog"},
	} {
		build := exec.Command("go", append([]string{"build"}, args...)...)
		build.Dir = "examples/demo"
		build.Env = append(os.Environ(), "GOWORK=off")
		if out, err := build.CombinedOutput(); err != nil {
			log.Fatalf("build demo: %v\n%s", err, out)
		}
	}
	jaeger, err := jaegertest.Run(bin, log.Printf)
	if err != nil {
		log.Fatal(err)
	}
	defer jaeger.Stop()
	// latscope (in this process) and catalog-otel export to it over OTLP/gRPC.
	otlpEnv := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + jaeger.OTLPGRPC, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"}
	for _, kv := range otlpEnv {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}

	redisPort := freePort()
	redis := start("redis-server", "--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	defer stop(redis)
	time.Sleep(300 * time.Millisecond)
	pricing, pricingAddr := benchproc.MustStart([]string{filepath.Join(bin, "pricing")}, nil, "-redis", "127.0.0.1:"+strconv.Itoa(redisPort))
	defer stop(pricing)
	reviews, reviewsAddr := benchproc.MustStart([]string{filepath.Join(bin, "reviews")}, nil, "-delay", "0")
	defer stop(reviews)
	inventory, inventoryAddr := benchproc.MustStart([]string{filepath.Join(bin, "inventory")}, nil, "-reviews", "http://"+reviewsAddr)
	defer stop(inventory)
	catalog, catalogAddr := benchproc.MustStart(onCPU1(filepath.Join(bin, "catalog")), nil, "-pricing", pricingAddr, "-reviews", "http://"+reviewsAddr, "-inventory", "http://"+inventoryAddr)
	defer stop(catalog)
	catalogSDK, catalogSDKAddr := benchproc.MustStart(onCPU1(filepath.Join(bin, "catalog-otel")), []string{"OTEL_TRACES_EXPORTER=otlp", "OTEL_SERVICE_NAME=catalog-otel"}, "-pricing", pricingAddr, "-reviews", "http://"+reviewsAddr, "-inventory", "http://"+inventoryAddr)
	defer stop(catalogSDK)

	// load runs the load generator against a catalog at path for seconds;
	// spans counts what latscope exports, if it runs.
	load := func(catalog *exec.Cmd, catalogAddr, path string, rate float64, seconds int, spans *spanCounter) result {
		before, self, jaegerBefore := benchproc.MustCPUTicks(catalog.Process.Pid), benchproc.MustCPUTicks(os.Getpid()), benchproc.MustCPUTicks(jaeger.Pid())
		var spansBefore uint64
		if spans != nil {
			spansBefore = spans.n.Load()
		}
		out, err := exec.Command(filepath.Join(bin, "loadgen"), "-url", "http://"+catalogAddr+path, "-ids", "1-50",
			"-c", strconv.Itoa(*conc), "-n", "10000000", "-duration", fmt.Sprintf("%ds", seconds), "-rate", strconv.FormatFloat(rate, 'f', -1, 64), "-json").Output()
		if err != nil {
			log.Fatalf("loadgen: %v", err)
		}
		var r result
		if err := json.Unmarshal(out, &r); err != nil {
			log.Fatalf("loadgen output %q: %v", out, err)
		}
		ticks := benchproc.MustCPUTicks(catalog.Process.Pid) - before
		r.cpuUS = float64(ticks) * 1e6 / 100 / float64(r.Reqs) // USER_HZ = 100
		r.agentUS = float64(benchproc.MustCPUTicks(os.Getpid())-self) * 1e6 / 100 / float64(r.Reqs)
		r.jaegerUS = float64(benchproc.MustCPUTicks(jaeger.Pid())-jaegerBefore) * 1e6 / 100 / float64(r.Reqs)
		if spans != nil {
			time.Sleep(200 * time.Millisecond) // the last requests' spans reach the exporters
			r.spans = float64(spans.n.Load()-spansBefore) / float64(r.Reqs)
		}
		return r
	}
	measure := func(name, path string, rate float64, first bool) {
		var untraced, traced, sdk []result
		var exported, dropped, failed uint64
		lost := map[string]uint64{}
		var learned string
		for i := 0; i < *rounds; i++ {
			record := *perfData != "" && first && i == 0
			var stopPerf func()
			if record {
				stopPerf = startPerf(catalog.Process.Pid, *perfData+".untraced")
			}
			untraced = append(untraced, load(catalog, catalogAddr, path, rate, *seconds, nil))
			if record {
				stopPerf()
			}
			ctx, cancel := context.WithCancel(context.Background())
			ready := make(chan struct{})
			var proc *agent.Process
			done := make(chan error, 1)
			exp, err := otlp.New(ctx, otlp.Options{})
			if err != nil {
				log.Fatal(err)
			}
			counter := &spanCounter{}
			s := &agent.Session{
				PIDs:      []int{catalog.Process.Pid},
				Patterns:  patterns,
				Tracer:    agent.Config{Inject: *inject},
				Exporters: []span.Exporter{exp, counter},
				Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
				Ready:     func(p *agent.Process) { proc = p; close(ready) },
			}
			if *cpuProfile != "" && first && i == 0 {
				f, err := os.Create(*cpuProfile)
				if err != nil {
					log.Fatal(err)
				}
				pprof.StartCPUProfile(f)
				defer f.Close()
			}
			go func() {
				res, err := s.Run(ctx)
				if err == nil {
					for _, c := range res.Counters {
						if c.Loss && c.Value > 0 {
							lost[c.Name] += c.Value
						}
					}
				}
				done <- err
			}()
			select {
			case <-ready:
			case err := <-done:
				log.Fatalf("latscope: %v", err)
			}
			settle(proc, func() { load(catalog, catalogAddr, path, rate, 2, nil) })
			if i == 0 {
				learned = describeLearned(proc)
			}
			// Statistics over the measured load only (programs count while
			// they are on).
			var stats io.Closer
			if *bpfStats && i == 0 {
				if stats, err = bpfstats.Enable(); err != nil {
					log.Fatal(err)
				}
			}
			if record {
				stopPerf = startPerf(catalog.Process.Pid, *perfData+".traced")
			}
			traced = append(traced, load(catalog, catalogAddr, path, rate, *seconds, counter))
			if record {
				stopPerf()
			}
			if *cpuProfile != "" && first && i == 0 {
				pprof.StopCPUProfile()
			}
			if stats != nil {
				bpfstats.Print(os.Stdout, "BPF program", traced[0].Reqs)
				stats.Close()
			}
			cancel()
			if err := <-done; err != nil {
				log.Fatalf("latscope: %v", err)
			}
			if err := exp.Close(); err != nil {
				log.Printf("OTLP exporter: %v", err)
			}
			e, d, f := exp.Stats()
			exported, dropped, failed = exported+e, dropped+d, failed+f
			sdk = append(sdk, load(catalogSDK, catalogSDKAddr, path, rate, *seconds, nil))
		}
		pinned := "nothing pinned"
		if *pin {
			pinned = "catalog alone on CPU 1, the rest on CPU 0"
		}
		paced := "as fast as they are answered"
		if rate > 0 {
			paced = fmt.Sprintf("at most %.0f requests/s", rate)
		}
		fmt.Printf("### %s\n\ncatalog, %d concurrent, %s, %d s per run, %d rounds (medians; the variants run in turn each round); %s\n\n", name, *conc, paced, *seconds, *rounds, pinned)
		fmt.Println("| variant | requests/s | p50 ms | p99 ms | catalog CPU µs/request (each run) | × untraced | spans/request | latscope CPU µs/span | Jaeger CPU µs/request | errors |")
		fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		var c0 float64
		row := func(name string, rs []result, traced bool) (float64, float64) {
			rps, cpu := med(rs, func(r result) float64 { return r.RPS }), med(rs, func(r result) float64 { return r.cpuUS })
			if c0 == 0 {
				c0 = cpu
			}
			errs := 0
			var runs []string
			for _, r := range rs {
				errs += r.Errs
				runs = append(runs, fmt.Sprintf("%.1f", r.cpuUS))
			}
			spansCol, agentCol := "—", "—"
			if traced {
				spans := med(rs, func(r result) float64 { return r.spans })
				spansCol = fmt.Sprintf("%.2f", spans)
				agentCol = fmt.Sprintf("%.1f", med(rs, func(r result) float64 { return r.agentUS / r.spans }))
			}
			fmt.Printf("| %s | %.0f | %.2f | %.2f | %.1f (%s) | %.3f | %s | %s | %.0f | %d |\n", name, rps,
				med(rs, func(r result) float64 { return r.P50ms }), med(rs, func(r result) float64 { return r.P99ms }), cpu, strings.Join(runs, " "),
				cpu/c0, spansCol, agentCol, med(rs, func(r result) float64 { return r.jaegerUS }), errs)
			return rps, cpu
		}
		r0, c0 := row("untraced", untraced, false)
		what := "library probes"
		if len(patterns) > 0 {
			what += " + " + strings.Join(patterns, ", ")
		}
		r1, c1 := row(fmt.Sprintf("latscope (%s, injection %v, OTLP to Jaeger)", what, *inject), traced, true)
		r2, c2 := row("OTel SDK in-process (otelhttp, otelgrpc, OTLP to Jaeger)", sdk, false)
		if rate > 0 && min(r0, r1, r2) < 0.97*rate {
			fmt.Printf("\n**A variant fell short of %.0f requests/s**: its CPU per request is measured at a lower load than the others' (lower the rate with -rate)\n", rate)
		}
		fmt.Printf("\nlatscope: %+.1f%% requests/s, %+.1f%% catalog CPU per request\n", 100*(r1-r0)/r0, 100*(c1-c0)/c0)
		fmt.Printf("OTel SDK: %+.1f%% requests/s, %+.1f%% catalog CPU per request\n", 100*(r2-r0)/r0, 100*(c2-c0)/c0)
		fmt.Printf("latscope spans: %d exported, %d dropped, %d failed; losses counted by the tracer: %v\n", exported, dropped, failed, lost)
		fmt.Printf("returns learned per call site: %s\n\n", learned)
	}
	type scenario struct{ key, name, path string }
	scenarios := []scenario{
		{"product", "GET /product/{id}: SQLite query, gRPC call to pricing, HTTP calls to reviews and inventory, on three goroutines", "/product/%d"},
		{"work", "GET /work/{id}: ~200 µs of CPU and one GET to reviews (the goal's reference shape)", "/work/%d"},
		{"work1ms", "GET /work/{id}?rounds=1500: ~1 ms of CPU and one GET to reviews", "/work/%d?rounds=1500"},
		{"ping", "GET /ping/{id}: a trivial handler", "/ping/%d"},
	}
	want := map[string]bool{}
	for _, k := range strings.Split(*only, ",") {
		if k = strings.TrimPrefix(strings.TrimSpace(k), "/"); k != "" {
			want[k] = true
		}
	}
	for k := range want {
		if !slices.ContainsFunc(scenarios, func(sc scenario) bool { return sc.key == k }) {
			log.Fatalf("-scenario %q: no such scenario; want product, work, work1ms or ping", k)
		}
	}
	first := true
	for _, sc := range scenarios {
		if len(want) > 0 && !want[sc.key] {
			continue
		}
		// Warm up caches and connections.
		load(catalog, catalogAddr, sc.path, rates[sc.key], *seconds, nil)
		load(catalogSDK, catalogSDKAddr, sc.path, rates[sc.key], *seconds, nil)
		measure(sc.name, sc.path, rates[sc.key], first)
		first = false
	}
}

// settle warms the traced catalog up with load until every function whose
// returns latscope learns per call site has settled (its own RET probes
// detached, agent.Config.SettleReturns after its last new call site): the
// traced runs measure the steady state.
func settle(p *agent.Process, warm func()) {
	warm()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		var unsettled []string
		for name, l := range p.Learned() {
			if !l.Settled() {
				unsettled = append(unsettled, name)
			}
		}
		if len(unsettled) == 0 {
			return
		}
		if time.Now().After(deadline) {
			log.Printf("still probed at their own RETs after a minute: %v", unsettled)
			return
		}
	}
}

// describeLearned says where each learned function's returns were seen
// once settled.
func describeLearned(p *agent.Process) string {
	var out []string
	for name, l := range p.Learned() {
		where := "own RETs"
		if !l.OwnRETs {
			where = "callers only"
		}
		out = append(out, fmt.Sprintf("%s: %d call sites probed, %d refused, %s", name, len(l.Sites), l.Refused, where))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// startPerf records pid's samples with call graphs to file until the
// returned function is called.
func startPerf(pid int, file string) func() {
	cmd := exec.Command("perf", "record", "-q", "-g", "-p", strconv.Itoa(pid), "-o", file)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatalf("perf: %v", err)
	}
	time.Sleep(500 * time.Millisecond) // perf attaches
	return func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
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

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func start(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Fatalf("start %s: %v", name, err)
	}
	return cmd
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}
