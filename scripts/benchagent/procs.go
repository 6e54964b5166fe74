package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// svcName is the service fixture's file name: the agent selects it with
// --name (its /proc/PID/comm).
const svcName = "bench-svc"

// proc is a process this run started.
type proc struct {
	cmd   *exec.Cmd
	name  string
	agent bool          // stopped with SIGTERM first, to detach its probes
	done  chan struct{} // closed once it is reaped
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has been reaped.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits up to grace for the exit, then kills it.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// procSet is every process this run started and has not reaped: only
// these are ever signalled.
type procSet struct {
	mu    sync.Mutex
	procs map[*proc]bool
}

func newProcSet() *procSet { return &procSet{procs: map[*proc]bool{}} }

// start starts cmd and reaps it in the background. The child is killed
// if this process dies first (Pdeathsig).
func (s *procSet) start(cmd *exec.Cmd, name string, isAgent bool) (*proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, name: name, agent: isAgent, done: make(chan struct{})}
	s.mu.Lock()
	s.procs[p] = true
	s.mu.Unlock()
	go func() {
		cmd.Wait()
		s.mu.Lock()
		delete(s.procs, p)
		s.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// stopAll stops every process still running: agents with SIGTERM (they
// detach their probes and flush), the others with SIGKILL.
func (s *procSet) stopAll() {
	s.mu.Lock()
	var all []*proc
	for p := range s.procs {
		all = append(all, p)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p.agent {
				p.stop(syscall.SIGTERM, 20*time.Second)
			} else {
				p.stop(syscall.SIGKILL, 5*time.Second)
			}
		}()
	}
	wg.Wait()
}

// startService starts the service fixture at path and returns it with
// the address it printed ("listening ADDR").
func (b *bench) startService(path string) (*proc, string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, "", fmt.Errorf("pipe for the service's output: %w", err)
	}
	cmd := exec.Command(path)
	cmd.Stdout = w
	p, err := b.procs.start(cmd, path, false)
	w.Close()
	if err != nil {
		r.Close()
		return nil, "", err
	}
	line := make(chan string, 1)
	go func() {
		defer r.Close()
		br := bufio.NewReader(r)
		l, _ := br.ReadString('\n')
		line <- l
		io.Copy(io.Discard, br)
	}()
	select {
	case l := <-line:
		if addr, ok := strings.CutPrefix(strings.TrimSpace(l), "listening "); ok {
			return p, addr, nil
		}
		p.stop(syscall.SIGKILL, 5*time.Second)
		return nil, "", fmt.Errorf("service %s printed %q, not \"listening ADDR\"", path, l)
	case <-time.After(10 * time.Second):
		p.stop(syscall.SIGKILL, 5*time.Second)
		return nil, "", fmt.Errorf("service %s printed no address within 10s", path)
	}
}

// tickUS is one clock tick in µs.
const tickUS = 1e6 / 100

// vmRSS is the resident set of pid in bytes (VmRSS).
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status VmRSS %q: %w", pid, v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}

// copyFile copies an executable.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}
