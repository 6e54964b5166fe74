package flame

import (
	"fmt"

	"github.com/google/pprof/profile"
)

// BaseLabel is the label pprof gives the baseline's samples in a diff
// (what `go tool pprof -diff_base` does): pprof computes percentages
// against the baseline's total and shows the difference.
const BaseLabel = "pprof::base"

// Normalize returns a copy of p with every value divided by requests (the
// requests its window held): critical_path becomes nanoseconds per
// request, requests 1. Two normalized windows compare per request, so a
// change of request rate does not read as a change of latency. Values
// round to the nearest nanosecond, so the total may differ from the mean
// request duration by up to a nanosecond per sample. requests ≤ 0 returns
// a plain copy.
func Normalize(p *profile.Profile, requests int64) *profile.Profile {
	c := p.Copy()
	if requests > 0 {
		c.Scale(1 / float64(requests))
		c.Comments = append(c.Comments, fmt.Sprintf("normalized: values per request, over %d requests", requests))
	}
	return c
}

// Diff returns the profile pprof builds for `go tool pprof -diff_base
// base spike`: spike's samples, and base's negated and labelled
// BaseLabel=true, in one profile. Served or saved as one file, pprof shows
// it as a diff without -diff_base. Neither input is modified.
func Diff(spike, base *profile.Profile) (*profile.Profile, error) {
	b := base.Copy()
	b.SetLabel(BaseLabel, []string{"true"})
	b.Scale(-1)
	d, err := profile.Merge([]*profile.Profile{spike.Copy(), b})
	if err != nil {
		return nil, fmt.Errorf("merge spike and baseline profiles: %w", err)
	}
	return d, nil
}
