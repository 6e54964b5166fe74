// Command propcost measures what trace context propagation costs in the
// kernel: it runs a fixture's HTTP/1 load under latscope with injection
// on, several rounds, with the kernel's BPF statistics enabled
// (kernel.bpf_stats_enabled, which itself adds a little to every run),
// and prints, per latscope BPF program that ran, its runs per request and
// its mean run time, medians of the rounds. Run it on two commits to
// compare them side by side. Needs root.
//
//	go run ./scripts/propcost [-fixture httpapp|wrapconn|h2app] [-rounds 5] [-calls 2000] [-c 8]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
)

// stat is one program's cumulative counters.
type stat struct{ runs, ns uint64 }

func main() {
	fx := flag.String("fixture", "httpapp", "httpapp (plain connections), wrapconn (a DialContext wrapper) or h2app (h2c)")
	rounds := flag.Int("rounds", 5, "rounds (medians are reported)")
	calls := flag.Int("calls", 2000, "requests per round")
	conc := flag.Int("c", 8, "concurrent connections")
	flag.Parse()
	bin, err := fixture.BuildErr(*fx, "local", fixture.Stripped)
	if err != nil {
		log.Fatal(err)
	}
	argv := []string{bin, strconv.Itoa(*calls), strconv.Itoa(*conc)}
	switch *fx {
	case "httpapp":
		argv = []string{bin, "load", strconv.Itoa(*calls), strconv.Itoa(*conc)}
	case "h2app":
		argv = []string{bin, "h2c-load", strconv.Itoa(*calls), strconv.Itoa(*conc)}
	}
	perRound := map[string][]stat{}
	var counters string
	for r := 0; r < *rounds; r++ {
		got, c, err := round(argv)
		if err != nil {
			log.Fatal(err)
		}
		counters = c
		for name, s := range got {
			perRound[name] = append(perRound[name], s)
		}
	}
	var names []string
	for n := range perRound {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Printf("%s, %d requests on %d connections, %d rounds (medians); last round: %s\n\n", *fx, *calls, *conc, *rounds, counters)
	fmt.Println("| BPF program | runs/request | ns/run | µs/request |")
	fmt.Println("|---|---:|---:|---:|")
	var total float64
	for _, n := range names {
		var runs, ns, us []float64
		for _, s := range perRound[n] {
			runs = append(runs, float64(s.runs)/float64(*calls))
			ns = append(ns, float64(s.ns)/float64(s.runs))
			us = append(us, float64(s.ns)/1e3/float64(*calls))
		}
		total += median(us)
		fmt.Printf("| %s | %.2f | %.0f | %.2f |\n", n, median(runs), median(ns), median(us))
	}
	fmt.Printf("| total | | | %.2f |\n", total)
}

// round traces one run of argv and returns the statistics of the BPF
// programs loaded while it ran, sampled until they are unloaded, and the
// propagation counters that moved.
func round(argv []string) (map[string]stat, string, error) {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, "", fmt.Errorf("enable BPF stats: %w", err)
	}
	defer stats.Close()
	var out bytes.Buffer
	s := &agent.Session{Command: argv, Stdout: &out, Tracer: agent.Config{Inject: true},
		Exporters: []span.Exporter{discard{}}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	before := newestProgram()
	var (
		mu   sync.Mutex
		last = map[ebpf.ProgramID]struct {
			name string
			stat
		}{}
		done = make(chan struct{})
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			sample(&mu, before, last)
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	res, err := s.Run(ctx)
	close(done)
	wg.Wait()
	if err != nil {
		return nil, "", err
	}
	if !strings.HasSuffix(strings.TrimSpace(out.String()), "ok") {
		return nil, "", fmt.Errorf("fixture said %q", out.String())
	}
	var moved []string
	for _, c := range res.Counters {
		if strings.HasPrefix(c.Name, "propagation_") && c.Value > 0 {
			moved = append(moved, fmt.Sprintf("%s %d", c.Name, c.Value))
		}
	}
	byName := map[string]stat{}
	for _, p := range last {
		s := byName[p.name]
		s.runs += p.runs
		s.ns += p.ns
		byName[p.name] = s
	}
	return byName, strings.Join(moved, ", "), nil
}

// newestProgram is the highest id of a loaded BPF program.
func newestProgram() ebpf.ProgramID {
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return id
		}
		id = next
	}
}

// sample records the counters of the programs loaded after program id
// after (this round's: latscope's), those that ran.
func sample(mu *sync.Mutex, after ebpf.ProgramID, last map[ebpf.ProgramID]struct {
	name string
	stat
}) {
	mu.Lock()
	defer mu.Unlock()
	id := after
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		st, err2 := p.Stats()
		p.Close()
		if err != nil || err2 != nil || st.RunCount == 0 {
			continue
		}
		last[id] = struct {
			name string
			stat
		}{info.Name, stat{st.RunCount, uint64(st.Runtime)}}
	}
}

type discard struct{}

func (discard) Export([]*span.Span) error { return nil }
func (discard) Close() error              { return nil }

func median(v []float64) float64 {
	sort.Float64s(v)
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}
