package agent_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/span"
)

// traced is what tracing a fixture command produced.
type traced struct {
	res   *agent.Result
	proc  *agent.Process
	spans []*span.Span
	byID  map[span.SpanID]*span.Span
}

// traceCommand runs argv under a Session tracing patterns (and every
// instrumented library), checks its stdout is want and nothing was lost,
// and returns the spans.
func traceCommand(t *testing.T, cfg agent.Config, patterns []string, want string, argv ...string) traced {
	t.Helper()
	tr, stdout := traceRun(t, cfg, patterns, argv...)
	if stdout != want {
		t.Fatalf("output %q, want %q", stdout, want)
	}
	if lost := tr.res.Lost(); lost > 0 {
		t.Errorf("lost %d: %+v", lost, tr.res.Counters)
	}
	return tr
}

// traceRun runs argv under a Session tracing patterns (and every
// instrumented library) and returns the spans and the command's stdout,
// for the caller to check.
func traceRun(t *testing.T, cfg agent.Config, patterns []string, argv ...string) (traced, string) {
	t.Helper()
	var stdout bytes.Buffer
	col := &collector{}
	var proc *agent.Process
	s := &agent.Session{Command: argv, Stdout: &stdout, Patterns: patterns, Exporters: []span.Exporter{col}, Tracer: cfg,
		Ready: func(p *agent.Process) { proc = p }}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := s.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr := traced{res: res, proc: proc, spans: col.spans, byID: map[span.SpanID]*span.Span{}}
	for _, s := range col.spans {
		tr.byID[s.SpanID] = s
	}
	return tr, stdout.String()
}

// checkCounters checks the named counters' values, and that no other
// counter of lost data moved.
func checkCounters(t *testing.T, res *agent.Result, want map[string]uint64) {
	t.Helper()
	lost := res.Lost()
	for _, c := range res.Counters {
		v, ok := want[c.Name]
		if ok && c.Value != v {
			t.Errorf("%s = %d, want %d", c.Name, c.Value, v)
		}
		if ok && c.Loss {
			lost -= c.Value
		}
	}
	if lost > 0 {
		t.Errorf("lost %d beyond the counters expected: %+v", lost, res.Counters)
	}
}

// ofKind returns the spans of kind k, in arrival order.
func (tr traced) ofKind(k span.Kind) []*span.Span {
	var out []*span.Span
	for _, s := range tr.spans {
		if s.Kind == k {
			out = append(out, s)
		}
	}
	return out
}
