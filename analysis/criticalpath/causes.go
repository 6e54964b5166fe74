package criticalpath

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/latscope/latscope/span"
)

// Cause is why a span's part of the critical path took its time: the
// largest category of its own time split (latency attribution,
// docs/attribution.md), "catalog: 48% blocked on mutex or other sync in
// main.(*cache).get".
type Cause struct {
	Node    int    `json:"-"` // index in Path.Nodes
	Service string `json:"service"`
	Span    string `json:"span"` // the span's name
	// Category is the span.TimeCategory's name ("blocked_sync"), Phrase
	// it in words.
	Category string `json:"category"`
	Phrase   string `json:"phrase"`
	// Time is the part of the span's exclusive critical-path time the
	// category holds; Share is Time / Path.Total (0..1).
	Time  time.Duration `json:"timeNs"`
	Share float64       `json:"share"`
	// Full: from a full split (deep attribution); false: from the
	// always-on GC time alone.
	Full bool `json:"full"`
}

// phrases say what each category means in an explanation.
var phrases = [span.NumTimeCategories]string{
	span.TimeOnCPU:        "on CPU",
	span.TimeRunnable:     "waiting for a CPU (runnable)",
	span.TimeGCSTW:        "stopped by the GC (stop-the-world)",
	span.TimeGCAssist:     "assisting the GC",
	span.TimeBlockedNet:   "blocked on network I/O",
	span.TimeBlockedSync:  "blocked on mutex or other sync",
	span.TimeBlockedChan:  "blocked on channels",
	span.TimeBlockedSleep: "sleeping",
	span.TimeSyscall:      "blocked in the kernel (syscalls)",
	span.TimeDownstream:   "waiting on downstream calls",
	span.TimeOther:        "blocked (other reasons)",
}

// Phrase says what a category means, for explanations.
func Phrase(c span.TimeCategory) string {
	if c < 0 || c >= span.NumTimeCategories {
		return c.Name()
	}
	return phrases[c]
}

// OwnSplit returns the time split of node i's span less the splits of
// its children on the path that ran on its goroutine (their time is
// theirs, the parent was waiting on them), clamped at zero, and whether
// it is a full one; ok is false when the span has no split. It is the
// span's own time by cause, what its segments of the path are made of
// (less its downstream time: the path goes into what it waited on).
func (p *Path) OwnSplit(i int) (split [span.NumTimeCategories]int64, full, ok bool) {
	t := p.Nodes[i].Span.Time
	if t == nil {
		return split, false, false
	}
	split = t.NS
	s := p.Nodes[i].Span
	for _, n := range p.Nodes[i+1:] {
		if n.Parent != i || n.Span.Time == nil || n.Span.GoID != s.GoID || n.Span.Process != s.Process {
			continue
		}
		for c, v := range n.Span.Time.NS {
			split[c] -= v
		}
	}
	for c := range split {
		split[c] = max(split[c], 0)
	}
	return split, t.Full, true
}

// causes names the dominant cause of each span's exclusive time on the
// path, from its own split (OwnSplit) less its downstream time. A span
// with a full split gets its largest category, scaled to its exclusive
// time; a span with the always-on split gets its stop-the-world and
// assist time, at most its exclusive time. Largest first; those under 1%
// of the path left out.
func causes(p *Path) []Cause {
	total := p.Total()
	if total <= 0 {
		return nil
	}
	var out []Cause
	add := func(i int, c span.TimeCategory, d time.Duration, full bool) {
		if d <= 0 || float64(d) < 0.01*float64(total) {
			return
		}
		s := p.Nodes[i].Span
		out = append(out, Cause{Node: i, Service: service(s), Span: s.Name, Category: c.Name(), Phrase: Phrase(c), Time: d, Share: float64(d) / float64(total), Full: full})
	}
	for i, n := range p.Nodes {
		split, full, ok := p.OwnSplit(i)
		if !ok || n.Self <= 0 {
			continue
		}
		if !full {
			for _, c := range []span.TimeCategory{span.TimeGCSTW, span.TimeGCAssist} {
				add(i, c, min(time.Duration(split[c]), n.Self), false)
			}
			continue
		}
		split[span.TimeDownstream] = 0
		var sum int64
		best := span.TimeCategory(0)
		for c, v := range split {
			sum += v
			if v > split[best] {
				best = span.TimeCategory(c)
			}
		}
		if sum > 0 {
			add(i, best, time.Duration(float64(n.Self)*float64(split[best])/float64(sum)), true)
		}
	}
	slices.SortStableFunc(out, func(a, b Cause) int { return cmp.Compare(b.Time, a.Time) })
	return out
}

// String is the cause in one line: "catalog: 48% blocked on mutex or
// other sync in main.(*cache).get".
func (c Cause) String() string {
	return fmt.Sprintf("%s: %d%% %s in %s", c.Service, int(c.Share*100+0.5), c.Phrase, c.Span)
}
