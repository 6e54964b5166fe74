package discovery

import "testing"

// The exit de-duplication remembers the last n process instances.
func TestRecent(t *testing.T) {
	r := newRecent(2)
	a, b, c := procKey{1, 10}, procKey{2, 20}, procKey{1, 30} // c: pid 1 reused
	for i, step := range []struct {
		key procKey
		new bool
	}{
		{a, true}, {a, false}, // a duplicate exit
		{b, true}, {c, true}, // same pid, another instance: not a duplicate
		{a, true}, // evicted by b and c: a third exit of a is long past
		{c, false},
	} {
		if got := r.add(step.key); got != step.new {
			t.Errorf("step %d: add(%v) = %v, want %v", i, step.key, got, step.new)
		}
	}
}
