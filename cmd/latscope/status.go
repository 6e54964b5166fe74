package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/latscope/latscope/agent"
)

const defaultAgent = "http://127.0.0.1:7070"

// runStatus prints a running agent's /api/status for a person.
func runStatus(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: latscope status [--agent URL] [--json]")
		fs.PrintDefaults()
	}
	url := fs.String("agent", defaultAgent, "the agent's HTTP `URL` (its --http address)")
	asJSON := fs.Bool("json", false, "print the agent's JSON as it is")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raw, err := fetchStatus(*url)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := os.Stdout.Write(raw)
		return err
	}
	var st agent.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("status: %s answered something that is not an agent's status: %w", *url, err)
	}
	return printStatus(os.Stdout, &st)
}

func fetchStatus(base string) ([]byte, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(strings.TrimRight(base, "/") + "/api/status")
	if err != nil {
		return nil, fmt.Errorf("status: is the agent running? %w (start it with 'latscope agent', or give its address with --agent)", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("status: read %s: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status: %s answered %s: %s", base, resp.Status, strings.TrimSpace(string(raw)))
	}
	return raw, nil
}

func printStatus(w io.Writer, st *agent.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "latscope agent %s, pid %d, up %s, API %s, probes as %s\n", st.Version, st.PID, time.Since(st.Started).Round(time.Second), st.API, st.ProbeLinks)
	fmt.Fprintf(tw, "store: %d traces, %d spans, %s of %s, %d traces evicted\n\n", st.Store.Traces, st.Store.Spans, bytesIEC(st.Store.Bytes), bytesIEC(st.Store.Budget), st.Store.EvictedTraces)
	if len(st.Processes) == 0 {
		fmt.Fprintln(tw, "no process traced: no running Go process matches the selectors (see 'latscope ps')")
	} else {
		fmt.Fprintln(tw, "PID\tSERVICE\tGO\tFUNCS\tPROBES\tREPLICAS\tLIBRARIES\tAFTER EXEC\tEXE")
		for _, p := range st.Processes {
			after := "-"
			if p.ExecToAttachedNS > 0 {
				after = time.Duration(p.ExecToAttachedNS).Round(10 * time.Microsecond).String()
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", p.PID, p.Service, p.GoVersion, p.Functions, p.Probes, p.Replicas, strings.Join(p.Libraries, ","), after, p.Exe)
		}
	}
	var selected, unreadable []agent.SkippedProcess
	for _, s := range st.Skipped {
		if s.Selected {
			selected = append(selected, s)
		} else {
			unreadable = append(unreadable, s)
		}
	}
	if len(selected) > 0 {
		fmt.Fprintln(tw, "\nselected but not traceable:")
		for _, s := range selected {
			fmt.Fprintf(tw, "  %s\n", s)
		}
	}
	if len(unreadable) > 0 {
		fmt.Fprintln(tw, "\nnot readable by the agent (it lacks CAP_SYS_PTRACE or CAP_DAC_READ_SEARCH for them), so not matched:")
		for _, s := range unreadable {
			fmt.Fprintf(tw, "  pid %d (%s)\n", s.PID, s.Name)
		}
	}
	if st.Export != nil {
		e := st.Export
		fmt.Fprintf(tw, "\nOTLP export to %s, keep %s: %d exported, %d queued, %d dropped at the full queue, %d failed; %d spans not kept by the policy\n",
			e.Endpoint, e.Keep, e.Exported, e.Queued, e.Dropped, e.Failed, e.Sampling.SpansDropped)
	} else {
		fmt.Fprintln(tw, "\nno OTLP export (set OTEL_EXPORTER_OTLP_ENDPOINT): traces are in the agent's store only")
	}
	fmt.Fprintln(tw, "\nCOUNTER\tVALUE\t")
	for _, c := range st.Counters {
		mark := ""
		if c.Loss && c.Value > 0 {
			mark = "LOSS: " + c.Help
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", c.Name, c.Value, mark)
	}
	for _, g := range st.Gauges {
		fmt.Fprintf(tw, "%s\t%s\t\n", g.Name, strconv.FormatFloat(g.Value, 'f', -1, 64))
	}
	return tw.Flush()
}

// bytesIEC formats n bytes as KiB/MiB/GiB.
func bytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
