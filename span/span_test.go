package span

import (
	"reflect"
	"testing"
)

// TestClone: a clone survives its producer reusing the span's memory and
// its attribute slots.
func TestClone(t *testing.T) {
	mem := Span{Name: "GET /a", Attrs: make([]Attr, 0, 4)}
	mem.Attrs = append(mem.Attrs, Attr{Key: "http.route", Value: "/a"})
	c := mem.Clone()
	mem.Name = "GET /b"
	mem.Attrs = append(mem.Attrs[:0], Attr{Key: "http.route", Value: "/b"})
	if c.Name != "GET /a" || c.Attrs[0].Value != "/a" {
		t.Errorf("clone now %q %v: its memory was shared", c.Name, c.Attrs)
	}
}

// TestAppendAttributes: appended to a reused slice, the attributes are
// Attributes', after what the slice held.
func TestAppendAttributes(t *testing.T) {
	s := &Span{GoID: 7, ParentGoID: 3, StartTID: 1, EndTID: 2, Function: "main.f", File: "main.go", Line: 9, Kind: KindInternal,
		Unwound: true, Orphan: true, Time: &TimeSplit{NS: [NumTimeCategories]int64{TimeGCSTW: 5}}, Attrs: []Attr{{Key: "k", Value: "v"}}}
	prefix := []Attr{{Key: "kept", Value: true}}
	got := s.AppendAttributes(prefix)
	if !reflect.DeepEqual(got[0], prefix[0]) || !reflect.DeepEqual(got[1:], s.Attributes()) {
		t.Errorf("AppendAttributes = %v, want %v after %v", got, s.Attributes(), prefix)
	}
	if n := len(s.Attributes()); n != 11 {
		t.Errorf("%d attributes, want 11 (thread, goroutine, function, file, line, start thread, parent goroutine, unwound, parent missing, gc_stw, k)", n)
	}
}
