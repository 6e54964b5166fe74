package library

import (
	"fmt"
	"testing"
)

func TestValues(t *testing.T) {
	var strs Values[any]
	a := strs.Of([]byte("GET\x00junk"))
	if a != "GET" {
		t.Fatalf("Of = %#v, want GET (the string up to its NUL)", a)
	}
	if n := testing.AllocsPerRun(100, func() { strs.Of([]byte("GET\x00other")) }); n != 0 {
		t.Errorf("a value seen before allocated %v times", n)
	}
	if strs.Of([]byte("POST")) != "POST" || strs.Of([]byte("")) != "" {
		t.Error("distinct strings must give their own values")
	}
	// Bounded: past valuesMax distinct strings it starts over, and still
	// answers right.
	for i := 0; i < 3*valuesMax; i++ {
		if v := strs.Of([]byte(fmt.Sprint(i))); v != fmt.Sprint(i) {
			t.Fatalf("Of(%d) = %v", i, v)
		}
	}
	if len(strs.m) > valuesMax {
		t.Errorf("kept %d values, want at most %d", len(strs.m), valuesMax)
	}

	lens := Values[int]{New: func(s string) int { return len(s) }}
	if lens.Of([]byte("abc\x00")) != 3 || lens.Of([]byte("abc")) != 3 {
		t.Error("New's value expected")
	}
}
