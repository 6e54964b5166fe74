package api

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/latscope/latscope/analysis/flame"
)

// ParseProfile reads the parameters of GET /api/profile/cpu: those of
// /api/flame that select requests (service, operation, since, until,
// start, end, minDuration, slowest, error; see ParseFlame). A CPU profile
// is one window: the baseline parameters and normalize are refused.
func ParseProfile(v url.Values, now time.Time) (flame.Query, error) {
	for _, k := range []string{"baselineSince", "baselineUntil", "baselineStart", "baselineEnd", "normalize"} {
		if v.Get(k) != "" {
			return flame.Query{}, fmt.Errorf("parameter %s: a CPU profile is one window; fetch two and compare them with go tool pprof -diff_base", k)
		}
	}
	r, err := ParseFlame(v, now)
	return r.Query, err
}

// cpuProfile answers GET /api/profile/cpu: the pprof CPU profile of the
// spans of the requests the parameters select (cpuprofile.Store.Profile:
// sample types samples/count and cpu/nanoseconds, code frames under each
// span's "service operation" path), gzipped profile.proto
// (application/octet-stream; headers X-Latscope-Requests and
// X-Latscope-Samples). 400 names a bad parameter; 404 says CPU sampling
// is off.
func (f *flameAPI) cpuProfile(w http.ResponseWriter, r *http.Request) {
	if f.samples == nil {
		writeError(w, f.q.log, http.StatusNotFound, "CPU sampling is off on this agent (profile.cpuHz 0, --profile-hz 0): it has no CPU profiles")
		return
	}
	v, err := queryValues(r)
	if err != nil {
		writeError(w, f.q.log, http.StatusBadRequest, err.Error())
		return
	}
	q, err := ParseProfile(v, f.q.now())
	if err != nil {
		writeError(w, f.q.log, http.StatusBadRequest, err.Error())
		return
	}
	traces, err := StoreSource(f.q.store)(q)
	if err != nil {
		writeError(w, f.q.log, http.StatusInternalServerError, err.Error())
		return
	}
	res, err := f.samples.Profile(traces, q, describeQuery(fmt.Sprintf("latscope CPU samples of spans, every %s", f.samples.Period()), q))
	if err != nil {
		writeError(w, f.q.log, http.StatusBadRequest, err.Error())
		return
	}
	var buf bytes.Buffer
	if err := res.Profile.Write(&buf); err != nil {
		writeError(w, f.q.log, http.StatusInternalServerError, "write profile: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="cpu.pb.gz"`)
	w.Header().Set("X-Latscope-Requests", fmt.Sprint(res.Requests))
	w.Header().Set("X-Latscope-Samples", fmt.Sprint(res.Samples))
	w.Write(buf.Bytes())
}
