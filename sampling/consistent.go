package sampling

import (
	"encoding/binary"
	"math"

	"github.com/latscope/latscope/span"
)

// maxThreshold is 2^56: randomness values are the 56 low bits of a trace id.
const maxThreshold = uint64(1) << 56

// Threshold is the rejection threshold T of OpenTelemetry's consistent
// probability sampling for keep probability p: T = (1 - p)·2^56, rounded,
// computed as 2^56 - round(p·2^56) as the OpenTelemetry samplers do. A
// trace is kept iff its randomness R >= T. p <= 0 gives 2^56 (keep
// nothing), p >= 1 gives 0 (keep everything).
func Threshold(p float64) uint64 {
	switch {
	case p <= 0 || math.IsNaN(p):
		return maxThreshold
	case p >= 1:
		return 0
	}
	return maxThreshold - uint64(math.Round(p*float64(maxThreshold)))
}

// Randomness is R, the trace id's low 56 bits: bytes 9..15, big-endian.
// W3C Trace Context level 2 makes these bits random.
func Randomness(id span.TraceID) uint64 {
	return binary.BigEndian.Uint64(id[8:]) & (maxThreshold - 1)
}

// KeepRatio reports whether consistent probability sampling at threshold
// t (see Threshold) keeps the trace: the same answer on every node.
func KeepRatio(id span.TraceID, t uint64) bool { return Randomness(id) >= t }
