package store

// arena holds the traces' records in blocks of memory handed out in
// arrival order, so a trace's entry refers to its records by position
// (pointer-free) and the garbage collector sees a few thousand blocks
// instead of one object per trace: with a slice per trace, a full 128 MiB
// store had ~260 000 objects to mark in every cycle and one allocation per
// trace. A block is released when the last of its regions is, which FIFO
// eviction makes happen in allocation order, and kept for reuse (a few):
// reusing blocks instead of allocating them saved the zeroing and page
// faults of fresh memory, 14 % of the agent's CPU at 20 000 spans/s. So no
// decoded value may share a block's bytes: decode copies the strings it
// reads out of records.
type arena struct {
	blockSize int
	blocks    []block
	freeIDs   []int32
	head      int32    // the block being filled; -1: none
	bytes     int64    // capacity of the blocks held
	spare     [][]byte // released blocks of blockSize, for reuse
}

// maxSpare bounds the released blocks kept for reuse.
const maxSpare = 8

type block struct {
	buf  []byte // nil: the id is free
	live int    // bytes of its regions in use
}

// region is where one trace's records are.
type region struct {
	block int32
	off   uint32
	len   uint32
}

// newArena sizes blocks for budget: 1/256 of it, between 256 B and
// 64 KiB, so eviction frees memory in steps small against the budget.
func newArena(budget int64) arena {
	return arena{blockSize: int(min(max(budget/256, 256), 64<<10)), head: -1}
}

func (a *arena) bytesOf(r region) []byte {
	return a.blocks[r.block].buf[r.off : r.off+r.len]
}

// put returns a new region holding data.
func (a *arena) put(data []byte) region {
	r := a.reserve(len(data))
	copy(a.bytesOf(r), data)
	return r
}

// reserve returns a new region of n bytes for the caller to write.
func (a *arena) reserve(n int) region {
	if n > a.blockSize/2 {
		// Large: a block of its own, exactly its size.
		id := a.newBlock(n)
		a.blocks[id].buf = a.blocks[id].buf[:n]
		a.blocks[id].live = n
		return region{block: id, len: uint32(n)}
	}
	if a.head < 0 || len(a.blocks[a.head].buf)+n > cap(a.blocks[a.head].buf) {
		old := a.head
		a.head = a.newBlock(a.blockSize)
		if old >= 0 && a.blocks[old].live == 0 {
			a.release(old)
		}
	}
	b := &a.blocks[a.head]
	off := len(b.buf)
	b.buf = b.buf[:off+n]
	b.live += n
	return region{block: a.head, off: uint32(off), len: uint32(n)}
}

// extend returns r with data appended: in place when r ends the head
// block's used part and the block has room, else copied to a new region
// (r is released).
func (a *arena) extend(r region, data []byte) region {
	if r.block == a.head {
		b := &a.blocks[a.head]
		if int(r.off+r.len) == len(b.buf) && len(b.buf)+len(data) <= cap(b.buf) {
			b.buf = append(b.buf, data...)
			b.live += len(data)
			r.len += uint32(len(data))
			return r
		}
	}
	// Copy both into a new region; r's block cannot go before free.
	nr := a.reserve(int(r.len) + len(data))
	dst := a.bytesOf(nr)
	copy(dst[copy(dst, a.bytesOf(r)):], data)
	a.free(r)
	return nr
}

// free releases r; its block goes once no region uses it (the head block
// stays until it is full).
func (a *arena) free(r region) {
	b := &a.blocks[r.block]
	b.live -= int(r.len)
	if b.live == 0 && r.block != a.head {
		a.release(r.block)
	}
}

func (a *arena) newBlock(size int) int32 {
	var id int32
	if n := len(a.freeIDs); n > 0 {
		id, a.freeIDs = a.freeIDs[n-1], a.freeIDs[:n-1]
	} else {
		id = int32(len(a.blocks))
		a.blocks = append(a.blocks, block{})
	}
	var buf []byte
	if n := len(a.spare); n > 0 && size == a.blockSize {
		buf, a.spare = a.spare[n-1][:0], a.spare[:n-1]
	} else {
		buf = make([]byte, 0, size)
	}
	a.blocks[id] = block{buf: buf}
	a.bytes += int64(size)
	return id
}

func (a *arena) release(id int32) {
	buf := a.blocks[id].buf
	a.bytes -= int64(cap(buf))
	if cap(buf) == a.blockSize && len(a.spare) < maxSpare {
		a.spare = append(a.spare, buf)
	}
	a.blocks[id] = block{}
	a.freeIDs = append(a.freeIDs, id)
}
