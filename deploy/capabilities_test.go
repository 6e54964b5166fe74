package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// capabilityCase is one row of the proof: the real agent runs with the
// chart's capability set minus drop, as a container runtime starts it
// (root, no_new_privs, every other capability out of the bounding set,
// every file system read-only, the cgroup v2 hierarchy included), against service
// fixtures running as another user, as pods do. The table is the
// documentation of each capability (values.yaml and docs/kubernetes.md
// repeat it).
type capabilityCase struct {
	drop      string // removed from the chart's set; "" = the chart's set
	operation string // what the capability is for
	want      outcome
}

// outcome is what the agent does with a capability set.
type outcome struct {
	// startErr: the agent exits before it is ready, printing this.
	startErr string
	// traced maps each fixture the agent traces to the service name it
	// reports; fixtures not in it must not be traced.
	traced map[string]string
	// linked: a request to a that calls b makes one trace, so trace
	// context went out on the connection a opened before the agent
	// started (adopted with pidfd_getfd).
	linked bool
	// log: the agent's stderr contains this.
	log string
}

// The fixtures: a calls b on each request; both are selected by their
// executable (--exe); c runs a copy elsewhere and is selected only by
// the port it listens on (--port). Each sets OTEL_SERVICE_NAME=svc-NAME.
var capabilityCases = []capabilityCase{
	{drop: "", operation: "the chart's set: every process found, named, traced, linked",
		want: outcome{traced: map[string]string{"a": "svc-a", "b": "svc-b", "c": "svc-c"}, linked: true}},
	{drop: "BPF", operation: "loading: create the BPF maps",
		want: outcome{startErr: "map create: operation not permitted"}},
	{drop: "PERFMON", operation: "loading: load the tracing (uprobe, tp_btf) programs",
		want: outcome{startErr: "program call_entry: load program: operation not permitted"}},
	{drop: "SYS_PTRACE", operation: "reading the process: /proc/PID/exe of another user's process (and pidfd_getfd of its sockets); without it no process can be read: said once in the log, listed as skipped",
		want: outcome{traced: map[string]string{}, log: "cannot read some processes"}},
	{drop: "NET_ADMIN", operation: "injection: load the sock_ops/sk_msg programs and their sockhash, attach them to the cgroup; without it every process is traced but no trace context goes out",
		want: outcome{traced: map[string]string{"a": "svc-a", "b": "svc-b", "c": "svc-c"}, linked: false, log: "trace context propagation unavailable"}},
	{drop: "DAC_READ_SEARCH", operation: "reading the process: /proc/PID/environ (service name) and /proc/PID/fd (port selectors; adopting connections opened before the agent)",
		want: outcome{traced: map[string]string{"a": "service", "b": "service"}, linked: false, log: "/fd: permission denied"}},
}

// requireRoot skips a test that needs root and BPF, or fails it under
// CI=true, where a skipped tier-3 test is a failure.
func requireRoot(t *testing.T) {
	t.Helper()
	var why string
	switch {
	case os.Geteuid() != 0:
		why = "needs root"
	default:
		if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
			why = "needs a kernel with BTF (/sys/kernel/btf/vmlinux)"
		}
		for _, tool := range []string{"setpriv", "unshare"} {
			if _, err := exec.LookPath(tool); err != nil {
				why = "needs " + tool + " (util-linux)"
			}
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; under CI=true this test must run", why)
	}
	t.Skip(why)
}

func TestCapabilities(t *testing.T) {
	requireRoot(t)
	o, _ := render(t, "")
	chartCaps := capNames(agentContainer(t, o.daemonSet).SecurityContext.Capabilities.Add)
	var rows []string
	for _, c := range capabilityCases {
		if c.drop != "" {
			rows = append(rows, c.drop)
		}
	}
	if !slices.Equal(rows, chartCaps) {
		t.Fatalf("the proof's rows %v are not the chart's capabilities %v: each capability needs its row", rows, chartCaps)
	}
	cgroup, err := cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	latscope := latscopeBinary(t)
	fx := buildFixtures(t)

	for _, c := range capabilityCases {
		name := "chart set"
		if c.drop != "" {
			name = "without " + c.drop
		}
		t.Run(name, func(t *testing.T) {
			var caps []string
			for _, cp := range chartCaps {
				if cp != c.drop {
					caps = append(caps, "+"+strings.ToLower(cp))
				}
			}
			b := fx.start(t, "b", "svc", "")
			a := fx.start(t, "a", "svc", "http://"+b.addr+"/hello/down")
			cc := fx.start(t, "c", "port", "")
			// a's keep-alive connection to b exists before the agent.
			get(t, "http://"+a.addr+"/hello/before")

			ag := startAgent(t, cgroup, caps, latscope, "--exe", fx.exe("svc"), "--port", cc.port(t), "--funcs", "main.*")
			if c.want.startErr != "" {
				code := ag.waitExit(t)
				out := ag.stderr.String()
				if strings.Contains(out, "panic:") {
					t.Fatalf("%s: the agent stopped (exit %d) but panicked instead of printing its error (want %q): agent.StartNode's deferred closeAll runs on the nil *Node it returns with an error\n%s", c.operation, code, c.want.startErr, out)
				}
				if code == 0 || !strings.Contains(out, c.want.startErr) {
					t.Fatalf("%s: want the agent to stop with %q; exit %d, stderr:\n%s", c.operation, c.want.startErr, code, out)
				}
				t.Logf("without %s the agent stops: %s", c.drop, lineWith(out, c.want.startErr))
				return
			}
			ag.waitReady(t)
			pids := map[string]int{"a": a.pid(), "b": b.pid(), "c": cc.pid()}
			traced := ag.waitTraced(t, pids, c.want.traced)
			if !mapsEqual(traced, c.want.traced) {
				t.Fatalf("%s: traced %v, want %v\nagent stderr:\n%s", c.operation, traced, c.want.traced, ag.stderr.String())
			}
			if _, ok := traced["a"]; ok {
				get(t, "http://"+a.addr+"/hello/after")
				linked := ag.waitLinked(t, pids["a"], pids["b"], c.want.linked)
				if linked != c.want.linked {
					t.Errorf("%s: one trace across a and b = %v, want %v\nagent stderr:\n%s", c.operation, linked, c.want.linked, ag.stderr.String())
				}
			}
			if c.want.log != "" && !strings.Contains(ag.stderr.String(), c.want.log) {
				t.Errorf("%s: agent log lacks %q:\n%s", c.operation, c.want.log, ag.stderr.String())
			}
			if c.drop != "" {
				t.Logf("without %s: traced %v; agent log: %s", c.drop, traced, lastWarning(ag.stderr.String()))
			}
		})
	}
}

// cgroup2Mount is where this host mounts its cgroup v2 hierarchy, which
// the agent attaches its injection programs to.
func cgroup2Mount() (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if f := strings.Fields(pre); ok && len(f) >= 5 && strings.HasPrefix(post, "cgroup2 ") {
			return f[4], nil
		}
	}
	return "", errors.New("no cgroup v2 hierarchy is mounted: trace-context injection (and this test) need one")
}

// fixtures are copies of the service fixture in directories any user can
// read, so they run as nobody.
type fixtures struct{ dir string }

func buildFixtures(t *testing.T) *fixtures {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "service.build")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Dir = filepath.Join(repoRoot, "internal/fixture/src/service")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the service fixture: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixtures{dir: dir}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"svc", "port"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.exe(sub), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fixtures) exe(sub string) string { return filepath.Join(f.dir, sub, "service") }

// service is a running fixture.
type service struct {
	cmd  *exec.Cmd
	addr string
}

func (s *service) pid() int { return s.cmd.Process.Pid }

func (s *service) port(t *testing.T) string {
	_, p, ok := strings.Cut(s.addr, ":")
	if !ok {
		t.Fatalf("fixture address %q has no port", s.addr)
	}
	return p
}

// start runs the fixture in sub as nobody with OTEL_SERVICE_NAME=svc-name
// and waits for its "listening ADDR".
func (f *fixtures) start(t *testing.T, name, sub, downstream string) *service {
	t.Helper()
	args := []string{"--reuid=65534", "--regid=65534", "--clear-groups", f.exe(sub), "-addr", "127.0.0.1:0"}
	if downstream != "" {
		args = append(args, "-downstream", downstream)
	}
	cmd := exec.Command("setpriv", args...)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=svc-"+name)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start fixture %s: %v", name, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		t.Fatalf("fixture %s: want \"listening ADDR\", got %q (%v)", name, line, err)
	}
	go io.Copy(io.Discard, stdout)
	return &service{cmd: cmd, addr: addr}
}

func get(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
}

// agent is a running `latscope agent`.
type agent struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	code   int
}

var apiURL = regexp.MustCompile(`msg="agent API listening" url=(\S+)`)

// readOnlyMounts (sh -c SCRIPT CGROUP2 CMD...) remounts every mount of a
// private mount namespace read-only, checks that the root and the cgroup
// v2 hierarchy are, and runs CMD: the agent needs no writable file
// system (readOnlyRootFilesystem, no emptyDir) and attaches the injection
// programs through a read-only cgroup mount.
const readOnlyMounts = `
for mp in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do mount -o remount,bind,ro "$mp" 2>/dev/null; done
for mp in / "$0"; do
  awk -v mp="$mp" '$5 == mp && $6 !~ /^ro/ {bad=1} END {exit bad}' /proc/self/mountinfo || { echo "$mp is not read-only" >&2; exit 1; }
done
exec "$@"`

// startAgent runs the agent with only caps (setpriv syntax: +bpf,...),
// as a container runtime would start it, in a mount namespace where every
// mount, the cgroup v2 hierarchy included, is read-only.
func startAgent(t *testing.T, cgroup string, caps []string, latscope string, args ...string) *agent {
	t.Helper()
	bounding := "-all"
	if len(caps) > 0 {
		bounding += "," + strings.Join(caps, ",")
	}
	argv := []string{"--mount", "--propagation", "private", "sh", "-c", readOnlyMounts, cgroup,
		"setpriv", "--no-new-privs", "--bounding-set=" + bounding, "--inh-caps=-all", "--ambient-caps=-all",
		latscope, "agent", "--http", "127.0.0.1:0"}
	cmd := exec.Command("unshare", append(argv, args...)...)
	a := &agent{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = a.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the agent: %v", err)
	}
	go func() {
		err := cmd.Wait()
		a.code = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			a.code = ee.ExitCode()
		}
		close(a.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-a.exited
		}
	})
	return a
}

// waitExit waits for the agent to stop on its own and returns its exit
// code; it must not become ready first.
func (a *agent) waitExit(t *testing.T) int {
	t.Helper()
	select {
	case <-a.exited:
		return a.code
	case <-time.After(60 * time.Second):
		t.Fatalf("the agent did not stop within 60s:\n%s", a.stderr.String())
	}
	return 0
}

// url is the agent's API base URL, once logged.
func (a *agent) url() string {
	if m := apiURL.FindStringSubmatch(a.stderr.String()); m != nil {
		return m[1]
	}
	return ""
}

func (a *agent) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-a.exited:
			t.Fatalf("the agent stopped (exit %d):\n%s", a.code, a.stderr.String())
		default:
		}
		if u := a.url(); u != "" {
			if resp, err := http.Get(u + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the agent was not ready within 60s:\n%s", a.stderr.String())
}

func (a *agent) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := http.Get(a.url() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// traced returns, for each fixture of pids the agent traces, the service
// name /api/status reports.
func (a *agent) traced(t *testing.T, pids map[string]int) map[string]string {
	var st struct {
		Processes []struct {
			PID     int    `json:"pid"`
			Service string `json:"service"`
		} `json:"processes"`
	}
	a.getJSON(t, "/api/status", &st)
	out := map[string]string{}
	for name, pid := range pids {
		for _, p := range st.Processes {
			if p.PID == pid {
				out[name] = p.Service
			}
		}
	}
	return out
}

// waitTraced polls /api/status until it reports want (ready means the
// first scan is done, so the fixtures, started before the agent, are
// decided), for at most 10s; it returns the last report.
func (a *agent) waitTraced(t *testing.T, pids map[string]int, want map[string]string) map[string]string {
	t.Helper()
	var got map[string]string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = a.traced(t, pids); mapsEqual(got, want) {
			break
		}
	}
	return got
}

// waitLinked polls /api/traces until the spans of pid a and pid b have
// arrived (10s at most) and says whether one trace holds both.
func (a *agent) waitLinked(t *testing.T, pidA, pidB int, want bool) bool {
	t.Helper()
	var seenA, seenB, linked bool
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var services struct{ Data []string }
		a.getJSON(t, "/api/services", &services)
		seenA, seenB, linked = false, false, false
		for _, svc := range services.Data {
			var traces struct {
				Data []struct {
					Processes map[string]struct {
						ServiceName string `json:"serviceName"`
						Tags        []struct {
							Key   string `json:"key"`
							Value any    `json:"value"`
						} `json:"tags"`
					} `json:"processes"`
				} `json:"data"`
			}
			a.getJSON(t, "/api/traces?limit=0&service="+svc, &traces)
			for _, tr := range traces.Data {
				in := map[int]bool{}
				for _, p := range tr.Processes {
					for _, tag := range p.Tags {
						if tag.Key == "process.pid" {
							n, _ := strconv.Atoi(fmt.Sprint(tag.Value))
							in[n] = true
						}
					}
				}
				seenA, seenB = seenA || in[pidA], seenB || in[pidB]
				linked = linked || (in[pidA] && in[pidB])
			}
		}
		if linked || (seenA && seenB && !want) {
			break
		}
	}
	if !seenA || !seenB {
		t.Errorf("spans of a (seen %v) and b (seen %v) did not both arrive within 10s", seenA, seenB)
	}
	return linked
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// lineWith is the first line of s containing sub.
func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// lastWarning is the agent's last WARN line, or "" if none.
func lastWarning(s string) string {
	w := ""
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "level=WARN") && !strings.Contains(l, "not loopback") {
			w = l
		}
	}
	return w
}

// syncBuffer is a bytes.Buffer safe for a writer and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
