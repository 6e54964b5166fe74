package api

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/latscope/latscope/analysis/flame"
)

// FlameRequest is what GET /api/flame (and the pprof UI under /pprof/)
// asks for: the requests of a window (Query), and optionally a baseline
// window to set them against.
type FlameRequest struct {
	// Query selects the requests: window, service, operation, latency
	// floor or slowest share, errors.
	Query flame.Query
	// BaselineStart and BaselineEnd, when BaselineStart is set, are a
	// baseline window: the answer is the diff of the window against it
	// (the same filters select the baseline's requests).
	BaselineStart, BaselineEnd time.Time
	// Normalize divides each window's profile by its request count.
	Normalize bool
}

// HasBaseline reports whether r asks for a diff.
func (r FlameRequest) HasBaseline() bool { return !r.BaselineStart.IsZero() }

// Baseline returns r's query over the baseline window.
func (r FlameRequest) Baseline() flame.Query {
	q := r.Query
	q.Start, q.End = r.BaselineStart, r.BaselineEnd
	return q
}

// ParseFlame reads the parameters of GET /api/flame:
//
//	service, operation       the requests: topmost spans of this service and operation
//	                         (neither: each trace's root; see flame.Query)
//	since, until             the window, as durations before now (5m; until default now)
//	start, end               or as µs since the Unix epoch (Jaeger's form)
//	minDuration              requests at least this long (250ms)
//	slowest                  the slowest share of each operation: 1% or 0.01
//	error                    true: requests with an error span
//	baselineSince, baselineUntil  a baseline window (durations before now;
//	                         baselineUntil defaults to the window's start)
//	baselineStart, baselineEnd    or in µs since the Unix epoch
//	normalize                true: values per request
//
// The error names the parameter at fault. Other parameters (pprof's own
// in the web UI) are ignored.
func ParseFlame(v url.Values, now time.Time) (FlameRequest, error) {
	r := FlameRequest{Query: flame.Query{Service: v.Get("service"), Operation: v.Get("operation")}}
	var err error
	if r.Query.Start, r.Query.End, err = window(v, now, "since", "until", "start", "end"); err != nil {
		return r, err
	}
	if r.Query.MinDuration, err = durationParam(v, "minDuration"); err != nil {
		return r, err
	}
	if r.Query.Slowest, err = shareParam(v, "slowest"); err != nil {
		return r, err
	}
	if r.Query.MinDuration > 0 && r.Query.Slowest > 0 {
		return r, fmt.Errorf("parameters minDuration and slowest: give one latency floor, not both")
	}
	if r.Query.Errors, err = boolParam(v, "error"); err != nil {
		return r, err
	}
	if r.Normalize, err = boolParam(v, "normalize"); err != nil {
		return r, err
	}
	if r.BaselineStart, r.BaselineEnd, err = window(v, now, "baselineSince", "baselineUntil", "baselineStart", "baselineEnd"); err != nil {
		return r, err
	}
	switch {
	case r.BaselineStart.IsZero() && !r.BaselineEnd.IsZero():
		return r, fmt.Errorf("parameter baselineSince (or baselineStart) is required with baselineUntil: where the baseline window starts")
	case !r.BaselineStart.IsZero() && v.Get("baselineUntil") == "" && v.Get("baselineEnd") == "":
		if r.Query.Start.IsZero() {
			return r, fmt.Errorf("parameter baselineUntil (or baselineEnd) is required when the window has no start (since or start)")
		}
		r.BaselineEnd = r.Query.Start
		if r.BaselineEnd.Before(r.BaselineStart) {
			return r, fmt.Errorf("parameter baselineSince: the baseline would start after the window's start, where it ends by default; give a longer baselineSince or a baselineUntil")
		}
	}
	return r, nil
}

// window reads a time window given as durations before now (since,
// until) or as µs since the epoch (start, end), not both forms for one
// bound.
func window(v url.Values, now time.Time, since, until, start, end string) (time.Time, time.Time, error) {
	lo, err := agoOrMicros(v, now, since, start)
	if err != nil {
		return lo, time.Time{}, err
	}
	hi, err := agoOrMicros(v, now, until, end)
	if err != nil {
		return lo, hi, err
	}
	if !lo.IsZero() && !hi.IsZero() && hi.Before(lo) {
		return lo, hi, fmt.Errorf("parameters %s and %s: the window ends (%s) before it starts (%s)", since, until,
			hi.UTC().Format(time.RFC3339Nano), lo.UTC().Format(time.RFC3339Nano))
	}
	return lo, hi, nil
}

func agoOrMicros(v url.Values, now time.Time, ago, micros string) (time.Time, error) {
	if v.Get(ago) != "" && v.Get(micros) != "" {
		return time.Time{}, fmt.Errorf("parameters %s and %s: give one of them", ago, micros)
	}
	if v.Get(ago) != "" {
		d, err := durationParam(v, ago)
		if err != nil {
			return time.Time{}, err
		}
		return now.Add(-d), nil
	}
	return microsParam(v, micros)
}

// shareParam reads a share: "1%" or "0.01", in (0, 1].
func shareParam(v url.Values, name string) (float64, error) {
	s := v.Get(name)
	if s == "" {
		return 0, nil
	}
	num, scale := s, 1.0
	if strings.HasSuffix(s, "%") {
		num, scale = strings.TrimSuffix(s, "%"), 100
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f/scale <= 0 || f/scale > 1 {
		return 0, fmt.Errorf("parameter %s: %q is not a share in (0, 100%%] (e.g. 1%% or 0.01)", name, s)
	}
	return f / scale, nil
}

func boolParam(v url.Values, name string) (bool, error) {
	s := v.Get(name)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("parameter %s: %q is not true or false", name, s)
	}
	return b, nil
}
