package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Snapshot is the agent's own counters and gauges at one moment.
type Snapshot struct {
	Counters []Counter
	Gauges   []Gauge
}

// Counter is a monotonic count of the agent's: kernel counters
// (calls_sent, lost_ringbuf_full, …), the span builder's, the store's.
type Counter struct {
	// Name is the reason (Loss) or event label value: [a-z_][a-z0-9_]*.
	Name string `json:"name"`
	// Help explains the counter for /api/status and
	// docs/troubleshooting.md; the exposition shares one HELP line per
	// metric and does not show it.
	Help  string `json:"help"`
	Value uint64 `json:"value"`
	// Loss marks a count of lost data (dropped events, spans, traces):
	// exposed as latscope_lost_total rather than latscope_events_total.
	Loss bool `json:"loss"`
	// Standalone marks a count of something other than events (bytes):
	// exposed as its own metric, latscope_<Name>_total, with Help, so
	// that summing the events family adds no bytes.
	Standalone bool `json:"standalone,omitempty"`
}

// Gauge is a current value of the agent's (processes_attached,
// probes_attached, ringbuf_size_bytes, store_bytes, export_queue_spans…),
// in base units (bytes, seconds) named by the suffix.
type Gauge struct {
	// Name is the metric name without the latscope_ prefix:
	// [a-z_][a-z0-9_]*.
	Name  string  `json:"name"`
	Help  string  `json:"help"`
	Value float64 `json:"value"`
}

// NewAgentCollector returns a collector of the agent's own metrics. On
// each scrape it calls snapshot once and exposes:
//   - each Loss counter as latscope_lost_total{reason="<Name>"},
//   - each Standalone counter as latscope_<Name>_total, with its Help,
//   - each other counter as latscope_events_total{event="<Name>"},
//   - each gauge as latscope_<Name>, with the gauge's Help.
//
// The counters of each metric share one HELP line; what each reason or
// event means is in /api/status and docs/troubleshooting.md. A name that
// is not [a-z_][a-z0-9_]* is an error of that scrape (reported through
// prometheus.NewInvalidMetric: Gather returns it, Handler logs it and
// serves the rest). Two counters or gauges of one name are an error of
// the scrape too.
//
// The collector is unchecked (its Describe sends nothing) because the
// gauges are known only when the snapshot is taken.
func NewAgentCollector(snapshot func() Snapshot) prometheus.Collector {
	return &agentCollector{
		snapshot: snapshot,
		lost: prometheus.NewDesc("latscope_lost_total",
			"Data the agent lost (events, calls, spans, traces), by reason; per-reason help is in /api/status and docs/troubleshooting.md.",
			[]string{"reason"}, nil),
		events: prometheus.NewDesc("latscope_events_total",
			"Events the agent counted (kernel, span builder, store), by event; per-event help is in /api/status and docs/troubleshooting.md.",
			[]string{"event"}, nil),
	}
}

type agentCollector struct {
	snapshot     func() Snapshot
	lost, events *prometheus.Desc
}

// Describe sends nothing: the collector is unchecked.
func (c *agentCollector) Describe(chan<- *prometheus.Desc) {}

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.snapshot()
	for _, n := range snap.Counters {
		if n.Standalone {
			desc := prometheus.NewDesc("latscope_"+n.Name+"_total", n.Help, nil, nil)
			if !validName(n.Name) {
				ch <- prometheus.NewInvalidMetric(desc, fmt.Errorf("agent counter %q: a counter name must match [a-z_][a-z0-9_]*; rename the counter where the agent's snapshot is built", n.Name))
				continue
			}
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(n.Value))
			continue
		}
		desc, label := c.events, "event"
		if n.Loss {
			desc, label = c.lost, "reason"
		}
		if !validName(n.Name) {
			ch <- prometheus.NewInvalidMetric(desc, fmt.Errorf("agent counter %q: the %s label must match [a-z_][a-z0-9_]*; rename the counter where the agent's snapshot is built", n.Name, label))
			continue
		}
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(n.Value), n.Name)
	}
	for _, g := range snap.Gauges {
		name := "latscope_" + g.Name
		help := g.Help
		if help == "" {
			help = "latscope agent gauge " + g.Name + "."
		}
		desc := prometheus.NewDesc(name, help, nil, nil)
		if !validName(g.Name) {
			ch <- prometheus.NewInvalidMetric(desc, fmt.Errorf("agent gauge %q: a gauge name must match [a-z_][a-z0-9_]*; rename the gauge where the agent's snapshot is built", g.Name))
			continue
		}
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, g.Value)
	}
}

// validName reports whether s matches [a-z_][a-z0-9_]*.
func validName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
