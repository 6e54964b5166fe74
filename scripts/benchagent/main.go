// Command benchagent measures the node agent (`latscope agent`) on this
// machine, as root, in four sections; each runs several rounds, its
// variants in turn within a round, and prints a table of medians with
// their spread (min–max over rounds), the goal and whether it is met:
//
//  1. exec to attached: the agent's execToAttachedNs (/api/status) for the
//     service fixture started one after the other, restarts of the same
//     file (its parsed binary is kept) against a fresh copy each time
//     (another inode: a cold parse);
//  2. Attach and Detach of ~200 probe sites, in process (agent.Tracer),
//     uprobe_multi links against perf-event uprobes on the same sites;
//  3. 1 against 10 replicas of one binary: the agent's RSS, its
//     probe_links and probes_attached gauges, each replica's exec to
//     attached;
//  4. the agent's CPU per span at ~20 000 spans/s (the service fixture
//     with --funcs main.greet under a rate-limited keep-alive load from
//     this process) in the steady state, the store already filled to 97 %
//     of its budget and evicting; its RSS and store bytes at the end; the
//     same with OTLP export
//     to a sink in this process; the traced service's own CPU per request
//     against an untraced round.
//
// CPU is utime+stime of a process and all its threads (/proc/PID/stat,
// 10 ms ticks); RSS is VmRSS (/proc/PID/status). Nothing is pinned: the
// load generator, the service and the agent share the machine's cores, as
// on a node. Every process it starts is stopped when it ends, also on
// Ctrl-C.
//
//	go run ./scripts/benchagent [-rounds 5] [-n 30] [-seconds 10] [-rate 10000] [-c 8] [-perf-rounds 2] [-sections 1,2,3,4] [-profile DIR]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/latscope/latscope/internal/fixture"
)

// options are the command's flags.
type options struct {
	rounds     int
	n          int
	seconds    int
	rate       int
	conns      int
	perfRounds int
	sections   map[string]bool
	profileDir string
	agentEnv   []string
}

// bench holds what every section shares: the binaries and the processes
// started.
type bench struct {
	opt      options
	dir      string // temporary directory, removed at the end
	latscope string // the latscope binary
	svc      string // the service fixture (stripped), copied as dir/bench-svc
	procs    *procSet
	// interrupted is set on Ctrl-C: the errors of the processes being
	// stopped are not the run's.
	interrupted atomic.Bool
}

func main() {
	var opt options
	flag.IntVar(&opt.rounds, "rounds", 5, "rounds of every section; tables show medians over rounds")
	flag.IntVar(&opt.n, "n", 30, "section 1: service starts per variant and round")
	flag.IntVar(&opt.seconds, "seconds", 10, "section 4: seconds of load per variant and round")
	flag.IntVar(&opt.rate, "rate", 10000, "section 4: requests/s the load generator aims at (2 spans each)")
	flag.IntVar(&opt.conns, "c", 8, "section 4: keep-alive connections of the load generator")
	flag.Func("agent-env", "`KEY=VALUE` added to the agent's environment (repeatable), e.g. GOMAXPROCS=1 to compare runtime settings", func(kv string) error {
		if !strings.Contains(kv, "=") {
			return fmt.Errorf("want KEY=VALUE, got %q", kv)
		}
		opt.agentEnv = append(opt.agentEnv, kv)
		return nil
	})
	flag.StringVar(&opt.profileDir, "profile", "", "section 4: write the agent's Go CPU profile (over the load) and allocation profile (after it) of the first traced round into `DIR`, from its /debug/pprof/")
	flag.IntVar(&opt.perfRounds, "perf-rounds", 2, "section 2: rounds with perf-event uprobes (each detach of ~200 sites takes seconds); at most -rounds")
	sections := flag.String("sections", "1,2,3,4", "sections to run, comma-separated")
	flag.Parse()
	opt.sections = map[string]bool{}
	for _, s := range strings.Split(*sections, ",") {
		opt.sections[strings.TrimSpace(s)] = true
	}
	opt.perfRounds = min(opt.perfRounds, opt.rounds)
	if opt.rounds < 1 || opt.n < 1 || opt.seconds < 1 || opt.rate < 1 || opt.conns < 1 {
		fmt.Fprintln(os.Stderr, "benchagent: -rounds, -n, -seconds, -rate and -c must be at least 1")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchagent: needs root (BPF programs, uprobes): run it with sudo")
		os.Exit(1)
	}

	b := &bench{opt: opt, procs: newProcSet()}
	var err error
	if b.dir, err = os.MkdirTemp("", "benchagent"); err != nil {
		fmt.Fprintf(os.Stderr, "benchagent: create a temporary directory: %v\n", err)
		os.Exit(1)
	}
	// Ctrl-C (or SIGTERM): stop what was started, remove the files.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		b.interrupted.Store(true)
		fmt.Fprintf(os.Stderr, "\nbenchagent: %v: stopping the processes this run started\n", s)
		b.cleanup()
		os.Exit(130)
	}()

	start := time.Now()
	if err := b.run(); err != nil {
		if b.interrupted.Load() {
			select {} // the signal handler cleans up and exits
		}
		fmt.Fprintf(os.Stderr, "benchagent: %v\n", err)
		b.cleanup()
		os.Exit(1)
	}
	b.cleanup()
	fmt.Printf("total %s\n", time.Since(start).Round(time.Second))
}

// run builds the binaries and runs the chosen sections in order.
func (b *bench) run() error {
	if err := b.build(); err != nil {
		return err
	}
	b.header()
	steps := []struct {
		name string
		run  func() error
	}{
		{"1", b.benchExec},
		{"2", b.benchAttach},
		{"3", b.benchReplicas},
		{"4", b.benchLoad},
	}
	for _, s := range steps {
		if !b.opt.sections[s.name] {
			continue
		}
		t0 := time.Now()
		if err := s.run(); err != nil {
			return fmt.Errorf("section %s: %w", s.name, err)
		}
		fmt.Printf("(section %s took %s; load average at its end: %s)\n\n", s.name, time.Since(t0).Round(time.Second), loadAvg())
	}
	return nil
}

// build compiles latscope and the stripped service fixture.
func (b *bench) build() error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 || strings.TrimSpace(string(out)) == os.DevNull {
		return fmt.Errorf("find the latscope module (go env GOMOD: %v): run this from the repository", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	b.latscope = filepath.Join(b.dir, "latscope")
	build := exec.Command("go", "build", "-o", b.latscope, "./cmd/latscope")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/latscope: %v\n%s", err, out)
	}
	src, err := fixture.BuildErr("service", "local", fixture.Stripped)
	if err != nil {
		return fmt.Errorf("build the service fixture: %w", err)
	}
	b.svc = filepath.Join(b.dir, svcName)
	return copyFile(src, b.svc)
}

// header says where and how the numbers were taken.
func (b *bench) header() {
	var u unix.Utsname
	unix.Uname(&u)
	fmt.Printf("# latscope agent benchmark\n\n%s, Linux %s, %d CPUs, %s; `go run ./scripts/benchagent %s`\n",
		time.Now().Format("2006-01-02 15:04"), unix.ByteSliceToString(u.Release[:]), runtime.NumCPU(), runtime.Version(), strings.Join(os.Args[1:], " "))
	fmt.Printf("rounds %d; nothing pinned (load generator, service and agent share the cores); load average before: %s\n\n", b.opt.rounds, loadAvg())
	if f := strings.Fields(loadAvg()); len(f) > 0 {
		if l, err := strconv.ParseFloat(f[0], 64); err == nil && l > float64(runtime.NumCPU())/2 {
			fmt.Fprintf(os.Stderr, "benchagent: the machine is busy (load average %.1f on %d CPUs): these numbers will be noisy\n", l, runtime.NumCPU())
		}
	}
}

// loadAvg is the 1, 5 and 15 minute load averages (/proc/loadavg): other
// work on the machine shows there.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return strings.TrimSpace(string(b))
	}
	return strings.Join(f[:3], " ")
}

// cleanup stops every process this run started and removes its files.
func (b *bench) cleanup() {
	b.procs.stopAll()
	os.RemoveAll(b.dir)
}
