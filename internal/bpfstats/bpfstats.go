// Package bpfstats prints what the kernel's BPF statistics
// (kernel.bpf_stats_enabled: run counts and run time of every loaded
// program) say per request, for the benchmark scripts.
package bpfstats

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Enable turns the kernel's run-time statistics on until the returned
// Closer is closed (they slow every program down a little: only for a
// run that reads them).
func Enable() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable BPF statistics (needs root): %w", err)
	}
	return c, nil
}

// Program is one loaded program's statistics since it was loaded (while
// statistics were on).
type Program struct {
	Name    string
	Runs    uint64
	Runtime time.Duration
}

// Programs returns every loaded program that ran, by run time, largest
// first: on the whole node, so a run should be the only BPF user while
// statistics are on.
func Programs() []Program {
	var out []Program
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			break
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		info, err := p.Info()
		st, serr := p.Stats()
		p.Close()
		if err != nil || serr != nil || st.RunCount == 0 {
			continue
		}
		out = append(out, Program{Name: info.Name, Runs: st.RunCount, Runtime: st.Runtime})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Runtime > out[j].Runtime })
	return out
}

// Print writes a Markdown table of Programs per request (reqs requests
// were served while statistics were on), with a total row; heading
// names the first column.
func Print(w io.Writer, heading string, reqs int) {
	fmt.Fprintf(w, "| %s | runs/request | ns/run | µs/request |\n|---|---:|---:|---:|\n", heading)
	var total float64
	for _, p := range Programs() {
		us := float64(p.Runtime.Nanoseconds()) / 1e3 / float64(reqs)
		total += us
		fmt.Fprintf(w, "| %s | %.2f | %d | %.2f |\n", p.Name, float64(p.Runs)/float64(reqs), p.Runtime.Nanoseconds()/int64(p.Runs), us)
	}
	fmt.Fprintf(w, "| total | | | %.2f |\n\n", total)
}
