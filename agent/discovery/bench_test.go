package discovery

import (
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/latscope/latscope/internal/fixture"
)

// BenchmarkExecToEvent measures how long after cmd.Start (fork+exec of
// /bin/true) the watcher delivers the process's Exec event: the delay
// before the agent could attach probes to a new process. Reports p50 and
// p99 of that delay, and of the kernel's exec time to delivery.
//
//	go test -run '^$' -bench ExecToEvent -benchtime 200x ./agent/discovery/
func BenchmarkExecToEvent(b *testing.B) {
	fixture.RequireRoot(b)
	w, err := Watch(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var startToEvent, execToEvent []time.Duration
	for b.Loop() {
		cmd := exec.Command("/bin/true")
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		pid := cmd.Process.Pid
		timeout := time.After(10 * time.Second)
	wait:
		for {
			select {
			case ev := <-w.Events():
				if ev.Type == Exec && ev.PID == pid {
					now := time.Now()
					startToEvent = append(startToEvent, now.Sub(start))
					execToEvent = append(execToEvent, now.Sub(ev.Time))
					break wait
				}
			case <-timeout:
				b.Fatalf("no exec event for %d; counters %+v", pid, w.Counters())
			}
		}
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"start-to-event", startToEvent}, {"exec-to-event", execToEvent}} {
		slices.Sort(m.d)
		b.ReportMetric(float64(m.d[len(m.d)/2].Microseconds()), "p50-"+m.name+"-µs")
		b.ReportMetric(float64(m.d[len(m.d)*99/100].Microseconds()), "p99-"+m.name+"-µs")
	}
	b.ReportMetric(0, "ns/op") // fork+exec+wait of /bin/true: not what is measured
}
