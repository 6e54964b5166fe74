package agent_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/symbolizer"
)

// Attaching to a running process: calls are traced, and when the process
// exits the session ends by itself and says so.
func TestTracePIDUntilExit(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "calls", "local", fixture.Default)
	cmd := exec.Command(bin, "loop", "800") // nested() every 10ms for ~8s: longer than loading and attaching
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	col := &collector{}
	s := &agent.Session{PIDs: []int{cmd.Process.Pid}, Patterns: []string{"main.nested", "main.middle", "main.leaf"}, Exporters: []span.Exporter{col}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := s.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("traced process failed: %v", err)
	}
	if !strings.Contains(res.Stopped, "exited") {
		t.Errorf("stopped because %q, want the process exit", res.Stopped)
	}
	// Every nested() call that started after the probes were attached is
	// a complete tree of 10 spans; the one running at attach time, if any,
	// shows up as partial trees: the middle() and leaf() calls that
	// started after the probes did.
	byTrace := map[span.TraceID][]*span.Span{}
	for _, sp := range col.spans {
		byTrace[sp.TraceID] = append(byTrace[sp.TraceID], sp)
	}
	complete, partial := 0, 0
	for _, spans := range byTrace {
		root := spans[0]
		for _, sp := range spans {
			if sp.ParentID.IsZero() {
				root = sp
			}
		}
		switch {
		case root.Name == "main.nested" && len(spans) == 10:
			complete++
		case root.Name == "main.middle" && len(spans) == 3, root.Name == "main.leaf" && len(spans) == 1:
			partial++
		default:
			t.Errorf("trace rooted at %s with %d spans", root.Name, len(spans))
		}
	}
	if complete < 10 || partial > 4 {
		t.Errorf("%d complete nested() trees, %d partial ones: want many, and at most the rest of the one nested() running at attach", complete, partial)
	}
}

func TestMinDurationFiltersInKernel(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "calls", "local", fixture.Default)
	col := &collector{}
	s := &agent.Session{
		Command: []string{bin, "nested"}, Patterns: []string{"main.nested", "main.middle", "main.leaf"},
		Exporters: []span.Exporter{col}, Tracer: agent.Config{MinDuration: time.Hour},
		Stdout: &strings.Builder{},
	}
	res, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(col.spans) != 0 || res.Counter("calls_below_min_duration") != 10 {
		t.Errorf("%d spans, %d filtered; want 0 and 10", len(col.spans), res.Counter("calls_below_min_duration"))
	}
}

func TestAttachErrors(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "calls", "local", fixture.Default)
	s := &agent.Session{Command: []string{bin, "nested"}, Patterns: []string{"main.noSuchFunction"}, Stdout: &strings.Builder{}}
	_, err := s.Run(context.Background())
	if !errors.Is(err, symbolizer.ErrFuncNotFound) || !strings.Contains(err.Error(), "main.noSuchFunction") {
		t.Errorf("missing function: %v", err)
	}
	s = &agent.Session{PIDs: []int{1 << 22}, Patterns: []string{"main.*"}}
	_, err = s.Run(context.Background())
	if !errors.Is(err, symbolizer.ErrProcessGone) {
		t.Errorf("gone process: %v", err)
	}
	s = &agent.Session{Command: []string{"/bin/true"}, Patterns: []string{"main.*"}}
	_, err = s.Run(context.Background())
	if !errors.Is(err, symbolizer.ErrNotGo) {
		t.Errorf("non-Go command: %v", err)
	}
}

// A probe on a function's first byte fires twice when morestack re-enters
// it (the naive site latscope avoids). The second entry finds the first
// frame at the same stack depth: that frame cannot still be running, so
// it is closed at once as exit_missed instead of parenting later calls.
// At the chosen site the same call is one clean span.
func TestMissedExitIsClosed(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "calls", "local", fixture.Default)
	for _, naive := range []bool{false, true} {
		col := &collector{}
		s := &agent.Session{
			Command: []string{bin, "bigframe"}, Stdout: &strings.Builder{},
			Patterns: []string{"main.bigFrame"}, Exporters: []span.Exporter{col},
			Tracer: agent.Config{NaiveSites: naive},
		}
		res, err := s.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		wantSpans, wantMissed := 1, uint64(0)
		if naive {
			wantSpans, wantMissed = 2, 1
		}
		if len(col.spans) != wantSpans || res.Counter("exit_missed") != wantMissed {
			t.Errorf("naive=%v: %d spans, exit_missed %d; want %d and %d", naive, len(col.spans), res.Counter("exit_missed"), wantSpans, wantMissed)
		}
		for _, sp := range col.spans {
			if !sp.ParentID.IsZero() {
				t.Errorf("naive=%v: span %s has a parent: the stale frame parented it", naive, sp.Name)
			}
		}
	}
}

// Calls still running when tracing stops get no span; they are counted.
func TestCallsOpenAtDetach(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "calls", "local", fixture.Stripped)
	cmd := exec.Command(bin, "block")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("fixture said %q, want ready", lines.Text())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &agent.Session{
		PIDs:      []int{cmd.Process.Pid},
		Patterns:  []string{"main.waitLine"},
		Exporters: []span.Exporter{&collector{}},
		Ready: func(*agent.Process) {
			io.WriteString(stdin, "go\n")
			go func() {
				lines.Scan() // "waiting": waitLine's entry probe has run
				cancel()
			}()
		},
	}
	res, err := s.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Counter("calls_open_at_detach"); got != 1 {
		t.Errorf("calls_open_at_detach = %d, want 1 (waitLine)", got)
	}
	io.WriteString(stdin, "done\n")
	if err := cmd.Wait(); err != nil {
		t.Errorf("fixture: %v", err)
	}
}
