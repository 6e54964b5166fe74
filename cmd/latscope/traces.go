package main

import (
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/exporter/tree"
	"github.com/latscope/latscope/span"
)

// runTraces prints the slowest recent traces a running agent (or Jaeger:
// the same query API) holds, as call trees.
func runTraces(args []string) error {
	fs := flag.NewFlagSet("traces", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: latscope traces [--agent URL] [--service S] [--operation O] [--min-duration D] [--since 5m] [--limit N] [--error]\n\nThe slowest traces of the window, slowest first, as call trees.")
		fs.PrintDefaults()
	}
	base := fs.String("agent", defaultAgent, "the agent's HTTP `URL` (or a Jaeger query URL: the API is the same, but Jaeger returns the newest traces, which are then ordered)")
	service := fs.String("service", "", "only traces with a span of this `service`")
	operation := fs.String("operation", "", "only traces with a span of this `operation` (with --service)")
	minDur := fs.Duration("min-duration", 0, "only traces with a matching span at least this long")
	since := fs.Duration("since", 5*time.Minute, "how far back to look")
	limit := fs.Int("limit", 5, "print at most `N` traces")
	onlyErr := fs.Bool("error", false, "only traces with an error span")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *limit < 1 {
		return fmt.Errorf("traces: --limit %d: give at least 1", *limit)
	}
	// The agent picks the slowest (sort=duration, latscope's extension of
	// Jaeger's API): asking for every trace of the window would make it
	// build an answer the size of its store.
	now := time.Now()
	q := url.Values{"start": {strconv.FormatInt(now.Add(-*since).UnixMicro(), 10)}, "end": {strconv.FormatInt(now.UnixMicro(), 10)},
		"limit": {strconv.Itoa(*limit)}, "sort": {"duration"}}
	for k, v := range map[string]string{"service": *service, "operation": *operation} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if *minDur > 0 {
		q.Set("minDuration", minDur.String())
	}
	if *onlyErr {
		q.Set("tags", `{"error":"true"}`)
	}
	u := strings.TrimRight(*base, "/") + "/api/traces?" + q.Encode()
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return fmt.Errorf("traces: is the agent running? %w (start it with 'latscope agent', or give its address with --agent)", err)
	}
	defer resp.Body.Close()
	traces, err := api.DecodeTraces(resp.Body)
	if err != nil {
		return fmt.Errorf("traces: %s: %w", u, err)
	}
	if len(traces) == 0 {
		fmt.Printf("no trace in the last %s matches (see 'latscope status' for what is traced)\n", since)
		return nil
	}
	// Jaeger ignores sort: order here too.
	sort.Slice(traces, func(i, j int) bool { return extent(traces[i]) > extent(traces[j]) })
	traces = traces[:min(*limit, len(traces))]
	fmt.Printf("the %d slowest traces of the last %s:\n\n", len(traces), since)
	for _, t := range traces {
		fmt.Printf("%s  %s  %s\n", t[0].TraceID, extent(t).Round(time.Microsecond), strings.Join(services(t), " → "))
		tree.Write(os.Stdout, t)
		fmt.Println()
	}
	return nil
}

// extent is the time from a trace's first start to its last end.
func extent(spans []*span.Span) time.Duration {
	first, last := spans[0].Start, spans[0].End
	for _, s := range spans {
		if s.Start.Before(first) {
			first = s.Start
		}
		if s.End.After(last) {
			last = s.End
		}
	}
	return last.Sub(first)
}

// services lists a trace's services in order of their first span.
func services(spans []*span.Span) []string {
	sorted := append([]*span.Span(nil), spans...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Start.Before(sorted[j].Start) })
	var out []string
	seen := map[string]bool{}
	for _, s := range sorted {
		name := "?"
		if s.Process != nil {
			name = s.Process.ServiceName
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out
}
