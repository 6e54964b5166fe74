package flame

import (
	"time"

	"github.com/latscope/latscope/analysis/criticalpath"
	"github.com/latscope/latscope/span"
)

// causeFrames name the leaf frames of TimeCauses, one per latency
// attribution category (downstream has none: the path goes into what the
// span waited on).
var causeFrames = [span.NumTimeCategories]string{
	span.TimeOnCPU:        OnCPU,
	span.TimeRunnable:     "[runnable]",
	span.TimeGCSTW:        "[gc stw]",
	span.TimeGCAssist:     "[gc assist]",
	span.TimeBlockedNet:   "[blocked: net]",
	span.TimeBlockedSync:  "[blocked: sync]",
	span.TimeBlockedChan:  "[blocked: chan]",
	span.TimeBlockedSleep: "[blocked: sleep]",
	span.TimeSyscall:      "[syscall]",
	span.TimeOther:        "[blocked: other]",
}

// TimeCauses is the SelfSplit of latency attribution: a segment of a
// span's own work is split by the span's own time split
// (criticalpath.Path.OwnSplit) in proportion, less its downstream time.
// A span with the always-on split gives its stop-the-world and assist
// time (at most the segment's, spread over its segments in proportion)
// and leaves the rest on the span's frame; one without a split, all.
func TimeCauses(p *criticalpath.Path, seg criticalpath.Segment) []Cause {
	split, full, ok := p.OwnSplit(seg.Node)
	if !ok {
		return nil
	}
	self, d := p.Nodes[seg.Node].Self, seg.Duration()
	if self <= 0 || d <= 0 {
		return nil
	}
	var out []Cause
	if !full {
		for _, c := range []span.TimeCategory{span.TimeGCSTW, span.TimeGCAssist} {
			if v := time.Duration(split[c]); v > 0 {
				out = append(out, Cause{Name: causeFrames[c], Duration: time.Duration(float64(min(v, self)) * float64(d) / float64(self))})
			}
		}
		return out
	}
	split[span.TimeDownstream] = 0
	var sum int64
	for _, v := range split {
		sum += v
	}
	if sum <= 0 {
		return nil
	}
	var given time.Duration
	last := -1
	for c, v := range split {
		if v > 0 {
			part := time.Duration(float64(d) * float64(v) / float64(sum))
			out = append(out, Cause{Name: causeFrames[c], Duration: part})
			given += part
			last = len(out) - 1
		}
	}
	if last >= 0 {
		out[last].Duration += d - given // rounding: the segment is covered exactly
	}
	return out
}
