package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/api"
)

// runProfile writes the CPU profile of a window's selected requests, as
// the agent sampled them, as a pprof file.
func runProfile(args []string) error {
	fs := flag.NewFlagSet("profile", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `Usage: latscope profile [--agent URL] [--since 5m] [--until D] [--service S] [--operation O]
       [--slowest 1% | --min-duration D] [--error] -o FILE

The CPU profile of the window's requests — those 'latscope flame' selects
— from the agent's CPU samples: real function stacks (pclntab) under each
request's span path, sample types samples/count and cpu/nanoseconds. View
it with 'go tool pprof -http : FILE'. E.g. the slowest 1% of a route:
  latscope profile --service catalog --operation 'GET /product/{id}' --slowest 1% -o cpu.pb.gz`)
		fs.PrintDefaults()
	}
	agentURL := fs.String("agent", defaultAgent, "the agent's HTTP `URL`")
	since := fs.Duration("since", 5*time.Minute, "the window starts this long ago")
	until := fs.Duration("until", 0, "the window ends this long ago (0: now)")
	service := fs.String("service", "", "the requests: topmost spans of this `service` (default: each trace's root)")
	operation := fs.String("operation", "", "the requests: spans of this `operation`")
	slowest := fs.String("slowest", "", "only the slowest `share` of each operation's requests: 1% or 0.01")
	minDur := fs.Duration("min-duration", 0, "only requests at least this long")
	onlyErr := fs.Bool("error", false, "only requests with an error span at or under them")
	out := fs.String("o", "", "write the profile to `FILE` (- for stdout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("profile: give -o FILE (or -o - for stdout)")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("profile: unexpected argument %q", fs.Arg(0))
	}
	v := url.Values{"since": {since.String()}}
	set := func(k, val string, ok bool) {
		if ok {
			v.Set(k, val)
		}
	}
	set("until", until.String(), *until > 0)
	set("service", *service, *service != "")
	set("operation", *operation, *operation != "")
	set("slowest", *slowest, *slowest != "")
	set("minDuration", minDur.String(), *minDur > 0)
	set("error", "true", *onlyErr)
	if _, err := api.ParseProfile(v, time.Now()); err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	u := strings.TrimRight(*agentURL, "/") + "/api/profile/cpu?" + v.Encode()
	c := &http.Client{Timeout: time.Minute}
	resp, err := c.Get(u)
	if err != nil {
		return fmt.Errorf("profile: is the agent running? %w (start it with 'latscope agent', give its address with --agent)", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("profile: read %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	p, err := profile.Parse(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("profile: %s: not a profile: %w", u, err)
	}
	if err := writeProfile(*out, p); err != nil {
		return err
	}
	if *out != "-" {
		fmt.Fprintf(os.Stderr, "latscope profile: %s requests, %s samples; wrote %s: go tool pprof -http : %s\n",
			resp.Header.Get("X-Latscope-Requests"), resp.Header.Get("X-Latscope-Samples"), *out, *out)
	}
	return nil
}
