// Command probecost measures what tracing one Go function costs per call,
// side by side in one run: the untraced function, an empty BPF program
// and latscope's call tracer, each at the sites latscope chooses and at
// the naive sites (first byte + RET). Every variant runs the fixture's
// `bench N` loop in a fresh process, -runs times, interleaved; the table
// shows medians. Needs root.
//
//	go run ./scripts/probecost [-runs 5] [-calls 100000]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/symbolizer"
)

const target = "main.benchTarget"

// anomalies counts lost or unmatched events per site policy (naive: true).
var anomalies = map[bool]uint64{}

func main() {
	runs := flag.Int("runs", 5, "runs per variant (medians are reported)")
	calls := flag.Int("calls", 100000, "calls per run")
	flag.Parse()
	bin, err := fixture.BuildErr("calls", "local", fixture.Default)
	if err != nil {
		log.Fatal(err)
	}
	sym, err := symbolizer.Open(bin)
	if err != nil {
		log.Fatal(err)
	}
	f, err := sym.Lookup(target)
	if err != nil {
		log.Fatal(err)
	}
	sites, err := sym.Sites(f)
	if err != nil {
		log.Fatal(err)
	}
	// The agent's choice: entry after the stack check, returns where the
	// callers resume when they can be found, else at each RET.
	exits, notResumed := sym.Exits(f, sites, 0)
	var chosen, naive []symbolizer.Site
	chosen = append(chosen, sites.CallEntry)
	naive = append(naive, sites.NaiveEntry)
	for _, e := range exits {
		chosen = append(chosen, e.Site)
	}
	for _, e := range sites.Exits {
		naive = append(naive, e.Ret)
	}
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Kprobe, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		log.Fatalf("load empty program (root needed): %v", err)
	}
	args := []string{bin, "bench", strconv.Itoa(*calls)}
	variants := []struct {
		name string
		run  func() (float64, error)
	}{
		{"untraced", func() (float64, error) { return runEmpty(args, empty, nil) }},
		{"empty program, chosen sites", func() (float64, error) { return runEmpty(args, empty, chosen) }},
		{"empty program, naive sites", func() (float64, error) { return runEmpty(args, empty, naive) }},
		{"latscope, chosen sites", func() (float64, error) { return runLatscope(args, false) }},
		{"latscope, naive sites", func() (float64, error) { return runLatscope(args, true) }},
	}
	// Single sites, to show where the cost is: each entry candidate and
	// each instruction of the first return path's epilogue.
	single := []symbolizer.Site{sites.NaiveEntry, sites.Entry}
	single = append(single, sites.Exits[0].Candidates...)
	if notResumed == nil {
		single = append(single, exits[0].Site)
	}
	for _, site := range single {
		site := site
		kind := "exit"
		switch {
		case site.Addr == sites.NaiveEntry.Addr || site.Addr == sites.Entry.Addr:
			kind = "entry"
		case site.Addr < f.Entry || site.Addr >= f.End:
			kind = "exit (in the caller)"
		}
		variants = append(variants, struct {
			name string
			run  func() (float64, error)
		}{fmt.Sprintf("empty program, one %s site: %s (%s)", kind, site.Insn, emulation(site)), func() (float64, error) {
			return runEmpty(args, empty, []symbolizer.Site{site})
		}})
	}
	results := make([][]float64, len(variants))
	for r := 0; r < *runs; r++ {
		for i, v := range variants {
			ns, err := v.run()
			if err != nil {
				log.Fatalf("%s: %v", v.name, err)
			}
			results[i] = append(results[i], ns)
		}
	}
	where := "in its callers"
	if notResumed != nil {
		where = fmt.Sprintf("in the function (%v)", notResumed)
	}
	fmt.Printf("%s, %d calls per run, %d runs; sites: entry %q, exit %q %s (%d sites)\n\n",
		target, *calls, *runs, sites.Entry.Insn, exits[0].Insn, where, len(exits))
	fmt.Println("| variant | ns/call (median) | cost over untraced | × empty program, same sites | runs |")
	fmt.Println("|---|---:|---:|---:|---|")
	base := median(results[0])
	for i, v := range variants {
		m := median(results[i])
		ratio := ""
		switch i {
		case 3:
			ratio = fmt.Sprintf("%.3f", (m-base)/(median(results[1])-base))
		case 4:
			ratio = fmt.Sprintf("%.3f", (m-base)/(median(results[2])-base))
		}
		fmt.Printf("| %s | %.1f | %.1f | %s | %s |\n", v.name, m, m-base, ratio, fmtRuns(results[i]))
	}
	fmt.Printf("\nunmatched or lost events over all runs: chosen sites %d, naive sites %d\n", anomalies[false], anomalies[true])
}

// runEmpty starts the bench stopped at exec, attaches prog at sites
// (none: untraced) and returns the ns/call it printed.
func runEmpty(args []string, prog *ebpf.Program, sites []symbolizer.Site) (float64, error) {
	var out bytes.Buffer
	l, err := agent.Launch(args, &out, os.Stderr)
	if err != nil {
		return 0, err
	}
	ex, err := link.OpenExecutable(args[0])
	if err != nil {
		return 0, err
	}
	var links []link.Link
	for _, s := range sites {
		up, err := ex.Uprobe("", prog, &link.UprobeOptions{Address: s.Offset, PID: l.PID})
		if err != nil {
			return 0, err
		}
		links = append(links, up)
	}
	if err := l.Resume(); err != nil {
		return 0, err
	}
	err = l.Cmd.Wait()
	for _, up := range links {
		up.Close()
	}
	if err != nil {
		return 0, err
	}
	return parse(out.String())
}

// runLatscope traces the bench with the full pipeline (ring buffer
// reader and call-tree rebuild included; spans are discarded).
func runLatscope(args []string, naiveSites bool) (float64, error) {
	var out bytes.Buffer
	s := &agent.Session{
		Command:  args,
		Stdout:   &out,
		Patterns: []string{target},
		Tracer:   agent.Config{NaiveSites: naiveSites},
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	res, err := s.Run(context.Background())
	if err != nil {
		return 0, err
	}
	// At the naive entry (the stack check itself) a call that morestack
	// re-enters, e.g. on a preemption request, fires twice: such extra
	// frames show up as losses. At the chosen sites there must be none.
	if lost := res.Lost(); lost > 0 {
		anomalies[naiveSites] += lost
		if !naiveSites {
			return 0, fmt.Errorf("%d events lost at the chosen sites: %+v", lost, res.Counters)
		}
	}
	return parse(out.String())
}

func parse(out string) (float64, error) {
	f := strings.Fields(out) // "ns/call 12.3 sum N"
	if len(f) < 2 || f[0] != "ns/call" {
		return 0, fmt.Errorf("unexpected bench output %q", out)
	}
	return strconv.ParseFloat(f[1], 64)
}

func emulation(s symbolizer.Site) string {
	if s.Emulated {
		return "emulated"
	}
	return "single-stepped"
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtRuns(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(parts, " ")
}
