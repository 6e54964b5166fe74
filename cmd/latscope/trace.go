package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/exporter/otlp"
	"github.com/latscope/latscope/exporter/otlpjson"
	"github.com/latscope/latscope/exporter/tree"
	"github.com/latscope/latscope/span"
)

// runTrace returns the exit code: the traced command's when one was run.
func runTrace(args []string) (int, error) {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: latscope trace (--pid PID[,PID...] | -- CMD ARGS...) [--funcs PATTERNS] [flags]")
		fs.PrintDefaults()
	}
	pidList := fs.String("pid", "", "trace the running processes `PID[,PID...]` (one latscope per node traces them all)")
	funcs := fs.String("funcs", "", "comma-separated Go symbol globs to trace besides the instrumented libraries, e.g. 'main.*,github.com/x/y.(*Cache).Get'")
	minDur := fs.Duration("min-duration", 0, "do not report calls shorter than this (filtered in the kernel)")
	dur := fs.Duration("duration", 0, "stop tracing after this long (default: until the process exits or Ctrl-C)")
	output := fs.String("output", "", "also write spans as OTLP/JSON to `FILE` (one ExportTraceServiceRequest per line)")
	treeOut := fs.String("tree", "", "write the call trees to `FILE` ('-' for stdout; default stdout with --pid, stderr with a command, so the command's stdout stays its own)")
	record := fs.String("record", "", "also write the raw kernel call records to `FILE` (for bug reports and replay benchmarks)")
	ring := fs.Int("ring-size", 8<<20, "ring buffer size in bytes (power of two)")
	maxG := fs.Int("max-goroutines", 16384, "goroutines with traced state at once")
	noInject := fs.Bool("no-inject", false, "do not put a traceparent on outgoing requests (the next service then starts its own trace)")
	settle := fs.Duration("settle-returns", 10*time.Second, "functions reached through interfaces or tail calls keep their RET probes (single-stepped, slow) until no new call site has shown up for this long; negative: keep them")
	deep := fs.Duration("deep", 0, "deep latency attribution (every span's full time split: on CPU, runnable, GC, blocked by reason…) for this long from the start; costly, see docs/attribution.md (default: GC stop-the-world and assists only)")
	verbose := fs.Bool("v", false, "log debug details")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	command := fs.Args()
	var pids []int
	for _, p := range strings.Split(*pidList, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return 2, fmt.Errorf("trace: --pid %q: not a process id", p)
		}
		pids = append(pids, n)
	}
	switch {
	case len(pids) == 0 && len(command) == 0:
		return 2, fmt.Errorf("trace: give --pid PID or a command after --")
	case len(pids) > 0 && len(command) > 0:
		return 2, fmt.Errorf("trace: give either --pid or a command, not both")
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	var exporters []span.Exporter
	treeW, err := treeWriter(*treeOut, len(command) > 0)
	if err != nil {
		return 1, err
	}
	exporters = append(exporters, tree.New(treeW, 500*time.Millisecond))
	if *output != "" {
		f, err := os.Create(*output)
		if err != nil {
			return 1, fmt.Errorf("trace: --output: %w", err)
		}
		exporters = append(exporters, otlpjson.New(f))
	}
	var exp *otlp.Exporter
	if otlp.Enabled() {
		if exp, err = otlp.New(context.Background(), otlp.Options{}); err != nil {
			return 1, fmt.Errorf("trace: %w", err)
		}
		exporters = append(exporters, exp)
		log.Info("exporting spans over OTLP", "endpoint", os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")+os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
	}

	var recordW io.Writer
	if *record != "" {
		f, err := os.Create(*record)
		if err != nil {
			return 1, fmt.Errorf("trace: --record: %w", err)
		}
		defer f.Close()
		bw := bufio.NewWriter(f)
		defer bw.Flush()
		recordW = bw
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s := &agent.Session{
		PIDs:      pids,
		Command:   command,
		Patterns:  patterns(*funcs),
		Duration:  *dur,
		Deep:      *deep,
		Exporters: exporters,
		Log:       log,
		Tracer:    agent.Config{MinDuration: *minDur, RingBytes: *ring, MaxGoroutines: *maxG, Record: recordW, Inject: !*noInject, SettleReturns: *settle},
		Ready: func(p *agent.Process) {
			log.Info("tracing", "pid", p.PID, "service", p.Info.ServiceName, "go", p.Binary.GoVersion, "functions", len(p.Funcs), "probes", p.Probes())
		},
	}
	res, err := s.Run(ctx)
	if err != nil {
		return 1, err
	}
	summarize(os.Stderr, res)
	if exp != nil {
		sent, dropped, failed := exp.Stats()
		fmt.Fprintf(os.Stderr, "  otlp_spans_exported\t%d\n  otlp_spans_dropped\t%d\n  otlp_spans_failed\t%d\n", sent, dropped, failed)
	}
	if res.ExportErr != nil {
		fmt.Fprintln(os.Stderr, "latscope: export:", res.ExportErr)
	}
	if len(command) > 0 {
		return res.ExitCode, nil
	}
	return 0, nil
}

func patterns(list string) []string {
	var out []string
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func treeWriter(path string, command bool) (io.Writer, error) {
	switch {
	case path == "-":
		return os.Stdout, nil
	case path != "":
		f, err := os.Create(path)
		if err != nil {
			return nil, fmt.Errorf("trace: --tree: %w", err)
		}
		return f, nil
	case command:
		return os.Stderr, nil
	}
	return os.Stdout, nil
}

// summarize prints how tracing ended and every non-zero counter; losses
// are marked so none goes unnoticed.
func summarize(w io.Writer, r *agent.Result) {
	fmt.Fprintf(w, "latscope: %s; %d spans exported, %d probes detached\n", r.Stopped, r.Exported, r.Probes)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range r.Counters {
		if c.Value == 0 && c.Loss {
			continue
		}
		mark := ""
		if c.Loss && c.Value > 0 {
			mark = "LOSS: " + c.Help
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", c.Name, c.Value, mark)
	}
	b := r.Builder
	fmt.Fprintf(tw, "  spans_without_parent\t%d\t%s\n", b.Orphans, map[bool]string{true: "parents filtered or lost", false: ""}[b.Orphans > 0])
	tw.Flush()
	if lost := r.Lost(); lost > 0 {
		fmt.Fprintf(w, "latscope: %d events lost or unattributed (see LOSS lines)\n", lost)
	}
}
