package store

import (
	"encoding/binary"

	"github.com/latscope/latscope/span"
)

// index maps trace ids to entry slots: open addressing with linear probing
// over a power-of-two table, each bucket the slot and 32 bits of the id's
// hash, so a probe compares ids in the entries only when the hashes agree
// and a deletion shifts the rest of its run back (no tombstones) without
// reading entries. Go's map under the store's churn (a trace added and one
// evicted per trace) fills with tombstones between rehashes: a third of
// Export's time went to matching its control words (BenchmarkExportFull).
type index struct {
	buckets []uint64 // hash<<32 | slot+1; 0 = empty
	n       int
}

func hash(id span.TraceID) uint32 {
	// Trace ids are random by the W3C spec, but not every producer's are
	// (a counter, a zero half): both halves go through splitmix64's
	// finalizer.
	h := binary.LittleEndian.Uint64(id[8:]) ^ binary.LittleEndian.Uint64(id[:8])*0x9e3779b97f4a7c15
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return uint32(h)
}

// get returns the slot of id, if held.
func (x *index) get(entries []entry, id span.TraceID) (int32, bool) {
	if x.n == 0 {
		return 0, false
	}
	h := hash(id)
	mask := uint32(len(x.buckets) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		b := x.buckets[i]
		if b == 0 {
			return 0, false
		}
		if uint32(b>>32) == h && entries[uint32(b)-1].id == id {
			return int32(uint32(b) - 1), true
		}
	}
}

// bucket returns the bucket where a lookup of id starts (to load it
// early: Store.warm); the table must not be empty.
func (x *index) bucket(id span.TraceID) uint64 {
	return x.buckets[hash(id)&uint32(len(x.buckets)-1)]
}

// put adds id → slot; id must not be held.
func (x *index) put(id span.TraceID, slot int32) {
	if (x.n+1)*2 > len(x.buckets) {
		x.grow()
	}
	x.insert(uint64(hash(id))<<32 | uint64(slot+1))
	x.n++
}

func (x *index) insert(b uint64) {
	mask := uint32(len(x.buckets) - 1)
	i := uint32(b>>32) & mask
	for x.buckets[i] != 0 {
		i = (i + 1) & mask
	}
	x.buckets[i] = b
}

// del removes id, held in slot.
func (x *index) del(id span.TraceID, slot int32) {
	mask := uint32(len(x.buckets) - 1)
	want := uint64(hash(id))<<32 | uint64(slot+1)
	i := uint32(want>>32) & mask
	for x.buckets[i] != want {
		i = (i + 1) & mask
	}
	// Shift back each later bucket of the run that may sit in the hole:
	// one whose home is no further from the hole than from itself.
	for j := (i + 1) & mask; x.buckets[j] != 0; j = (j + 1) & mask {
		home := uint32(x.buckets[j]>>32) & mask
		if (i-home)&mask < (j-home)&mask {
			x.buckets[i] = x.buckets[j]
			i = j
		}
	}
	x.buckets[i] = 0
	x.n--
}

func (x *index) grow() {
	old := x.buckets
	x.buckets = make([]uint64, max(1024, 2*len(old)))
	for _, b := range old {
		if b != 0 {
			x.insert(b)
		}
	}
}

func (x *index) len() int { return x.n }
