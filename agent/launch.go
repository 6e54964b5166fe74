package agent

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// Launched is a command started stopped at its first instruction, so
// probes are in place before any of its code runs.
type Launched struct {
	Cmd *exec.Cmd
	PID int
}

// Launch starts argv with stdin, stdout and stderr passed through
// unchanged (nil stdout or stderr: the tracer's own) and stops it right after execve (it runs under ptrace until
// Resume). The caller's goroutine stays locked to its OS thread until
// Resume: ptrace requests must come from the thread that started it.
func Launch(argv []string, stdout, stderr io.Writer) (*Launched, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("no command to trace")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, fmt.Errorf("command %q: %w", argv[0], err)
	}
	runtime.LockOSThread()
	cmd := exec.Command(path, argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if stderr != nil {
		cmd.Stderr = stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
	if err := cmd.Start(); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	pid := cmd.Process.Pid
	// The child stops with SIGTRAP once execve has replaced its image.
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("wait for %s to exec: %w", path, err)
	}
	if !ws.Stopped() {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("%s did not stop at exec (status %v)", path, ws)
	}
	return &Launched{Cmd: cmd, PID: pid}, nil
}

// Resume lets the command run, no longer traced by ptrace.
func (l *Launched) Resume() error {
	defer runtime.UnlockOSThread()
	if err := syscall.PtraceDetach(l.PID); err != nil {
		return fmt.Errorf("resume pid %d: %w", l.PID, err)
	}
	return nil
}
