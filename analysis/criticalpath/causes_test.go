package criticalpath

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/span"
)

func split(full bool, cats map[span.TimeCategory]float64) *span.TimeSplit {
	t := &span.TimeSplit{Full: full}
	for c, v := range cats {
		t.NS[c] = int64(v * float64(time.Millisecond))
	}
	return t
}

// Each span on the path is named with the dominant cause of its own
// time: its split less its children on its goroutine, less the time it
// waited downstream (the path goes there), scaled to its exclusive time
// on the path.
func TestExplainCauses(t *testing.T) {
	root := sp("GET /product/{id}", "", 0, 100, procA)
	get := sp("main.(*cache).get", "GET /product/{id}", 0, 60, procA)
	client := sp("GET", "GET /product/{id}", 60, 95, procA)
	priced := remote(sp("GET /price", "GET", 61, 94, procB))
	for _, s := range []*span.Span{root, get, client} {
		s.GoID = 7
	}
	// The cache waits 50 of its 60 ms on a mutex; the handler's own 5 ms
	// are on CPU; the client waits downstream; pricing's handler only
	// has the stop-the-world it overlapped (deep mode was off there).
	get.Time = split(true, map[span.TimeCategory]float64{span.TimeBlockedSync: 50, span.TimeOnCPU: 10})
	client.Time = split(true, map[span.TimeCategory]float64{span.TimeDownstream: 34, span.TimeOnCPU: 1})
	root.Time = split(true, map[span.TimeCategory]float64{span.TimeBlockedSync: 50, span.TimeOnCPU: 16, span.TimeDownstream: 34})
	priced.Time = split(false, map[span.TimeCategory]float64{span.TimeGCSTW: 3})
	e := Explain(Compute([]*span.Span{root, get, client, priced}))
	var got []string
	for _, c := range e.Causes {
		got = append(got, c.String())
	}
	want := []string{
		"catalog: 50% blocked on mutex or other sync in main.(*cache).get",
		"catalog: 5% on CPU in GET /product/{id}",
		"pricing: 3% stopped by the GC (stop-the-world) in GET /price",
		"catalog: 2% on CPU in GET",
	}
	if !slices.Equal(got, want) {
		t.Errorf("causes\n got %q\nwant %q", got, want)
	}
	if c := e.Causes[0]; c.Time != 50*time.Millisecond || c.Category != "blocked_sync" || !c.Full {
		t.Errorf("first cause %+v", c)
	}
	if !strings.Contains(e.String(), "why (runtime attribution):\n  catalog: 50% blocked on mutex or other sync in main.(*cache).get\n") {
		t.Errorf("text:\n%s", e)
	}
	// Without time splits there is nothing to say.
	for _, s := range []*span.Span{root, get, client, priced} {
		s.Time = nil
	}
	if e := Explain(Compute([]*span.Span{root, get, client, priced})); len(e.Causes) != 0 || strings.Contains(e.String(), "why") {
		t.Errorf("causes without splits: %+v", e.Causes)
	}
}
