package ui

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/agent/pods"
	"github.com/latscope/latscope/metrics"
	"github.com/latscope/latscope/sampling"
	"github.com/latscope/latscope/store"
)

// agentStatus is what the UI reads of the agent's status, in the JSON
// shape /api/status answers (agent.Status): the UI is one more client of
// that API, so the agent need not know the UI.
type agentStatus struct {
	Version    string            `json:"version"`
	PID        int               `json:"pid"`
	Started    time.Time         `json:"started"`
	API        string            `json:"api"`
	Selectors  selectors         `json:"selectors"`
	Funcs      []string          `json:"funcs"`
	ProbeLinks string            `json:"probeLinks"`
	Processes  []tracedProcess   `json:"processes"`
	Skipped    []skippedProcess  `json:"skipped"`
	Counters   []metrics.Counter `json:"counters"`
	Gauges     []metrics.Gauge   `json:"gauges"`
	Store      store.Stats       `json:"store"`
	Export     *exportStatus     `json:"export"`
	Kubernetes *pods.Stats       `json:"kubernetes"`
}

type selectors discovery.Selectors

// String lists the selectors: `exe="/srv/*" or name="api", excluding
// port=22`.
func (s selectors) String() string {
	join := func(l []discovery.Selector) string {
		var parts []string
		for _, sel := range l {
			parts = append(parts, sel.String())
		}
		return strings.Join(parts, " or ")
	}
	if len(s.Include) == 0 {
		return "none (the agent traces only pods annotated latscope.io/trace=true, if any)"
	}
	out := join(s.Include)
	if len(s.Exclude) > 0 {
		out += ", excluding " + join(s.Exclude)
	}
	return out
}

type tracedProcess struct {
	PID              int            `json:"pid"`
	Service          string         `json:"service"`
	Exe              string         `json:"exe"`
	GoVersion        string         `json:"goVersion"`
	Functions        int            `json:"functions"`
	Libraries        []string       `json:"libraries"`
	Probes           int            `json:"probes"`
	Links            int            `json:"links"`
	Replicas         int            `json:"replicas"`
	Attached         time.Time      `json:"attached"`
	ExecToAttachedNS int64          `json:"execToAttachedNs"`
	Pod              *pods.Metadata `json:"pod"`
}

type skippedProcess struct {
	PID      int       `json:"pid"`
	Name     string    `json:"name"`
	Exe      string    `json:"exe"`
	Selected bool      `json:"selected"`
	Reason   string    `json:"reason"`
	Time     time.Time `json:"time"`
}

type exportStatus struct {
	Endpoint string         `json:"endpoint"`
	Keep     string         `json:"keep"`
	Queued   int            `json:"queued"`
	Exported uint64         `json:"exported"`
	Dropped  uint64         `json:"dropped"`
	Failed   uint64         `json:"failed"`
	Sampling sampling.Stats `json:"sampling"`
}

// statusRates keeps recent counter samples, so the status page can show
// rates (events/s) over the last minute or so rather than since start.
type statusRates struct {
	mu      sync.Mutex
	samples []counterSample
}

type counterSample struct {
	at     time.Time
	values map[string]uint64
}

// rateWindow: rates compare with the oldest sample at least this old
// (and at most rateKeep).
const (
	rateWindow = 5 * time.Second
	rateKeep   = 5 * time.Minute
)

// rates records counters at now and returns per-second rates against the
// oldest kept sample at least rateWindow old, with the interval; without
// one, the average since the agent started (since true).
func (s *statusRates) rates(now, started time.Time, counters []metrics.Counter) (map[string]float64, time.Duration, bool) {
	cur := counterSample{at: now, values: make(map[string]uint64, len(counters))}
	for _, c := range counters {
		cur.values[c.Name] = c.Value
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = slices.DeleteFunc(s.samples, func(c counterSample) bool { return now.Sub(c.at) > rateKeep })
	var base *counterSample
	for i := range s.samples {
		if now.Sub(s.samples[i].at) >= rateWindow {
			base = &s.samples[i] // the latest one old enough
		}
	}
	out := make(map[string]float64, len(counters))
	since := base == nil
	var over time.Duration
	if since {
		over = now.Sub(started)
	} else {
		over = now.Sub(base.at)
	}
	for _, c := range counters {
		var prev uint64
		if base != nil {
			prev = base.values[c.Name]
		}
		if over > 0 && c.Value >= prev {
			out[c.Name] = float64(c.Value-prev) / over.Seconds()
		}
	}
	if len(s.samples) == 0 || now.Sub(s.samples[len(s.samples)-1].at) >= time.Second {
		s.samples = append(s.samples, cur)
	}
	return out, over, since
}

// statusData is the status page's.
type statusData struct {
	St        agentStatus
	Uptime    time.Duration
	Losses    []counterRow
	Events    []counterRow
	Gauges    []metrics.Gauge
	RateOver  time.Duration
	RateSince bool // rates are averages since the agent started
	// SpansPerSec is the spans built per second (the agent's event rate).
	SpansPerSec float64
	StoreFill   float64 // 0..1
	Selected    []skippedProcess
	Unreadable  []skippedProcess
	Empty       *emptyState
}

type counterRow struct {
	metrics.Counter
	Rate float64
}

func (u *UI) statusPage(w http.ResponseWriter, r *http.Request) {
	st, ok := u.agentStatus()
	p := page{Title: "Agent status", Nav: "status"}
	if !ok {
		u.fail(w, r, http.StatusServiceUnavailable, "Agent status unavailable", "This UI was started without the agent's status.", "")
		return
	}
	now := u.opts.Now()
	d := &statusData{St: st, Uptime: now.Sub(st.Started).Round(time.Second), Gauges: st.Gauges}
	rates, over, since := u.status.rates(now, st.Started, st.Counters)
	d.RateOver, d.RateSince = over.Round(time.Second), since
	for _, c := range st.Counters {
		row := counterRow{Counter: c, Rate: rates[c.Name]}
		if c.Loss {
			d.Losses = append(d.Losses, row)
		} else {
			d.Events = append(d.Events, row)
		}
		if c.Name == "spans_built" {
			d.SpansPerSec = row.Rate
		}
	}
	// Losses that happened first, then by name.
	slices.SortStableFunc(d.Losses, func(a, b counterRow) int {
		if (a.Value > 0) != (b.Value > 0) {
			if a.Value > 0 {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	if st.Store.Budget > 0 {
		d.StoreFill = float64(st.Store.Bytes) / float64(st.Store.Budget)
	}
	for _, s := range st.Skipped {
		if s.Selected {
			d.Selected = append(d.Selected, s)
		} else {
			d.Unreadable = append(d.Unreadable, s)
		}
	}
	if len(st.Processes) == 0 {
		d.Empty = u.emptyState("", "", "")
	}
	p.Data = d
	u.render(w, "status", http.StatusOK, p)
}
