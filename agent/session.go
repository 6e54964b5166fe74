package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"sync"
	"time"

	"github.com/latscope/latscope/agent/callchain"
	"github.com/latscope/latscope/agent/span"
	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/symbolizer"
)

// Session is one `latscope trace` run: a process (found by pid, or a
// command started stopped at exec) traced until it exits, the context is
// cancelled or Duration passes.
type Session struct {
	PID     int      // trace this running process, or
	Command []string // start this command and trace it from its first instruction
	// Stdout and Stderr of the command; nil: latscope's own.
	Stdout, Stderr io.Writer
	Patterns       []string // Go symbol globs of the functions to trace
	Duration       time.Duration
	Tracer         Config
	// Exporters receive every span; each is closed at the end.
	Exporters []span.Exporter
	Log       *slog.Logger
	// Ready, if set, is called once the probes are attached.
	Ready func(*Process)
	// Hits, if set, receives the probe hits per cookie before detaching
	// (needs Tracer.CountHits).
	Hits func(map[uint64]uint64)
}

// Result says how a session ended and what it counted.
type Result struct {
	PID       int
	Probes    int
	Funcs     []TracedFunc
	Stopped   string    // why tracing stopped
	ExitCode  int       // the command's exit code (Command mode), -1 if unknown
	Counters  []Counter // kernel and reader counters
	Builder   callchain.Stats
	Exported  uint64 // spans handed to exporters
	ExportErr error  // first exporter error, if any
}

// Run traces until the process exits, ctx is done or Duration passes.
func (s *Session) Run(ctx context.Context) (*Result, error) {
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	if s.Tracer.Logger == nil {
		s.Tracer.Logger = log
	}
	res := &Result{ExitCode: -1}
	var launched *Launched
	pid := s.PID
	if len(s.Command) > 0 {
		var err error
		if launched, err = Launch(s.Command, s.Stdout, s.Stderr); err != nil {
			return nil, err
		}
		pid = launched.PID
		// Whatever happens below, never leave the command stopped.
		defer func() {
			if launched != nil {
				launched.Resume()
				launched.Cmd.Wait()
			}
		}()
	}
	res.PID = pid

	bin, err := symbolizer.OpenPID(pid)
	if err != nil {
		return nil, err
	}
	defer bin.Close()
	tr, err := New(s.Tracer)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	proc, err := tr.Attach(pid, bin, s.Patterns)
	if err != nil {
		return nil, err
	}
	res.Probes, res.Funcs = proc.Probes(), proc.Funcs

	var exportMu sync.Mutex
	out := func(spans []*span.Span) {
		exportMu.Lock()
		defer exportMu.Unlock()
		res.Exported += uint64(len(spans))
		for _, e := range s.Exporters {
			if err := e.Export(spans); err != nil && res.ExportErr == nil {
				res.ExportErr = err
				log.Error("export spans", "err", err)
			}
		}
	}
	b := callchain.New(out, callchain.MonoToWall(), callchain.Options{Libraries: libraryDecoders(), Salt: tr.IDSalt()})
	funcs := make([]callchain.Func, len(proc.Funcs))
	for i, f := range proc.Funcs {
		funcs[i] = callchain.Func{Name: f.Func.Name, File: f.Func.File, Line: f.Func.Line}
	}
	b.AddProcess(uint32(pid), proc.Info, funcs)
	if s.Ready != nil {
		s.Ready(proc)
	}

	// Watch for the end of the process.
	exited := make(chan struct{})
	if launched != nil {
		cmd := launched.Cmd
		if err := launched.Resume(); err != nil {
			return nil, err
		}
		launched = nil
		go func() {
			err := cmd.Wait()
			res.ExitCode = cmd.ProcessState.ExitCode()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				log.Error("wait for command", "err", err)
			}
			close(exited)
		}()
	} else {
		ch, err := Exited(pid)
		if err != nil {
			return nil, err
		}
		go func() { <-ch; close(exited) }()
	}

	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	runErr := make(chan error, 1)
	go func() {
		runErr <- tr.Run(runCtx, builderSink{b})
	}()

	var timeout <-chan time.Time
	if s.Duration > 0 {
		timeout = time.After(s.Duration)
	}
	select {
	case <-exited:
		res.Stopped = fmt.Sprintf("process %d exited", pid)
	case <-ctx.Done():
		res.Stopped = "interrupted"
	case <-timeout:
		res.Stopped = fmt.Sprintf("duration %s elapsed", s.Duration)
	case err := <-runErr:
		return nil, err
	}
	if s.Hits != nil {
		h, err := tr.Hits()
		if err != nil {
			return nil, err
		}
		s.Hits(h)
	}
	// Detach first so nothing new arrives, then drain the ring buffer.
	detachErr := tr.Detach(proc)
	if detachErr != nil {
		log.Warn("detach", "pid", pid, "err", detachErr)
	}
	stopRun()
	if err := <-runErr; err != nil {
		return nil, err
	}
	b.Flush()
	for _, e := range s.Exporters {
		if err := e.Close(); err != nil && res.ExportErr == nil {
			res.ExportErr = err
		}
	}
	if res.Counters, err = tr.Counters(); err != nil {
		return nil, err
	}
	res.Builder = b.Stats()
	if len(s.Command) > 0 {
		<-exited // the command's output passes through to its end
	}
	return res, nil
}

// Lost sums the counters that count lost or unattributed data.
func (r *Result) Lost() uint64 {
	var n uint64
	for _, c := range r.Counters {
		if c.Loss {
			n += c.Value
		}
	}
	return n + r.Builder.UnknownProcess + r.Builder.UnknownFunc
}

// Counter returns the named counter's value.
func (r *Result) Counter(name string) uint64 {
	for _, c := range r.Counters {
		if c.Name == name {
			return c.Value
		}
	}
	return 0
}

func libraryDecoders() []callchain.LibDecoder {
	out := make([]callchain.LibDecoder, len(Libraries))
	for i, l := range Libraries {
		out[i] = l.Decode
	}
	return out
}

// builderSink feeds a call-tree builder.
type builderSink struct{ b *callchain.Builder }

func (s builderSink) Call(ev *calltracer.Event) { s.b.Add(ev) }
func (s builderSink) Lib(raw []byte)            { s.b.AddLib(raw) }
func (s builderSink) Tick()                     { s.b.Expire(callchain.MonoNow()) }
