package agent_test

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
)

// A function reached only through an interface has its returns probed
// where each call site's caller resumes, learned at run time; one call
// site passes through a tail caller (areaOf), whose own caller's resume
// site sees the return. Once the call sites settle, its own RET probes
// go: the later calls must still be traced exactly, with no RET hit. A
// call site that shows up after that costs one call seen late, flagged
// and counted.
func TestLearnedReturns(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range fixture.Matrix() {
		// PIE: the kernel reports run-time return addresses.
		for _, mode := range []fixture.Mode{fixture.Stripped, fixture.PIE} {
			t.Run(tc+"/"+string(mode), func(t *testing.T) { testLearnedReturns(t, fixture.Build(t, "calls", tc, mode)) })
		}
	}
}

func testLearnedReturns(t *testing.T, bin string) {
	const n = 50
	area := "main.(*circle).area"

	cmd := exec.Command(bin, "learn", fmt.Sprint(n))
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
	lines := bufio.NewReader(stdout)
	expect := func(want string) {
		t.Helper()
		if line, err := lines.ReadString('\n'); err != nil || !strings.HasPrefix(line, want) {
			t.Fatalf("fixture said %q (%v), want %q", line, err, want)
		}
	}
	expect("ready")

	col := &collector{}
	var hits map[uint64]uint64
	proc := make(chan *agent.Process, 1)
	s := &agent.Session{
		PIDs:      []int{cmd.Process.Pid},
		Patterns:  []string{"main.learnRound", area},
		Exporters: []span.Exporter{col},
		Tracer:    agent.Config{CountHits: true, SettleReturns: 100 * time.Millisecond},
		Ready:     func(p *agent.Process) { proc <- p },
	}
	done := make(chan error, 1)
	var res *agent.Result
	go func() {
		var err error
		res, err = runSession(t, s, &hits)
		done <- err
	}()
	p := <-proc
	// Warm rounds, one at a time, until both call sites are
	// probed (the tail caller's takes two: its own return address,
	// then one frame up); then until area's RET probes go.
	var learned agent.LearnedReturns
	warm := 0
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var ok bool
		if learned, ok = p.Learned()[area]; !ok {
			t.Fatalf("%s: returns not learned", area)
		}
		if len(learned.Sites) >= 2 && !learned.OwnRETs || learned.Refused > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after %d rounds: %+v", area, warm, learned)
		}
		if len(learned.Sites) < 2 && warm < 10 {
			io.WriteString(stdin, "round\n")
			expect("round")
			warm++
		}
	}
	// A third call site shows up now: its first call is seen late
	// (flagged, counted), and the site is probed for the next.
	io.WriteString(stdin, "late\n")
	expect("late")
	for deadline := time.Now().Add(20 * time.Second); len(learned.Sites) < 3; time.Sleep(20 * time.Millisecond) {
		learned = p.Learned()[area]
		if time.Now().After(deadline) {
			t.Fatalf("%s: the late call site is not probed: %+v", area, learned)
		}
	}
	io.WriteString(stdin, "run\n")
	expect("learn done")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("fixture: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Three call sites: after learnRound's interface call, after
	// its call of the tail caller areaOf, after lateRound's
	// interface call.
	if len(learned.Sites) != 3 || learned.Refused != 0 || learned.OwnRETs {
		t.Errorf("%s: learned %d sites (%d refused, own RETs %v), want 3 (0, false): %+v", area, len(learned.Sites), learned.Refused, learned.OwnRETs, learned.Sites)
	}
	for _, site := range learned.Sites {
		f := p.Binary.FuncAt(site.Addr)
		if f == nil || (f.Name != "main.learnRound" && f.Name != "main.lateRound") || !site.Emulated {
			t.Errorf("%s: learned site %#x (%s) is not an emulated instruction of learnRound or lateRound", area, site.Addr, site.Insn)
		}
	}
	// The late call is the one loss, counted twice: as reported
	// late, and as closed when the next call started. Unless the agent
	// probed its call site before it returned (the goroutine was
	// descheduled in between, seen on a loaded machine): then the new
	// site sees its return, exactly, and only the report counts.
	seenAnyway := res.Counter("exit_missed") == 0
	wantMissed := uint64(1)
	if seenAnyway {
		wantMissed = 0
	}
	for name, want := range map[string]uint64{"return_sites_reported": 4, "return_site_late": 1, "exit_missed": wantMissed} {
		if got := res.Counter(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	if lost, want := res.Lost(), 1+wantMissed; lost != want {
		t.Errorf("lost %d, want %d (the late call): %+v", lost, want, res.Counters)
	}

	// Every round, warm or settled, is one exact tree, children
	// inside their parents (the late call too: it ends early
	// enough, when the next call starts).
	byID := map[span.SpanID]*span.Span{}
	for _, sp := range col.spans {
		byID[sp.SpanID] = sp
	}
	kids := map[span.SpanID][]string{}
	for _, sp := range col.spans {
		par := byID[sp.ParentID]
		if par == nil {
			continue
		}
		kids[par.SpanID] = append(kids[par.SpanID], sp.Name)
		if sp.Start.Before(par.Start) || sp.End.After(par.End) {
			t.Errorf("%s [%v, %v] outside its parent %s [%v, %v]", sp.Name, sp.Start, sp.End, par.Name, par.Start, par.End)
		}
	}
	rounds, late, roots := 0, 0, 0
	for _, sp := range col.spans {
		if sp.Name == area && byID[sp.ParentID] == nil {
			roots++ // from lateRound, untraced
			if sp.Unwound && strings.HasPrefix(sp.StatusMessage, "return not seen") {
				late++
			}
		}
		if sp.Name != "main.learnRound" {
			continue
		}
		rounds++
		got := strings.Join(slices.Sorted(slices.Values(kids[sp.SpanID])), ",")
		if got != area+","+area {
			t.Errorf("learnRound's children: %s", got)
		}
	}
	if rounds != warm+n {
		t.Errorf("%d learnRound spans, want %d", rounds, warm+n)
	}
	if roots != 1+n || late != int(wantMissed) {
		t.Errorf("%d calls from lateRound, %d of them seen late; want %d and %d", roots, late, 1+n, wantMissed)
	}
	if got := len(col.spans); got != (warm+n)*3+1+n {
		t.Errorf("%d spans, want %d", got, (warm+n)*3+1+n)
	}

	// Its own RETs fired in the warm rounds only; the learned
	// sites saw every settled call.
	var f *agent.TracedFunc
	for i := range p.Funcs {
		if p.Funcs[i].Func.Name == area {
			f = &p.Funcs[i]
		}
	}
	var own, sites uint64
	for _, c := range f.Cookies[1:] {
		own += hits[c]
	}
	for _, c := range learned.Cookies {
		sites += hits[c]
	}
	if own != uint64(2*warm) || sites < 3*n {
		t.Errorf("%s: own exit probes fired %d times, learned sites %d; want %d and at least %d", area, own, sites, 2*warm, 3*n)
	}
}
