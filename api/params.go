package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/latscope/latscope/store"
)

// defaultLimit is how many traces a search returns without a limit
// parameter, as in Jaeger.
const defaultLimit = 100

// parseSearch reads GET /api/traces's parameters into a store query:
//
//	service, operation   exact names
//	tags                 JSON object string → string, e.g. {"http.response.status_code":"500"}
//	tag                  key:value, repeatable (Jaeger's other form)
//	minDuration          Go duration, e.g. 250ms, 1.5s
//	maxDuration          Go duration
//	start, end           µs since the Unix epoch
//	lookback             a duration (1h, 2d, 1w) or "custom"; without start,
//	                     start = now − lookback
//	limit                whole number ≥ 0, default 100; 0: no limit
//	error                true (traces with an error span) or false (without)
//	sort                 latscope's: "duration" orders the traces longest
//	                     first (the default is newest first), so limit
//	                     picks the slowest of the window
//
// The error names the parameter at fault and what it expects.
func parseSearch(v url.Values, now time.Time) (store.Query, error) {
	q := store.Query{Service: v.Get("service"), Operation: v.Get("operation"), Limit: defaultLimit}
	var err error
	if q.Tags, err = parseTags(v); err != nil {
		return q, err
	}
	if q.MinDuration, err = durationParam(v, "minDuration"); err != nil {
		return q, err
	}
	if q.MaxDuration, err = durationParam(v, "maxDuration"); err != nil {
		return q, err
	}
	if q.MaxDuration > 0 && q.MinDuration > q.MaxDuration {
		return q, fmt.Errorf("parameters minDuration and maxDuration: minDuration %s is above maxDuration %s", q.MinDuration, q.MaxDuration)
	}
	if q.Start, err = microsParam(v, "start"); err != nil {
		return q, err
	}
	if q.End, err = microsParam(v, "end"); err != nil {
		return q, err
	}
	lookback, err := lookbackParam(v)
	if err != nil {
		return q, err
	}
	if q.Start.IsZero() && lookback > 0 {
		q.Start = now.Add(-lookback)
	}
	if !q.Start.IsZero() && !q.End.IsZero() && q.Start.After(q.End) {
		return q, fmt.Errorf("parameters start and end: start %s is after end %s", q.Start.UTC().Format(time.RFC3339Nano), q.End.UTC().Format(time.RFC3339Nano))
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, fmt.Errorf("parameter limit: %q is not a whole number ≥ 0", s)
		}
		q.Limit = n
	}
	if s := v.Get("error"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return q, fmt.Errorf("parameter error: %q is not true or false", s)
		}
		q.Error, q.NoError = b, !b
	}
	switch s := v.Get("sort"); s {
	case "":
	case "duration":
		q.Longest = true
	default:
		return q, fmt.Errorf("parameter sort: %q is not a known order (duration: longest first; default: newest first)", s)
	}
	return q, nil
}

// queryValues parses r's query strictly: a pair that does not decode (an
// unescaped %, as in slowest=1%) is an error naming it, where
// r.URL.Query() would drop it silently.
func queryValues(r *http.Request) (url.Values, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w (escape %% as %%25)", r.URL.RawQuery, err)
	}
	return v, nil
}

// parseTags merges the tags JSON object and every tag=key:value.
func parseTags(v url.Values) (map[string]string, error) {
	tags := make(map[string]string)
	if s := v.Get("tags"); s != "" {
		if err := json.Unmarshal([]byte(s), &tags); err != nil {
			return nil, fmt.Errorf(`parameter tags: %q is not a JSON object of strings (e.g. {"http.response.status_code":"500"})`, s)
		}
	}
	for _, kv := range v["tag"] {
		k, val, ok := strings.Cut(kv, ":")
		if !ok || k == "" {
			return nil, fmt.Errorf("parameter tag: %q is not key:value (e.g. http.route:/checkout)", kv)
		}
		tags[k] = val
	}
	if len(tags) == 0 {
		return nil, nil
	}
	return tags, nil
}

func durationParam(v url.Values, name string) (time.Duration, error) {
	s := v.Get(name)
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("parameter %s: %q is not a duration (e.g. 250ms, 1.5s)", name, s)
	}
	if d < 0 {
		return 0, fmt.Errorf("parameter %s: %q is negative; want a duration ≥ 0 (e.g. 250ms, 1.5s)", name, s)
	}
	return d, nil
}

// microsParam reads a time given in µs since the Unix epoch.
func microsParam(v url.Values, name string) (time.Time, error) {
	s := v.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("parameter %s: %q is not a time in microseconds since the Unix epoch", name, s)
	}
	return time.UnixMicro(n), nil
}

// lookbackParam reads lookback: empty or "custom" (Grafana's, with start
// and end) is 0; else a Go duration, or a whole number of days (d) or
// weeks (w) as Jaeger's UI sends them.
func lookbackParam(v url.Values) (time.Duration, error) {
	s := v.Get("lookback")
	if s == "" || s == "custom" {
		return 0, nil
	}
	bad := fmt.Errorf("parameter lookback: %q is not a duration (e.g. 1h, 2d, 1w) or custom", s)
	unit := time.Duration(0)
	switch {
	case strings.HasSuffix(s, "d"):
		unit = 24 * time.Hour
	case strings.HasSuffix(s, "w"):
		unit = 7 * 24 * time.Hour
	}
	if unit != 0 {
		n, err := strconv.Atoi(s[:len(s)-1])
		if err != nil || n <= 0 {
			return 0, bad
		}
		return time.Duration(n) * unit, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, bad
	}
	return d, nil
}

// checkMillis accepts a trace-by-id start or end (ms since the Unix epoch,
// as Grafana sends them) only to reject one that is not a number; a stored
// trace is found by its id alone.
func checkMillis(v url.Values, name string) error {
	if s := v.Get(name); s != "" {
		if _, err := strconv.ParseInt(s, 10, 64); err != nil {
			return fmt.Errorf("parameter %s: %q is not a time in milliseconds since the Unix epoch", name, s)
		}
	}
	return nil
}
