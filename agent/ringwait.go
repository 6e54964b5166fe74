package agent

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ringWaiter waits for the ring buffer to hold data through Go's network
// poller, parking the reading goroutine, rather than in the ring reader's
// own blocking epoll_wait. A goroutine blocked in a system call keeps its
// P; once it has been there 10 ms the runtime's sysmon retakes the P and
// drops back to polling every 20 µs, and a reader woken every 20 ms put it
// there every cycle: ~18 % of the agent's CPU at 20 000 spans/s went to
// sysmon's nanosleeps (perf record on the agent, scripts/benchagent
// section 4). Parked on the poller, the thread sleeps in the scheduler and
// sysmon sleeps long.
type ringWaiter struct {
	f  *os.File
	rc syscall.RawConn
}

// newRingWaiter registers a duplicate of the ring buffer map's descriptor
// with the poller. It fails where the poller cannot take it (the caller
// then waits the old way).
func newRingWaiter(m *ebpf.Map) (*ringWaiter, error) {
	fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate the ring buffer's descriptor: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("make the ring buffer's descriptor non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ringbuf")
	// A deadline is refused unless the file went to the poller.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("poll the ring buffer through the runtime: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &ringWaiter{f: f, rc: rc}, nil
}

// wait returns once ready reports true (it is asked again after each
// wakeup of the ring) or deadline passes, whichever is first.
func (w *ringWaiter) wait(deadline time.Time, ready func() bool) error {
	if err := w.f.SetReadDeadline(deadline); err != nil {
		return err
	}
	err := w.rc.Read(func(uintptr) bool { return ready() })
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

func (w *ringWaiter) Close() error { return w.f.Close() }
