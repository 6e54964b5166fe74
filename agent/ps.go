package agent

import (
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/symbolizer"
)

// HostProcess is one Go process of the host, as `latscope ps` lists it.
type HostProcess struct {
	PID       int    `json:"pid"`
	Name      string `json:"name"`
	Exe       string `json:"exe"`
	GoVersion string `json:"goVersion"`
	// Selected: the selectors pick it; Why says which rule decided.
	Selected bool   `json:"selected"`
	Why      string `json:"why"`
	// Traceable: latscope can read its binary and probe it; otherwise
	// NotTraceable says why and what to do.
	Traceable    bool   `json:"traceable"`
	NotTraceable string `json:"notTraceable,omitempty"`
}

// HostProcesses lists the host's Go processes (every process with all),
// whether sel picks each and whether latscope can trace it. Each
// executable file is read once. Processes that exit meanwhile are left
// out.
func HostProcesses(sel discovery.Selectors, all bool) ([]HostProcess, error) {
	pids, err := discovery.PIDs()
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	selfExe, _ := exeID(self)
	verdicts := map[fileID]error{}
	var out []HostProcess
	for _, pid := range pids {
		if pid == self {
			continue
		}
		p, err := discovery.Inspect(pid)
		if err != nil {
			if errors.Is(err, discovery.ErrGone) || errors.Is(err, discovery.ErrKernelThread) {
				continue
			}
			if all {
				out = append(out, HostProcess{PID: pid, NotTraceable: err.Error()})
			}
			continue
		}
		if (fileID{p.Dev, p.Ino}) == selfExe {
			continue // latscope itself: never traced
		}
		hp := HostProcess{PID: pid, Name: p.Name, Exe: p.Exe}
		bi, err := buildinfo.ReadFile(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil && !all {
			continue // not Go
		}
		if err == nil {
			hp.GoVersion = bi.GoVersion
		}
		hp.Selected, hp.Why = sel.Match(p)
		id := fileID{p.Dev, p.Ino}
		verdict, ok := verdicts[id]
		if !ok {
			verdict = traceable(pid)
			verdicts[id] = verdict
		}
		if hp.Traceable = verdict == nil; verdict != nil {
			hp.NotTraceable = verdict.Error()
		}
		out = append(out, hp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out, nil
}

// traceable reads pid's executable as Attach would: nil when latscope
// can probe it, else the symbolizer's error, which names the reason.
func traceable(pid int) error {
	b, err := symbolizer.OpenPID(pid)
	if err != nil {
		return err
	}
	defer b.Close()
	_, err = b.Offsets()
	return err
}
