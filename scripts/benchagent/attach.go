package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/latscope/latscope/agent"
)

// attachPatterns are the functions section 2 probes in the service
// fixture: with the runtime's goroutine hooks and the net/http server
// library's probes they make 199 probe sites (Go 1.26).
var attachPatterns = []string{"net/http.(*conn).*", "net/http.(*response).*", "net/http.(*Request).*", "net/http.(*connReader).*", "main.*"}

// attachTimes is one Attach and Detach cycle of one tracer.
type attachTimes struct {
	attach, detach time.Duration
	sites, links   int
}

// benchAttach is section 2: Tracer.Attach and Tracer.Detach of ~200
// probe sites in a running service fixture, in this process, with
// uprobe_multi links and with perf-event uprobes. Each round runs a
// fresh copy of the binary (another inode): each tracer's first Attach
// parses it, a second one (uprobe_multi only) finds it parsed.
func (b *bench) benchAttach() error {
	// Warnings (functions inlined at some call sites) are expected for
	// these globs: only errors are shown.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	multi, err := agent.New(agent.Config{SettleReturns: -1, Logger: log})
	if err != nil {
		return fmt.Errorf("load the tracer (uprobe_multi): %w", err)
	}
	defer multi.Close()
	perf, err := agent.New(agent.Config{SettleReturns: -1, PerfUprobes: true, Logger: log})
	if err != nil {
		return fmt.Errorf("load the tracer (perf-event uprobes): %w", err)
	}
	defer perf.Close()

	var mCold, mWarm, mDet, pCold, pDet []float64
	var mSites, mLinks, pSites, pLinks int
	for round := range b.opt.rounds {
		dir := filepath.Join(b.dir, "attach", strconv.Itoa(round))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		path := filepath.Join(dir, "bench-attach")
		if err := copyFile(b.svc, path); err != nil {
			return err
		}
		svc, _, err := b.startService(path)
		if err != nil {
			return err
		}
		run := func(tr *agent.Tracer, what string) (attachTimes, error) {
			t0 := time.Now()
			p, err := tr.Attach(svc.pid(), attachPatterns)
			if err != nil {
				return attachTimes{}, fmt.Errorf("round %d: attach %s (%s) to pid %d: %w", round+1, strings.Join(attachPatterns, ","), what, svc.pid(), err)
			}
			t := attachTimes{attach: time.Since(t0), sites: p.Probes(), links: p.Links()}
			t0 = time.Now()
			if err := tr.Detach(p); err != nil {
				return attachTimes{}, fmt.Errorf("round %d: detach %s from pid %d: %w", round+1, what, svc.pid(), err)
			}
			t.detach = time.Since(t0)
			return t, nil
		}
		cold, err := run(multi, "uprobe_multi, cold")
		if err == nil {
			var warm attachTimes
			if warm, err = run(multi, "uprobe_multi, parsed binary cached"); err == nil {
				mCold, mWarm = append(mCold, ms(cold.attach)), append(mWarm, ms(warm.attach))
				mDet = append(mDet, ms(cold.detach), ms(warm.detach))
				mSites, mLinks = cold.sites, cold.links
			}
		}
		if err == nil && round < b.opt.perfRounds {
			var pc attachTimes
			if pc, err = run(perf, "perf-event uprobes, cold"); err == nil {
				pCold, pDet = append(pCold, ms(pc.attach)), append(pDet, ms(pc.detach))
				pSites, pLinks = pc.sites, pc.links
			}
		}
		svc.stop(syscall.SIGKILL, 5*time.Second)
		os.RemoveAll(dir)
		if err != nil {
			return err
		}
	}
	if mSites != pSites && len(pCold) > 0 {
		return fmt.Errorf("uprobe_multi attached %d sites, perf-event uprobes %d: not the same sites", mSites, pSites)
	}
	title := fmt.Sprintf("2. Attach and detach of %d probe sites in a running service fixture, in process (agent.Tracer), ms", mSites)
	rows := []row{
		{name: fmt.Sprintf("uprobe_multi (%d links): Attach, cold (parses the binary)", mLinks), vals: mCold, prec: 1},
		{name: "uprobe_multi: Attach, parsed binary cached (re-attach after Detach)", vals: mWarm, prec: 1},
		{name: "uprobe_multi: Detach (last process: every link closed)", vals: mDet, prec: 1, goal: "≤ 100 ms", met: atMost(100)},
	}
	if len(pCold) > 0 {
		rows = append(rows,
			row{name: fmt.Sprintf("perf-event uprobes (%d links): Attach, cold", pLinks), vals: pCold, prec: 1},
			row{name: "perf-event uprobes: Detach (last process: every link closed)", vals: pDet, prec: 1, goal: "≤ 100 ms", met: atMost(100)})
	}
	printTable(title, rows)
	fmt.Printf("Patterns: %s (with the runtime hooks and the net/http server library: %d sites). uprobe_multi: %d rounds, Detach after the cold and the cached Attach each (%d values); perf-event uprobes: %d rounds (-perf-rounds), cold Attach only.\n\n",
		strings.Join(attachPatterns, " "), mSites, len(mCold), len(mDet), len(pCold))
	return nil
}
