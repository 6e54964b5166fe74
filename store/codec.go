package store

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"time"
	"unsafe"

	"github.com/latscope/latscope/span"
)

// The store keeps each trace's spans as one byte slice of records, so what
// it holds has no pointers for the garbage collector to scan (a full
// 128 MiB store of *span.Span values cost the agent a quarter of its CPU
// in GC marking) and evicting a trace frees one object. Strings that repeat
// across spans are written once in tables the store owns: span names (with
// their service and kind, as operations), processes, attribute keys and code
// locations.
//
// A record, little endian:
//
//	off  size
//	0    4    record size in bytes, this header included
//	4    8    start, Unix ns
//	12   8    end, Unix ns
//	20   4    operation (Store.ops: service, name, kind)
//	24   4    process (Store.procs)
//	28   1    status
//	29   1    flags (flagRemoteParent, flagUnwound, flagOrphan, flagTime)
//	30   8    span id
//	38   8    parent span id
//	46   …    uvarints GoID, ParentGoID, StartTID, EndTID, CPU, Depth, Line;
//	          Function and File as string refs; StatusMessage as a string;
//	          uvarint attribute count, then per attribute a key ref, a type
//	          byte and the value; with flagTime, the time split: a byte
//	          (1: full), a uvarint mask of the categories not zero, and
//	          their nanoseconds as uvarints.
//
// A string ref is a uint16 index into Store.strs, or refInline followed by
// the string (uvarint length, bytes) once the table is full. A value is a
// string (uvarint length, bytes), an int64 (zigzag varint), a float64 (8
// bytes) or a bool (no payload: the type byte says which).
const (
	offSize   = 0
	offStart  = 4
	offEnd    = 12
	offOp     = 20
	offProc   = 24
	offStatus = 28
	offFlags  = 29
	offSpanID = 30
	offParent = 38
	hdrSize   = 46

	flagRemoteParent = 1 << 0
	flagUnwound      = 1 << 1
	flagOrphan       = 1 << 2
	flagTime         = 1 << 3 // a span.TimeSplit follows the attributes

	refInline = math.MaxUint16

	valString = 1
	valInt    = 2
	valFloat  = 3
	valFalse  = 4
	valTrue   = 5
)

// maxStrs bounds the table of interned strings (attribute keys, functions,
// files): past it, new strings are written inline in each record. A
// variable so tests can fill it.
var maxStrs = refInline

// SpanCost is the size of s's record (see above) while the string table
// has room: what s adds to its trace's region of the store's blocks. The
// budget charges the blocks themselves (a block is freed when the last
// trace in it is evicted) and traceOverhead per trace; names, processes,
// attribute keys, functions and files are held once per distinct value in
// tables that are not charged (they grow with operations, processes and
// keys, not with spans).
func SpanCost(s *span.Span) int64 {
	n := hdrSize + uvarintLen(s.GoID) + uvarintLen(s.ParentGoID) + uvarintLen(uint64(s.StartTID)) +
		uvarintLen(uint64(s.EndTID)) + uvarintLen(uint64(s.CPU)) + uvarintLen(uint64(s.Depth)) + uvarintLen(uint64(s.Line)) +
		4 + stringLen(s.StatusMessage) + uvarintLen(uint64(len(s.Attrs)))
	for _, a := range s.Attrs {
		n += 2 + valueLen(a.Value)
	}
	if s.Time != nil {
		mask, vals := timeFields(s.Time)
		n += 1 + uvarintLen(mask)
		for _, v := range vals {
			n += uvarintLen(v)
		}
	}
	return int64(n)
}

// timeFields returns the mask of a split's categories that are not zero
// and their values, in category order.
func timeFields(t *span.TimeSplit) (mask uint64, vals []uint64) {
	for c, v := range t.NS {
		if v > 0 {
			mask |= 1 << c
			vals = append(vals, uint64(v))
		}
	}
	return mask, vals
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

func stringLen(s string) int { return uvarintLen(uint64(len(s))) + len(s) }

func valueLen(v any) int {
	switch v := v.(type) {
	case string:
		return 1 + stringLen(v)
	case int64:
		return 1 + uvarintLen(zigzag(v))
	case int:
		return 1 + uvarintLen(zigzag(int64(v)))
	case float64:
		return 1 + 8
	case bool:
		return 1
	case nil:
		return 1 + 1
	}
	return 1 + stringLen(fmt.Sprint(v))
}

func zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// encode appends s's record to b. op and proc are its table indexes; the
// store's lock is held (it may intern strings).
func (s *Store) encode(b []byte, sp *span.Span, op, proc uint32) []byte {
	start := len(b)
	var hdr [hdrSize]byte
	binary.LittleEndian.PutUint64(hdr[offStart:], uint64(sp.Start.UnixNano()))
	binary.LittleEndian.PutUint64(hdr[offEnd:], uint64(sp.End.UnixNano()))
	binary.LittleEndian.PutUint32(hdr[offOp:], op)
	binary.LittleEndian.PutUint32(hdr[offProc:], proc)
	hdr[offStatus] = byte(sp.Status)
	var flags byte
	if sp.RemoteParent {
		flags |= flagRemoteParent
	}
	if sp.Unwound {
		flags |= flagUnwound
	}
	if sp.Orphan {
		flags |= flagOrphan
	}
	if sp.Time != nil {
		flags |= flagTime
	}
	hdr[offFlags] = flags
	copy(hdr[offSpanID:], sp.SpanID[:])
	copy(hdr[offParent:], sp.ParentID[:])
	b = append(b, hdr[:]...)
	b = binary.AppendUvarint(b, sp.GoID)
	b = binary.AppendUvarint(b, sp.ParentGoID)
	b = binary.AppendUvarint(b, uint64(sp.StartTID))
	b = binary.AppendUvarint(b, uint64(sp.EndTID))
	b = binary.AppendUvarint(b, uint64(sp.CPU))
	b = binary.AppendUvarint(b, uint64(sp.Depth))
	b = binary.AppendUvarint(b, uint64(sp.Line))
	b = s.appendRef(b, sp.Function)
	b = s.appendRef(b, sp.File)
	b = appendString(b, sp.StatusMessage)
	b = binary.AppendUvarint(b, uint64(len(sp.Attrs)))
	for _, a := range sp.Attrs {
		b = s.appendRef(b, a.Key)
		b = appendValue(b, a.Value)
	}
	if t := sp.Time; t != nil {
		full := byte(0)
		if t.Full {
			full = 1
		}
		b = append(b, full)
		mask, _ := timeFields(t)
		b = binary.AppendUvarint(b, mask)
		for _, v := range t.NS {
			if v > 0 {
				b = binary.AppendUvarint(b, uint64(v))
			}
		}
	}
	binary.LittleEndian.PutUint32(b[start+offSize:], uint32(len(b)-start))
	return b
}

// appendRef appends str as a reference into s.strs, interning it if the
// table has room, else inline.
func (s *Store) appendRef(b []byte, str string) []byte {
	// Most strings are the same constants span after span (attribute
	// keys, function names): a cache by address skips hashing them; the
	// comparison with the table keeps it right if the address is reused.
	var c *refCacheEntry
	if p := unsafe.StringData(str); len(str) > 0 {
		c = &s.refCache[uintptr(unsafe.Pointer(p))>>3%uintptr(len(s.refCache))]
		if c.p == p && s.strs[c.id] == str {
			return binary.LittleEndian.AppendUint16(b, c.id)
		}
	}
	i, ok := s.strIdx[str]
	if !ok && len(s.strs) < maxStrs {
		i = uint16(len(s.strs))
		s.strs = append(s.strs, str)
		s.strIdx[str] = i
		ok = true
	}
	if !ok {
		b = binary.LittleEndian.AppendUint16(b, refInline)
		return appendString(b, str)
	}
	if c != nil {
		*c = refCacheEntry{unsafe.StringData(str), i}
	}
	return binary.LittleEndian.AppendUint16(b, i)
}

// refCacheEntry remembers the table index of a string by its address.
type refCacheEntry struct {
	p  *byte
	id uint16
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case string:
		return appendString(append(b, valString), v)
	case int64:
		return binary.AppendUvarint(append(b, valInt), zigzag(v))
	case int:
		return binary.AppendUvarint(append(b, valInt), zigzag(int64(v)))
	case float64:
		return binary.LittleEndian.AppendUint64(append(b, valFloat), math.Float64bits(v))
	case bool:
		if v {
			return append(b, valTrue)
		}
		return append(b, valFalse)
	case nil:
		return appendString(append(b, valString), "")
	}
	// Attr documents string, int64, float64 and bool; anything else is
	// kept as it prints.
	return appendString(append(b, valString), fmt.Sprint(v))
}

// record is a view of one encoded span: its fixed header read, its
// variable part (rest) still encoded.
type record []byte

func (r record) start() int64    { return int64(binary.LittleEndian.Uint64(r[offStart:])) }
func (r record) end() int64      { return int64(binary.LittleEndian.Uint64(r[offEnd:])) }
func (r record) op() uint32      { return binary.LittleEndian.Uint32(r[offOp:]) }
func (r record) proc() uint32    { return binary.LittleEndian.Uint32(r[offProc:]) }
func (r record) status() byte    { return r[offStatus] }
func (r record) flags() byte     { return r[offFlags] }
func (r record) duration() int64 { return r.end() - r.start() }

// records calls fn with each record of data, in the order they were
// added, until fn returns false.
func records(data []byte, fn func(record) bool) {
	for len(data) >= hdrSize {
		n := binary.LittleEndian.Uint32(data[offSize:])
		if !fn(record(data[:n])) {
			return
		}
		data = data[n:]
	}
}

// reader reads the variable part of a record. Unless copies is set, the
// strings it returns share the record's bytes: valid only while the
// store's lock is held (a released block is reused).
type reader struct {
	b      []byte
	s      *Store
	off    int
	copies bool
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b[r.off:])
	r.off += n
	return v
}

func (r *reader) str() string {
	n := int(r.uvarint())
	if n == 0 {
		return ""
	}
	str := unsafe.String(&r.b[r.off], n)
	if r.copies {
		str = strings.Clone(str)
	}
	r.off += n
	return str
}

func (r *reader) ref() string {
	i := binary.LittleEndian.Uint16(r.b[r.off:])
	r.off += 2
	if i == refInline {
		return r.str()
	}
	return r.s.strs[i]
}

// value reads one typed value without boxing it: kind is its type byte,
// with str, i or f holding it.
func (r *reader) value() (kind byte, str string, i int64, f float64) {
	kind = r.b[r.off]
	r.off++
	switch kind {
	case valString:
		str = r.str()
	case valInt:
		i = unzigzag(r.uvarint())
	case valFloat:
		f = math.Float64frombits(binary.LittleEndian.Uint64(r.b[r.off:]))
		r.off += 8
	}
	return kind, str, i, f
}

func boxed(kind byte, str string, i int64, f float64) any {
	switch kind {
	case valString:
		return str
	case valInt:
		return i
	case valFloat:
		return f
	case valTrue:
		return true
	}
	return false
}

// fields decodes r's fixed and variable fields into sp, except Attrs,
// and returns a reader positioned at the attribute count; copies says
// whether the strings are the caller's (else valid while s.mu is held).
// s.mu is held (read or write).
func (s *Store) fields(r record, id span.TraceID, sp *span.Span, copies bool) reader {
	op := &s.ops[r.op()]
	*sp = span.Span{
		TraceID:      id,
		Name:         op.name,
		Kind:         op.kind,
		Start:        time.Unix(0, r.start()),
		End:          time.Unix(0, r.end()),
		Status:       span.StatusCode(r.status()),
		Process:      s.procs[r.proc()].p,
		RemoteParent: r.flags()&flagRemoteParent != 0,
		Unwound:      r.flags()&flagUnwound != 0,
		Orphan:       r.flags()&flagOrphan != 0,
	}
	copy(sp.SpanID[:], r[offSpanID:])
	copy(sp.ParentID[:], r[offParent:])
	rd := reader{b: r, s: s, off: hdrSize, copies: copies}
	sp.GoID = rd.uvarint()
	sp.ParentGoID = rd.uvarint()
	sp.StartTID = uint32(rd.uvarint())
	sp.EndTID = uint32(rd.uvarint())
	sp.CPU = uint32(rd.uvarint())
	sp.Depth = int(rd.uvarint())
	sp.Line = int(rd.uvarint())
	sp.Function = rd.ref()
	sp.File = rd.ref()
	sp.StatusMessage = rd.str()
	return rd
}

// decode returns the span r encodes. s.mu is held (read or write).
func (s *Store) decode(r record, id span.TraceID) *span.Span {
	sp := new(span.Span)
	rd := s.fields(r, id, sp, true)
	if n := int(rd.uvarint()); n > 0 {
		sp.Attrs = make([]span.Attr, n)
		for i := range sp.Attrs {
			sp.Attrs[i].Key = rd.ref()
			sp.Attrs[i].Value = boxed(rd.value())
		}
	}
	if r.flags()&flagTime != 0 {
		t := &span.TimeSplit{Full: rd.b[rd.off] == 1}
		rd.off++
		mask := rd.uvarint()
		for c := range t.NS {
			if mask&(1<<c) != 0 {
				t.NS[c] = int64(rd.uvarint())
			}
		}
		sp.Time = t
	}
	return sp
}
