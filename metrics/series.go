package metrics

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// histogram is one RED histogram: its vector, the cache from label set to
// series, and the cardinality limit.
//
// The cache is what keeps Export cheap. Measured with BenchmarkObserve's
// spans (AMD EPYC, Go 1.26): a span costs ~165 ns and no allocation
// through the cache, ~420 ns and 2 allocations when it formats its label
// values and calls WithLabelValues; recording an exemplar adds ~900 ns and
// 14 allocations, hence Options.ExemplarInterval.
type histogram struct {
	vec      *prometheus.HistogramVec
	overflow prometheus.Counter
	// values turns a key into label values in the vector's label order.
	values func(key) []string
	// labels is the number of labels, service_name included.
	labels int
	max    int

	mu     sync.RWMutex
	series map[key]*series
	n      int // series in the map that are not overflow series
}

// series is one label set's histogram child, and when each of its buckets
// last took an exemplar.
type series struct {
	obs observer
	// used is the end time (Unix ns) of the last span it observed: series
	// idle longer than RED.Expire's bound are deleted.
	used atomic.Int64
	// lastExemplar holds, per bucket (+Inf last), the end time in Unix
	// nanoseconds of the span whose exemplar the bucket holds.
	lastExemplar [len(bucketBounds) + 1]atomic.Int64
}

type observer interface {
	prometheus.Observer
	prometheus.ExemplarObserver
}

// expire deletes the series (overflow ones included) that observed
// nothing since before (Unix ns), from the cache and the vector, and
// returns how many: label values that come and go (pod addresses after
// rollouts, routes of a removed endpoint) free their place under the
// limit instead of pushing new ones into "_other" for good.
func (h *histogram) expire(before int64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for k, s := range h.series {
		if s.used.Load() >= before {
			continue
		}
		h.vec.DeleteLabelValues(h.validLabelValues(k)...)
		delete(h.series, k)
		if !k.other {
			h.n--
		}
		n++
	}
	return n
}

// lookup returns the series for k, creating it if the limit allows, else
// the service's overflow series (and counts the overflow).
func (h *histogram) lookup(k key) *series {
	h.mu.RLock()
	s, ok := h.series[k]
	full := !ok && h.n >= h.max
	if full {
		s = h.series[overflowKey(k)]
	}
	h.mu.RUnlock()
	if ok {
		return s
	}
	if full {
		h.overflow.Inc()
		if s != nil {
			return s
		}
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.series[k]; ok {
		return s
	}
	if h.n >= h.max {
		if !full {
			// The limit was reached between the two locks.
			h.overflow.Inc()
		}
		k = overflowKey(k)
		if s, ok := h.series[k]; ok {
			return s
		}
	} else {
		h.n++
	}
	// A histogram child implements both (client_golang documents it).
	s = &series{obs: h.vec.WithLabelValues(h.validLabelValues(k)...).(observer)}
	h.series[k] = s
	return s
}

// validLabelValues is labelValues with invalid UTF-8 replaced: attribute
// values come from the traced process's memory, and WithLabelValues
// panics on invalid UTF-8.
func (h *histogram) validLabelValues(k key) []string {
	values := h.labelValues(k)
	for i, v := range values {
		if !utf8.ValidString(v) {
			values[i] = strings.ToValidUTF8(v, "\uFFFD")
		}
	}
	return values
}

func (h *histogram) labelValues(k key) []string {
	if !k.other {
		return h.values(k)
	}
	v := make([]string, h.labels)
	v[0] = k.strs[0]
	for i := 1; i < len(v); i++ {
		v[i] = overflowValue
	}
	return v
}

// overflowKey is the key of the overflow series of k's service.
func overflowKey(k key) key {
	return key{strs: [6]string{k.strs[0]}, other: true}
}

// bucketIndex is the index of the classic bucket v falls in, as the
// histogram counts it (upper bounds inclusive).
func bucketIndex(v float64) int {
	return sort.SearchFloat64s(buckets, v)
}
