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
	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/span"
)

// Session is one `latscope trace` run: processes (found by pid, or a
// command started stopped at exec) traced until they exit, the context is
// cancelled or Duration passes. One session traces any number of
// processes with one set of programs: a node should run one latscope.
type Session struct {
	PIDs    []int    // trace these running processes, or
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
	// Deep turns deep attribution on for this long once the probes are
	// attached (docs/attribution.md); 0: always-on attribution only.
	Deep time.Duration
}

// Result says how a session ended and what it counted.
type Result struct {
	PIDs      []int
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
	pids := s.PIDs
	if len(s.Command) > 0 {
		var err error
		if launched, err = Launch(s.Command, s.Stdout, s.Stderr); err != nil {
			return nil, err
		}
		pids = []int{launched.PID}
		// Whatever happens below, never leave the command stopped.
		defer func() {
			if launched != nil {
				launched.Resume()
				launched.Cmd.Wait()
			}
		}()
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no process to trace: give a pid or a command")
	}
	res.PIDs = pids

	tr, err := New(s.Tracer)
	if err != nil {
		return nil, err
	}
	defer tr.Close()

	var exportMu sync.Mutex
	out := func(spans []*span.Span) {
		tr.Attribute(spans)
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
	b := callchain.New(out, tr.MonoToWall(), callchain.Options{Libraries: libraryDecoders(), Salt: tr.IDSalt()})
	var procs []*Process
	images := map[*image]bool{}
	for _, pid := range pids {
		proc, err := tr.Attach(pid, s.Patterns)
		if err != nil {
			return nil, err
		}
		procs = append(procs, proc)
		if !images[proc.img] {
			images[proc.img] = true
			res.Probes += proc.Probes()
		}
		res.Funcs = append(res.Funcs, proc.Funcs...)
		b.AddProcess(uint32(pid), proc.Info, builderFuncs(proc))
		if s.Ready != nil {
			s.Ready(proc)
		}
	}

	if s.Deep > 0 {
		if _, err := tr.StartDeep(s.Deep, "latscope trace --deep"); err != nil {
			return nil, err
		}
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
		var chans []<-chan struct{}
		for _, pid := range pids {
			ch, err := Exited(pid)
			if err != nil {
				return nil, err
			}
			chans = append(chans, ch)
		}
		go func() {
			for _, ch := range chans {
				<-ch
			}
			close(exited)
		}()
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
		res.Stopped = fmt.Sprintf("process %d exited", pids[0])
		if len(pids) > 1 {
			res.Stopped = fmt.Sprintf("all %d processes exited", len(pids))
		}
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
	// Deep attribution ends before its processes go (its links counted).
	if _, err := tr.StopDeep(); err != nil {
		log.Warn("stop deep attribution", "err", err)
	}
	// Detach first so nothing new arrives, then drain the ring buffer.
	for _, proc := range procs {
		if err := tr.Detach(proc); err != nil {
			log.Warn("detach", "pid", proc.PID, "err", err)
		}
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
