package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// median of v (the mean of the middle two for an even count); NaN when
// empty.
func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile is the nearest-rank p-th percentile of v (p in 0–100): of
// 30 samples, p99 is the largest.
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// row is one measure of a table: one value per round.
type row struct {
	name string
	vals []float64
	prec int    // decimals shown
	goal string // "" when the measure has no goal
	// met judges the values against the goal (nil: no goal).
	met func(vals []float64) bool
}

// atMost is a goal met when the median is at most limit.
func atMost(limit float64) func([]float64) bool {
	return func(v []float64) bool { return median(v) <= limit }
}

// allEqual is a goal met when every value is want.
func allEqual(want float64) func([]float64) bool {
	return func(v []float64) bool {
		for _, x := range v {
			if x != want {
				return false
			}
		}
		return len(v) > 0
	}
}

// printTable prints rows as a Markdown table: median, min–max and every
// round's value, the goal and whether it is met.
func printTable(title string, rows []row) {
	fmt.Printf("### %s\n\n", title)
	fmt.Println("| measure | median | min–max | per round | goal | met |")
	fmt.Println("|---|---:|---:|---|---|---|")
	for _, r := range rows {
		f := func(x float64) string { return fmt.Sprintf("%.*f", r.prec, x) }
		per := make([]string, len(r.vals))
		for i, x := range r.vals {
			per[i] = f(x)
		}
		spread := "—"
		if len(r.vals) > 0 {
			spread = f(slices.Min(r.vals)) + "–" + f(slices.Max(r.vals))
		}
		goal, met := "—", ""
		if r.goal != "" {
			goal = r.goal
		}
		if r.met != nil && len(r.vals) > 0 {
			met = "yes"
			if !r.met(r.vals) {
				met = "**no**"
			}
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", r.name, f(median(r.vals)), spread, strings.Join(per, " "), goal, met)
	}
	fmt.Println()
}
