package span

import "strings"

// TimeCategory is one part of where a span's wall time went, following
// Go's own taxonomy (the execution tracer's goroutine summary, waitReason):
// see docs/attribution.md for what each holds and how it is measured.
type TimeCategory int

// The categories, in the order attributes are written.
const (
	TimeOnCPU        TimeCategory = iota // running on a CPU
	TimeRunnable                         // ready but not running: Go's run queue, the OS run queue
	TimeGCSTW                            // the world stopped (GC stop-the-world) during the span
	TimeGCAssist                         // GC mark assist by the span's goroutine
	TimeBlockedNet                       // parked on the network poller
	TimeBlockedSync                      // parked on a mutex, RWMutex, WaitGroup, Cond, semaphore
	TimeBlockedChan                      // parked on a channel operation or select
	TimeBlockedSleep                     // parked in time.Sleep
	TimeSyscall                          // its thread blocked in the kernel (syscalls, page faults)
	TimeDownstream                       // blocked while a child span elsewhere ran (another goroutine, another service)
	TimeOther                            // blocked for another reason
	NumTimeCategories
)

// TimeKeyPrefix starts every time-split attribute key.
const TimeKeyPrefix = "latscope.time."

var timeNames = [NumTimeCategories]string{
	"on_cpu", "runnable", "gc_stw", "gc_assist", "blocked_net", "blocked_sync",
	"blocked_chan", "blocked_sleep", "syscall", "downstream", "other",
}

var timeKeys = func() (k [NumTimeCategories]string) {
	for i, n := range timeNames {
		k[i] = TimeKeyPrefix + n
	}
	return k
}()

// Name is the category's name: "on_cpu", "blocked_sync", …
func (c TimeCategory) Name() string {
	if c < 0 || c >= NumTimeCategories {
		return "unknown"
	}
	return timeNames[c]
}

// Key is the category's span attribute key: "latscope.time.on_cpu", …
func (c TimeCategory) Key() string {
	if c < 0 || c >= NumTimeCategories {
		return TimeKeyPrefix + "unknown"
	}
	return timeKeys[c]
}

// TimeCategoryOf returns the category a name or an attribute key names.
func TimeCategoryOf(nameOrKey string) (TimeCategory, bool) {
	n := strings.TrimPrefix(nameOrKey, TimeKeyPrefix)
	for i, v := range timeNames {
		if v == n {
			return TimeCategory(i), true
		}
	}
	return 0, false
}

// TimeSplit says where a span's wall time went, in nanoseconds per
// category, measured on the span's own goroutine.
type TimeSplit struct {
	// Full: every category was measured (latscope's deep attribution
	// covered the whole span) and they partition its duration. Otherwise
	// only TimeGCSTW and TimeGCAssist were (always-on attribution); the
	// rest is zero because it is unknown, not because it did not happen.
	Full bool
	NS   [NumTimeCategories]int64
}

// Total is the sum of the categories.
func (t *TimeSplit) Total() int64 {
	var n int64
	for _, v := range t.NS {
		n += v
	}
	return n
}

// Largest returns the category with the most time (the first of equals).
func (t *TimeSplit) Largest() TimeCategory {
	best := TimeCategory(0)
	for i, v := range t.NS {
		if v > t.NS[best] {
			best = TimeCategory(i)
		}
	}
	return best
}

// appendAttributes appends the split's span attributes to a: every
// category of a full split, else the measured ones that are not zero.
func (t *TimeSplit) appendAttributes(a []Attr) []Attr {
	for i, v := range t.NS {
		c := TimeCategory(i)
		if t.Full || v != 0 && (c == TimeGCSTW || c == TimeGCAssist) {
			a = append(a, Attr{c.Key(), v})
		}
	}
	return a
}

// SetTimeAttr applies a latscope.time.* attribute read back from an
// exporter's form (Jaeger tags, OTLP) to s.Time, and reports whether key
// was one. A split with on_cpu is a full one.
func (s *Span) SetTimeAttr(key string, v int64) bool {
	c, ok := TimeCategoryOf(key)
	if !ok || !strings.HasPrefix(key, TimeKeyPrefix) {
		return false
	}
	if s.Time == nil {
		s.Time = &TimeSplit{}
	}
	s.Time.NS[c] = v
	if c == TimeOnCPU {
		s.Time.Full = true
	}
	return true
}
