package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/agent/config"
)

// runAgent runs the node agent until SIGTERM or SIGINT; SIGHUP reloads
// the selectors from the configuration file and flags.
func runAgent(args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: latscope agent [--config FILE] [--exe GLOB]... [flags]\n\nTraces every Go process the selectors pick, from its exec, until it exits.\nOTLP export is configured by the standard OTEL_EXPORTER_OTLP_* variables.")
		fs.PrintDefaults()
	}
	flags := config.Bind(fs)
	printConfig := fs.Bool("print-config", false, "print the effective configuration as YAML and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("agent: unexpected argument %q (selectors are flags: --exe GLOB)", fs.Arg(0))
	}
	cfg, err := flags.Config()
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if *printConfig {
		_, err := os.Stdout.Write(cfg.YAML())
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.SlogLevel()}))
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	n, err := agent.StartNode(cfg, log)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			cfg, err := flags.Config()
			if err != nil {
				log.Error("reload: configuration rejected, keeping the current one", "err", err)
				continue
			}
			n.Reload(cfg)
		}
	}()
	if err := n.Run(ctx); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	log.Info("agent stopped: every process detached, spans flushed")
	return nil
}
