package discovery

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/internal/fixture"
)

// Tier 3 tests: real BPF programs, real processes. They run as root;
// under CI=true not being root fails them (fixture.RequireRoot).

// recorder collects a watcher's events; sync makes sure every event of
// processes that ended before it was called has been received.
type recorder struct {
	t      *testing.T
	w      *Watcher
	events []Event
}

func watch(t *testing.T, opts Options) *recorder {
	t.Helper()
	fixture.RequireRoot(t)
	w, err := Watch(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &recorder{t: t, w: w}
}

// sync runs /bin/true to its end and reads events until its Exit: the
// ring buffer is one ordered queue, so every event that happened before
// is in by then.
func (r *recorder) sync() {
	r.t.Helper()
	fence := run(r.t, exec.Command("/bin/true"))
	r.until(func(ev Event) bool { return ev.Type == Exit && ev.PID == fence })
}

// until reads events until stop returns true for one.
func (r *recorder) until(stop func(Event) bool) {
	r.t.Helper()
	timeout := time.After(30 * time.Second) // a hang guard, not a latency check
	for {
		select {
		case ev, ok := <-r.w.Events():
			if !ok {
				r.t.Fatal("events channel closed")
			}
			r.events = append(r.events, ev)
			if stop(ev) {
				return
			}
		case <-timeout:
			r.t.Fatalf("the awaited event never came; counters: %+v", r.w.Counters())
		}
	}
}

// of returns pid's events' types, in order.
func (r *recorder) of(pid int) []EventType {
	var out []EventType
	for _, ev := range r.events {
		if ev.PID == pid {
			out = append(out, ev.Type)
		}
	}
	return out
}

func (r *recorder) noLoss() {
	r.t.Helper()
	for _, c := range r.w.Counters() {
		if c.Loss && c.Value != 0 {
			r.t.Errorf("%s = %d (%s)", c.Name, c.Value, c.Help)
		}
	}
}

// run runs cmd to its end and returns its pid.
func run(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	pid, _ := runOutput(t, cmd)
	return pid
}

// runOutput runs cmd to its end and returns its pid and output.
func runOutput(t *testing.T, cmd *exec.Cmd) (int, string) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	return cmd.Process.Pid, string(out)
}

// buildProcs builds testdata/procs (the process shapes) into a temp dir.
func buildProcs(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "procs")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/procs").CombinedOutput(); err != nil {
		t.Fatalf("build testdata/procs: %v\n%s", err, out)
	}
	return bin
}

func TestWatchOneExecOneExitPerProcess(t *testing.T) {
	procs := buildProcs(t)
	r := watch(t, Options{})
	pids := map[string]int{
		"true":  run(t, exec.Command("/bin/true")),
		"sleep": run(t, exec.Command("/bin/sleep", "0.05")),
	}
	// 16 threads more than the runtime's, many exiting on their own (a
	// sched_process_exit each) before the process does.
	pid, out := runOutput(t, exec.Command(procs, "threads", "16"))
	pids["multithreaded"] = pid
	var peak, after int
	if _, err := fmt.Sscanf(out, "peak %d after %d", &peak, &after); err != nil || peak < 17 || after > peak-8 {
		t.Fatalf("procs threads 16 said %q: want a peak of at least 17 threads, at least 8 fewer after", out)
	}
	r.sync()
	for name, pid := range pids {
		if got, want := r.of(pid), []EventType{Exec, Exit}; !slices.Equal(got, want) {
			t.Errorf("%s (pid %d): events %v, want %v", name, pid, got, want)
		}
	}
	for _, ev := range r.events {
		if ev.Time.IsZero() || time.Since(ev.Time) < 0 || time.Since(ev.Time) > time.Minute {
			t.Errorf("event %+v: time not converted to now's wall clock", ev)
		}
	}
	r.noLoss()
}

func TestWatchLeaderExitsFirst(t *testing.T) {
	procs := buildProcs(t)
	r := watch(t, Options{})
	cmd := exec.Command(procs, "leader-exit")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "leader exiting\n" {
		t.Fatalf("procs leader-exit said %q, %v", line, err)
	}
	// Wait for the leader thread to be a zombie while the process lives.
	for i := 0; ; i++ {
		st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", strconv.Itoa(pid), "stat"))
		if err == nil && strings.Contains(string(st), ") Z ") {
			break
		}
		if i == 5000 {
			t.Fatalf("leader thread of %d never became a zombie: %q %v", pid, st, err)
		}
		time.Sleep(time.Millisecond)
	}
	r.sync()
	if got := r.of(pid); !slices.Equal(got, []EventType{Exec}) {
		t.Errorf("after the leader thread's exit: events %v, want only [exec]: a leader's exit is not the process's", got)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	r.sync()
	if got, want := r.of(pid), []EventType{Exec, Exit}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	r.noLoss()
}

func TestWatchExecChain(t *testing.T) {
	procs := buildProcs(t)
	r := watch(t, Options{})
	sh := run(t, exec.Command("/bin/sh", "-c", "exec /bin/sleep 0.01"))
	// exec from a thread that is not the leader: reported under the
	// process id (the tgid), not the thread's.
	threaded := run(t, exec.Command(procs, "exec-thread", "/bin/true"))
	r.sync()
	for name, pid := range map[string]int{"sh -c exec": sh, "exec from a thread": threaded} {
		if got, want := r.of(pid), []EventType{Exec, Exec, Exit}; !slices.Equal(got, want) {
			t.Errorf("%s (pid %d): events %v, want %v", name, pid, got, want)
		}
	}
	r.noLoss()
}

// An event's StartTime is the one Inspect reads, so the agent can tell a
// late Exit of a reused pid from the exit of the process it holds.
func TestWatchStartTimeMatchesInspect(t *testing.T) {
	r := watch(t, Options{})
	cmd := exec.Command("/bin/sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	var exe Event
	r.until(func(ev Event) bool { exe = ev; return ev.Type == Exec && ev.PID == pid })
	p, err := Inspect(pid)
	if err != nil {
		t.Fatal(err)
	}
	if exe.StartTime == 0 || exe.StartTime != p.StartTime {
		t.Errorf("event start time %d, Inspect's %d", exe.StartTime, p.StartTime)
	}
}

func TestWatchChannelFullIsCounted(t *testing.T) {
	r := watch(t, Options{Buffer: 2})
	for range 3 {
		run(t, exec.Command("/bin/true"))
	}
	for i := 0; counter(r.w, "lost_channel_full") == 0; i++ {
		if i == 5000 {
			t.Fatalf("no drop counted with a 2-event channel: %+v", r.w.Counters())
		}
		time.Sleep(time.Millisecond)
	}
	// The reader is not stuck: once the channel is read, events flow.
	// Other processes on the machine may fill the 2-event channel too, so
	// this goroutine reads all along while another starts processes, and
	// an event of any of them will do.
	started := make(chan int, 5) // never blocks the starter once this test returns
	go func() {
		defer close(started)
		for range 5 {
			cmd := exec.Command("/bin/true")
			if cmd.Run() == nil {
				started <- cmd.Process.Pid
			}
		}
	}()
	ours, seen := map[int]bool{}, map[int]bool{}
	timeout := time.After(30 * time.Second) // a hang guard
	for {
		select {
		case pid, ok := <-started:
			if !ok {
				started = nil
				continue
			}
			if seen[pid] {
				return
			}
			ours[pid] = true
		case ev := <-r.w.Events():
			if ours[ev.PID] {
				return
			}
			seen[ev.PID] = true
		case <-timeout:
			t.Fatalf("no event of a new process after the channel was read: %+v", r.w.Counters())
		}
	}
}

func TestWatchCloseIsIdempotent(t *testing.T) {
	fixture.RequireRoot(t)
	w, err := Watch(Options{})
	if err != nil {
		t.Fatal(err)
	}
	run(t, exec.Command("/bin/true"))
	for range 2 {
		if err := w.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	for range w.Events() { // closed: drains and ends
	}
	if counter(w, "exec_events_sent") == 0 {
		t.Errorf("counters after close: %+v: want the final values", w.Counters())
	}
}

func counter(w *Watcher, name string) uint64 {
	for _, c := range w.Counters() {
		if c.Name == name {
			return c.Value
		}
	}
	return 0
}
