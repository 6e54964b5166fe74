package sampling

import (
	"math"
	"time"
)

// Rolling percentiles of local-root durations, per operation.
//
// Each operation keeps a ring of windowMinutes one-minute histograms plus
// their sum, so the window covers the last 4-5 minutes of spans (by their
// end time, so it follows the data rather than the wall clock). Buckets
// are logarithmic with growth gamma = (1+a)/(1-a), a = 5 %: reporting a
// bucket's value as 2·gamma^i/(gamma+1) is within 5 % of any duration in
// it (the DDSketch construction). Durations below minTracked share the
// first bucket, those above the last bucket's bound share the last.
const (
	windowMinutes = 5
	// MinSamples is how many local roots an operation's window must hold
	// before the percentile rule keeps any of its traces: below it, a
	// percentile says little and the first requests after a restart
	// (cold caches, connection setup) would all look slow.
	MinSamples = 100
	// MaxOperations bounds how many operations have percentiles; roots of
	// further operations are counted (Stats.OperationsUntracked) and the
	// percentile rule does not apply to them. Operations idle for a whole
	// window make room for new ones.
	MaxOperations = 1000

	relativeError = 0.05
	minTracked    = time.Microsecond
	numBuckets    = 224 // 1µs · gamma^223 ≈ 1.4 hours
)

var (
	gamma    = (1 + relativeError) / (1 - relativeError)
	logGamma = math.Log(gamma)
)

// Memory: (windowMinutes+1)·numBuckets·4 bytes ≈ 5.3 KiB per operation,
// ≈ 5.2 MiB at MaxOperations.
type histogram [numBuckets]uint32

// bucket returns d's histogram bucket.
func bucket(d time.Duration) int {
	if d <= minTracked {
		return 0
	}
	i := int(math.Ceil(math.Log(float64(d)/float64(minTracked)) / logGamma))
	return min(i, numBuckets-1)
}

// bucketValue is the duration reported for bucket i: within 5 % of every
// duration in it (bucket i holds (gamma^(i-1), gamma^i]·minTracked).
func bucketValue(i int) time.Duration {
	if i == 0 {
		return minTracked
	}
	return time.Duration(float64(minTracked) * 2 * math.Pow(gamma, float64(i)) / (gamma + 1))
}

// window is one operation's rolling histogram.
type window struct {
	minutes [windowMinutes]histogram // minute m lives at m % windowMinutes
	sum     histogram                // sum of minutes
	total   uint64
	latest  int64 // newest minute recorded (Unix minutes)
}

// advance moves the window so minute m is its newest, clearing minutes
// that fall out.
func (w *window) advance(m int64) {
	if w.total == 0 {
		w.latest = m
		return
	}
	for step := w.latest + 1; step <= m && step <= w.latest+windowMinutes; step++ {
		slot := &w.minutes[step%windowMinutes]
		for i, n := range slot {
			if n != 0 {
				w.sum[i] -= n
				w.total -= uint64(n)
				slot[i] = 0
			}
		}
	}
	if m > w.latest {
		w.latest = m
	}
}

// record adds a root that ended at end and took d.
func (w *window) record(end time.Time, d time.Duration) {
	m := unixMinute(end)
	w.advance(m)
	if m <= w.latest-windowMinutes {
		return // older than the window
	}
	b := bucket(d)
	w.minutes[m%windowMinutes][b]++
	w.sum[b]++
	w.total++
}

// quantileBucket returns the bucket holding the q-th percentile of the
// window, and whether the window holds MinSamples roots.
func (w *window) quantileBucket(q float64) (int, bool) {
	if w.total < MinSamples {
		return 0, false
	}
	rank := uint64(math.Ceil(q / 100 * float64(w.total)))
	rank = max(rank, 1)
	var seen uint64
	for i, n := range w.sum {
		seen += uint64(n)
		if seen >= rank {
			return i, true
		}
	}
	return numBuckets - 1, true
}

// Quantile estimates the q-th percentile (0 < q < 100) of the window,
// within 5 %; ok is false below MinSamples roots.
func (w *window) quantile(q float64) (d time.Duration, ok bool) {
	i, ok := w.quantileBucket(q)
	if !ok {
		return 0, false
	}
	return bucketValue(i), true
}

// slower reports whether d is above the window's q-th percentile: in a
// bucket above the percentile's, so durations within the histogram's
// resolution (5 %) of the percentile are not told apart from it and are
// not kept.
func (w *window) slower(q float64, d time.Duration) bool {
	i, ok := w.quantileBucket(q)
	return ok && bucket(d) > i
}

func unixMinute(t time.Time) int64 { return t.Unix() / 60 }

// operation names what a percentile is computed over: the service of the
// local root's process and the root's span name.
type operation struct{ service, name string }

// operations is the bounded table of windows.
type operations struct {
	byOp      map[operation]*window
	lastSweep int64 // Unix minute of the last reclaim of idle operations
	untracked uint64
}

// observe checks a local root against its operation's q-th percentile
// (before counting it) and records it. It reports whether the root is
// slower than the percentile; false while the operation warms up or when
// the table is full.
func (o *operations) observe(op operation, q float64, end time.Time, d time.Duration) bool {
	w := o.byOp[op]
	if w == nil {
		if o.byOp == nil {
			o.byOp = make(map[operation]*window)
		}
		if len(o.byOp) >= MaxOperations {
			o.reclaim(unixMinute(end))
		}
		if len(o.byOp) >= MaxOperations {
			o.untracked++
			return false
		}
		w = new(window)
		o.byOp[op] = w
	}
	// Advance first so the comparison is against the current window.
	w.advance(unixMinute(end))
	slow := w.slower(q, d)
	w.record(end, d)
	return slow
}

// reclaim drops operations with nothing recorded in the window ending at
// minute now. It scans the table at most once a minute.
func (o *operations) reclaim(now int64) {
	if now <= o.lastSweep {
		return
	}
	o.lastSweep = now
	for op, w := range o.byOp {
		if w.latest <= now-windowMinutes {
			delete(o.byOp, op)
		}
	}
}

// Percentiles are rolling percentiles of durations per operation (a
// service and a span name) over the last 4–5 minutes, within 5 %: the
// keep policy's windows, for other rules on latency (latency attribution
// switches its deep mode on when a p99 crosses a threshold). Not safe
// for concurrent use.
type Percentiles struct{ ops operations }

// Observe records that an operation's span ended at end and took d; it
// reports the operation's q-th percentile (0 < q < 100) with it, and
// whether the window holds MinSamples spans (ok false: too few to say,
// or the table of operations is full).
func (p *Percentiles) Observe(service, name string, q float64, end time.Time, d time.Duration) (pq time.Duration, ok bool) {
	op := operation{service, name}
	p.ops.observe(op, q, end, d)
	w := p.ops.byOp[op]
	if w == nil {
		return 0, false
	}
	return w.quantile(q)
}
