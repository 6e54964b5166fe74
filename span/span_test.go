package span

import "testing"

type keeper struct{ kept []*Span }

func (k *keeper) Export(s []*Span) error { k.kept = append(k.kept, s...); return nil }
func (k *keeper) Close() error           { return nil }

// TestCopying: what an exporter behind Copying keeps survives its
// producer reusing the spans' memory.
func TestCopying(t *testing.T) {
	k := &keeper{}
	e := Copying(k)
	mem := Span{Name: "GET /a", Attrs: make([]Attr, 0, 4)}
	mem.Attrs = append(mem.Attrs, Attr{Key: "http.route", Value: "/a"})
	e.Export([]*Span{&mem, nil})
	// The producer reuses the span and its attribute slots.
	mem.Name = "GET /b"
	mem.Attrs = mem.Attrs[:0]
	mem.Attrs = append(mem.Attrs, Attr{Key: "http.route", Value: "/b"})
	e.Export([]*Span{&mem})
	if len(k.kept) != 2 {
		t.Fatalf("kept %d spans, want 2 (nil skipped)", len(k.kept))
	}
	if s := k.kept[0]; s.Name != "GET /a" || s.Attrs[0].Value != "/a" {
		t.Errorf("first span now %q %v: its memory was shared", s.Name, s.Attrs)
	}
	if s := k.kept[1]; s.Name != "GET /b" || s.Attrs[0].Value != "/b" {
		t.Errorf("second span %q %v", s.Name, s.Attrs)
	}
}
