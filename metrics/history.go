package metrics

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/latscope/latscope/span"
)

// History keeps recent rate, errors and latency per operation in time
// buckets, so the UI can answer what Prometheus' cumulative histograms
// cannot: p50/p90/p99 over the last 5 minutes or hour, the same for the
// window before it ("what got worse"), and a p99 per bucket (sparklines).
// It implements span.Exporter; the agent feeds it every span, as it feeds
// RED, before any sampling. Export and the queries are safe for concurrent
// use.
//
// An operation is (service.name, span name, span kind): every span is
// counted, internal function spans included. Each operation keeps two
// rings of buckets, by the span's end time:
//
//	fine    10 s × 60  (10 min): windows of 20 s … 5 min and the one before
//	coarse  1 min × 120 (2 h):  windows of 2 min … 1 h and the one before
//
// A bucket holds the span count, the error count (status error), the sum
// of durations, the sums of the runtime-attribution attributes
// (CauseKeys) over the spans that carry them, and a latency histogram of
// log-spaced bins, four per doubling from 1 µs to ~71 min (128 bins; a
// bin spans 19%), with its fastest and slowest span: a quantile is
// interpolated inside its bin and clamped to the window's fastest and
// slowest, so it is off by less than a bin (TestHistoryQuantiles: within
// 9% on a spread of latencies; exact for a window of equal ones). A
// bucket's histogram stores only the bins between its fastest and slowest
// span.
//
// Memory is bounded: at most MaxOperations operations (an operation
// beyond the bound is counted in its service's "_other" operation, and in
// Overflow), 180 buckets each, a bucket ≤ 608 bytes (96 bytes plus 4 per
// bin its spans spread over; 88 more once attribution is seen). Worst
// case ~107 KiB per operation, ~53 MiB at the default 500; an operation
// whose spans spread over 20 bins costs ~31 KiB. An operation without a
// span for 2 hours is dropped.
type History struct {
	max int
	now func() time.Time

	mu         sync.Mutex
	started    time.Time
	ops        map[opKey]*opHistory
	lastExpire time.Time
	overflow   uint64
	late       uint64
}

// HistoryOptions tune a History. The zero value uses the defaults.
type HistoryOptions struct {
	// MaxOperations bounds the operations kept (default
	// DefaultMaxOperations); see History.
	MaxOperations int
	// Now is the clock (default time.Now): spans are bucketed by their end
	// time, ends after Now by Now.
	Now func() time.Time
}

// DefaultMaxOperations is HistoryOptions.MaxOperations when left zero.
const DefaultMaxOperations = 500

// CauseKeys are the span attributes of runtime attribution (int64
// nanoseconds each: where a span's time went; span.TimeSplit,
// docs/attribution.md), in the order History's Stats.Causes holds their
// sums: span.TimeCategory's. History sums the spans' full splits (deep
// attribution); spans without one (none, or the always-on GC time alone,
// which says nothing of the rest) are counted in Stats.Count but not in
// Stats.Attributed.
var CauseKeys = func() (k [NumCauses]string) {
	for i := range k {
		k[i] = span.TimeCategory(i).Key()
	}
	return k
}()

// NumCauses is len(CauseKeys).
const NumCauses = int(span.NumTimeCategories)

const causePrefix = span.TimeKeyPrefix

// CauseName is a cause key without its prefix: "on_cpu".
func CauseName(i int) string { return strings.TrimPrefix(CauseKeys[i], causePrefix) }

// tier is one ring of buckets.
type tier struct {
	width time.Duration
	n     int
}

var tiers = [2]tier{{10 * time.Second, 60}, {time.Minute, 120}}

// Retention is how far back History answers: the coarse ring's span.
var Retention = tiers[1].width * time.Duration(tiers[1].n)

// MaxWindow is the longest window Overview and Series accept (half the
// retention: the window before it must fit too).
var MaxWindow = Retention / 2

// opIdle: an operation without a span for this long is dropped.
const opIdle = 2 * time.Hour

type opKey struct {
	service, name string
	kind          span.Kind
}

type opHistory struct {
	rings [len(tiers)][]bucket
	last  int64 // end of its latest span, Unix ns
}

type bucket struct {
	slot             int64 // which interval it holds: Unix time / width; 0 empty
	count, errors    uint64
	total            time.Duration
	fastest, slowest time.Duration
	hist             bins
	attributed       uint64
	causes           *[NumCauses]time.Duration
}

// NewHistory returns an empty History.
func NewHistory(opts HistoryOptions) *History {
	if opts.MaxOperations <= 0 {
		opts.MaxOperations = DefaultMaxOperations
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	now := opts.Now()
	return &History{max: opts.MaxOperations, now: opts.Now, started: now, lastExpire: now, ops: make(map[opKey]*opHistory)}
}

// Export counts each span in its operation's current buckets. It never
// fails.
func (h *History) Export(spans []*span.Span) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	nowNs := now.UnixNano()
	for _, s := range spans {
		if s == nil {
			continue
		}
		h.observe(s, nowNs)
	}
	if now.Sub(h.lastExpire) >= time.Minute {
		h.expire(nowNs - int64(opIdle))
		h.lastExpire = now
	}
	return nil
}

// Close does nothing.
func (h *History) Close() error { return nil }

func (h *History) observe(s *span.Span, now int64) {
	k := opKey{name: s.Name, kind: s.Kind}
	if s.Process != nil {
		k.service = s.Process.ServiceName
	}
	op := h.ops[k]
	if op == nil {
		if len(h.ops) >= h.max {
			h.overflow++
			k = opKey{service: k.service, name: overflowValue}
			op = h.ops[k]
		}
		if op == nil {
			op = newOpHistory()
			h.ops[k] = op
		}
	}
	end := min(s.End.UnixNano(), now)
	d := max(s.Duration(), 0)
	var causes [NumCauses]time.Duration
	attributed := false
	if t := s.Time; t != nil && t.Full {
		attributed = true
		for i, v := range t.NS {
			causes[i] = time.Duration(max(v, 0))
		}
	}
	op.last = max(op.last, end)
	seen := false
	for ti, t := range tiers {
		slot := end / int64(t.width)
		if slot <= now/int64(t.width)-int64(t.n) {
			continue // older than the ring holds
		}
		seen = true
		b := &op.rings[ti][slot%int64(t.n)]
		if b.slot != slot {
			b.reset(slot)
		}
		b.count++
		if s.Status == span.StatusError {
			b.errors++
		}
		b.total += d
		if b.count == 1 || d < b.fastest {
			b.fastest = d
		}
		b.slowest = max(b.slowest, d)
		b.hist.add(binOf(d))
		if attributed {
			b.attributed++
			if b.causes == nil {
				b.causes = new([NumCauses]time.Duration)
			}
			for i, c := range causes {
				b.causes[i] += c
			}
		}
	}
	if !seen {
		h.late++
	}
}

func newOpHistory() *opHistory {
	op := &opHistory{}
	for i, t := range tiers {
		op.rings[i] = make([]bucket, t.n)
	}
	return op
}

func (b *bucket) reset(slot int64) {
	hist := b.hist
	hist.reset()
	causes := b.causes
	if causes != nil {
		*causes = [NumCauses]time.Duration{}
	}
	*b = bucket{slot: slot, hist: hist, causes: causes}
}

func (h *History) expire(before int64) {
	for k, op := range h.ops {
		if op.last < before {
			delete(h.ops, k)
		}
	}
}

// HistoryStats are History's own counters.
type HistoryStats struct {
	Operations int // operations kept now
	// Overflow counts spans of operations beyond MaxOperations, counted
	// in their service's "_other" operation.
	Overflow uint64
	// Late counts spans that ended before the oldest bucket (2 h ago):
	// not counted anywhere.
	Late uint64
}

// Stats returns History's counters.
func (h *History) Stats() HistoryStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return HistoryStats{Operations: len(h.ops), Overflow: h.overflow, Late: h.late}
}

// Stats describe one operation's spans over a window.
type Stats struct {
	Count  uint64 // spans that ended in the window
	Errors uint64 // of which with status error
	// P50, P90, P99 are the duration quantiles (0 without spans).
	P50, P90, P99 time.Duration
	// Total is the sum of the spans' durations.
	Total time.Duration
	// Attributed counts the spans that carried runtime attribution;
	// Causes sums their CauseKeys attributes, in that order.
	Attributed uint64
	Causes     [NumCauses]time.Duration
}

// Point is one bucket of a window.
type Point struct {
	Start         time.Time
	Count, Errors uint64
	// P50, P90, P99 are 0 for a bucket without spans.
	P50, P90, P99 time.Duration
}

// Operation is one operation's window, the window before it, and the
// window's buckets.
type Operation struct {
	Service, Name string
	Kind          span.Kind
	Current       Stats
	Previous      Stats
	Points        []Point // the window's buckets, oldest first
}

// Overview is every operation's current and previous window.
type Overview struct {
	// End is when the window ends (now); Window its length; Step the
	// bucket width of Points.
	End          time.Time
	Window, Step time.Duration
	// Covered is how much of the window History has been counting (less
	// than Window in the agent's first minutes); PreviousCovered the same
	// for the window before (0: History started after it ended).
	Covered, PreviousCovered time.Duration
	Operations               []Operation // by service, name, kind
}

// ErrWindow is returned for a window History cannot answer.
type ErrWindow struct{ Window time.Duration }

func (e ErrWindow) Error() string {
	return fmt.Sprintf("window %s: give a duration from %s to %s (History keeps %s: the window and the one before it)",
		e.Window, 2*tiers[0].width, MaxWindow, Retention)
}

// pick returns the tier answering window, and its bucket count.
func pick(window time.Duration) (int, int, error) {
	for i, t := range tiers {
		n := int(window / t.width)
		if window%t.width == 0 && n >= 2 && 2*n <= t.n {
			return i, n, nil
		}
	}
	for i, t := range tiers {
		n := int((window + t.width - 1) / t.width)
		if n >= 2 && 2*n <= t.n {
			return i, n, nil
		}
	}
	return 0, 0, ErrWindow{window}
}

// Overview returns every operation's stats over the window ending now and
// the window before it. window is rounded up to whole buckets: 10 s up to
// 5 min, 1 min up to MaxWindow; a longer or shorter one is an ErrWindow.
func (h *History) Overview(window time.Duration) (Overview, error) {
	return h.query(window, nil)
}

// Series returns one Operation merging the operations match selects
// (every one of a service, say), over the window ending now; its Name is
// "" when several operations matched, and its Points the window's steps
// (empty ones when none matched).
func (h *History) Series(window time.Duration, match func(service, name string, kind span.Kind) bool) (Operation, Overview, error) {
	ov, err := h.query(window, match)
	if err != nil {
		return Operation{}, ov, err
	}
	op := ov.Operations[0]
	ov.Operations = ov.Operations[:1]
	return op, ov, nil
}

func (h *History) query(window time.Duration, match func(string, string, span.Kind) bool) (Overview, error) {
	ti, n, err := pick(window)
	if err != nil {
		return Overview{}, err
	}
	t := tiers[ti]
	// The lock covers summing the buckets and copying the single
	// operations' ones; percentiles are computed after it (at the bound,
	// 500 operations, the whole query takes ~15 ms: Export must not wait
	// that long).
	h.mu.Lock()
	locked := true
	defer func() {
		if locked {
			h.mu.Unlock()
		}
	}()
	now := h.now()
	cur := now.UnixNano() / int64(t.width)
	first := cur - int64(n) + 1 // the window's first slot
	ov := Overview{End: now, Window: time.Duration(n) * t.width, Step: t.width}
	winStart := time.Unix(0, first*int64(t.width))
	prevStart := winStart.Add(-ov.Window)
	ov.Covered = now.Sub(later(winStart, h.started))
	if h.started.Before(winStart) {
		ov.PreviousCovered = winStart.Sub(later(prevStart, h.started))
	}

	type agg struct {
		op        Operation
		cur, prev histAcc
		points    []Point
		single    []*bucket // with one operation, a copy of each point's bucket
		multi     []histAcc // merged operations: each point's sum
	}
	var merged *agg
	var aggs []*agg
	for k, op := range h.ops {
		if match != nil && !match(k.service, k.name, k.kind) {
			continue
		}
		a := merged
		if a == nil {
			a = &agg{op: Operation{Service: k.service, Name: k.name, Kind: k.kind}, single: make([]*bucket, n)}
			aggs = append(aggs, a)
			if match != nil {
				merged = a
				a.multi = make([]histAcc, n)
			}
		} else if a.op.Name != k.name || a.op.Kind != k.kind {
			a.op.Name, a.op.Kind = "", span.KindUnspecified
		}
		ring := op.rings[ti]
		for slot := first - int64(n); slot <= cur; slot++ {
			b := &ring[slot%int64(t.n)]
			if b.slot != slot || b.count == 0 {
				continue
			}
			if slot >= first {
				a.cur.add(b)
				if a.multi != nil {
					a.multi[slot-first].add(b)
				} else {
					c := *b
					c.hist.n = slices.Clone(b.hist.n)
					a.single[slot-first] = &c
				}
			} else {
				a.prev.add(b)
			}
		}
	}
	h.mu.Unlock()
	locked = false
	if match != nil && merged == nil {
		// Nothing matched: the window's steps, empty.
		aggs = append(aggs, &agg{single: make([]*bucket, n)})
	}
	for _, a := range aggs {
		a.op.Current, a.op.Previous = a.cur.stats(), a.prev.stats()
		a.op.Points = make([]Point, n)
		for i := range a.op.Points {
			p := Point{Start: time.Unix(0, (first+int64(i))*int64(t.width))}
			switch {
			case a.multi != nil:
				s := a.multi[i].stats()
				p.Count, p.Errors, p.P50, p.P90, p.P99 = s.Count, s.Errors, s.P50, s.P90, s.P99
			case a.single[i] != nil:
				b := a.single[i]
				p.Count, p.Errors = b.count, b.errors
				q := func(at float64) time.Duration {
					return clamp(quantile(int(b.hist.lo), b.hist.n, b.count, at), b.fastest, b.slowest)
				}
				p.P50, p.P90, p.P99 = q(0.5), q(0.9), q(0.99)
			}
			a.op.Points[i] = p
		}
		ov.Operations = append(ov.Operations, a.op)
	}
	slices.SortFunc(ov.Operations, func(a, b Operation) int {
		if c := strings.Compare(a.Service, b.Service); c != 0 {
			return c
		}
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return int(a.Kind) - int(b.Kind)
	})
	return ov, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// histAcc sums buckets.
type histAcc struct {
	s                Stats
	fastest, slowest time.Duration
	bins             [numBins]uint64
}

func (a *histAcc) add(b *bucket) {
	if a.s.Count == 0 || b.fastest < a.fastest {
		a.fastest = b.fastest
	}
	a.slowest = max(a.slowest, b.slowest)
	a.s.Count += b.count
	a.s.Errors += b.errors
	a.s.Total += b.total
	a.s.Attributed += b.attributed
	if b.causes != nil {
		for i, c := range b.causes {
			a.s.Causes[i] += c
		}
	}
	for i, c := range b.hist.n {
		a.bins[int(b.hist.lo)+i] += uint64(c)
	}
}

func (a *histAcc) stats() Stats {
	s := a.s
	s.P50, s.P90, s.P99 = a.quantile(0.5), a.quantile(0.9), a.quantile(0.99)
	return s
}

func (a *histAcc) quantile(q float64) time.Duration {
	return clamp(quantile(0, a.bins[:], a.s.Count, q), a.fastest, a.slowest)
}

func clamp(d, lo, hi time.Duration) time.Duration { return min(max(d, lo), hi) }

// quantile is the q-quantile of count durations whose bins lo, lo+1, …
// hold counts, interpolated inside its bin geometrically (the bins are
// log-spaced).
func quantile[C uint32 | uint64](lo int, counts []C, count uint64, q float64) time.Duration {
	if count == 0 {
		return 0
	}
	rank := q * float64(count)
	var seen float64
	for j, c := range counts {
		if c == 0 {
			continue
		}
		i := lo + j
		if seen+float64(c) >= rank {
			frac := (rank - seen) / float64(c)
			lo, hi := binLower(i), binLower(i+1)
			if i == 0 {
				return time.Duration(frac * hi)
			}
			return time.Duration(lo * math.Pow(hi/lo, frac))
		}
		seen += float64(c)
	}
	return time.Duration(binLower(numBins))
}

// The latency bins: bin i holds durations in [binLower(i), binLower(i+1)),
// bin 0 everything below binLower(1), the last bin everything above.
const (
	numBins    = 128
	binsPerDbl = 4
	binBase    = float64(time.Microsecond)
)

func binLower(i int) float64 {
	if i == 0 {
		return 0
	}
	return binBase * math.Exp2(float64(i)/binsPerDbl)
}

// binStarts[i] is the first whole nanosecond of bin i (binLower rounded
// up), so binOf is a search of integers rather than a logarithm: math.Log2
// was half of History's cost per span (BenchmarkHistoryExport).
var binStarts = func() (s [numBins]int64) {
	for i := range s {
		s[i] = int64(math.Ceil(binLower(i)))
	}
	return s
}()

func binOf(d time.Duration) int {
	// The last bin whose start is at or before d.
	lo, hi := 0, numBins-1
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if binStarts[mid] <= int64(d) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// bins is a histogram that stores the counts of bins lo … lo+len(n)-1.
type bins struct {
	lo int16
	n  []uint32
}

func (b *bins) reset() {
	clear(b.n)
	b.n = b.n[:0]
}

func (b *bins) add(i int) {
	switch {
	case len(b.n) == 0:
		b.lo = int16(i)
		b.n = append(b.n, 0)
	case i < int(b.lo):
		grow := int(b.lo) - i
		b.n = append(b.n, make([]uint32, grow)...)
		copy(b.n[grow:], b.n[:len(b.n)-grow])
		clear(b.n[:grow])
		b.lo = int16(i)
	case i >= int(b.lo)+len(b.n):
		b.n = append(b.n, make([]uint32, i-int(b.lo)-len(b.n)+1)...)
	}
	if b.n[i-int(b.lo)] < math.MaxUint32 {
		b.n[i-int(b.lo)]++
	}
}
