package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/latscope/latscope/agent"
)

// agentProc is `latscope agent` running as its own process, with what
// its log says.
type agentProc struct {
	*proc
	url string

	mu      sync.Mutex
	tail    []string          // its last log lines
	stopped map[int]time.Time // pid → when "stopped tracing" was read
	skipped map[int]string    // pid → why it cannot be traced
}

var (
	listeningRE = regexp.MustCompile(`msg="agent API listening" url=(\S+)`)
	stoppedRE   = regexp.MustCompile(`msg="stopped tracing" pid=(\d+)`)
	skippedRE   = regexp.MustCompile(`msg="selected process cannot be traced" pid=(\d+)`)
)

// startAgent runs `latscope agent --http 127.0.0.1:0 args...` with env
// added to the environment and waits until it answers /readyz.
func (b *bench) startAgent(env []string, args ...string) (*agentProc, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("pipe for the agent's log: %w", err)
	}
	cmd := exec.Command(b.latscope, append([]string{"agent", "--http", "127.0.0.1:0"}, args...)...)
	// Only env configures OTLP export, whatever this shell exports.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_EXPORTER_OTLP_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(append(cmd.Env, b.opt.agentEnv...), env...)
	cmd.Stderr = w
	p, err := b.procs.start(cmd, "latscope agent", true)
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	a := &agentProc{proc: p, stopped: map[int]time.Time{}, skipped: map[int]string{}}
	urls := make(chan string, 1)
	go a.readLog(r, urls)
	select {
	case a.url = <-urls:
	case <-p.done:
		return nil, fmt.Errorf("latscope agent %s exited at start:\n%s", strings.Join(args, " "), a.log())
	case <-time.After(30 * time.Second):
		p.stop(syscall.SIGTERM, 10*time.Second)
		return nil, fmt.Errorf("latscope agent did not log its API address within 30s:\n%s", a.log())
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(a.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return a, nil
			}
		}
		if time.Now().After(deadline) || p.exited() {
			p.stop(syscall.SIGTERM, 10*time.Second)
			return nil, fmt.Errorf("latscope agent not ready within 20s (last: %v):\n%s", err, a.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readLog follows the agent's log: its API address, the processes it
// stopped tracing or cannot trace; warnings and errors are shown.
func (a *agentProc) readLog(r *os.File, urls chan<- string) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		now := time.Now()
		a.mu.Lock()
		a.tail = append(a.tail, line)
		if len(a.tail) > 50 {
			a.tail = a.tail[1:]
		}
		if m := stoppedRE.FindStringSubmatch(line); m != nil {
			pid, _ := strconv.Atoi(m[1])
			a.stopped[pid] = now
		}
		if m := skippedRE.FindStringSubmatch(line); m != nil {
			pid, _ := strconv.Atoi(m[1])
			a.skipped[pid] = line
		}
		a.mu.Unlock()
		if m := listeningRE.FindStringSubmatch(line); m != nil {
			select {
			case urls <- m[1]:
			default:
			}
		}
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			fmt.Fprintf(os.Stderr, "agent: %s\n", line)
		}
	}
}

// log returns the agent's last log lines.
func (a *agentProc) log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.tail, "\n")
}

// stopAgent stops the agent with SIGTERM (it detaches its probes and
// flushes) and says so if it did not exit cleanly.
func (a *agentProc) stopAgent() {
	a.stop(syscall.SIGTERM, 30*time.Second)
	if st := a.cmd.ProcessState; st != nil && !st.Success() {
		fmt.Fprintf(os.Stderr, "benchagent: latscope agent (pid %d) exited with %v at SIGTERM; its last log lines:\n%s\n", a.pid(), st, a.log())
	}
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// status is /api/status. Its export part is read on its own:
// agent.ExportStatus does not decode (sampling.Reason, the key of
// Sampling.TracesKept, marshals as text and has no UnmarshalText).
type status struct {
	agent.Status
	Export *exportStatus `json:"export,omitempty"`
}

// exportStatus is the part of agent.ExportStatus section 4 reads.
type exportStatus struct {
	Queued   int    `json:"queued"`
	Exported uint64 `json:"exported"`
	Dropped  uint64 `json:"dropped"`
	Failed   uint64 `json:"failed"`
	Sampling struct {
		SpansDropped uint64 `json:"spansDropped"`
	} `json:"sampling"`
}

// status reads the agent's /api/status.
func (a *agentProc) status() (status, error) {
	var st status
	resp, err := httpClient.Get(a.url + "/api/status")
	if err != nil {
		return st, fmt.Errorf("GET %s/api/status: %w", a.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return st, fmt.Errorf("GET %s/api/status: %s: %s", a.url, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("decode %s/api/status: %w", a.url, err)
	}
	return st, nil
}

// metric reads the value of an unlabelled metric from the agent's
// /metrics (Prometheus text format).
func (a *agentProc) metric(name string) (float64, error) {
	resp, err := httpClient.Get(a.url + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("GET %s/metrics: %w", a.url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("GET %s/metrics: %w", a.url, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("%s/metrics: %s: %w", a.url, l, err)
			}
			return f, nil
		}
	}
	return 0, fmt.Errorf("%s/metrics has no %s", a.url, name)
}

// errNotListed: the agent does not trace the process (yet).
var errNotListed = errors.New("not listed")

// listed returns the status of pid in st.
func listed(st status, pid int) (agent.ProcessStatus, error) {
	for _, p := range st.Processes {
		if p.PID == pid {
			return p, nil
		}
	}
	return agent.ProcessStatus{}, errNotListed
}

// waitListed polls /api/status every 10 ms until pid is traced.
func (a *agentProc) waitListed(pid int, limit time.Duration) (agent.ProcessStatus, error) {
	deadline := time.Now().Add(limit)
	for {
		st, err := a.status()
		if err != nil {
			return agent.ProcessStatus{}, err
		}
		if p, err := listed(st, pid); err == nil {
			return p, nil
		}
		a.mu.Lock()
		why := a.skipped[pid]
		a.mu.Unlock()
		switch {
		case why != "":
			return agent.ProcessStatus{}, fmt.Errorf("the agent cannot trace pid %d: %s", pid, why)
		case a.exited():
			return agent.ProcessStatus{}, fmt.Errorf("the agent exited while pid %d was started:\n%s", pid, a.log())
		case time.Now().After(deadline):
			return agent.ProcessStatus{}, fmt.Errorf("pid %d not listed in the agent's /api/status after %s; agent log:\n%s", pid, limit, a.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitStopped waits until the agent logs that it stopped tracing pid
// (after its Detach) and returns when that line was read.
func (a *agentProc) waitStopped(pid int, limit time.Duration) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		a.mu.Lock()
		at, ok := a.stopped[pid]
		a.mu.Unlock()
		if ok {
			return at, nil
		}
		if a.exited() {
			return time.Time{}, fmt.Errorf("the agent exited while pid %d was stopped:\n%s", pid, a.log())
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("the agent did not log \"stopped tracing\" for pid %d within %s; agent log:\n%s", pid, limit, a.log())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// counter returns the counter name of st (0 when absent).
func counter(st status, name string) uint64 {
	for _, c := range st.Counters {
		if c.Name == name {
			return c.Value
		}
	}
	return 0
}

// gauge returns the gauge name of st (0 when absent).
func gauge(st status, name string) float64 {
	for _, g := range st.Gauges {
		if g.Name == name {
			return g.Value
		}
	}
	return 0
}

// losses lists st's loss counters that are not zero.
func losses(st status) map[string]uint64 {
	out := map[string]uint64{}
	for _, c := range st.Counters {
		if c.Loss && c.Value > 0 {
			out[c.Name] = c.Value
		}
	}
	return out
}

// saveProfile writes the agent's /debug/pprof/NAME to file.
func (a *agentProc) saveProfile(name, file string) error {
	resp, err := http.Get(a.url + "/debug/pprof/" + name)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /debug/pprof/%s: %s", name, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}
