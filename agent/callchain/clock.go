package callchain

import (
	"crypto/rand"
	"encoding/binary"
	"time"

	"golang.org/x/sys/unix"
)

// MonoToWall returns the offset to add to a CLOCK_MONOTONIC time (what
// bpf_ktime_get_ns returns) to get Unix time, sampled now. The two clocks
// drift apart only by NTP slewing, which is negligible over a trace.
func MonoToWall() int64 {
	var ts unix.Timespec
	before := time.Now().UnixNano()
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	after := time.Now().UnixNano()
	return (before+after)/2 - ts.Nano()
}

// MonoNow returns CLOCK_MONOTONIC in ns, the kernel events' clock.
func MonoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// NewSalt returns a random span-id salt (never zero).
func NewSalt() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) | 1
}
