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
