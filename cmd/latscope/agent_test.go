package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/fixture"
)

// agentProc is `latscope agent` running as its own process.
type agentProc struct {
	cmd    *exec.Cmd
	url    string
	mu     sync.Mutex
	stderr strings.Builder
	done   chan struct{}
}

// startAgent runs `latscope agent args...` and waits until its API
// answers; it is stopped with SIGTERM when the test ends.
func startAgent(t *testing.T, args ...string) *agentProc {
	t.Helper()
	fixture.RequireRoot(t)
	cmd := exec.Command(latscope, append([]string{"agent", "--http", "127.0.0.1:0"}, args...)...)
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{cmd: cmd, done: make(chan struct{})}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			line := sc.Text()
			a.mu.Lock()
			a.stderr.WriteString(line + "\n")
			a.mu.Unlock()
			if m := regexp.MustCompile(`agent API listening" url=(\S+)`).FindStringSubmatch(line); m != nil {
				urls <- m[1]
			}
		}
		cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-a.done
		}
		if t.Failed() {
			t.Logf("agent stderr:\n%s", a.log())
		}
	})
	select {
	case a.url = <-urls:
	case <-a.done:
		t.Fatalf("agent exited: %s", a.log())
	case <-time.After(20 * time.Second):
		t.Fatalf("agent did not start: %s", a.log())
	}
	waitUntil(t, 10*time.Second, "the agent to be ready", func() bool {
		resp, err := http.Get(a.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return a
}

func (a *agentProc) log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stderr.String()
}

func (a *agentProc) status(t *testing.T) agent.Status {
	t.Helper()
	raw, err := fetchStatus(a.url)
	if err != nil {
		t.Fatal(err)
	}
	var st agent.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func (a *agentProc) traces(t *testing.T, pid int) bool {
	t.Helper()
	for _, p := range a.status(t).Processes {
		if p.PID == pid {
			return true
		}
	}
	return false
}

func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startService runs the service fixture bin until the test ends and
// returns its pid and address.
func startService(t *testing.T, bin string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin)
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
	return cmd.Process.Pid, strings.TrimSpace(strings.TrimPrefix(line, "listening "))
}

func serviceBinary(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(fixture.Build(t, "service", "local", fixture.Stripped))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// A bad configuration stops the agent at start, naming the field.
func TestAgentBadConfig(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, yaml string
		args       []string
		want       string
	}{
		{"unknown field", "selectors:\n  - exe: /usr/bin/*\nstore:\n  sise: 1GiB\n", nil, `:4: store.sise`},
		{"bad glob", "selectors:\n  - exe: '['\n", nil, `selectors[0].exe`},
		{"bad flag", "", []string{"--store-size", "12XB"}, `--store-size`},
		{"missing file", "", []string{"--config", filepath.Join(dir, "nope.yaml")}, `nope.yaml`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"agent"}
			if tc.yaml != "" {
				f := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
				if err := os.WriteFile(f, []byte(tc.yaml), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", f)
			}
			_, stderr, code := run(t, append(args, tc.args...)...)
			if code == 0 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q: want non-zero and %q named", code, stderr, tc.want)
			}
		})
	}
}

// kill -9 of the agent under load: the traced service keeps serving,
// byte for byte; a restarted agent traces it again.
func TestAgentKilledUnderLoad(t *testing.T) {
	fixture.RequireRoot(t)
	bin := serviceBinary(t, "kill-svc")
	a := startAgent(t, "--name", "kill-svc")
	pid, addr := startService(t, bin)
	waitUntil(t, 5*time.Second, "the service to be traced", func() bool { return a.traces(t, pid) })

	const want = "hello LOAD\n"
	var sent, bad atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get("http://" + addr + "/hello/load")
				sent.Add(1)
				if err != nil {
					bad.Add(1)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != want || resp.StatusCode != 200 {
					bad.Add(1)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	a.cmd.Process.Kill()
	<-a.done
	time.Sleep(1500 * time.Millisecond) // the service goes on while the agent's probes leave
	close(stop)
	wg.Wait()
	if bad.Load() != 0 || sent.Load() < 100 {
		t.Fatalf("%d of %d requests failed or differed around the agent's kill -9", bad.Load(), sent.Load())
	}
	t.Logf("%d requests, all answered %q, across the kill", sent.Load(), want)

	b := startAgent(t, "--name", "kill-svc")
	waitUntil(t, 5*time.Second, "the restarted agent to trace the running service", func() bool { return b.traces(t, pid) })
	resp, err := http.Get("http://" + addr + "/hello/again")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitUntil(t, 5*time.Second, "a trace from the restarted agent", func() bool {
		resp, err := http.Get(b.url + "/api/traces?service=kill-svc&tags=" + `{"url.path":"/hello/again"}`)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var r struct{ Data []json.RawMessage }
		json.NewDecoder(resp.Body).Decode(&r)
		return len(r.Data) == 1
	})
	out, stderr, code := run(t, "traces", "--agent", b.url, "--service", "kill-svc", "--limit", "1")
	if code != 0 || !strings.Contains(out, "the 1 slowest traces of the last 5m0s") || !strings.Contains(out, "kill-svc") || !strings.Contains(out, "  GET  ") {
		t.Errorf("latscope traces (exit %d):\n%s%s", code, out, stderr)
	}
}

// SIGHUP reloads the selectors from the configuration file: the new
// match is traced, the old one stays.
func TestAgentSIGHUP(t *testing.T) {
	fixture.RequireRoot(t)
	binA, binB := serviceBinary(t, "hup-a"), serviceBinary(t, "hup-b")
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	write := func(names ...string) {
		var b strings.Builder
		b.WriteString("selectors:\n")
		for _, n := range names {
			fmt.Fprintf(&b, "  - name: %s\n", n)
		}
		if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("hup-a")
	a := startAgent(t, "--config", cfg)
	pidA, _ := startService(t, binA)
	pidB, _ := startService(t, binB)
	waitUntil(t, 5*time.Second, "hup-a to be traced", func() bool { return a.traces(t, pidA) })
	if a.traces(t, pidB) {
		t.Fatal("hup-b traced before it was selected")
	}
	write("hup-a", "hup-b")
	a.cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, 5*time.Second, "hup-b to be traced after SIGHUP", func() bool { return a.traces(t, pidB) })
	if !a.traces(t, pidA) {
		t.Error("hup-a no longer traced after SIGHUP")
	}
	if !strings.Contains(a.log(), "configuration reloaded") {
		t.Errorf("no reload line in the log:\n%s", a.log())
	}
	out, _, code := run(t, "status", "--agent", a.url)
	if code != 0 || !strings.Contains(out, "hup-a") || !strings.Contains(out, "hup-b") {
		t.Errorf("latscope status (exit %d):\n%s", code, out)
	}
}
