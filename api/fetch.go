package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/latscope/latscope/analysis/flame"
	"github.com/latscope/latscope/span"
)

// JaegerSource reads the traces a flame query needs from a Jaeger query
// API at base (Jaeger's, or an agent's: the same API), so the same
// profiles can be built fleet-wide from a Jaeger deployment with no
// aggregation tier of latscope's own. Jaeger's search needs a service;
// it returns at most limit traces (newest first, by Jaeger's rules), so
// a window with more requests than that is profiled from a sample of its
// most recent traces.
func JaegerSource(ctx context.Context, c *http.Client, base string, limit int) TraceSource {
	return func(q flame.Query) ([][]*span.Span, error) {
		if q.Service == "" {
			return nil, fmt.Errorf("a Jaeger search needs a service: give --service")
		}
		v := url.Values{"service": {q.Service}, "limit": {strconv.Itoa(limit)}}
		if q.Operation != "" {
			v.Set("operation", q.Operation)
		}
		if !q.Start.IsZero() {
			v.Set("start", strconv.FormatInt(q.Start.UnixMicro(), 10))
		}
		if !q.End.IsZero() {
			v.Set("end", strconv.FormatInt(q.End.UnixMicro(), 10))
		}
		if q.MinDuration > 0 {
			v.Set("minDuration", q.MinDuration.String())
		}
		if q.Errors {
			v.Set("tags", `{"error":"true"}`)
		}
		return FetchTraces(ctx, c, strings.TrimRight(base, "/")+"/api/traces?"+v.Encode())
	}
}

// FetchTraces GETs a Jaeger query API answer (/api/traces?… or
// /api/traces/{id}) and decodes it (DecodeTraces).
func FetchTraces(ctx context.Context, c *http.Client, u string) ([][]*span.Span, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w (is the query API there?)", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound && strings.Contains(u, "/api/traces/") {
		return nil, nil
	}
	traces, err := DecodeTraces(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s (%s): %w", u, resp.Status, err)
	}
	return traces, nil
}
