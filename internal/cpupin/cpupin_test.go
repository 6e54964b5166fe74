package cpupin

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// needTwoCPUs skips on a 1-CPU machine, except under CI (whose machines
// have 2: a skip there would hide a broken test).
func needTwoCPUs(t *testing.T) {
	if runtime.NumCPU() < 2 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI machines have 2 CPUs; this one has 1")
		}
		t.Skip("needs 2 CPUs")
	}
}

func TestCommand(t *testing.T) {
	needTwoCPUs(t)
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Fatalf("taskset (util-linux) missing: %v", err)
	}
	argv := Command(1, "sh", "-c", "grep Cpus_allowed_list /proc/self/status")
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(out)); len(got) != 2 || got[1] != "1" {
		t.Errorf("the command ran on %q, want CPU 1 alone", out)
	}
}

func TestSelf(t *testing.T) {
	needTwoCPUs(t)
	var before unix.CPUSet
	if err := unix.SchedGetaffinity(0, &before); err != nil {
		t.Fatal(err)
	}
	if err := Self(0); err != nil {
		t.Fatal(err)
	}
	defer func() { // every thread back as it was
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			unix.SchedSetaffinity(tid, &before)
		}
	}()
	out, err := exec.Command("sh", "-c", "grep Cpus_allowed_list /proc/self/status").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(out)); len(got) != 2 || got[1] != "0" {
		t.Errorf("a child started after Self(0) runs on %q, want CPU 0 alone", out)
	}
}
