package agent

import (
	"github.com/latscope/latscope/metrics"
)

// profileSnapshot adds the CPU samples store's counters and gauges (the
// kernel's sampling counters come with the tracer's).
func (n *Node) profileSnapshot(s *metrics.Snapshot) {
	if n.samples == nil {
		return
	}
	st := n.samples.Stats()
	s.Counters = append(s.Counters,
		metrics.Counter{Name: "cpu_samples_stored", Help: "CPU samples kept by their span", Value: st.Samples},
		metrics.Counter{Name: "cpu_samples_evicted", Help: "CPU samples evicted to stay within --profile-size, oldest spans first", Value: st.Evicted},
		metrics.Counter{Name: "cpu_samples_unmatched", Help: "CPU samples evicted whose span never arrived (its call was lost or is still running): never in a profile", Value: st.Unmatched, Loss: true},
		metrics.Counter{Name: "cpu_locations_full", Help: "code locations that did not fit the location table (a quarter of --profile-size): shown as [unknown]", Value: st.LocationsFull, Loss: true},
	)
	s.Gauges = append(s.Gauges,
		metrics.Gauge{Name: "cpu_samples_bytes", Help: "bytes the CPU samples store accounts for", Value: float64(st.Bytes)},
		metrics.Gauge{Name: "cpu_samples_spans", Help: "spans holding CPU samples", Value: float64(st.Spans)},
		metrics.Gauge{Name: "cpu_samples_held", Help: "CPU samples held", Value: float64(st.Held)},
		metrics.Gauge{Name: "cpu_locations", Help: "distinct code locations of CPU samples", Value: float64(st.Locations)},
	)
}
