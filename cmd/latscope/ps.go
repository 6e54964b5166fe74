package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/agent/config"
	"github.com/latscope/latscope/agent/discovery"
)

// runPs lists the host's Go processes, whether the agent's selectors pick
// them and whether latscope can trace them.
func runPs(args []string) error {
	fs := flag.NewFlagSet("ps", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: latscope ps [--config FILE] [--exe GLOB]... [--all] [--json]\n\nSelector flags are the agent's: the MATCH column says what 'latscope agent' with the same flags would pick.")
		fs.PrintDefaults()
	}
	flags := config.Bind(fs)
	all := fs.Bool("all", false, "list every process, not only Go ones")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := flags.Config()
	if err != nil {
		return fmt.Errorf("ps: %w", err)
	}
	procs, err := agent.HostProcesses(discovery.Selectors{Include: cfg.Selectors, Exclude: cfg.Exclude}, *all)
	if err != nil {
		return fmt.Errorf("ps: %w", err)
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(procs)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PID\tNAME\tGO\tMATCH\tTRACEABLE\tEXE")
	for _, p := range procs {
		match, trace := "no", "yes"
		if p.Selected {
			match = "yes"
		}
		if !p.Traceable {
			trace = "no: " + p.NotTraceable
		}
		gov := p.GoVersion
		if gov == "" {
			gov = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", p.PID, p.Name, gov, match, trace, p.Exe)
	}
	if len(cfg.Selectors) == 0 {
		fmt.Fprintln(tw, "\n(no selectors given: MATCH is 'no' for all; pass the agent's --config or --exe flags)")
	}
	return tw.Flush()
}
