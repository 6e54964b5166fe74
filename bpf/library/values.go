package library

import (
	"bytes"
	"sync"
)

// Values turns C strings from records into attribute values (span.Attr's
// Value: a boxed Go string, or what New makes of the string), remembering
// them so that a value seen again costs a map lookup instead of two
// allocations (the string and its box). For values with few distinct
// strings: methods, hosts, routes, peers. At most valuesMax are kept; then
// the table starts over, so a high-cardinality field costs what it would
// without it plus a lookup. Safe for concurrent use.
type Values[V any] struct {
	// New makes the value of a string not seen yet; nil: the string boxed
	// as any (V must then be any).
	New func(string) V

	mu sync.Mutex
	m  map[string]V
}

const valuesMax = 4096

// Of returns the value of the NUL-terminated string at the start of b.
func (t *Values[V]) Of(b []byte) V {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.m[string(b)]; ok { // no allocation: the compiler looks up b's bytes
		return v
	}
	if t.m == nil || len(t.m) >= valuesMax {
		t.m = make(map[string]V)
	}
	s := string(b)
	var v V
	if t.New != nil {
		v = t.New(s)
	} else {
		v = any(s).(V)
	}
	t.m[s] = v
	return v
}
