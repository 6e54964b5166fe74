// Package cpupin runs the benchmark scripts' processes on chosen CPUs, so
// that a measured service has a core of its own and its CPU per request
// is its own work (scripts/benchdemo, benchattr, benchprofile).
package cpupin

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// Self runs every thread of this process on cpu. Threads it creates
// later, and processes it starts, inherit that. Errors if the machine has
// fewer than 2 CPUs (nothing would be left for the service) or the
// affinity cannot be set.
func Self(cpu int) error {
	if runtime.NumCPU() < 2 {
		return fmt.Errorf("pinning needs 2 CPUs, this machine has %d", runtime.NumCPU())
	}
	var set unix.CPUSet
	set.Set(cpu)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, _ := strconv.Atoi(t.Name())
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			return fmt.Errorf("pin thread %d to CPU %d: %w", tid, cpu, err)
		}
	}
	return nil
}

// Command returns argv run on cpu alone from its first instruction
// (through taskset, which execs it: the process keeps its pid, and its Go
// runtime sizes GOMAXPROCS for that one CPU).
func Command(cpu int, argv ...string) []string {
	return append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
}
