package sched

import (
	"runtime"
	"testing"

	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/internal/fixture"
)

// Tier 2: every program passes this kernel's verifier loaded the way the
// agent loads it (sharing the call tracer's maps, as uprobe_multi
// programs and as perf-event ones), and the counters can be read.
func TestLoad(t *testing.T) {
	fixture.RequireRoot(t)
	for _, multi := range []bool{true, false} {
		opts := calltracer.Options{UprobeMulti: multi}
		tr, err := calltracer.Load(opts)
		if err != nil {
			t.Fatal(err)
		}
		o, err := Load(opts, tr.SharedMaps())
		if err != nil {
			tr.Close()
			t.Fatalf("load (uprobe_multi %v): %v", multi, err)
		}
		if runtime.GOARCH == "amd64" && o.SchedSwitch == nil {
			t.Error("sched_switch not loaded on amd64")
		}
		stats, err := ReadStats(o.Stats)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range stats {
			if v != 0 {
				t.Errorf("fresh counter %s = %d", Stats[i].Name, v)
			}
		}
		if err := o.ClearDeep(); err != nil {
			t.Error(err)
		}
		o.Close()
		tr.Close()
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	ev := Event{Kind: KindOff, Reason: 7, Pid: 5, Goid: 3, Start: 10, Mid: 20, End: 30}
	raw := Encode(&ev)
	if len(raw) != EventSize || EventSize != 40 {
		t.Fatalf("event size %d, C struct is 40 bytes", EventSize)
	}
	got, ok := Decode(raw)
	if !ok || *got != ev {
		t.Errorf("decoded %+v", got)
	}
	if _, ok := Decode(raw[:10]); ok {
		t.Error("short record decoded")
	}
	if _, ok := calltracer.Decode(raw); ok {
		t.Error("a sched record decodes as a call")
	}
}
