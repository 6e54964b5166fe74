package store

import (
	"math/rand/v2"
	"testing"

	"github.com/latscope/latscope/span"
)

// TestIndex holds the index to a Go map through random puts and deletes,
// with ids that differ only in their high half or low half.
func TestIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var x index
	var entries []entry
	want := map[span.TraceID]int32{}
	var free []int32
	newID := func() span.TraceID {
		var id span.TraceID
		switch rng.IntN(3) {
		case 0:
			id[0], id[1] = byte(rng.IntN(256)), byte(rng.IntN(256)) // high half only
		case 1:
			id[15], id[14] = byte(rng.IntN(256)), byte(rng.IntN(4)) // low half only
		default:
			for i := range id {
				id[i] = byte(rng.IntN(256))
			}
		}
		return id
	}
	for step := range 200_000 {
		id := newID()
		if slot, ok := want[id]; ok {
			if got, ok := x.get(entries, id); !ok || got != slot {
				t.Fatalf("step %d: get(%x) = %d, %v; want %d", step, id, got, ok, slot)
			}
			if rng.IntN(2) == 0 {
				x.del(id, slot)
				delete(want, id)
				entries[slot].id = span.TraceID{}
				free = append(free, slot)
			}
			continue
		}
		if _, ok := x.get(entries, id); ok {
			t.Fatalf("step %d: get(%x) found an id never put", step, id)
		}
		var slot int32
		if n := len(free); n > 0 {
			slot, free = free[n-1], free[:n-1]
		} else {
			slot = int32(len(entries))
			entries = append(entries, entry{})
		}
		entries[slot].id = id
		x.put(id, slot)
		want[id] = slot
	}
	if x.len() != len(want) {
		t.Errorf("len = %d, want %d", x.len(), len(want))
	}
	for id, slot := range want {
		if got, ok := x.get(entries, id); !ok || got != slot {
			t.Errorf("get(%x) = %d, %v; want %d", id, got, ok, slot)
		}
	}
}
