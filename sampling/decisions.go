package sampling

import "github.com/latscope/latscope/span"

// DefaultDecisions is how many trace decisions an Exporter remembers.
const DefaultDecisions = 65536

// decisions remembers the keep decision of the most recently seen traces,
// least recently used first out. Entries live in one slice linked by
// index, so remembering a trace allocates nothing once the slice is full.
type decisions struct {
	index      map[span.TraceID]int32
	entries    []decision
	head, tail int32 // most and least recently used; -1 when empty
	capacity   int
	evicted    uint64
}

type decision struct {
	id         span.TraceID
	keep       bool
	prev, next int32
}

func newDecisions(capacity int) *decisions {
	return &decisions{index: make(map[span.TraceID]int32), head: -1, tail: -1, capacity: max(capacity, 1)}
}

// get returns the remembered decision for id and marks it recently used.
func (d *decisions) get(id span.TraceID) (keep, ok bool) {
	i, ok := d.index[id]
	if !ok {
		return false, false
	}
	d.unlink(i)
	d.pushFront(i)
	return d.entries[i].keep, true
}

// put remembers a decision for a trace not yet remembered, evicting the
// least recently used one when full.
func (d *decisions) put(id span.TraceID, keep bool) {
	var i int32
	if len(d.entries) < d.capacity {
		d.entries = append(d.entries, decision{})
		i = int32(len(d.entries) - 1)
	} else {
		i = d.tail
		d.unlink(i)
		delete(d.index, d.entries[i].id)
		d.evicted++
	}
	d.entries[i].id, d.entries[i].keep = id, keep
	d.index[id] = i
	d.pushFront(i)
}

func (d *decisions) len() int { return len(d.index) }

func (d *decisions) unlink(i int32) {
	e := &d.entries[i]
	if e.prev >= 0 {
		d.entries[e.prev].next = e.next
	} else {
		d.head = e.next
	}
	if e.next >= 0 {
		d.entries[e.next].prev = e.prev
	} else {
		d.tail = e.prev
	}
}

func (d *decisions) pushFront(i int32) {
	e := &d.entries[i]
	e.prev, e.next = -1, d.head
	if d.head >= 0 {
		d.entries[d.head].prev = i
	}
	d.head = i
	if d.tail < 0 {
		d.tail = i
	}
}
