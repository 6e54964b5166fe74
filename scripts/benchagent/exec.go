package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

const (
	attachLimit = 10 * time.Second // for the agent to list a started process
	detachLimit = 30 * time.Second // for it to log that it stopped tracing one
)

// benchExec is section 1: exec to attached for restarts of one file and
// for a fresh copy (another inode) each time, -n starts of each per
// round, under one agent.
func (b *bench) benchExec() error {
	a, err := b.startAgent(nil, "--name", svcName)
	if err != nil {
		return err
	}
	defer a.stopAgent()
	var rMed, rP99, rDet, fMed, fP99, fDet []float64
	scanned := 0
	for round := range b.opt.rounds {
		// The first start of a round is not counted: the fresh copies
		// of the previous round pushed this file's parsed binary out of
		// the agent's cache (8 entries).
		if _, _, err := b.cycle(a, b.svc); err != nil {
			return fmt.Errorf("round %d, first start of %s: %w", round+1, b.svc, err)
		}
		var att, det []float64
		for i := range b.opt.n {
			at, dt, err := b.cycle(a, b.svc)
			if errors.Is(err, errScanned) {
				scanned++
				continue
			}
			if err != nil {
				return fmt.Errorf("round %d, restart %d of %s: %w", round+1, i+1, b.svc, err)
			}
			att, det = append(att, ms(at)), append(det, ms(dt))
		}
		rMed, rP99, rDet = append(rMed, median(att)), append(rP99, percentile(att, 99)), append(rDet, median(det))

		att, det = nil, nil
		for i := range b.opt.n {
			dir := filepath.Join(b.dir, "fresh", strconv.Itoa(round*b.opt.n+i))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", dir, err)
			}
			path := filepath.Join(dir, svcName)
			if err := copyFile(b.svc, path); err != nil {
				return err
			}
			at, dt, err := b.cycle(a, path)
			os.RemoveAll(dir)
			if errors.Is(err, errScanned) {
				scanned++
				continue
			}
			if err != nil {
				return fmt.Errorf("round %d, fresh copy %d: %w", round+1, i+1, err)
			}
			att, det = append(att, ms(at)), append(det, ms(dt))
		}
		fMed, fP99, fDet = append(fMed, median(att)), append(fP99, percentile(att, 99)), append(fDet, median(det))
	}
	printTable(fmt.Sprintf("1. Exec to attached: the service fixture (stripped) started %d times per variant and round, one after the other, ms", b.opt.n), []row{
		{name: "restart of the same file (parsed binary kept): median", vals: rMed, prec: 1, goal: "≤ 100 ms", met: atMost(100)},
		{name: fmt.Sprintf("restart of the same file: p99 (of %d)", b.opt.n), vals: rP99, prec: 1},
		{name: "fresh copy each time (new inode, cold parse): median", vals: fMed, prec: 1, goal: "≤ 100 ms", met: atMost(100)},
		{name: fmt.Sprintf("fresh copy each time: p99 (of %d)", b.opt.n), vals: fP99, prec: 1},
		{name: "kill → \"stopped tracing\" logged (last process of the file: its probes removed), restart: median", vals: rDet, prec: 1},
		{name: "kill → \"stopped tracing\" logged, fresh copy: median", vals: fDet, prec: 1},
	})
	fmt.Printf("exec to attached is the agent's own execToAttachedNs (/api/status: kernel exec event → probes attached); the per-round value is the median (or p99) of that round's starts.\n")
	if scanned > 0 {
		fmt.Printf("%d starts were found by the /proc rescan, not at exec, and are not counted.\n", scanned)
	}
	fmt.Println()
	return nil
}

// errScanned: the agent found the process by its /proc rescan (it missed
// the exec), so it has no exec-to-attached time.
var errScanned = errors.New("found by the rescan, not at exec")

// cycle starts the service at path, waits until the agent lists it, then
// kills it and waits until the agent has stopped tracing it (detached).
// It returns the agent's exec-to-attached time and the time from the
// kill to the agent's "stopped tracing" line.
func (b *bench) cycle(a *agentProc, path string) (attached, detached time.Duration, err error) {
	p, _, err := b.startService(path)
	if err != nil {
		return 0, 0, err
	}
	defer p.stop(syscall.SIGKILL, 5*time.Second)
	ps, err := a.waitListed(p.pid(), attachLimit)
	if err != nil {
		return 0, 0, err
	}
	killed := time.Now()
	p.stop(syscall.SIGKILL, 5*time.Second)
	at, err := a.waitStopped(p.pid(), detachLimit)
	if err != nil {
		return 0, 0, err
	}
	st, err := a.status()
	if err != nil {
		return 0, 0, err
	}
	if _, err := listed(st, p.pid()); err == nil {
		return 0, 0, fmt.Errorf("pid %d still listed in /api/status after the agent logged that it stopped tracing it", p.pid())
	}
	if ps.ExecToAttachedNS == 0 {
		return 0, 0, errScanned
	}
	return time.Duration(ps.ExecToAttachedNS), at.Sub(killed), nil
}

// replicaRound is what one round of section 3 reads.
type replicaRound struct {
	first, others     float64 // exec to attached, ms: the first replica, the median of the others
	rss1, rss10       float64 // agent RSS, MiB, with 1 and with all replicas
	links1, links10   float64 // probe_links
	probes1, probes10 float64 // probes_attached
	images            float64 // executables_traced with all replicas
}

// benchReplicas is section 3: an agent with 1 and then 10 replicas of
// one binary; a fresh agent and a fresh copy of the binary each round
// (the agent keeps the parsed binaries of the last 8 executables it
// traced for 5 minutes, which would add up round after round).
func (b *bench) benchReplicas() error {
	const replicas = 10
	var rss0 []float64
	var rs []replicaRound
	for round := range b.opt.rounds {
		a, err := b.startAgent(nil, "--name", svcName)
		if err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond)
		rss, err := vmRSS(a.pid())
		if err != nil {
			a.stopAgent()
			return err
		}
		r, err := b.replicas(a, round, replicas)
		a.stopAgent()
		if err != nil {
			return fmt.Errorf("round %d: %w", round+1, err)
		}
		rss0, rs = append(rss0, mib(rss)), append(rs, r)
	}
	each := func(f func(replicaRound) float64) []float64 {
		out := make([]float64, len(rs))
		for i, r := range rs {
			out[i] = f(r)
		}
		return out
	}
	printTable("3. Replicas: 1 against 10 processes of one binary (a fresh agent and a fresh copy of the binary each round)", []row{
		{name: "exec → attached, first replica (parses the binary), ms", vals: each(func(r replicaRound) float64 { return r.first }), prec: 1, goal: "≤ 100 ms", met: atMost(100)},
		{name: "exec → attached, replicas 2–10 (share its probes), median, ms", vals: each(func(r replicaRound) float64 { return r.others }), prec: 1, goal: "≤ 100 ms", met: atMost(100)},
		{name: "agent RSS, no process traced, MiB", vals: rss0, prec: 1},
		{name: "agent RSS, 1 replica, MiB", vals: each(func(r replicaRound) float64 { return r.rss1 }), prec: 1},
		{name: "agent RSS, 10 replicas, MiB", vals: each(func(r replicaRound) float64 { return r.rss10 }), prec: 1},
		{name: "agent RSS growth per extra replica, KiB", vals: each(func(r replicaRound) float64 { return (r.rss10 - r.rss1) * 1024 / (replicas - 1) }), prec: 0, goal: "≤ 1024 KiB (no growth in kind)", met: atMost(1024)},
		{name: "probe_links, 1 replica", vals: each(func(r replicaRound) float64 { return r.links1 }), prec: 0},
		{name: "probe_links, 10 replicas − 1 replica", vals: each(func(r replicaRound) float64 { return r.links10 - r.links1 }), prec: 0, goal: "0 in every round", met: allEqual(0)},
		{name: "probes_attached, 1 replica", vals: each(func(r replicaRound) float64 { return r.probes1 }), prec: 0},
		{name: "probes_attached, 10 replicas − 1 replica", vals: each(func(r replicaRound) float64 { return r.probes10 - r.probes1 }), prec: 0, goal: "0 in every round", met: allEqual(0)},
		{name: "executables_traced, 10 replicas", vals: each(func(r replicaRound) float64 { return r.images }), prec: 0, goal: "1", met: allEqual(1)},
	})
	fmt.Printf("Replicas are started one after the other, each once the previous one is listed; RSS is read 0.5 s after the agent is ready, after the 1st and after the 10th.\n\n")
	return nil
}

// replicas starts n replicas of a fresh copy of the service under agent
// a, one after the other, reads what section 3 reports after the first
// and the last, and stops them.
func (b *bench) replicas(a *agentProc, round, n int) (replicaRound, error) {
	var r replicaRound
	dir := filepath.Join(b.dir, "replicas", strconv.Itoa(round))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, fmt.Errorf("create %s: %w", dir, err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, svcName)
	if err := copyFile(b.svc, path); err != nil {
		return r, err
	}
	var started []*proc
	defer func() {
		for _, p := range started {
			p.stop(syscall.SIGKILL, 5*time.Second)
		}
	}()
	var rest []float64
	for i := range n {
		p, _, err := b.startService(path)
		if err != nil {
			return r, fmt.Errorf("replica %d: %w", i+1, err)
		}
		started = append(started, p)
		ps, err := a.waitListed(p.pid(), attachLimit)
		if err != nil {
			return r, fmt.Errorf("replica %d: %w", i+1, err)
		}
		if i == 0 {
			r.first = ms(time.Duration(ps.ExecToAttachedNS))
		} else {
			rest = append(rest, ms(time.Duration(ps.ExecToAttachedNS)))
		}
		if i != 0 && i != n-1 {
			continue
		}
		time.Sleep(500 * time.Millisecond) // let the agent's heap settle
		st, err := a.status()
		if err != nil {
			return r, err
		}
		rss, err := vmRSS(a.pid())
		if err != nil {
			return r, err
		}
		if i == 0 {
			r.rss1, r.links1, r.probes1 = mib(rss), gauge(st, "probe_links"), gauge(st, "probes_attached")
			continue
		}
		r.rss10, r.links10, r.probes10 = mib(rss), gauge(st, "probe_links"), gauge(st, "probes_attached")
		r.images = gauge(st, "executables_traced")
		if got := gauge(st, "processes_traced"); got != float64(n) {
			return r, fmt.Errorf("the agent traces %v processes, want %d", got, n)
		}
	}
	r.others = median(rest)
	for _, p := range started {
		p.stop(syscall.SIGKILL, 5*time.Second)
	}
	for _, p := range started {
		if _, err := a.waitStopped(p.pid(), detachLimit); err != nil {
			return r, err
		}
	}
	return r, nil
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// mib is n bytes in MiB.
func mib(n int64) float64 { return float64(n) / (1 << 20) }
