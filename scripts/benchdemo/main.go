// Command benchdemo measures what latscope costs a real service: the demo
// catalog (net/http server, SQLite, a gRPC call to pricing, an HTTP call to
// reviews, two goroutines per request) under a fixed-concurrency loopback
// load, untraced and traced by latscope with every library probe (no user
// functions), alternating, several rounds; the table shows medians.
// Requests/s, latency percentiles and catalog's CPU per request (from
// /proc/PID/stat). Needs root and redis-server.
//
//	go run ./scripts/benchdemo [-rounds 3] [-seconds 10] [-c 8]
package main

import (
	"bufio"
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
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/latscope/latscope/agent"
)

type result struct {
	RPS   float64 `json:"rps"`
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	Reqs  int     `json:"requests"`
	Errs  int     `json:"errors"`
	cpuUS float64 // catalog CPU µs per request
}

func main() {
	rounds := flag.Int("rounds", 3, "untraced/traced pairs")
	seconds := flag.Int("seconds", 10, "load per run")
	conc := flag.Int("c", 8, "concurrent requests")
	inject := flag.Bool("inject", true, "trace context injection on (sock_ops + sk_msg)")
	flag.Parse()
	bin, err := os.MkdirTemp("", "benchdemo")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(bin)
	build := exec.Command("go", "build", "-o", bin+"/", "./catalog", "./pricing", "./reviews", "./loadgen")
	build.Dir = "examples/demo"
	build.Env = append(os.Environ(), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		log.Fatalf("build demo: %v\n%s", err, out)
	}

	redisPort := freePort()
	redis := start("redis-server", "--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	defer stop(redis)
	time.Sleep(300 * time.Millisecond)
	pricing, pricingAddr := startService(filepath.Join(bin, "pricing"), "-redis", "127.0.0.1:"+strconv.Itoa(redisPort))
	defer stop(pricing)
	reviews, reviewsAddr := startService(filepath.Join(bin, "reviews"), "-delay", "0")
	defer stop(reviews)
	catalog, catalogAddr := startService(filepath.Join(bin, "catalog"), "-pricing", pricingAddr, "-reviews", "http://"+reviewsAddr)
	defer stop(catalog)

	load := func() result {
		before := cpuTicks(catalog.Process.Pid)
		out, err := exec.Command(filepath.Join(bin, "loadgen"), "-url", "http://"+catalogAddr+"/product/%d", "-ids", "1-50",
			"-c", strconv.Itoa(*conc), "-n", "10000000", "-duration", fmt.Sprintf("%ds", *seconds), "-json").Output()
		if err != nil {
			log.Fatalf("loadgen: %v", err)
		}
		var r result
		if err := json.Unmarshal(out, &r); err != nil {
			log.Fatalf("loadgen output %q: %v", out, err)
		}
		ticks := cpuTicks(catalog.Process.Pid) - before
		r.cpuUS = float64(ticks) * 1e6 / 100 / float64(r.Reqs) // USER_HZ = 100
		return r
	}
	load() // warm up caches and connections

	var untraced, traced []result
	for i := 0; i < *rounds; i++ {
		untraced = append(untraced, load())
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan struct{})
		done := make(chan error, 1)
		s := &agent.Session{
			PIDs:   []int{catalog.Process.Pid},
			Tracer: agent.Config{Inject: *inject},
			Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
			Ready:  func(*agent.Process) { close(ready) },
		}
		go func() { _, err := s.Run(ctx); done <- err }()
		select {
		case <-ready:
		case err := <-done:
			log.Fatalf("latscope: %v", err)
		}
		traced = append(traced, load())
		cancel()
		if err := <-done; err != nil {
			log.Fatalf("latscope: %v", err)
		}
	}
	fmt.Printf("catalog, %d concurrent, %d s per run, %d rounds (medians; untraced and traced runs alternate)\n\n", *conc, *seconds, *rounds)
	fmt.Println("| variant | requests/s | p50 ms | p99 ms | catalog CPU µs/request | errors |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	row := func(name string, rs []result) (float64, float64) {
		rps, cpu := med(rs, func(r result) float64 { return r.RPS }), med(rs, func(r result) float64 { return r.cpuUS })
		errs := 0
		for _, r := range rs {
			errs += r.Errs
		}
		fmt.Printf("| %s | %.0f | %.2f | %.2f | %.0f | %d |\n", name, rps,
			med(rs, func(r result) float64 { return r.P50ms }), med(rs, func(r result) float64 { return r.P99ms }), cpu, errs)
		return rps, cpu
	}
	r0, c0 := row("untraced", untraced)
	r1, c1 := row(fmt.Sprintf("latscope (library probes, injection %v; spans built, not exported)", *inject), traced)
	fmt.Printf("\nlatscope: %+.1f%% requests/s, %+.1f%% CPU per request\n", 100*(r1-r0)/r0, 100*(c1-c0)/c0)
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

// cpuTicks is utime+stime of pid in clock ticks.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		log.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
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

// startService starts a demo service on a free loopback port and returns
// the address it logged.
func startService(bin string, args ...string) (*exec.Cmd, string) {
	cmd := exec.Command(bin, append([]string{"-listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StderrPipe()
	if err != nil {
		log.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		log.Fatalf("start %s: %v", bin, err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, a, ok := strings.Cut(sc.Text(), "addr="); ok && strings.Contains(sc.Text(), "msg=listening") {
			go io.Copy(io.Discard, out)
			return cmd, strings.Fields(a)[0]
		}
	}
	log.Fatalf("%s did not log its address", bin)
	return nil, ""
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}
