package criticalpath

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/latscope/latscope/span"
)

// Frame names a span as the flame graphs and explanations do: its
// service and its operation, "catalog GET /product/{id}".
func Frame(s *span.Span) string { return service(s) + " " + s.Name }

// Contributor is one span's part of a critical path.
type Contributor struct {
	Node int `json:"-"` // index in Path.Nodes
	// Frame is Frame(span); Stack the frames from the root down to it.
	Frame string   `json:"frame"`
	Stack []string `json:"stack"`
	// Self is the span's exclusive critical-path time; Inclusive adds the
	// path's time in its descendants.
	Self      time.Duration `json:"selfNs"`
	Inclusive time.Duration `json:"inclusiveNs"`
	// Share is Self / Path.Total (0..1).
	Share float64 `json:"share"`
}

// Explanation is a critical path in plain words.
type Explanation struct {
	Total time.Duration `json:"totalNs"`
	Root  string        `json:"root"`
	// Lines say where the time went, the largest parts first, e.g.
	// "71% (596ms) waiting on pricing demo.Pricing/GetPrice; inside it 63%
	// pricing redis GET"; calls made from within a call are indented
	// under it.
	Lines []string `json:"lines"`
	// Contributors are the spans on the path by exclusive time, largest
	// first (spans with none left out).
	Contributors []Contributor `json:"contributors"`
	// Causes say why, where the spans carry a time split (latency
	// attribution): the dominant cause of each one's exclusive time,
	// largest first.
	Causes []Cause `json:"causes,omitempty"`
}

// Explain describes p by service: the root's service's own work and each
// call into another service it waited on (a "hop": a span whose service
// differs from its parent's), largest first, with the largest part inside
// each hop; hops within a hop are indented under it. Percentages of the
// whole path, "inside it" of the hop.
func Explain(p *Path) Explanation {
	e := Explanation{}
	if p == nil || len(p.Nodes) == 0 {
		return e
	}
	e.Total, e.Root = p.Total(), Frame(p.Root())
	x := explainer{p: p, incl: p.inclusive(), kids: make([][]int, len(p.Nodes))}
	for i, n := range p.Nodes[1:] {
		x.kids[n.Parent] = append(x.kids[n.Parent], i+1)
	}
	for _, k := range x.kids {
		slices.SortStableFunc(k, func(a, b int) int { return cmp.Compare(x.incl[b], x.incl[a]) })
	}
	e.Lines = x.region(0, "")
	for i, n := range p.Nodes {
		if n.Self <= 0 {
			continue
		}
		var stack []string
		for _, s := range p.Stack(i) {
			stack = append(stack, Frame(s))
		}
		e.Contributors = append(e.Contributors, Contributor{Node: i, Frame: Frame(n.Span), Stack: stack, Self: n.Self, Inclusive: x.incl[i], Share: x.share(n.Self)})
	}
	slices.SortStableFunc(e.Contributors, func(a, b Contributor) int { return cmp.Compare(b.Self, a.Self) })
	e.Causes = causes(p)
	return e
}

type explainer struct {
	p    *Path
	incl []time.Duration
	kids [][]int
}

func (x *explainer) share(d time.Duration) float64 {
	if t := x.p.Total(); t > 0 {
		return float64(d) / float64(t)
	}
	return 0
}

func pct(d, of time.Duration) int {
	if of <= 0 {
		return 0
	}
	return int(float64(d)/float64(of)*100 + 0.5)
}

// region returns the lines for the spans of r's service reachable from r
// without crossing into another service: their own work, and the hops
// out of them.
func (x *explainer) region(r int, indent string) []string {
	svc := service(x.p.Nodes[r].Span)
	var own []int
	var hops []int
	var walk func(i int)
	walk = func(i int) {
		own = append(own, i)
		for _, k := range x.kids[i] {
			if service(x.p.Nodes[k].Span) != svc {
				hops = append(hops, k)
			} else {
				walk(k)
			}
		}
	}
	walk(r)
	type part struct {
		d     time.Duration
		lines []string
	}
	var parts []part
	var ownTime time.Duration
	for _, i := range own {
		ownTime += x.p.Nodes[i].Self
	}
	total := x.p.Total()
	if ownTime > 0 {
		slices.SortStableFunc(own, func(a, b int) int { return cmp.Compare(x.p.Nodes[b].Self, x.p.Nodes[a].Self) })
		var top []string
		for k, i := range own[:min(3, len(own))] {
			if n := x.p.Nodes[i]; n.Self > 0 && (k == 0 || pct(n.Self, total) >= 1) {
				top = append(top, fmt.Sprintf("%s %d%%", Frame(n.Span), pct(n.Self, total)))
			}
		}
		parts = append(parts, part{ownTime, []string{fmt.Sprintf("%s%d%% (%s) %s own work: %s", indent, pct(ownTime, total), round(ownTime), svc, strings.Join(top, ", "))}})
	}
	for _, h := range hops {
		line := fmt.Sprintf("%s%d%% (%s) waiting on %s", indent, pct(x.incl[h], total), round(x.incl[h]), Frame(x.p.Nodes[h].Span))
		if ks := x.kids[h]; len(ks) > 0 && pct(x.incl[ks[0]], x.incl[h]) >= 20 {
			line += fmt.Sprintf("; inside it %d%% %s", pct(x.incl[ks[0]], x.incl[h]), Frame(x.p.Nodes[ks[0]].Span))
		}
		lines := []string{line}
		if x.hasHop(h) {
			lines = append(lines, x.region(h, indent+"  ")...)
		}
		parts = append(parts, part{x.incl[h], lines})
	}
	slices.SortStableFunc(parts, func(a, b part) int { return cmp.Compare(b.d, a.d) })
	var out []string
	for _, pt := range parts {
		out = append(out, pt.lines...)
	}
	return out
}

// hasHop reports whether a span of another service is on the path under
// node r (reached through r's service).
func (x *explainer) hasHop(r int) bool {
	svc := service(x.p.Nodes[r].Span)
	for _, k := range x.kids[r] {
		if service(x.p.Nodes[k].Span) != svc || x.hasHop(k) {
			return true
		}
	}
	return false
}

func service(s *span.Span) string {
	if s.Process == nil || s.Process.ServiceName == "" {
		return "unknown_service"
	}
	return s.Process.ServiceName
}

// String is the explanation as text: a headline, then one line per part.
func (e Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s critical path of %s\n", round(e.Total), e.Root)
	for _, l := range e.Lines {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	if len(e.Causes) > 0 {
		b.WriteString("why (runtime attribution):\n")
		for _, c := range e.Causes {
			fmt.Fprintf(&b, "  %s\n", c)
		}
	}
	return b.String()
}

// inclusive returns each node's self time plus its path descendants'.
func (p *Path) inclusive() []time.Duration {
	incl := make([]time.Duration, len(p.Nodes))
	for i := len(p.Nodes) - 1; i >= 0; i-- { // children after parents
		incl[i] += p.Nodes[i].Self
		if par := p.Nodes[i].Parent; par >= 0 {
			incl[par] += incl[i]
		}
	}
	return incl
}

// round keeps three significant digits or so: 840ms, 1.25s, 312µs.
func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= 10*time.Microsecond:
		return d.Round(time.Microsecond)
	}
	return d
}
