package metrics

import (
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/latscope/latscope/span"
)

// spanTime counts where server spans' time went, per operation and
// latency-attribution category (span.TimeSplit, docs/attribution.md), so
// an overview can show "where time goes" for an operation:
//
//   - latscope_server_span_time_seconds_total{service_name, span_name,
//     category, k8s…}: the seconds of each category, summed over the
//     operation's server spans that have a time split;
//   - latscope_server_spans_attributed_total{service_name, span_name,
//     split, k8s…}: those spans, split="full" (deep attribution: every
//     category, they partition the spans' time) or "gc" (always on: only
//     gc_stw and gc_assist are measured).
//
// Time per request by category is the first over the second with
// split="full"; the GC categories are also counted from "gc" spans. Label
// sets are bounded like the histograms' (Options.MaxSeries per metric:
// past it a service's spans go to its span_name="_other" series).
type spanTime struct {
	seconds, spans *prometheus.CounterVec
	overflow       prometheus.Counter
	max            int

	mu     sync.RWMutex
	series map[timeKey]*timeSeries
	n      int
}

type timeKey struct {
	service, name string
	k8s           [3]string
}

type timeSeries struct {
	cats [span.NumTimeCategories]prometheus.Counter
	full prometheus.Counter
	gc   prometheus.Counter
	used atomic.Int64 // end (Unix ns) of the last span it counted, for expire
}

func newSpanTime(register func(prometheus.Collector, string) error, overflow *prometheus.CounterVec, max int) (*spanTime, error) {
	const (
		secName  = "latscope_server_span_time_seconds_total"
		spanName = "latscope_server_spans_attributed_total"
	)
	t := &spanTime{
		seconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: secName,
			Help: "Time of server spans by where it went (latency attribution, docs/attribution.md): on_cpu, runnable, gc_stw, gc_assist, blocked_net, blocked_sync, blocked_chan, blocked_sleep, syscall, downstream, other. Spans with a full split (deep attribution) add every category, the others gc_stw and gc_assist only.",
		}, withK8s("service_name", "span_name", "category")),
		spans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: spanName,
			Help: "Server spans with a time split, by split: full (deep attribution, every category) or gc (always on: gc_stw and gc_assist).",
		}, withK8s("service_name", "span_name", "split")),
		overflow: overflow.WithLabelValues(secName),
		max:      max,
		series:   make(map[timeKey]*timeSeries),
	}
	if err := register(t.seconds, secName); err != nil {
		return nil, err
	}
	if err := register(t.spans, spanName); err != nil {
		return nil, err
	}
	return t, nil
}

// observe adds a server span's split.
func (t *spanTime) observe(s *span.Span, k8s [3]string) {
	k := timeKey{name: s.Name, k8s: k8s}
	if s.Process != nil {
		k.service = s.Process.ServiceName
	}
	se := t.lookup(k)
	se.used.Store(s.End.UnixNano())
	if s.Time.Full {
		se.full.Inc()
	} else {
		se.gc.Inc()
	}
	for c, ns := range s.Time.NS {
		if ns > 0 {
			se.cats[c].Add(float64(ns) / 1e9)
		}
	}
}

func (t *spanTime) lookup(k timeKey) *timeSeries {
	t.mu.RLock()
	se, ok := t.series[k]
	t.mu.RUnlock()
	if ok {
		return se
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if se, ok := t.series[k]; ok {
		return se
	}
	if t.n >= t.max {
		t.overflow.Inc()
		k = timeKey{service: k.service, name: overflowValue, k8s: [3]string{overflowValue, overflowValue, overflowValue}}
		if se, ok := t.series[k]; ok {
			return se
		}
	} else {
		t.n++
	}
	service, name := validUTF8(k.service), validUTF8(k.name)
	se = &timeSeries{}
	for c := range se.cats {
		se.cats[c] = t.seconds.WithLabelValues(append([]string{service, name, span.TimeCategory(c).Name()}, k.k8s[:]...)...)
	}
	se.full = t.spans.WithLabelValues(append([]string{service, name, "full"}, k.k8s[:]...)...)
	se.gc = t.spans.WithLabelValues(append([]string{service, name, "gc"}, k.k8s[:]...)...)
	t.series[k] = se
	return se
}

// expire deletes the series that counted no span that ended since before
// (Unix ns), as the histograms' expire does, and returns how many.
func (t *spanTime) expire(before int64) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for k, se := range t.series {
		if se.used.Load() >= before {
			continue
		}
		service, name := validUTF8(k.service), validUTF8(k.name)
		for c := range se.cats {
			t.seconds.DeleteLabelValues(append([]string{service, name, span.TimeCategory(c).Name()}, k.k8s[:]...)...)
		}
		for _, split := range []string{"full", "gc"} {
			t.spans.DeleteLabelValues(append([]string{service, name, split}, k.k8s[:]...)...)
		}
		delete(t.series, k)
		if k.name != overflowValue {
			t.n--
		}
		n++
	}
	return n
}

func validUTF8(v string) string {
	if utf8.ValidString(v) {
		return v
	}
	return strings.ToValidUTF8(v, "\uFFFD")
}
