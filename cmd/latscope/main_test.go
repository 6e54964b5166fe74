package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/symbolizer"
)

var latscope string // the binary under test, built by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "latscope-cli")
	if err != nil {
		panic(err)
	}
	latscope = filepath.Join(dir, "latscope")
	if out, err := exec.Command("go", "build", "-o", latscope, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(latscope, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// A traced command's stdout passes through byte for byte; the tree goes to
// stderr, OTLP/JSON to --output, and latscope exits with the command's code.
func TestTraceCommand(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "calls", "local", fixture.Stripped)
	out := filepath.Join(t.TempDir(), "spans.json")
	stdout, stderr, code := run(t, "trace", "--funcs", "main.nested,main.middle,main.leaf", "--output", out, "--", bin, "nested")
	if code != 0 || stdout != "nested=24\n" {
		t.Fatalf("exit %d, stdout %q\n%s", code, stdout, stderr)
	}
	for _, want := range []string{`main\.nested`, `\n      main\.leaf`, `process \d+ exited`, `calls_sent +10\s`} {
		if !regexp.MustCompile(want).MatchString(stderr) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	spans := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var req struct {
			ResourceSpans []struct {
				ScopeSpans []struct{ Spans []json.RawMessage }
			}
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			t.Fatal(err)
		}
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				spans += len(ss.Spans)
			}
		}
	}
	if spans != 10 {
		t.Errorf("%d spans in %s, want 10", spans, out)
	}
}

// Ctrl-C flushes, detaches and prints the counters; the traced process
// goes on unharmed.
func TestTraceInterrupt(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "calls", "go1.21.13", fixture.PIE)
	target := exec.Command(bin, "loop", "300")
	var targetOut bytes.Buffer
	target.Stdout = &targetOut
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	defer target.Process.Kill()

	var o bytes.Buffer
	tr := exec.Command(latscope, "trace", "--pid", itoa(target.Process.Pid), "--funcs", "main.nested,main.middle,main.leaf")
	tr.Stdout = &o
	stderr, err := tr.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var errText strings.Builder
	for sc.Scan() {
		errText.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "msg=tracing") {
			break
		}
	}
	time.Sleep(300 * time.Millisecond)
	tr.Process.Signal(syscall.SIGINT)
	for sc.Scan() {
		errText.WriteString(sc.Text() + "\n")
	}
	if err := tr.Wait(); err != nil {
		t.Fatalf("latscope: %v\n%s", err, errText.String())
	}
	if !strings.Contains(errText.String(), "interrupted") || !strings.Contains(errText.String(), "calls_sent") {
		t.Errorf("no interrupt summary:\n%s", errText.String())
	}
	if !strings.Contains(o.String(), "main.nested") {
		t.Errorf("no trees on stdout:\n%s", o.String())
	}
	if err := target.Wait(); err != nil || targetOut.String() != "loop done\n" {
		t.Errorf("traced process after detach: %v, output %q", err, targetOut.String())
	}
}

func TestBadInput(t *testing.T) {
	fixture.RequireRoot(t)
	text := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(text, []byte("hello"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"trace", "--funcs", "main.x", "--pid", "4194304"}, "4194304"},
		{[]string{"trace", "--funcs", "main.x", "--", "/bin/true"}, "not a Go binary"},
		{[]string{"trace", "--", "/bin/true"}, "not a Go binary"},
		{[]string{"trace", "--pid", "12x"}, "not a process id"},
		{[]string{"trace", "--funcs", "main.noSuch*", "--", fixture.Build(t, "calls", "local", fixture.Default)}, "main.noSuch*"},
		{[]string{"symbols", text}, "ELF"},
		{[]string{"bogus"}, "unknown command"},
	} {
		_, stderr, code := run(t, tc.args...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("latscope %s: exit %d, stderr %q; want failure naming %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
		if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
			t.Errorf("latscope %s panicked:\n%s", strings.Join(tc.args, " "), stderr)
		}
	}
}

// symbols says where each function's returns are probed: in the callers
// when the binary proves every call direct, else at its own RETs until
// its call sites are learned at run time.
func TestSymbols(t *testing.T) {
	bin := fixture.Build(t, "calls", "local", fixture.Stripped)
	stdout, stderr, code := run(t, "symbols", bin, "--match", `main\.(middle|\(\*circle\)\.area)$`)
	if code != 0 {
		t.Fatalf("latscope symbols: exit %d: %s", code, stderr)
	}
	for fn, want := range map[string]string{
		"main.middle":         "in callers: ",
		"main.(*circle).area": "own RETs until its call sites are learned, then in callers: ",
	} {
		found := false
		for _, line := range strings.Split(stdout, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == fn {
				found = true
				if !strings.Contains(line, want) {
					t.Errorf("%s: %q, want its exits %q", fn, line, want)
				}
			}
		}
		if !found {
			t.Errorf("%s not listed:\n%s", fn, stdout)
		}
	}
}

// symbols names where g is kept in TLS, in an external linker's static
// PIE too (not at the Go linker's -8).
func TestSymbolsGTLS(t *testing.T) {
	bin := fixture.Build(t, "calls", "local", fixture.StaticPIEStripped)
	stdout, stderr, code := run(t, "symbols", bin)
	if code != 0 {
		t.Fatalf("latscope symbols: exit %d: %s", code, stderr)
	}
	b, err := symbolizer.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	g, err := b.GTLS()
	if err != nil || g.Offset == -8 {
		t.Fatalf("GTLS = %+v, %v", g, err)
	}
	if want := fmt.Sprintf("g in TLS:   fs_base%+d (runtime.systemstack)\n", g.Offset); !strings.Contains(stdout, want) {
		t.Errorf("output lacks %q:\n%s", want, stdout)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
