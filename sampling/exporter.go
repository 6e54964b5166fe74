package sampling

import (
	"fmt"
	"sync"

	"github.com/latscope/latscope/span"
)

// Reason is the rule that kept a trace. When several rules keep a trace,
// the first in this order counts.
type Reason int

const (
	ReasonAll Reason = iota
	ReasonError
	ReasonDuration
	ReasonPercentile
	ReasonRatio
	numReasons
)

var reasonNames = [numReasons]string{"all", "error", "duration", "percentile", "ratio"}

// String returns the reason's metric label value: all, error, duration,
// percentile or ratio.
func (r Reason) String() string {
	if r < 0 || r >= numReasons {
		return fmt.Sprintf("Reason(%d)", int(r))
	}
	return reasonNames[r]
}

// MarshalText makes a Reason a readable JSON map key ("error").
func (r Reason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a Reason's name back (Stats decoded from JSON, as
// `latscope status` does).
func (r *Reason) UnmarshalText(b []byte) error {
	for _, x := range Reasons() {
		if x.String() == string(b) {
			*r = x
			return nil
		}
	}
	return fmt.Errorf("unknown keep reason %q", b)
}

// Reasons lists every Reason in order.
func Reasons() []Reason {
	return []Reason{ReasonAll, ReasonError, ReasonDuration, ReasonPercentile, ReasonRatio}
}

// Stats counts an Exporter's decisions since it was made.
type Stats struct {
	// TracesKept counts kept traces by the rule that kept them. A trace
	// whose decision was evicted and whose later spans arrive is decided
	// (and counted) again. With the policy all nothing is decided: a trace
	// is counted at each of its local roots (spans without a parent or
	// with a remote one), so once per process of the node it crosses.
	TracesKept map[Reason]uint64 `json:"tracesKept"`
	// TracesDropped counts traces no rule kept.
	TracesDropped uint64 `json:"tracesDropped"`
	// SpansKept and SpansDropped count spans, late ones included.
	SpansKept    uint64 `json:"spansKept"`
	SpansDropped uint64 `json:"spansDropped"`
	// DecisionsEvicted counts decisions forgotten to bound memory: spans
	// of such a trace arriving later are decided anew on their own.
	DecisionsEvicted uint64 `json:"decisionsEvicted"`
	// Operations is how many operations have rolling percentiles now.
	Operations int `json:"operations"`
	// OperationsUntracked counts local roots of operations beyond
	// MaxOperations, to which the percentile rule did not apply.
	OperationsUntracked uint64 `json:"operationsUntracked"`
	// HeldSpans are spans a Waiting exporter holds undecided now;
	// DecidedEarly counts traces it decided before their wait was over
	// (MaxHeldSpans reached).
	HeldSpans    int    `json:"heldSpans"`
	DecidedEarly uint64 `json:"decidedEarly"`
}

// Exporter is a span.Exporter that passes on the spans of the traces its
// Policy keeps. Safe for concurrent use.
//
// Spans of one trace may arrive in several batches. Export groups a batch
// by trace id. A trace seen for the first time is decided on the spans at
// hand: its local roots are the spans whose parent is zero, remote, or
// not in the batch; the error rule looks at every span, the duration rule
// at the slowest local root, the percentile rule at each local root
// against its own operation. The decision is remembered (the last
// DefaultDecisions traces, least recently seen forgotten first), and
// later spans of the trace follow it. Every local root updates its
// operation's rolling percentile, kept or not; in later batches only
// spans with a zero or remote parent count as roots, the others being
// children of spans exported before.
type Exporter struct {
	policy    Policy
	threshold uint64 // consistent sampling threshold for policy.Ratio
	next      span.Exporter

	mu      sync.Mutex
	decided *decisions
	ops     operations
	stats   Stats
	// Reused per batch under mu.
	groupOf map[span.TraceID]int // trace → index in ids, groups, keep
	ids     []span.TraceID
	groups  [][]*span.Span
	keep    []bool
	present map[spanKey]struct{}
}

type spanKey struct {
	trace span.TraceID
	span  span.SpanID
}

// NewExporter returns an Exporter passing the traces p keeps to next.
func NewExporter(p Policy, next span.Exporter) *Exporter {
	e := &Exporter{
		policy:    p,
		threshold: Threshold(p.Ratio),
		next:      next,
		decided:   newDecisions(DefaultDecisions),
		groupOf:   make(map[span.TraceID]int),
		present:   make(map[spanKey]struct{}),
	}
	e.stats.TracesKept = make(map[Reason]uint64, numReasons)
	return e
}

// Policy returns the policy e applies.
func (e *Exporter) Policy() Policy { return e.policy }

// Export passes the spans of kept traces to the next exporter, in one
// call, in their order in spans. It never modifies a span.
func (e *Exporter) Export(spans []*span.Span) error {
	kept := e.filter(spans)
	if len(kept) == 0 {
		return nil
	}
	if err := e.next.Export(kept); err != nil {
		return fmt.Errorf("export %d sampled spans: %w", len(kept), err)
	}
	return nil
}

// decidedBefore reports whether trace id has a decision already.
func (e *Exporter) decidedBefore(id span.TraceID) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.decided.get(id)
	return ok
}

// Close closes the next exporter.
func (e *Exporter) Close() error { return e.next.Close() }

// Stats returns a snapshot of e's counters.
func (e *Exporter) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.TracesKept = make(map[Reason]uint64, numReasons)
	for r, n := range e.stats.TracesKept {
		s.TracesKept[r] = n
	}
	s.DecisionsEvicted = e.decided.evicted
	s.Operations = len(e.ops.byOp)
	s.OperationsUntracked = e.ops.untracked
	return s
}

func (e *Exporter) filter(spans []*span.Span) []*span.Span {
	if len(spans) == 0 {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.policy.All {
		// Every span goes on: there is nothing to decide, and remembering
		// the decisions would keep DefaultDecisions trace ids alive for
		// nothing (~5 MiB). A trace is counted at its local roots, so one
		// that crosses two processes of the node counts twice.
		for _, s := range spans {
			if s != nil && (s.ParentID.IsZero() || s.RemoteParent) {
				e.stats.TracesKept[ReasonAll]++
			}
		}
		e.stats.SpansKept += uint64(len(spans))
		return spans
	}

	// Group by trace, keeping first-seen order.
	ids := e.ids[:0]
	for _, s := range spans {
		i, ok := e.groupOf[s.TraceID]
		if !ok {
			i = len(ids)
			e.groupOf[s.TraceID] = i
			ids = append(ids, s.TraceID)
			if i == len(e.groups) {
				e.groups = append(e.groups, nil)
			}
			e.groups[i] = e.groups[i][:0]
		}
		e.groups[i] = append(e.groups[i], s)
	}
	e.ids = ids
	needRoots := !e.policy.All && (e.policy.MinDuration > 0 || e.policy.Percentile > 0)
	if needRoots {
		for _, s := range spans {
			e.present[spanKey{s.TraceID, s.SpanID}] = struct{}{}
		}
	}

	keep := e.keep[:0]
	nkept := 0
	for i, id := range ids {
		g := e.groups[i]
		k, ok := e.decided.get(id)
		if ok {
			e.observeLate(g)
		} else {
			k = e.decide(id, g)
			e.decided.put(id, k)
		}
		keep = append(keep, k)
		if k {
			nkept += len(g)
		}
		clear(g) // drop span pointers held for reuse
	}
	e.keep = keep
	e.stats.SpansKept += uint64(nkept)
	e.stats.SpansDropped += uint64(len(spans) - nkept)
	var kept []*span.Span
	if nkept > 0 {
		kept = make([]*span.Span, 0, nkept)
		for _, s := range spans {
			if keep[e.groupOf[s.TraceID]] {
				kept = append(kept, s)
			}
		}
	}
	clear(e.groupOf)
	if needRoots {
		clear(e.present)
	}
	return kept
}

// decide applies the policy to the first spans seen of a trace and counts
// the decision.
func (e *Exporter) decide(id span.TraceID, g []*span.Span) bool {
	p := &e.policy
	if p.All {
		e.stats.TracesKept[ReasonAll]++
		return true
	}
	hasError, slow := false, false
	var longest int64
	for _, s := range g {
		if s.Status == span.StatusError {
			hasError = true
		}
		if (p.MinDuration > 0 || p.Percentile > 0) && e.isLocalRoot(s) {
			d := s.Duration()
			longest = max(longest, int64(d))
			if p.Percentile > 0 && e.ops.observe(operationOf(s), p.Percentile, s.End, d) {
				slow = true
			}
		}
	}
	reason := Reason(-1)
	switch {
	case p.Errors && hasError:
		reason = ReasonError
	case p.MinDuration > 0 && longest > int64(p.MinDuration):
		reason = ReasonDuration
	case slow:
		reason = ReasonPercentile
	case p.Ratio > 0 && KeepRatio(id, e.threshold):
		reason = ReasonRatio
	default:
		e.stats.TracesDropped++
		return false
	}
	e.stats.TracesKept[reason]++
	return true
}

// observeLate records the roots among a decided trace's later spans in
// the rolling percentiles.
func (e *Exporter) observeLate(g []*span.Span) {
	if e.policy.All || e.policy.Percentile <= 0 {
		return
	}
	for _, s := range g {
		if s.ParentID.IsZero() || s.RemoteParent {
			e.ops.observe(operationOf(s), e.policy.Percentile, s.End, s.Duration())
		}
	}
}

// isLocalRoot: s's parent is zero, in another process, or not in the batch.
func (e *Exporter) isLocalRoot(s *span.Span) bool {
	if s.ParentID.IsZero() || s.RemoteParent {
		return true
	}
	_, ok := e.present[spanKey{s.TraceID, s.ParentID}]
	return !ok
}

func operationOf(s *span.Span) operation {
	op := operation{name: s.Name}
	if s.Process != nil {
		op.service = s.Process.ServiceName
	}
	return op
}
