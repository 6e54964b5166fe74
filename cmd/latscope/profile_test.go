package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/internal/fixture"
)

// `latscope profile` writes the agent's CPU profile of the selected
// requests: the real pprof reads it, and /work's spin functions top it.
func TestProfileCommand(t *testing.T) {
	fixture.RequireRoot(t)
	bin := filepath.Join(t.TempDir(), "cpuwork")
	b, err := os.ReadFile(fixture.Build(t, "cpuwork", "local", fixture.Stripped))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, "--exe", bin, "--funcs", "main.handle*", "--profile-hz", "999")
	cmd := exec.Command(bin, "-unit", "1000000")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	waitUntil(t, 20*time.Second, "cpuwork to be traced", func() bool { return a.traces(t, cmd.Process.Pid) })
	for i := range 60 {
		path := []string{"/work", "/other"}[i%2]
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	file := filepath.Join(t.TempDir(), "cpu.pb.gz")
	waitUntil(t, 10*time.Second, "the 30 /work requests in the profile", func() bool {
		_, stderr, code := run(t, "profile", "--agent", a.url, "--operation", "main.handleWork", "--since", "5m", "-o", file)
		return code == 0 && strings.Contains(stderr, "30 requests")
	})
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	p, err := profile.Parse(f)
	f.Close()
	if err != nil || p.DefaultSampleType != "cpu" {
		t.Fatalf("the file: %v (default sample type %q)", err, p.DefaultSampleType)
	}
	top := exec.Command("go", "tool", "pprof", "-top", file)
	top.Env = append(os.Environ(), "PPROF_TMPDIR="+t.TempDir())
	o, err := top.CombinedOutput()
	if err != nil || firstTopRow(t, string(o)) != "main.spinA" || strings.Contains(string(o), "main.spinC") {
		t.Errorf("go tool pprof -top: %v\n%s", err, o)
	}
	// Bad input is named before asking the agent.
	_, stderr, code := run(t, "profile", "--slowest", "200%", "-o", file)
	if code == 0 || !strings.Contains(stderr, "parameter slowest") {
		t.Errorf("--slowest 200%%: exit %d, %s", code, stderr)
	}
	_, stderr, code = run(t, "profile", "--agent", a.url)
	if code == 0 || !strings.Contains(stderr, "give -o FILE") {
		t.Errorf("no -o: exit %d, %s", code, stderr)
	}
}
