// Package benchproc holds what the benchmark scripts (scripts/bench*) do
// with processes: start a demo service and read a process's CPU time.
package benchproc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// Start runs a demo service (examples/demo) listening on a free loopback
// port and returns it with the address it logged ("msg=listening
// addr=..."). argv is its binary, or a command that execs it in place
// (cpupin.Command): args follow it. env is added to this process's
// environment after OTEL_TRACES_EXPORTER=none (a service built with the
// OTel SDK exports nothing unless env says so). The service is killed if
// the caller dies. Errors if it cannot start or exits before logging its
// address.
func Start(argv, env []string, args ...string) (*exec.Cmd, string, error) {
	bin := argv[len(argv)-1]
	cmd := exec.Command(argv[0], append(append(argv[1:len(argv):len(argv)], "-listen", "127.0.0.1:0"), args...)...)
	cmd.Env = append(append(os.Environ(), "OTEL_TRACES_EXPORTER=none"), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s: %w", bin, err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, a, ok := strings.Cut(sc.Text(), "addr="); ok && strings.Contains(sc.Text(), "msg=listening") {
			go io.Copy(io.Discard, out)
			return cmd, strings.Fields(a)[0], nil
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	return nil, "", fmt.Errorf("%s exited without logging its address", bin)
}

// CPUTicks is utime+stime of pid and all its threads, in USER_HZ ticks
// (10 ms; /proc/PID/stat).
func CPUTicks(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read CPU time of pid %d: %w", pid, err)
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, b)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return u + s, nil
}

// MustStart is Start for a script that cannot go on without the service:
// an error ends the run (log.Fatal).
func MustStart(argv, env []string, args ...string) (*exec.Cmd, string) {
	cmd, addr, err := Start(argv, env, args...)
	if err != nil {
		log.Fatal(err)
	}
	return cmd, addr
}

// MustCPUTicks is CPUTicks for a script: an error ends the run
// (log.Fatal).
func MustCPUTicks(pid int) int64 {
	t, err := CPUTicks(pid)
	if err != nil {
		log.Fatal(err)
	}
	return t
}
