package ui

import (
	"fmt"
	"hash/fnv"
	"html/template"
	"math"
	"strconv"
	"time"
)

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"dur":   fmtDur,
	"pct":   fmtPct,
	"rate":  fmtRate,
	"ago":   fmtAgo,
	"clock": func(t time.Time) string { return t.Local().Format("15:04:05") },
	"stamp": func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05.000 MST") },
	"color": serviceColor,
	"count": fmtCount,
	"bytes": fmtBytes,
	"percent": func(f float64) string {
		return strconv.FormatFloat(math.Max(0, math.Min(100, f*100)), 'f', 3, 64) + "%"
	},
	"add":    func(a, b int) int { return a + b },
	"div100": func(f float64) float64 { return f / 100 },
	"deref": func(f *float64) float64 {
		if f == nil {
			return 0
		}
		return *f
	},
}

// fmtDur writes a duration with three significant digits: 840µs, 12.3ms,
// 1.25s. It takes nanoseconds (int64) or a time.Duration.
func fmtDur(v any) string {
	var d time.Duration
	switch x := v.(type) {
	case int64:
		d = time.Duration(x)
	case time.Duration:
		d = x
	case *int64:
		if x == nil {
			return "–"
		}
		d = time.Duration(*x)
	default:
		return fmt.Sprint(v)
	}
	neg := ""
	if d < 0 {
		neg, d = "−", -d
	}
	f := float64(d)
	switch {
	case d == 0:
		return "0"
	case d < time.Microsecond:
		return neg + fmt.Sprintf("%dns", d)
	case d < time.Millisecond:
		return neg + sig3(f/1e3) + "µs"
	case d < time.Second:
		return neg + sig3(f/1e6) + "ms"
	case d < time.Minute:
		return neg + sig3(f/1e9) + "s"
	}
	return neg + d.Round(time.Second).String()
}

func sig3(f float64) string {
	switch {
	case f >= 100:
		return strconv.FormatFloat(f, 'f', 0, 64)
	case f >= 10:
		return strconv.FormatFloat(f, 'f', 1, 64)
	}
	return strconv.FormatFloat(f, 'f', 2, 64)
}

// fmtPct writes a ratio 0..1 as a percentage.
func fmtPct(f float64) string {
	p := f * 100
	switch {
	case p == 0:
		return "0%"
	case p < 0.1:
		return "<0.1%"
	case p < 10:
		return strconv.FormatFloat(p, 'f', 1, 64) + "%"
	}
	return strconv.FormatFloat(p, 'f', 0, 64) + "%"
}

func fmtRate(f float64) string {
	switch {
	case f == 0:
		return "0/s"
	case f < 0.1:
		return strconv.FormatFloat(f*60, 'f', 1, 64) + "/min"
	case f < 10:
		return strconv.FormatFloat(f, 'f', 2, 64) + "/s"
	}
	return strconv.FormatFloat(f, 'f', 0, 64) + "/s"
}

func fmtAgo(t, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d.Hours()), int(d.Minutes())%60)
	}
	return t.Local().Format("2006-01-02 15:04")
}

func fmtCount(v any) string {
	var n uint64
	switch x := v.(type) {
	case int:
		n = uint64(max(x, 0))
	case int64:
		n = uint64(max(x, 0))
	case uint64:
		n = x
	case float64:
		n = uint64(math.Max(x, 0))
	default:
		return fmt.Sprint(v)
	}
	s := strconv.FormatUint(n, 10)
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func fmtBytes(v int64) string {
	const unit = 1024
	if v < unit {
		return fmt.Sprintf("%d B", v)
	}
	f, i := float64(v), 0
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return sig3(f) + " " + []string{"B", "KiB", "MiB", "GiB", "TiB"}[i]
}

// serviceColor is a stable palette index (0–7) for a service, used as a
// CSS class: each service keeps its colour across pages. Colour is never
// the only cue: every bar also carries the service's name.
func serviceColor(service string) int {
	h := fnv.New32a()
	h.Write([]byte(service))
	return int(h.Sum32() % 8)
}
