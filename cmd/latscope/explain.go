package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/latscope/latscope/api"
)

// runExplain prints one trace's critical path in plain words.
func runExplain(args []string) error {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: latscope explain TRACE_ID [--agent URL | --jaeger URL] [--json]\n\nWhere one trace's latency went: its critical path, the largest parts first.")
		fs.PrintDefaults()
	}
	agentURL := fs.String("agent", defaultAgent, "the agent's HTTP `URL`")
	jaegerURL := fs.String("jaeger", "", "a Jaeger query API `URL`: read the trace there and compute its path here")
	asJSON := fs.Bool("json", false, "print the critical path as JSON (segments, per-span self time, summary)")
	// The trace id may come before or after the flags.
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return fmt.Errorf("explain: unexpected argument %q", fs.Arg(0))
	}
	if id == "" {
		fs.Usage()
		return fmt.Errorf("explain: give a trace id (see 'latscope traces')")
	}
	c := &http.Client{Timeout: 30 * time.Second}
	var cp api.CriticalPath
	if *jaegerURL != "" {
		traces, err := api.FetchTraces(context.Background(), c, strings.TrimRight(*jaegerURL, "/")+"/api/traces/"+id)
		if err != nil {
			return fmt.Errorf("explain: %w", err)
		}
		if len(traces) == 0 || len(traces[0]) == 0 {
			return fmt.Errorf("explain: trace %s not found at %s", id, *jaegerURL)
		}
		cp = api.CriticalPathOf(traces[0][0].TraceID, traces[0])
	} else {
		u := strings.TrimRight(*agentURL, "/") + "/api/traces/" + id + "/critical-path"
		resp, err := c.Get(u)
		if err != nil {
			return fmt.Errorf("explain: is the agent running? %w (start it with 'latscope agent', or give its address with --agent)", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			var e struct{ Errors []struct{ Msg string } }
			json.NewDecoder(resp.Body).Decode(&e)
			msg := resp.Status
			if len(e.Errors) > 0 {
				msg = e.Errors[0].Msg
			}
			return fmt.Errorf("explain: trace %s: %s (the agent keeps recent traces only; 'latscope traces' lists them)", id, msg)
		}
		if err := json.NewDecoder(resp.Body).Decode(&cp); err != nil {
			return fmt.Errorf("explain: decode %s: %w", u, err)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(cp)
	}
	fmt.Printf("trace %s: %s", cp.TraceID, cp.Summary)
	if n := len(cp.Explanation.Contributors); n > 0 {
		fmt.Println("\nlargest own times on the path:")
		for _, c := range cp.Explanation.Contributors[:min(n, 5)] {
			fmt.Printf("  %3.0f%%  %-9s %s\n", c.Share*100, c.Self.Round(time.Microsecond), strings.Join(c.Stack, " → "))
		}
	}
	return nil
}
