package agent_test

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
)

// TestExternalLink: programs linked by the system's C linker (cgo builds:
// -linkmode=external, with -buildmode=pie, glibc static-PIE, Alpine-style
// musl static; with and without symbols), traced from exec, give exactly
// the spans of the Go linker's build of the same program, with the same
// probe plan, and lose nothing. The calls fixture's exact call trees and
// once-per-call probe hits hold for them too.
func TestExternalLink(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range []string{"go1.21.13", "go1.27.3"} {
		t.Run(tc, func(t *testing.T) {
			baseline := map[fixture.Mode]httpRun{}
			for _, mode := range fixture.ExternalModes {
				t.Run(string(mode), func(t *testing.T) {
					// PIE code differs from non-PIE code: compare like with like.
					ref := fixture.Default
					if mode.PIE() {
						ref = fixture.PIE
					}
					want, ok := baseline[ref]
					if !ok {
						want = traceHTTPApp(t, tc, ref)
						baseline[ref] = want
					}
					got := traceHTTPApp(t, tc, mode)
					if g, w := strings.Join(got.traces, "\n"), strings.Join(want.traces, "\n"); g != w {
						t.Errorf("spans differ from the %s build's:\n got:\n%s\nwant:\n%s", ref, g, w)
					}
					if g, w := strings.Join(got.plan, "\n"), strings.Join(want.plan, "\n"); g != w {
						t.Errorf("probe plan differs from the %s build's:\n got:\n%s\nwant:\n%s", ref, g, w)
					}
					if got.counters != want.counters {
						t.Errorf("counters %s; %s build: %s", got.counters, ref, want.counters)
					}
					traceCallsFixture(t, tc, mode)
				})
			}
		})
	}
}

// httpRun is what tracing the httpapp fixture gave, rendered so that two
// builds of it compare equal when they were traced alike.
type httpRun struct {
	traces   []string // traceShapes
	plan     []string // probePlan
	counters string
}

func traceHTTPApp(t *testing.T, tc string, mode fixture.Mode) httpRun {
	t.Helper()
	bin := fixture.Build(t, "httpapp", tc, mode)
	tr := traceCommand(t, agent.Config{Inject: true}, []string{"main.fetch", "main.handleItem", "main.lookup"},
		"200 item-1\n200 item-2\n404 404 page not found\n", bin)
	if n := len(tr.ofKind(span.KindServer)); n != 3 {
		t.Errorf("%d server spans, want 3", n)
	}
	var counters []string
	for _, name := range []string{"calls_sent", "goroutines_linked", "propagation_injected", "propagation_already_present", "lost_read_g_failed", "exit_missed"} {
		counters = append(counters, fmt.Sprintf("%s=%d", name, tr.res.Counter(name)))
	}
	return httpRun{traces: traceShapes(tr.spans), plan: probePlan(tr.proc), counters: strings.Join(counters, " ")}
}

var (
	portRE = regexp.MustCompile(`:[0-9]+\b`)
	hexRE  = regexp.MustCompile(`\b0x[0-9a-f]{4,}\b`)
)

// traceShapes renders each trace as its tree of spans, sorted: kind,
// name, function, declaration, status, attributes (ports, which differ
// run to run, blanked), "go" where a child ran on another goroutine, and
// a remote parent's id (the only ids that do not vary from run to run).
func traceShapes(spans []*span.Span) []string {
	byID := map[span.SpanID]*span.Span{}
	kids := map[span.SpanID][]*span.Span{}
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	var roots []*span.Span
	for _, s := range spans {
		if byID[s.ParentID] == nil {
			roots = append(roots, s)
		} else {
			kids[s.ParentID] = append(kids[s.ParentID], s)
		}
	}
	var render func(s *span.Span, indent string) string
	render = func(s *span.Span, indent string) string {
		var attrs []string
		for _, a := range s.Attrs {
			v := fmt.Sprint(a.Value)
			if strings.HasSuffix(a.Key, ".port") {
				v = "PORT"
			}
			attrs = append(attrs, a.Key+"="+portRE.ReplaceAllString(v, ":PORT"))
		}
		sort.Strings(attrs)
		line := fmt.Sprintf("%skind=%d %s (%s %s:%d) status=%d %q unwound=%v [%s]",
			indent, s.Kind, s.Name, s.Function, s.File, s.Line, s.Status, s.StatusMessage, s.Unwound, strings.Join(attrs, " "))
		if p := byID[s.ParentID]; p != nil && p.GoID != s.GoID {
			line = strings.Replace(line, "kind=", "go kind=", 1)
		}
		var sub []string
		for _, k := range kids[s.SpanID] {
			sub = append(sub, render(k, indent+"  "))
		}
		sort.Strings(sub)
		return strings.Join(append([]string{line}, sub...), "\n")
	}
	var out []string
	for _, r := range roots {
		head := "root"
		if !r.ParentID.IsZero() {
			head = fmt.Sprintf("remote parent %s remote=%v", r.ParentID, r.RemoteParent)
		}
		out = append(out, head+"\n"+render(r, "  "))
	}
	sort.Strings(out)
	return out
}

// probePlan renders where each traced function is probed, by position
// in the function holding the site (addresses differ between layouts).
func probePlan(p *agent.Process) []string {
	at := func(addr uint64) string {
		f := p.Binary.FuncAt(addr)
		if f == nil {
			return fmt.Sprintf("%#x?", addr)
		}
		return fmt.Sprintf("%s+%#x", f.Name, addr-f.Entry)
	}
	site := func(addr uint64, insn string, emulated bool) string {
		// Branch targets too.
		insn = hexRE.ReplaceAllStringFunc(insn, func(h string) string {
			v, _ := strconv.ParseUint(h[2:], 16, 64)
			return at(v)
		})
		return fmt.Sprintf("%s %s emulated=%v", at(addr), insn, emulated)
	}
	var out []string
	for _, f := range p.Funcs {
		exits := make([]string, 0, len(f.Exits))
		for _, e := range f.Exits {
			exits = append(exits, fmt.Sprintf("%s shared=%v", site(e.Addr, e.Insn, e.Emulated), e.Shared))
		}
		sort.Strings(exits)
		entries := make([]string, 0, len(f.Entries))
		for _, e := range f.Entries {
			entries = append(entries, site(e.Addr, e.Insn, e.Emulated))
		}
		sort.Strings(entries)
		out = append(out, fmt.Sprintf("%s: entry %s; inline known=%v %q; exits %s", f.Func.Name,
			strings.Join(entries, ", "), f.Inline.Known, f.Inline.Callers, strings.Join(exits, ", ")))
	}
	sort.Strings(out)
	return out
}
