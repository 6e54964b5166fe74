package sampling

import (
	"fmt"
	"sync"
	"time"

	"github.com/latscope/latscope/span"
)

// DefaultDecisionWait is how long a Waiting exporter holds a trace's
// spans after its last one arrived before deciding. The agent emits a
// trace's part per process as each part completes: a callee on the same
// node finishes before its caller, and a decision on the first part alone
// would judge the caller's error or latency by the callee's spans (the
// OpenTelemetry Collector's tail sampler waits for the same reason).
const DefaultDecisionWait = time.Second

// MaxHeldSpans bounds the spans a Waiting exporter holds undecided; past
// it a quarter of them are decided early, on what arrived of their traces
// (counted: DecidedEarly).
const MaxHeldSpans = 200_000

// Waiting is an Exporter that holds each trace's spans until no new one
// has arrived for wait, then decides on all of them at once, and passes
// the kept ones on. Spans of a trace arriving after its decision follow
// it at once, and with a policy that keeps all, every span does: nothing
// is held. Close decides what it holds. Safe for concurrent use.
//
// What it holds are copies (span.Span.Clone): its caller may reuse the
// spans' memory once Export returns (callchain.Options.ReuseSpans), as
// long as next keeps nothing of the spans it is passed either (the OTLP
// exporter encodes them in Export).
type Waiting struct {
	e    *Exporter
	wait time.Duration

	mu           sync.Mutex
	held         map[span.TraceID]*heldTrace
	heldSpans    int
	decidedEarly uint64

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type heldTrace struct {
	spans []*span.Span
	last  time.Time // when its last span arrived
}

// NewWaiting returns an exporter applying p to whole traces, decided wait
// after their last span (≤ 0: DefaultDecisionWait), passing the kept
// spans to next.
func NewWaiting(p Policy, next span.Exporter, wait time.Duration) *Waiting {
	if wait <= 0 {
		wait = DefaultDecisionWait
	}
	w := &Waiting{e: NewExporter(p, next), wait: wait, held: map[span.TraceID]*heldTrace{}, stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop()
	return w
}

// Policy returns the policy applied.
func (w *Waiting) Policy() Policy { return w.e.policy }

// Export holds spans of undecided traces and passes those of traces kept
// before on at once.
func (w *Waiting) Export(spans []*span.Span) error {
	if w.e.policy.All {
		return w.e.Export(spans)
	}
	now := time.Now()
	var late []*span.Span
	w.mu.Lock()
	for _, s := range spans {
		if s == nil {
			continue
		}
		if h := w.held[s.TraceID]; h != nil {
			h.spans = append(h.spans, s.Clone())
			h.last = now
			w.heldSpans++
			continue
		}
		if w.e.decidedBefore(s.TraceID) {
			late = append(late, s)
			continue
		}
		w.held[s.TraceID] = &heldTrace{spans: []*span.Span{s.Clone()}, last: now}
		w.heldSpans++
	}
	var early []*span.Span
	if w.heldSpans > MaxHeldSpans {
		early = w.take(func(*heldTrace) bool { return w.heldSpans > MaxHeldSpans*3/4 }, true)
	}
	w.mu.Unlock()
	// Late spans are filtered by their trace's decision; early ones
	// decided on what arrived of them.
	return w.e.Export(append(late, early...))
}

// take removes held traces that pick says to, and returns their spans,
// grouped by trace; early: they are decided before their wait is over.
func (w *Waiting) take(pick func(*heldTrace) bool, early bool) []*span.Span {
	var out []*span.Span
	for id, h := range w.held {
		if !pick(h) {
			continue
		}
		out = append(out, h.spans...)
		w.heldSpans -= len(h.spans)
		delete(w.held, id)
		if early {
			w.decidedEarly++
		}
	}
	return out
}

// flush decides the traces quiet since before (all, when before is zero).
func (w *Waiting) flush(before time.Time) error {
	w.mu.Lock()
	spans := w.take(func(h *heldTrace) bool { return before.IsZero() || h.last.Before(before) }, false)
	w.mu.Unlock()
	if len(spans) == 0 {
		return nil
	}
	return w.e.Export(spans)
}

func (w *Waiting) loop() {
	defer close(w.done)
	tick := time.NewTicker(w.wait / 4)
	defer tick.Stop()
	for {
		select {
		case <-w.stop:
			return
		case now := <-tick.C:
			// Export's errors are the next exporter's; it counts its own.
			w.flush(now.Add(-w.wait))
		}
	}
}

// Close decides every held trace, passes the kept spans on, and closes
// the next exporter.
func (w *Waiting) Close() error {
	var err error
	w.once.Do(func() {
		close(w.stop)
		<-w.done
		if ferr := w.flush(time.Time{}); ferr != nil {
			err = fmt.Errorf("decide held traces: %w", ferr)
		}
	})
	if cerr := w.e.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// Stats returns the decisions so far; HeldSpans and DecidedEarly say what
// waits.
func (w *Waiting) Stats() Stats {
	s := w.e.Stats()
	w.mu.Lock()
	s.HeldSpans, s.DecidedEarly = w.heldSpans, w.decidedEarly
	w.mu.Unlock()
	return s
}
