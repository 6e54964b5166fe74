package discovery

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// procRoot is where procfs is mounted.
const procRoot = "/proc"

// ErrGone is returned (wrapped) when the process exited, or became a
// zombie, while it was being read.
var ErrGone = errors.New("process is gone")

// ErrKernelThread is returned (wrapped) by Inspect for a kernel thread: it
// has no executable to probe.
var ErrKernelThread = errors.New("kernel thread (no executable)")

// Proc is what the agent needs to know of one process.
type Proc struct {
	PID  int
	PPID int
	// Name is the process name (comm: at most 15 bytes, set by exec from
	// the file name, changeable by the process).
	Name string
	// Exe is the executable's path as the process sees it
	// (/proc/PID/exe, in its mount namespace), without the kernel's
	// " (deleted)" suffix.
	Exe string
	// Deleted: the executable was deleted or replaced since exec (still
	// probeable through /proc/PID/exe).
	Deleted bool
	Cmdline []string
	// Cgroup is the cgroup v2 path (the "0::" line of /proc/PID/cgroup),
	// "" on a host without cgroup v2.
	Cgroup string
	// Dev and Ino identify the executable file (stat of /proc/PID/exe):
	// processes running the same file share them, and so their probes.
	Dev, Ino uint64
	// UID is the effective user id.
	UID int
	// StartTime is when the process started, in clock ticks (USER_HZ,
	// 1/100 s) since boot: field 22 of /proc/PID/stat. With PID it
	// identifies a process instance against pid reuse.
	StartTime uint64
	// Pod is the pod the process runs in, when the agent knows it
	// (Kubernetes enabled and the pod resolved); nil otherwise. Inspect
	// leaves it nil: the agent fills it before matching selectors.
	Pod *PodFacts
}

// PIDs lists every process (thread group) in /proc, in no order. It is
// the safety net behind the watcher: a rescan finds the processes whose
// events were dropped.
func PIDs() ([]int, error) {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes in %s: %w", procRoot, err)
	}
	pids := make([]int, 0, len(entries))
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// stat holds the fields of /proc/PID/stat Inspect uses.
type stat struct {
	name      string
	state     byte
	ppid      int
	flags     uint64
	startTime uint64
}

// pfKthread is PF_KTHREAD in the flags of /proc/PID/stat (field 9).
const pfKthread = 0x00200000

func readStat(pid int) (stat, error) {
	data, err := os.ReadFile(procPath(pid, "stat"))
	if err != nil {
		return stat{}, err
	}
	// comm is in parentheses and may itself hold ") ": the fields follow
	// the last ')'.
	open, closing := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || closing < open {
		return stat{}, fmt.Errorf("malformed %s", procPath(pid, "stat"))
	}
	f := strings.Fields(string(data[closing+1:]))
	// f[0] is field 3 (state): field N is f[N-3].
	if len(f) < 20 {
		return stat{}, fmt.Errorf("malformed %s: %d fields", procPath(pid, "stat"), len(f)+2)
	}
	s := stat{name: string(data[open+1 : closing]), state: f[0][0]}
	var errs [3]error
	s.ppid, errs[0] = strconv.Atoi(f[4-3])
	s.flags, errs[1] = strconv.ParseUint(f[9-3], 10, 64)
	s.startTime, errs[2] = strconv.ParseUint(f[22-3], 10, 64)
	if err := errors.Join(errs[:]...); err != nil {
		return stat{}, fmt.Errorf("malformed %s: %w", procPath(pid, "stat"), err)
	}
	return s, nil
}

// Inspect reads process pid from /proc. Errors: ErrGone (wrapped) when it
// exited meanwhile or is a zombie; ErrKernelThread for a kernel thread;
// a permission error saying what the agent needs when another user's
// process cannot be read.
func Inspect(pid int) (*Proc, error) {
	p, err := inspect(pid)
	if err != nil {
		return nil, fmt.Errorf("inspect process %d: %w", pid, procError(err))
	}
	return p, nil
}

func inspect(pid int) (*Proc, error) {
	st, err := readStat(pid)
	if err != nil {
		return nil, err
	}
	if st.flags&pfKthread != 0 {
		return nil, ErrKernelThread
	}
	if st.state == 'Z' || st.state == 'X' {
		return nil, ErrGone
	}
	p := &Proc{PID: pid, PPID: st.ppid, Name: st.name, StartTime: st.startTime}

	if p.Exe, err = os.Readlink(procPath(pid, "exe")); err != nil {
		return nil, err
	}
	p.Exe, p.Deleted = strings.CutSuffix(p.Exe, " (deleted)")
	var fi syscall.Stat_t
	if err := syscall.Stat(procPath(pid, "exe"), &fi); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: procPath(pid, "exe"), Err: err}
	}
	p.Dev, p.Ino = uint64(fi.Dev), fi.Ino

	cmdline, err := os.ReadFile(procPath(pid, "cmdline"))
	if err != nil {
		return nil, err
	}
	if cmdline = bytes.TrimSuffix(cmdline, []byte{0}); len(cmdline) > 0 {
		p.Cmdline = strings.Split(string(cmdline), "\x00")
	}
	if p.Cgroup, err = readCgroup(pid); err != nil {
		return nil, err
	}
	if p.UID, err = readUID(pid); err != nil {
		return nil, err
	}

	// The pid may have been reused while the files above were read: the
	// start time tells whether they were all one process's.
	again, err := readStat(pid)
	if err != nil {
		return nil, err
	}
	if again.startTime != st.startTime || again.state == 'Z' || again.state == 'X' {
		return nil, ErrGone
	}
	return p, nil
}

// readCgroup returns the cgroup v2 path from /proc/PID/cgroup ("0::/a/b").
func readCgroup(pid int) (string, error) {
	data, err := os.ReadFile(procPath(pid, "cgroup"))
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(data)) {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return strings.TrimSuffix(path, "\n"), nil
		}
	}
	return "", nil
}

// readUID returns the effective uid (the second of /proc/PID/status's
// "Uid:" line: real, effective, saved, filesystem).
func readUID(pid int) (int, error) {
	data, err := os.ReadFile(procPath(pid, "status"))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) < 2 {
				break
			}
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no Uid line in %s", procPath(pid, "status"))
}

func procPath(pid int, name string) string {
	return filepath.Join(procRoot, strconv.Itoa(pid), name)
}

// procError turns a failed read of /proc/PID into ErrGone when the
// process exited (the files vanish: ENOENT; or an open file of it reads
// ESRCH), and explains permission errors.
func procError(err error) error {
	switch {
	case errors.Is(err, ErrGone), errors.Is(err, ErrKernelThread):
		return err
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ESRCH):
		return fmt.Errorf("%w (%v)", ErrGone, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: reading another user's process needs root, or CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH", err)
	}
	return err
}
