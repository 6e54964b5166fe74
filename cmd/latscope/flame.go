package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/analysis/flame"
	"github.com/latscope/latscope/api"
)

// runFlame writes the critical-path profile of a window's requests (or
// its diff against a baseline window) as a pprof file.
func runFlame(args []string) error {
	fs := flag.NewFlagSet("flame", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `Usage: latscope flame [--agent URL | --jaeger URL] [--since 5m] [--until D] [--service S] [--operation O]
       [--slowest 1% | --min-duration D] [--error] [--baseline-since 1h [--baseline-until 5m]] [--normalize] -o FILE

The critical paths of the window's requests as a pprof profile (stacks of
"service operation" frames; sample types critical_path/nanoseconds and
requests/count): view it with 'go tool pprof -http : FILE'. With a baseline
window, FILE is the diff (pprof shows it against the baseline), and the two
windows are written beside it as FILE.spike.pb.gz and FILE.base.pb.gz for
'go tool pprof -diff_base FILE.base.pb.gz FILE.spike.pb.gz'.`)
		fs.PrintDefaults()
	}
	agentURL := fs.String("agent", defaultAgent, "the agent's HTTP `URL`: it builds the profile from its store")
	jaegerURL := fs.String("jaeger", "", "a Jaeger query API `URL`: build the profile here from its traces (fleet-wide; needs --service)")
	since := fs.Duration("since", 5*time.Minute, "the window starts this long ago")
	until := fs.Duration("until", 0, "the window ends this long ago (0: now)")
	service := fs.String("service", "", "the requests: topmost spans of this `service` (default: each trace's root)")
	operation := fs.String("operation", "", "the requests: spans of this `operation`")
	slowest := fs.String("slowest", "", "only the slowest `share` of each operation's requests: 1% or 0.01")
	minDur := fs.Duration("min-duration", 0, "only requests at least this long")
	onlyErr := fs.Bool("error", false, "only requests with an error span at or under them")
	baseSince := fs.Duration("baseline-since", 0, "a baseline window starting this long ago: write the diff")
	baseUntil := fs.Duration("baseline-until", 0, "the baseline window ends this long ago (default: where the window starts)")
	normalize := fs.Bool("normalize", false, "divide each window by its request count (per-request latency: a change of rate does not read as a change of latency)")
	limit := fs.Int("limit", 2000, "with --jaeger: at most `N` traces per window")
	out := fs.String("o", "", "write the profile to `FILE` (- for stdout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("flame: give -o FILE (or -o - for stdout, to save or send on: go tool pprof reads files and URLs, not stdin)")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("flame: unexpected argument %q", fs.Arg(0))
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
	set("normalize", "true", *normalize)
	set("baselineSince", baseSince.String(), *baseSince > 0)
	set("baselineUntil", baseUntil.String(), *baseUntil > 0)
	req, err := api.ParseFlame(v, time.Now())
	if err != nil {
		return fmt.Errorf("flame: %w", err)
	}

	c := &http.Client{Timeout: time.Minute}
	var window, base *profile.Profile
	var requests, baseRequests int64
	if *jaegerURL != "" {
		res, err := api.Flame(req, api.JaegerSource(context.Background(), c, *jaegerURL, *limit), flame.TimeCauses)
		if err != nil {
			return fmt.Errorf("flame: %w", err)
		}
		window, requests = res.Window.Profile, res.Window.Requests
		if res.Base != nil {
			base, baseRequests = res.Base.Profile, res.Base.Requests
		}
	} else {
		// The agent builds each window (both given in µs, as computed
		// here); the diff is made here, so both windows can be written too.
		filters := cloneWithout(v, "since", "until", "baselineSince", "baselineUntil")
		if window, requests, err = fetchFlame(c, *agentURL, withWindow(filters, req.Query.Start, req.Query.End)); err != nil {
			return err
		}
		if req.HasBaseline() {
			if base, baseRequests, err = fetchFlame(c, *agentURL, withWindow(filters, req.BaselineStart, req.BaselineEnd)); err != nil {
				return err
			}
		}
	}
	if base != nil && baseRequests == 0 {
		fmt.Fprintln(os.Stderr, "latscope flame: warning: the baseline window holds no selected request: the diff is the spike window itself (widen --baseline-since, or check the filters)")
	}
	result := window
	if base != nil {
		if result, err = flame.Diff(window, base); err != nil {
			return fmt.Errorf("flame: %w", err)
		}
	}
	if err := writeProfile(*out, result); err != nil {
		return err
	}
	if *out == "-" {
		return nil
	}
	fmt.Fprintf(os.Stderr, "latscope flame: %d requests; wrote %s: go tool pprof -http : %s\n", requests, *out, *out)
	if base != nil {
		stem := strings.TrimSuffix(strings.TrimSuffix(*out, ".gz"), ".pb")
		spikeFile, baseFile := stem+".spike.pb.gz", stem+".base.pb.gz"
		if err := writeProfile(spikeFile, window); err != nil {
			return err
		}
		if err := writeProfile(baseFile, base); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "latscope flame: the windows: go tool pprof -diff_base %s %s\n", baseFile, spikeFile)
	}
	return nil
}

func cloneWithout(v url.Values, keys ...string) url.Values {
	c := url.Values{}
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	for _, k := range keys {
		c.Del(k)
	}
	return c
}

// withWindow returns v with start and end (µs; zero times left out).
func withWindow(v url.Values, start, end time.Time) url.Values {
	w := cloneWithout(v)
	if !start.IsZero() {
		w.Set("start", fmt.Sprint(start.UnixMicro()))
	}
	if !end.IsZero() {
		w.Set("end", fmt.Sprint(end.UnixMicro()))
	}
	return w
}

// fetchFlame GETs an agent's /api/flame and parses the profile.
func fetchFlame(c *http.Client, base string, v url.Values) (*profile.Profile, int64, error) {
	u := strings.TrimRight(base, "/") + "/api/flame?" + v.Encode()
	resp, err := c.Get(u)
	if err != nil {
		return nil, 0, fmt.Errorf("flame: is the agent running? %w (start it with 'latscope agent', give its address with --agent, or read a Jaeger with --jaeger)", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, fmt.Errorf("flame: read %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("flame: %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	p, err := profile.Parse(bytes.NewReader(body))
	if err != nil {
		return nil, 0, fmt.Errorf("flame: %s: not a profile: %w", u, err)
	}
	var n int64
	fmt.Sscan(resp.Header.Get("X-Latscope-Requests"), &n)
	return p, n, nil
}

// writeProfile writes p gzipped to file, or to stdout for "-".
func writeProfile(file string, p *profile.Profile) error {
	if file == "-" {
		return p.Write(os.Stdout)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := p.Write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}
