package discovery

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tier 1 and 3 without BPF: /proc readers against real processes (the
// test's own children; no privileges needed).

// startSleep starts exe (a sleep binary) for a while and stops it at the
// test's end.
func startSleep(t *testing.T, exe string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(exe, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	waitExec(t, cmd.Process.Pid, exe)
	return cmd
}

// waitExec waits until pid runs exe (the child between fork and exec
// still runs the test binary) and its arguments are in place: the kernel
// switches /proc/PID/exe before the loader sets up the new arguments, so
// for a moment cmdline reads empty (the agent learns of an exec from the
// sched_process_exec tracepoint, after both).
func waitExec(t *testing.T, pid int, exe string) {
	t.Helper()
	want, err := filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if got, _ := os.Readlink(procPath(pid, "exe")); got == want {
			if args, _ := os.ReadFile(procPath(pid, "cmdline")); len(args) > 0 {
				return
			}
		}
		if i == 5000 {
			t.Fatalf("process %d never ran %s", pid, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func ownCgroup(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return strings.TrimSpace(p)
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but /proc/self/cgroup has no cgroup v2 (0::) line: mount cgroup v2")
	}
	t.Skip("no cgroup v2 (0::) line in /proc/self/cgroup")
	return ""
}

func TestInspect(t *testing.T) {
	sleep, err := filepath.EvalSymlinks("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	cmd := startSleep(t, "/bin/sleep")
	p, err := Inspect(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	want := Proc{
		PID:     cmd.Process.Pid,
		PPID:    os.Getpid(),
		Name:    "sleep",
		Exe:     sleep,
		Cmdline: []string{"/bin/sleep", "30"},
		Cgroup:  ownCgroup(t), // a child starts in its parent's cgroup
		UID:     os.Geteuid(),
	}
	got := *p
	if got.Dev == 0 || got.Ino == 0 || got.StartTime == 0 {
		t.Errorf("Dev %d, Ino %d, StartTime %d: want all set", got.Dev, got.Ino, got.StartTime)
	}
	var fi os.FileInfo
	if fi, err = os.Stat(sleep); err != nil {
		t.Fatal(err)
	}
	if ino := fi.Sys().(*syscall.Stat_t).Ino; got.Ino != ino {
		t.Errorf("Ino %d, the file's is %d", got.Ino, ino)
	}
	got.Dev, got.Ino, got.StartTime = 0, 0, 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Inspect:\n got %+v\nwant %+v", got, want)
	}
	again, err := Inspect(cmd.Process.Pid)
	if err != nil || again.StartTime != p.StartTime {
		t.Errorf("second Inspect: start time %d, first %d (%v)", again.StartTime, p.StartTime, err)
	}
}

// Dev and Ino say which file runs: the same for two processes of one
// binary, different for a copy; a deleted binary keeps its identity.
func TestInspectExecutableIdentity(t *testing.T) {
	copyPath := filepath.Join(t.TempDir(), "sleep-copy")
	copyFile(t, "/bin/sleep", copyPath)
	a, b := startSleep(t, "/bin/sleep"), startSleep(t, "/bin/sleep")
	c := startSleep(t, copyPath)
	pa, pb, pc := inspect3(t, a, b, c)
	if pa.Dev != pb.Dev || pa.Ino != pb.Ino {
		t.Errorf("two processes of /bin/sleep: %d:%d and %d:%d", pa.Dev, pa.Ino, pb.Dev, pb.Ino)
	}
	if pa.Dev == pc.Dev && pa.Ino == pc.Ino {
		t.Errorf("a copy of /bin/sleep has its identity %d:%d", pc.Dev, pc.Ino)
	}
	if pc.Exe != copyPath || pc.Deleted {
		t.Errorf("copy: Exe %q deleted %v, want %q", pc.Exe, pc.Deleted, copyPath)
	}
	if err := os.Remove(copyPath); err != nil {
		t.Fatal(err)
	}
	pd, err := Inspect(c.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if pd.Exe != copyPath || !pd.Deleted || pd.Dev != pc.Dev || pd.Ino != pc.Ino {
		t.Errorf("deleted copy: %+v, want Exe %q, Deleted, identity %d:%d", pd, copyPath, pc.Dev, pc.Ino)
	}
}

func inspect3(t *testing.T, cmds ...*exec.Cmd) (a, b, c *Proc) {
	t.Helper()
	var ps []*Proc
	for _, cmd := range cmds {
		p, err := Inspect(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps[0], ps[1], ps[2]
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestInspectGone(t *testing.T) {
	// Exited and reaped: /proc/PID is gone.
	done := exec.Command("/bin/true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	// Exited, not reaped: a zombie.
	zombie := exec.Command("/bin/true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	defer zombie.Wait()
	for i := 0; ; i++ {
		if st, err := readStat(zombie.Process.Pid); err == nil && st.state == 'Z' {
			break
		}
		if i == 5000 {
			t.Fatal("the child never became a zombie")
		}
		time.Sleep(time.Millisecond)
	}
	for name, pid := range map[string]int{"reaped": done.Process.Pid, "zombie": zombie.Process.Pid} {
		if _, err := Inspect(pid); !errors.Is(err, ErrGone) {
			t.Errorf("Inspect(%s process): %v, want ErrGone", name, err)
		}
		if _, err := ListeningPorts(pid); name == "reaped" && !errors.Is(err, ErrGone) {
			t.Errorf("ListeningPorts(%s process): %v, want ErrGone", name, err)
		}
	}
}

func TestInspectKernelThread(t *testing.T) {
	pids, err := PIDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if st, err := readStat(pid); err == nil && st.flags&pfKthread != 0 {
			if _, err := Inspect(pid); !errors.Is(err, ErrKernelThread) {
				t.Errorf("Inspect(kernel thread %d %s): %v, want ErrKernelThread", pid, st.name, err)
			}
			return
		}
	}
	t.Skip("no kernel thread visible in this PID namespace")
}

func TestPIDs(t *testing.T) {
	cmd := startSleep(t, "/bin/sleep")
	pids, err := PIDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []int{1, os.Getpid(), cmd.Process.Pid} {
		if !slices.Contains(pids, want) {
			t.Errorf("PIDs() lacks %d", want)
		}
	}
	// Threads are not processes: /proc lists only thread-group ids.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if tid, _ := strconv.Atoi(task.Name()); tid != os.Getpid() && slices.Contains(pids, tid) {
			t.Errorf("PIDs() lists thread %d", tid)
		}
	}
}

func TestListeningPorts(t *testing.T) {
	var want []int
	for _, l := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		ln, err := net.Listen(l.network, l.addr)
		if err != nil {
			t.Fatalf("listen %s %s: %v", l.network, l.addr, err)
		}
		defer ln.Close()
		want = append(want, ln.Addr().(*net.TCPAddr).Port)
	}
	// A connected socket and a UDP socket are not listeners.
	conn, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(want[0])))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	notWant := []int{conn.LocalAddr().(*net.TCPAddr).Port, udp.LocalAddr().(*net.UDPAddr).Port}

	got, err := ListeningPorts(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range want {
		if !slices.Contains(got, p) {
			t.Errorf("ListeningPorts = %v, lacks %d", got, p)
		}
	}
	for _, p := range notWant {
		if slices.Contains(got, p) {
			t.Errorf("ListeningPorts = %v, has non-listener port %d", got, p)
		}
	}
	if !slices.IsSorted(got) {
		t.Errorf("ListeningPorts = %v, not sorted", got)
	}
	// Another process's listeners are not this one's.
	cmd := startSleep(t, "/bin/sleep")
	if ports, err := ListeningPorts(cmd.Process.Pid); err != nil || len(ports) != 0 {
		t.Errorf("ListeningPorts(sleep) = %v, %v: want none", ports, err)
	}
}

// listen listens on a loopback TCP port until the test ends.
func listen(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// Reading another user's process without privileges fails with an error
// saying what is needed. Run as root, the test re-runs itself as nobody.
func TestInspectPermissionError(t *testing.T) {
	if os.Getenv("DISCOVERY_AS_NOBODY") == "1" {
		_, err := Inspect(1)
		if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "CAP_SYS_PTRACE") {
			t.Fatalf("Inspect(1) as nobody: %v, want a permission error naming CAP_SYS_PTRACE", err)
		}
		return
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but not root: this test runs a copy of itself as another user")
		}
		t.Skip("needs root to run a copy of itself as another user")
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // t.TempDir's are 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "discovery.test")
	copyFile(t, self, bin)
	cmd := exec.Command(bin, "-test.run=^TestInspectPermissionError$", "-test.count=1")
	cmd.Env = append(os.Environ(), "DISCOVERY_AS_NOBODY=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("as nobody: %v\n%s", err, out)
	}
}
