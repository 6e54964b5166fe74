package attribution

import (
	"fmt"
	"sync"
	"time"

	"github.com/latscope/latscope/sampling"
	"github.com/latscope/latscope/span"
)

// MaxDeep is the longest deep period one request may ask for: deep mode
// costs every goroutine status change of every traced process
// (docs/attribution.md), so it is for a spike, not for the day.
const MaxDeep = time.Hour

// Deep is the state of deep attribution, as the agent's API reports it.
type Deep struct {
	On bool `json:"on"`
	// Since and Until bound the current period (when On).
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	// Reason says who switched on the current (or last) period: "api",
	// or the operation and percentile that crossed the threshold.
	Reason string `json:"reason,omitempty"`
	// Periods started and ended (by their time box or on request) since
	// the agent started.
	Periods uint64 `json:"periods"`
	Ended   uint64 `json:"ended"`
	// Probe links attached and detached for deep periods: equal when it
	// is off.
	LinksAttached uint64 `json:"linksAttached"`
	LinksDetached uint64 `json:"linksDetached"`
}

// Switch turns deep mode on for a while and reports its state; the agent
// implements it.
type Switch interface {
	// StartDeep turns deep mode on for d (at most MaxDeep), or extends a
	// period in progress to end no earlier than d from now.
	StartDeep(d time.Duration, reason string) (Deep, error)
	// StopDeep ends the period in progress, if any.
	StopDeep() (Deep, error)
	// DeepState reports the state.
	DeepState() Deep
}

// TriggerConfig switches deep mode on by itself when a server
// operation's p99 latency crosses a threshold.
type TriggerConfig struct {
	// P99Above is the threshold; zero disables the trigger.
	P99Above time.Duration `yaml:"p99Above"`
	// For is how long deep mode then stays on (default 1 minute).
	For time.Duration `yaml:"for"`
	// Cooldown is the least time between two triggered periods, so a
	// service that stays slow is not probed deep all day (default 10
	// minutes).
	Cooldown time.Duration `yaml:"cooldown"`
}

// Defaults of TriggerConfig.
const (
	DefaultTriggerFor      = time.Minute
	DefaultTriggerCooldown = 10 * time.Minute
)

// Trigger watches the p99 of every server operation (its local-root
// server spans, over the keep policy's rolling window: sampling.Percentiles,
// which needs sampling.MinSamples spans) and starts deep mode once one
// crosses the threshold. Safe for concurrent use.
type Trigger struct {
	cfg   TriggerConfig
	start func(d time.Duration, reason string)

	mu   sync.Mutex
	pct  sampling.Percentiles
	last time.Time // when it last fired
}

// NewTrigger returns a trigger that calls start; nil if cfg disables it.
// start runs on its own goroutine (attaching probes takes milliseconds).
func NewTrigger(cfg TriggerConfig, start func(d time.Duration, reason string)) *Trigger {
	if cfg.P99Above <= 0 {
		return nil
	}
	if cfg.For <= 0 {
		cfg.For = DefaultTriggerFor
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = DefaultTriggerCooldown
	}
	return &Trigger{cfg: cfg, start: start}
}

// Observe records the server spans of a batch and fires when one's
// operation's p99 is above the threshold.
func (t *Trigger) Observe(spans []*span.Span) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range spans {
		if s.Kind != span.KindServer || s.Process == nil {
			continue
		}
		p99, ok := t.pct.Observe(s.Process.ServiceName, s.Name, 99, s.End, s.Duration())
		if !ok || p99 <= t.cfg.P99Above || !t.last.IsZero() && s.End.Sub(t.last) < t.cfg.Cooldown {
			continue
		}
		t.last = s.End
		reason := fmt.Sprintf("p99 of %s %s at %s, above %s", s.Process.ServiceName, s.Name, p99.Round(time.Microsecond), t.cfg.P99Above)
		go t.start(t.cfg.For, reason)
	}
}
