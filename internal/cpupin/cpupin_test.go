package cpupin

import (
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCommand(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 CPUs")
	}
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
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 CPUs")
	}
	var before unix.CPUSet
	if err := unix.SchedGetaffinity(0, &before); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := Self(0); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &before)
	out, err := exec.Command("sh", "-c", "grep Cpus_allowed_list /proc/self/status").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(out)); len(got) != 2 || got[1] != "0" {
		t.Errorf("a child started after Self(0) runs on %q, want CPU 0 alone", out)
	}
}
