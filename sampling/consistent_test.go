package sampling

import (
	"math/rand/v2"
	"testing"

	"github.com/latscope/latscope/span"
)

// traceID returns a trace id whose bytes 9..15 are r's low 56 bits and
// whose other bytes are noise the decision must ignore.
func traceID(r uint64) span.TraceID {
	id := span.TraceID{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 0xff}
	for i := 15; i >= 9; i-- {
		id[i] = byte(r)
		r >>= 8
	}
	return id
}

func TestThreshold(t *testing.T) {
	// Hand-computed: T = 2^56 - round(p·2^56).
	for _, tc := range []struct {
		p    float64
		want uint64
	}{
		{1, 0},
		{0.5, 0x80000000000000},
		{0.25, 0xc0000000000000},
		{0.1, 0xe6666666666666},        // float64(0.1)·2^56 = 0x1999999999999a exactly
		{0.01, 0xfd70a3d70a3d71},       // 0.01·2^56 = 720575940379279.37 → …279
		{1.0 / 1024, 0xffc00000000000}, // 2^56 - 2^46
		{0, 1 << 56},
		{-1, 1 << 56},
		{2, 0},
	} {
		if got := Threshold(tc.p); got != tc.want {
			t.Errorf("Threshold(%v) = %#x, want %#x", tc.p, got, tc.want)
		}
	}
}

func TestRandomness(t *testing.T) {
	id := span.TraceID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7}
	if got := Randomness(id); got != 0x01020304050607 {
		t.Errorf("Randomness = %#x, want 0x01020304050607 (bytes 9..15 only)", got)
	}
}

func TestKeepRatio(t *testing.T) {
	for _, tc := range []struct {
		p    float64
		r    uint64
		keep bool
	}{
		{0.5, 0x80000000000000, true}, // R == T keeps
		{0.5, 0x7fffffffffffff, false},
		{0.5, 0xffffffffffffff, true},
		{0.1, 0xe6666666666666, true},
		{0.1, 0xe6666666666665, false},
		{0.01, 0xfd70a3d70a3d71, true},
		{0.01, 0xfd70a3d70a3d70, false},
		{1, 0, true},
		{0, 0xffffffffffffff, false},
	} {
		if got := KeepRatio(traceID(tc.r), Threshold(tc.p)); got != tc.keep {
			t.Errorf("p=%v R=%#x: keep = %v, want %v", tc.p, tc.r, got, tc.keep)
		}
	}
}

// TestKeepRatioRate: over many random ids the keep rate is p, and a lower
// probability keeps a subset of a higher one's traces (consistency).
func TestKeepRatioRate(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 100_000
	for _, p := range []float64{0.5, 0.1, 0.01} {
		t.Run("", func(t *testing.T) {
			th, thHalf := Threshold(p), Threshold(p/2)
			kept := 0
			for range n {
				var id span.TraceID
				for i := range id {
					id[i] = byte(rng.Uint32())
				}
				k := KeepRatio(id, th)
				if k {
					kept++
				}
				if KeepRatio(id, thHalf) && !k {
					t.Fatalf("id %v kept at p=%v but not at p=%v", id, p/2, p)
				}
			}
			rate := float64(kept) / n
			tol := min(0.01, p/5) // ±1 %, tighter for small p (6 standard deviations at p = 0.01)
			if rate < p-tol || rate > p+tol {
				t.Errorf("p=%v: kept %d of %d (%.4f), want within ±%v", p, kept, n, rate, tol)
			}
		})
	}
}
