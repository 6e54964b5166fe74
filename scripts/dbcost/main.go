// Command dbcost measures what tracing a database/sql query costs: the
// kernel's run time of the database/sql entry program per call (BPF
// statistics, enabled for the run) and the wall time per query of a loop
// of SQLite queries (the sqlapp fixture's `bench N`), untraced and traced
// by each latscope binary given, interleaved, medians of -runs. To see
// what a change costs, give the binaries built before and after it.
// Needs root.
//
//	go run ./scripts/dbcost [-runs 5] [-queries 20000] [LATSCOPE...]
//
// Without binaries it builds ./cmd/latscope from the working tree.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/latscope/latscope/internal/fixture"
)

// entry is the program whose run time is read: database/sql's
// (*DB).queryDC entry (bpf/library/dbsql).
const entry = "query_entry"

func main() {
	runs := flag.Int("runs", 5, "runs per variant (medians are reported)")
	queries := flag.Int("queries", 20000, "queries per run")
	flag.Parse()
	tracers := flag.Args()
	if len(tracers) == 0 {
		dir, err := os.MkdirTemp("", "dbcost")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "latscope")
		if out, err := exec.Command("go", "build", "-o", bin, "./cmd/latscope").CombinedOutput(); err != nil {
			log.Fatalf("build latscope: %v\n%s", err, out)
		}
		tracers = []string{bin}
	}
	app, err := fixture.BuildErr("sqlapp", "local", fixture.Default)
	if err != nil {
		log.Fatal(err)
	}
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		log.Fatalf("enable BPF run-time statistics (root needed): %v", err)
	}
	defer stats.Close()
	n := strconv.Itoa(*queries)
	wall := make([][]float64, len(tracers)+1) // [0]: untraced
	prog := make([][]float64, len(tracers)+1)
	for r := 0; r < *runs; r++ {
		for i := 0; i <= len(tracers); i++ {
			argv := []string{app, "bench", n}
			if i > 0 {
				argv = append([]string{tracers[i-1], "trace", "--tree", os.DevNull, "--", app}, argv[1:]...)
			}
			w, ns, err := run(argv)
			if err != nil {
				log.Fatalf("%s: %v", strings.Join(argv, " "), err)
			}
			wall[i] = append(wall[i], w)
			prog[i] = append(prog[i], ns)
		}
	}
	fmt.Printf("%d queries per run, medians of %d runs\n\n", *queries, *runs)
	fmt.Println("| variant | wall ns per query | " + entry + " ns per call (BPF) |")
	fmt.Println("|---|---|---|")
	fmt.Printf("| untraced | %.0f | — |\n", median(wall[0]))
	for i, t := range tracers {
		fmt.Printf("| %s | %.0f | %.0f |\n", t, median(wall[i+1]), median(prog[i+1]))
	}
}

// run runs argv, reading the entry program's statistics while it runs
// (the fixture idles a second after its loop for that); it returns the
// wall nanoseconds per query the fixture printed and the program's mean
// run time per call (0 untraced).
func run(argv []string) (wall, progNs float64, err error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var cnt uint64
	var total time.Duration
	for {
		select {
		case err := <-done:
			if err != nil {
				return 0, 0, fmt.Errorf("%v: %s", err, stderr.String())
			}
			f := strings.Fields(stdout.String())
			if len(f) == 0 {
				return 0, 0, fmt.Errorf("no output: %s", stderr.String())
			}
			wall, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, 0, err
			}
			if cnt > 0 {
				progNs = float64(total.Nanoseconds()) / float64(cnt)
			}
			return wall, progNs, nil
		case <-time.After(100 * time.Millisecond):
			if c, t := programStats(entry); c > cnt {
				cnt, total = c, t
			}
		}
	}
}

// programStats returns the run count and total run time of the loaded
// program named name with the most runs (none: 0).
func programStats(name string) (uint64, time.Duration) {
	var best uint64
	var total time.Duration
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return best, total
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		if info, err := p.Info(); err == nil && info.Name == name {
			if st, err := p.Stats(); err == nil && st.RunCount > best {
				best, total = st.RunCount, st.Runtime
			}
		}
		p.Close()
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
