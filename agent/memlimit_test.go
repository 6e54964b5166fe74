package agent

import (
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"testing"
)

func TestMemoryLimitFor(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct{ budget, samples, rest, minRest, want int64 }{
		{128 * mib, 0, 10 * mib, 32 * mib, 160 * mib},         // the rest small: the floor
		{128 * mib, 5*mib + 1, 10 * mib, 32 * mib, 166 * mib}, // samples count, rounded up to a MiB
		{128 * mib, 0, 100 * mib, 32 * mib, 328 * mib},        // many parsed binaries: twice the rest
		{128 * mib, 0, -50 * mib, 48 * mib, 176 * mib},        // stores over-count: never below the floor
	} {
		if got := memoryLimitFor(c.budget, c.samples, c.rest, c.minRest); got != c.want {
			t.Errorf("memoryLimitFor(%d MiB, %d, %d MiB, %d MiB) = %.2f MiB, want %d MiB", c.budget/mib, c.samples, c.rest/mib, c.minRest/mib, float64(got)/mib, c.want/mib)
		}
	}
}

// TestMemoryLimitFollowsLiveHeap: with 100 MiB live outside the stores
// (say, the tables of many traced binaries) the limit leaves it room to
// grow instead of pinning the heap at the limit.
func TestMemoryLimitFollowsLiveHeap(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	m := newMemoryLimit(64<<20, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if m.set != 64<<20+workingSet {
		t.Fatalf("initial limit %d, want the budget + workingSet", m.set)
	}
	live := make([]byte, 100<<20)
	runtime.GC()
	m.update(0, 0)
	if m.set < 64<<20+200<<20 {
		t.Errorf("limit %.0f MiB with 100 MiB live besides the stores, want ≥ 264 MiB", float64(m.set)/(1<<20))
	}
	if got := debug.SetMemoryLimit(-1); got != m.set {
		t.Errorf("runtime's limit %d, want %d", got, m.set)
	}
	runtime.KeepAlive(live)
}
