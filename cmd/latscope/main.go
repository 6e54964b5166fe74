// Command latscope traces Go processes with eBPF uprobes and tells where
// their latency went. This package only parses flags; the work is done in
// agent, symbolizer and exporter.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/latscope/latscope/span"
)

const usage = `latscope: where did the latency of a Go service go?

Usage:
  latscope agent [--config FILE] [--exe GLOB]... [flags]   trace the node's selected Go services
  latscope status [--agent URL]                           what a running agent traces and counts
  latscope traces [--agent URL] [--service S] [--since 5m]  the slowest recent traces, as call trees
  latscope explain TRACE_ID [--agent URL | --jaeger URL]    where one trace's latency went (its critical path, and why)
  latscope attribute [--agent URL] [--for 60s | --off | --status]
                                                          deep latency attribution for a while (full time splits)
  latscope flame [--agent URL | --jaeger URL] [--service S] [--since 5m] [--slowest 1%] -o FILE
                                                          slow requests' critical paths as a pprof profile
  latscope profile [--agent URL] [--service S] [--operation O] [--since 5m] [--slowest 1%] -o FILE
                                                          the CPU profile of those requests' spans (pprof)
  latscope ps [--exe GLOB]...                             the host's Go processes: selected? traceable?
  latscope trace (--pid PID[,PID...] | -- CMD ARGS...) [--funcs PATTERNS] [flags]
  latscope symbols (BINARY | --pid PID) [--match REGEX]
  latscope version

Run 'latscope COMMAND -h' for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "trace":
		var code int
		code, err = runTrace(args)
		if err == nil {
			os.Exit(code)
		}
	case "symbols":
		err = runSymbols(args)
	case "agent":
		err = runAgent(args)
	case "status":
		err = runStatus(args)
	case "ps":
		err = runPs(args)
	case "traces":
		err = runTraces(args)
	case "explain":
		err = runExplain(args)
	case "attribute":
		err = runAttribute(args)
	case "flame":
		err = runFlame(args)
	case "profile":
		err = runProfile(args)
	case "version":
		fmt.Println("latscope", span.Scope.Version)
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "latscope: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "latscope:", err)
		os.Exit(1)
	}
}
