package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/attribution"
)

// runAttribute switches a running agent's deep latency attribution on
// for a while, off, or shows it.
func runAttribute(args []string) error {
	fs := flag.NewFlagSet("attribute", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: latscope attribute [--agent URL] [--for 60s | --off | --status]\n\nDeep latency attribution: every span's full time split (on CPU, runnable, GC, blocked by reason,\nsyscalls, downstream) for a while, then off by itself. It costs every goroutine status change\nof the traced processes (docs/attribution.md).")
		fs.PrintDefaults()
	}
	agentURL := fs.String("agent", defaultAgent, "the agent's HTTP `URL`")
	dur := fs.Duration("for", attribution.DefaultTriggerFor, "how long deep attribution stays on (1s to 1h); a period in progress is extended")
	off := fs.Bool("off", false, "end the deep period in progress now")
	status := fs.Bool("status", false, "only show the state")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("attribute: unexpected argument %q", fs.Arg(0))
	}
	base := strings.TrimRight(*agentURL, "/") + "/api/attribution"
	method, u := http.MethodPost, base+"/deep?for="+url.QueryEscape(dur.String())
	switch {
	case *off && *status:
		return fmt.Errorf("attribute: give --off or --status, not both")
	case *off:
		method, u = http.MethodDelete, base+"/deep"
	case *status:
		method, u = http.MethodGet, base
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("attribute: is the agent running? %w (start it with 'latscope agent', or give its address with --agent)", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("attribute: read %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Errors []struct{ Msg string } }
		json.Unmarshal(body, &e)
		msg := strings.TrimSpace(string(body))
		if len(e.Errors) > 0 {
			msg = e.Errors[0].Msg
		}
		if resp.StatusCode == http.StatusNotFound && len(e.Errors) == 0 {
			msg += " (an agent without latency attribution: upgrade it)"
		}
		return fmt.Errorf("attribute: %s: %s", resp.Status, msg)
	}
	var st api.AttributionState
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("attribute: %s answered something that is not the attribution state: %w", u, err)
	}
	fmt.Println(describeDeep(st.Deep))
	return nil
}

func describeDeep(d attribution.Deep) string {
	if d.On {
		return fmt.Sprintf("deep attribution on until %s (%s left; switched on by %s): every span gets its full time split",
			d.Until.Local().Format("15:04:05"), time.Until(d.Until).Round(time.Second), d.Reason)
	}
	s := "deep attribution off: spans get their GC stop-the-world and assist time only"
	if d.Periods > 0 {
		s += fmt.Sprintf(" (%d periods so far, the last switched on by %s; %d probe links attached, %d detached)", d.Periods, d.Reason, d.LinksAttached, d.LinksDetached)
	}
	return s
}
