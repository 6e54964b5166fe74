package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/latscope/latscope/agent/callchain"
	"github.com/latscope/latscope/agent/config"
	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/agent/pods"
	"github.com/latscope/latscope/symbolizer"
)

// procTable is what the node knows of the host's processes.
type procTable struct {
	traced map[int]*nodeProc
	// evaluated: processes already considered (pid → start time), so a
	// rescan inspects only new ones. Bounded by live processes.
	evaluated map[int]uint64
	// skipped: selected processes that cannot be traced, reported once.
	skipped map[int]SkippedProcess
	// removals: processes detached whose builder state goes once the
	// ring buffer has been drained of their last calls.
	removals map[int]time.Time
	// podWaiting: processes in a pod the resolver does not know yet
	// (node_pods.go), bounded by maxPodWaiting.
	podWaiting map[int]podWaiting
	scanned    bool // the first scan is done
	// saidUnreadable: the log has said that some process is unreadable.
	saidUnreadable bool
	// badExe: executables Attach refused, and why: their next processes
	// are not read again (bounded by maxBadExe).
	badExe map[fileID]error
	// counts
	attached, detached, failed uint64
	podUnresolved              uint64 // processes matched without their pod: it stayed unknown
}

func (p *procTable) init() {
	p.traced = map[int]*nodeProc{}
	p.evaluated = map[int]uint64{}
	p.skipped = map[int]SkippedProcess{}
	p.removals = map[int]time.Time{}
	p.podWaiting = map[int]podWaiting{}
	p.badExe = map[fileID]error{}
}

// maxBadExe bounds the executables remembered as untraceable.
const maxBadExe = 1024

// nodeProc is one traced process.
type nodeProc struct {
	*Process
	start    uint64 // start time (clock ticks): with the pid, the process instance
	exe      string
	pod      *pods.Metadata // nil outside a pod
	attached time.Time
	// execToAttached: from the kernel's exec event to probes attached;
	// zero when the process was found by a scan.
	execToAttached time.Duration
}

// SkippedProcess is a process the selectors picked that cannot be
// traced, and why.
type SkippedProcess struct {
	PID  int    `json:"pid"`
	Name string `json:"name"`
	Exe  string `json:"exe"`
	// Selected: the selectors picked it and latscope cannot trace it;
	// otherwise the agent could not even read it to match the selectors
	// (it lacks a capability).
	Selected bool      `json:"selected"`
	Reason   string    `json:"reason"`
	Time     time.Time `json:"time"`
}

// seriesIdle: RED series that observed nothing for this long are
// deleted (label values that come and go free their place).
const seriesIdle = 10 * time.Minute

// builderDrain is how long a detached process's builder state waits for
// the ring buffer to be drained of its last calls (the reader drains
// every nodePoll, 50 ms).
const builderDrain = time.Second

// discover runs process discovery until ctx is done: exec and exit
// events from the kernel, a rescan of /proc every RescanInterval, and
// reloads.
func (n *Node) discover(ctx context.Context, readErr <-chan error) error {
	n.rescan()
	n.mu.Lock()
	n.procs.scanned = true
	rescanEvery := n.cfg.RescanInterval
	n.mu.Unlock()
	rescan := time.NewTicker(rescanEvery)
	defer rescan.Stop()
	housekeeping := time.NewTicker(builderDrain / 4)
	defer housekeeping.Stop()
	expireSeries := time.NewTicker(time.Minute)
	defer expireSeries.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			return err
		case ev := <-n.watcher.Events():
			switch ev.Type {
			case discovery.Exec:
				n.consider(ev.PID, ev.Time)
			case discovery.Exit:
				// A late exit of a pid's previous process must not
				// detach the one now running under it.
				n.mu.Lock()
				t := n.procs.traced[ev.PID]
				n.mu.Unlock()
				if t == nil || ev.StartTime == 0 || t.start == ev.StartTime {
					n.exited(ev.PID)
				}
			}
		case <-rescan.C:
			n.rescan()
		case cfg := <-n.reload:
			n.applyReload(cfg)
		case <-n.podsChanged:
			n.retryPods()
		case <-housekeeping.C:
			n.removeDrained(false)
			n.retryPods()
			var samples int64
			if n.samples != nil {
				samples = n.samples.Stats().Bytes
			}
			n.memLimit.update(n.store.Stats().Bytes, samples)
		case <-expireSeries.C:
			n.red.Expire(seriesIdle)
		}
	}
}

// rescan reconciles with /proc: processes the events missed (started
// before the agent, or dropped events) are considered, traced ones that
// are gone are detached.
func (n *Node) rescan() {
	pids, err := discovery.PIDs()
	if err != nil {
		n.log.Warn("rescan processes", "err", err)
		return
	}
	live := make(map[int]bool, len(pids))
	for _, pid := range pids {
		live[pid] = true
		n.mu.Lock()
		_, seen := n.procs.evaluated[pid]
		ports := usesPort(n.sel)
		n.mu.Unlock()
		// A port selector can match a process only once it listens:
		// processes not picked yet are looked at again.
		if !seen || ports {
			n.consider(pid, time.Time{})
		}
	}
	n.mu.Lock()
	var gone []int
	for pid := range n.procs.traced {
		if !live[pid] {
			gone = append(gone, pid)
		}
	}
	for pid := range n.procs.evaluated {
		if !live[pid] {
			delete(n.procs.evaluated, pid)
			delete(n.procs.skipped, pid)
			delete(n.procs.podWaiting, pid)
		}
	}
	n.mu.Unlock()
	for _, pid := range gone {
		n.exited(pid)
	}
}

// consider looks at process pid (exec'd at execTime, zero when found by a
// scan) and traces it if the selectors pick it.
func (n *Node) consider(pid int, execTime time.Time) {
	if pid == n.self {
		return
	}
	p, err := discovery.Inspect(pid)
	if err != nil {
		// Gone already or a kernel thread: nothing a selector could
		// pick. Unreadable (the agent lacks CAP_SYS_PTRACE or
		// CAP_DAC_READ_SEARCH): said, since it might be one to trace.
		n.mu.Lock()
		delete(n.procs.podWaiting, pid)
		n.mu.Unlock()
		if errors.Is(err, fs.ErrPermission) {
			n.unreadable(pid, err)
		}
		return
	}
	n.mu.Lock()
	if t, ok := n.procs.traced[pid]; ok {
		if t.start == p.StartTime && execTime.IsZero() {
			n.mu.Unlock()
			return // traced already
		}
		// The pid exec'd another program, or was reused.
		n.mu.Unlock()
		n.exited(pid)
		n.mu.Lock()
	}
	_, waiting := n.procs.podWaiting[pid]
	if start, ok := n.procs.evaluated[pid]; ok && start == p.StartTime && execTime.IsZero() && !usesPort(n.sel) && !waiting {
		n.mu.Unlock()
		return
	}
	n.procs.evaluated[pid] = p.StartTime
	sel := n.sel
	funcs := n.cfg.Funcs
	n.mu.Unlock()

	if (fileID{p.Dev, p.Ino}) == n.selfExe {
		return // another latscope
	}
	pod, known := n.podOf(p, execTime)
	if !known {
		return // considered again when its pod is known
	}
	if ok, _ := sel.Match(p); !ok {
		return
	}
	exe := fileID{p.Dev, p.Ino}
	n.mu.Lock()
	refusal, refused := n.procs.badExe[exe]
	n.mu.Unlock()
	if refused {
		// Its executable was read and refused already: said once.
		n.skip(p, refusal, false)
		return
	}
	proc, err := n.tracer.Attach(pid, funcs)
	if err != nil {
		if errors.Is(err, symbolizer.ErrProcessGone) {
			return
		}
		n.mu.Lock()
		if len(n.procs.badExe) >= maxBadExe {
			clear(n.procs.badExe)
		}
		n.procs.badExe[exe] = err
		n.mu.Unlock()
		n.skip(p, err, true)
		return
	}
	if pod != nil {
		// Before the builder has the process: no span shares Info yet.
		proc.Info.Resource = pod.Resource()
		if pod.ServiceName != "" {
			proc.Info.ServiceName = pod.ServiceName
		}
	}
	np := &nodeProc{Process: proc, start: p.StartTime, exe: p.Exe, pod: pod, attached: time.Now()}
	if !execTime.IsZero() {
		np.execToAttached = np.attached.Sub(execTime)
	}
	n.bmu.Lock()
	if _, ok := n.procs.removals[pid]; ok {
		// The same pid's previous process still has builder state.
		n.builder.RemoveProcess(uint32(pid))
	}
	n.builder.AddProcess(uint32(pid), proc.Info, builderFuncs(proc))
	n.bmu.Unlock()
	n.mu.Lock()
	delete(n.procs.removals, pid)
	n.procs.traced[pid] = np
	n.procs.attached++
	n.mu.Unlock()
	args := []any{"pid", pid, "service", proc.Info.ServiceName, "exe", p.Exe, "go", proc.Binary.GoVersion, "functions", len(proc.Funcs), "probes", proc.Probes()}
	if pod != nil {
		args = append(args, "namespace", pod.Namespace, "pod", pod.Pod, "container", pod.Container)
	}
	if np.execToAttached > 0 {
		args = append(args, "after_exec", np.execToAttached.Round(10*time.Microsecond))
	}
	n.log.Info("tracing", args...)
}

// unreadable records a process the agent cannot inspect, once; the log
// says it for the first such process only (without the capabilities,
// every other user's process is one).
func (n *Node) unreadable(pid int, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.procs.evaluated[pid]; ok {
		return
	}
	n.procs.evaluated[pid] = 0
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	name := strings.TrimSpace(string(comm))
	n.procs.skipped[pid] = SkippedProcess{PID: pid, Name: name, Reason: err.Error(), Time: time.Now()}
	n.procs.failed++
	if !n.procs.saidUnreadable {
		n.procs.saidUnreadable = true
		n.log.Warn("cannot read some processes: they can be neither selected nor traced (the agent needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH; /api/status lists them under skipped)", "pid", pid, "name", name, "err", err)
	}
}

// skip records why a selected process cannot be traced, and logs it
// (say: the first process of its executable; the others are listed).
func (n *Node) skip(p *discovery.Proc, err error, say bool) {
	s := SkippedProcess{PID: p.PID, Name: p.Name, Exe: p.Exe, Selected: true, Reason: err.Error(), Time: time.Now()}
	n.mu.Lock()
	_, again := n.procs.skipped[p.PID]
	n.procs.skipped[p.PID] = s
	if !again {
		n.procs.failed++
	}
	n.mu.Unlock()
	if say {
		n.log.Warn("selected process cannot be traced (said once per executable; /api/status lists every such process)", "pid", p.PID, "exe", p.Exe, "reason", err)
	}
}

// exited stops tracing pid, if traced, and frees what it held.
func (n *Node) exited(pid int) {
	n.mu.Lock()
	np, ok := n.procs.traced[pid]
	delete(n.procs.traced, pid)
	delete(n.procs.evaluated, pid)
	delete(n.procs.skipped, pid)
	delete(n.procs.podWaiting, pid)
	if ok {
		n.procs.removals[pid] = time.Now().Add(builderDrain)
		n.procs.detached++
	}
	n.mu.Unlock()
	if !ok {
		return
	}
	if err := n.tracer.Detach(np.Process); err != nil {
		n.log.Warn("detach", "pid", pid, "err", err)
	}
	n.log.Info("stopped tracing", "pid", pid, "service", np.Info.ServiceName)
}

// removeDrained drops the builder state of detached processes whose last
// calls have been read (all of them, when all is set).
func (n *Node) removeDrained(all bool) {
	now := time.Now()
	n.mu.Lock()
	var due []int
	for pid, at := range n.procs.removals {
		if all || now.After(at) {
			due = append(due, pid)
			delete(n.procs.removals, pid)
		}
	}
	n.mu.Unlock()
	if len(due) == 0 {
		return
	}
	n.bmu.Lock()
	for _, pid := range due {
		n.builder.RemoveProcess(uint32(pid))
	}
	n.bmu.Unlock()
}

// detachAll stops tracing every process (shutdown).
func (n *Node) detachAll() {
	n.mu.Lock()
	pids := make([]int, 0, len(n.procs.traced))
	for pid := range n.procs.traced {
		pids = append(pids, pid)
	}
	n.mu.Unlock()
	for _, pid := range pids {
		n.exited(pid)
	}
}

// applyReload takes cfg's selectors; what else changed needs a restart.
func (n *Node) applyReload(cfg *config.Config) {
	n.mu.Lock()
	old := n.cfg
	changed := restartOnly(old, cfg)
	n.cfg.Selectors, n.cfg.Exclude = cfg.Selectors, cfg.Exclude
	n.sel = discovery.Selectors{Include: cfg.Selectors, Exclude: cfg.Exclude}
	// Every running process is considered again; traced ones stay.
	clear(n.procs.evaluated)
	clear(n.procs.skipped)
	n.mu.Unlock()
	if len(changed) > 0 {
		n.log.Warn("configuration reloaded: selectors applied; these settings need a restart to take effect", "fields", strings.Join(changed, ","))
	} else {
		n.log.Info("configuration reloaded: selectors applied")
	}
	n.rescan()
}

// restartOnly names the settings that differ between a and b other than
// the selectors, which a reload applies.
func restartOnly(a, b *config.Config) []string {
	var out []string
	for _, k := range a.Changed(b) {
		if k != "selectors" && k != "exclude" {
			out = append(out, k)
		}
	}
	return out
}

// builderFuncs describes p's traced functions for the builder.
func builderFuncs(p *Process) []callchain.Func {
	funcs := make([]callchain.Func, len(p.Funcs))
	for i, f := range p.Funcs {
		funcs[i] = callchain.Func{Name: f.Func.Name, File: f.Func.File, Line: f.Func.Line}
	}
	return funcs
}

// String describes a skipped process for a person.
func (s SkippedProcess) String() string {
	return fmt.Sprintf("pid %d (%s): %s", s.PID, s.Exe, s.Reason)
}

// usesPort: some selector picks by listening port, which a process may
// open only after its exec; such selectors are matched at every rescan.
func usesPort(s discovery.Selectors) bool {
	for _, sel := range s.Include {
		if sel.Port != 0 {
			return true
		}
	}
	for _, sel := range s.Exclude {
		if sel.Port != 0 {
			return true
		}
	}
	return false
}
