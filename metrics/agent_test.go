package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	lostHeader   = "# HELP latscope_lost_total Data the agent lost (events, calls, spans, traces), by reason; per-reason help is in /api/status and docs/troubleshooting.md.\n# TYPE latscope_lost_total counter\n"
	eventsHeader = "# HELP latscope_events_total Events the agent counted (kernel, span builder, store), by event; per-event help is in /api/status and docs/troubleshooting.md.\n# TYPE latscope_events_total counter\n"
)

func TestAgentCollector(t *testing.T) {
	scrapes := []struct {
		snap Snapshot
		want string
	}{{
		snap: Snapshot{
			Counters: []Counter{
				{Name: "calls_sent", Help: "calls the kernel sent", Value: 10},
				{Name: "lost_ringbuf_full", Help: "ring buffer full", Value: 3, Loss: true},
				{Name: "spans_built", Value: 7},
				{Name: "ringbuf_read_bytes", Help: "Bytes read from the ring buffer.", Value: 4096, Standalone: true},
			},
			Gauges: []Gauge{
				{Name: "processes_attached", Help: "Processes with probes attached.", Value: 2},
				{Name: "ringbuf_pending_bytes", Help: "Bytes waiting in the ring buffer.", Value: 4096},
			},
		},
		want: eventsHeader +
			"latscope_events_total{event=\"calls_sent\"} 10\nlatscope_events_total{event=\"spans_built\"} 7\n" +
			lostHeader + "latscope_lost_total{reason=\"lost_ringbuf_full\"} 3\n" +
			"# HELP latscope_processes_attached Processes with probes attached.\n# TYPE latscope_processes_attached gauge\nlatscope_processes_attached 2\n" +
			"# HELP latscope_ringbuf_pending_bytes Bytes waiting in the ring buffer.\n# TYPE latscope_ringbuf_pending_bytes gauge\nlatscope_ringbuf_pending_bytes 4096\n" +
			"# HELP latscope_ringbuf_read_bytes_total Bytes read from the ring buffer.\n# TYPE latscope_ringbuf_read_bytes_total counter\nlatscope_ringbuf_read_bytes_total 4096\n",
	}, {
		// The next scrape: values moved, a loss reason appeared, a gauge
		// went away and one without help came.
		snap: Snapshot{
			Counters: []Counter{
				{Name: "calls_sent", Value: 25},
				{Name: "lost_ringbuf_full", Value: 3, Loss: true},
				{Name: "lost_no_parent", Value: 1, Loss: true},
				{Name: "spans_built", Value: 19},
			},
			Gauges: []Gauge{{Name: "store_bytes", Value: 1.5e6}},
		},
		want: eventsHeader +
			"latscope_events_total{event=\"calls_sent\"} 25\nlatscope_events_total{event=\"spans_built\"} 19\n" +
			lostHeader + "latscope_lost_total{reason=\"lost_no_parent\"} 1\nlatscope_lost_total{reason=\"lost_ringbuf_full\"} 3\n" +
			"# HELP latscope_store_bytes latscope agent gauge store_bytes.\n# TYPE latscope_store_bytes gauge\nlatscope_store_bytes 1.5e+06\n",
	}}
	var current Snapshot
	calls := 0
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewAgentCollector(func() Snapshot { calls++; return current }))
	for i, s := range scrapes {
		current = s.snap
		if err := testutil.GatherAndCompare(reg, strings.NewReader(s.want)); err != nil {
			t.Errorf("scrape %d: %v", i, err)
		}
		if calls != i+1 {
			t.Errorf("after scrape %d: snapshot called %d times, want once per scrape", i, calls)
		}
	}
}

func TestAgentCollectorInvalidNames(t *testing.T) {
	tests := []struct {
		name string
		snap Snapshot
		bad  string // the name the error must quote
	}{
		{"gauge with a dash", Snapshot{Gauges: []Gauge{{Name: "ring-size", Value: 1}}}, "ring-size"},
		{"gauge upper case", Snapshot{Gauges: []Gauge{{Name: "Store_bytes", Value: 1}}}, "Store_bytes"},
		{"empty gauge name", Snapshot{Gauges: []Gauge{{Name: "", Value: 1}}}, ""},
		{"loss counter starting with a digit", Snapshot{Counters: []Counter{{Name: "9lost", Loss: true}}}, "9lost"},
		{"event counter with a dot", Snapshot{Counters: []Counter{{Name: "calls.sent"}}}, "calls.sent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := tt.snap
			snap.Gauges = append(snap.Gauges, Gauge{Name: "probes_attached", Help: "Probes.", Value: 5})
			reg := prometheus.NewRegistry()
			reg.MustRegister(NewAgentCollector(func() Snapshot { return snap }))
			mfs, err := reg.Gather()
			if err == nil {
				t.Fatal("Gather succeeded")
			}
			if !strings.Contains(err.Error(), `"`+tt.bad+`"`) || !strings.Contains(err.Error(), "[a-z_][a-z0-9_]*") {
				t.Errorf("error %q does not name %q and the rule", err, tt.bad)
			}
			// The valid gauge is still gathered, and served.
			if len(mfs) != 1 || mfs[0].GetName() != "latscope_probes_attached" {
				t.Errorf("gathered %d families, want latscope_probes_attached alone", len(mfs))
			}
			if body, _ := scrape(t, reg, openMetricsAccept); !strings.Contains(body, "latscope_probes_attached 5") {
				t.Errorf("handler did not serve the valid gauge:\n%s", body)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"calls_sent": true, "_x": true, "a1": true, "lost_ringbuf_full": true,
		"": false, "1a": false, "A": false, "a-b": false, "a.b": false, "é": false, "a b": false,
	} {
		if got := validName(name); got != want {
			t.Errorf("validName(%q) = %v, want %v", name, got, want)
		}
	}
}
