package sampling

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

func TestBucketRelativeError(t *testing.T) {
	max := minTracked * time.Duration(math.Pow(gamma, numBuckets-1))
	for d := minTracked; d < max; d = d*21/20 + 1 {
		got := bucketValue(bucket(d))
		if rel := math.Abs(float64(got-d)) / float64(d); rel > relativeError+1e-9 {
			t.Fatalf("%v reported as %v: relative error %.4f > %v", d, got, rel, relativeError)
		}
	}
	if bucket(time.Nanosecond) != 0 || bucket(1000*time.Hour) != numBuckets-1 {
		t.Error("out-of-range durations do not clamp to the end buckets")
	}
	if max < time.Hour {
		t.Errorf("histogram tops out at %v, want >= 1h", max)
	}
}

func TestWindowQuantile(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var w window
	var ds []time.Duration
	for range 5000 {
		// Log-uniform over 100µs..10s.
		d := time.Duration(100e3 * math.Pow(10, 5*rng.Float64()))
		ds = append(ds, d)
		w.record(t0, d)
	}
	slices.Sort(ds)
	for _, q := range []float64{50, 90, 99, 99.9} {
		exact := ds[int(math.Ceil(q/100*float64(len(ds))))-1]
		got, ok := w.quantile(q)
		if !ok {
			t.Fatal("window not warm after 5000 samples")
		}
		if rel := math.Abs(float64(got-exact)) / float64(exact); rel > relativeError+1e-9 {
			t.Errorf("p%v = %v, exact %v: relative error %.3f", q, got, exact, rel)
		}
	}
}

func TestWindowWarmUp(t *testing.T) {
	var w window
	for i := range MinSamples - 1 {
		w.record(t0, time.Millisecond)
		if w.slower(99, time.Hour) {
			t.Fatalf("percentile rule applied after %d samples, before MinSamples", i+1)
		}
	}
	w.record(t0, time.Millisecond)
	if !w.slower(99, time.Hour) {
		t.Errorf("percentile rule not applied at MinSamples")
	}
	if w.slower(99, time.Millisecond) {
		t.Errorf("a duration equal to the percentile counted as slower")
	}
}

func TestWindowRolls(t *testing.T) {
	var w window
	for m := range 3 {
		for range 100 {
			w.record(t0.Add(time.Duration(m)*time.Minute), time.Duration(m+1)*time.Second)
		}
	}
	if w.total != 300 {
		t.Fatalf("total = %d, want 300", w.total)
	}
	// Minute 5 pushes minute 0 out; minutes 1 and 2 stay.
	w.record(t0.Add(5*time.Minute), 10*time.Second)
	if w.total != 201 {
		t.Errorf("after 5 minutes total = %d, want 201 (minute 0 out)", w.total)
	}
	// A sample older than the window is ignored.
	w.record(t0, time.Second)
	if w.total != 201 {
		t.Errorf("a sample older than the window was recorded")
	}
	// Ten idle minutes empty the window.
	w.record(t0.Add(15*time.Minute), time.Second)
	if w.total != 1 || w.sum[bucket(time.Second)] != 1 {
		t.Errorf("after idle minutes total = %d, want 1", w.total)
	}
	var sum uint64
	for _, n := range w.sum {
		sum += uint64(n)
	}
	if sum != w.total {
		t.Errorf("sum of buckets %d != total %d", sum, w.total)
	}
}

func TestOperationsBound(t *testing.T) {
	var o operations
	for i := range MaxOperations {
		o.observe(operation{"svc", string(rune('a' + i))}, 99, t0, time.Millisecond)
	}
	if len(o.byOp) != MaxOperations || o.untracked != 0 {
		t.Fatalf("%d operations, %d untracked", len(o.byOp), o.untracked)
	}
	o.observe(operation{"svc", "one too many"}, 99, t0, time.Millisecond)
	if len(o.byOp) != MaxOperations || o.untracked != 1 {
		t.Fatalf("over the bound: %d operations, %d untracked; want %d, 1", len(o.byOp), o.untracked, MaxOperations)
	}
	// Once the others idle for a whole window, a new operation gets room.
	o.observe(operation{"svc", "a"}, 99, t0.Add(10*time.Minute), time.Millisecond)
	o.observe(operation{"svc", "new"}, 99, t0.Add(10*time.Minute), time.Millisecond)
	if _, ok := o.byOp[operation{"svc", "new"}]; !ok || len(o.byOp) != 2 {
		t.Errorf("idle operations not reclaimed: %d operations", len(o.byOp))
	}
}
