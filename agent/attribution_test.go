package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/agent/config"
	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
)

// attrApp is a running attrapp fixture (internal/fixture/src/attrapp).
type attrApp struct {
	cmd  *exec.Cmd
	addr string
}

// startAttrApp runs bin with env and args until the test ends.
func startAttrApp(t *testing.T, bin string, env []string, args ...string) *attrApp {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("%s did not start: %v", bin, err)
	}
	return &attrApp{cmd: cmd, addr: strings.TrimSpace(strings.TrimPrefix(line, "listening "))}
}

// known GETs path and returns the delay the handler measured (known_ns).
func (a *attrApp) known(c *http.Client, path string) (time.Duration, error) {
	resp, err := c.Get("http://" + a.addr + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "known_ns=")
	n, err := strconv.ParseInt(v, 10, 64)
	if !ok || err != nil {
		return 0, fmt.Errorf("GET %s answered %d %q", path, resp.StatusCode, b)
	}
	return time.Duration(n), nil
}

func pathOf(s *span.Span) string {
	for _, a := range s.Attrs {
		if a.Key == "url.path" {
			v, _ := a.Value.(string)
			return v
		}
	}
	return ""
}

// Always on: a stop-the-world prolonged by a goroutine the scheduler
// cannot stop is on the server spans it overlaps, within ±20% of the
// pause the runtime reports, and nothing else is: read back through the
// agent's Jaeger API.
func TestAttributionAlwaysOn(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range []string{fixture.Matrix()[0], "go1.27.3"} {
		t.Run(tc, func(t *testing.T) {
			dir := t.TempDir()
			exe := copyBinary(t, fixture.Build(t, "attrapp", tc, fixture.Stripped), dir, "attrapp")
			n := testNode(t, func(c *config.Config) { c.Selectors = []discovery.Selector{{Exe: exe}} })
			app := startAttrApp(t, exe, []string{"GOMAXPROCS=2"})
			waitFor(t, 10*time.Second, "the fixture to be traced", func() bool { return n.traced(app.cmd.Process.Pid) != nil })
			c := &http.Client{Timeout: 10 * time.Second}
			const requests = 20
			stw := map[string]time.Duration{}
			for i := 0; i < requests; i++ {
				path := fmt.Sprintf("/stw/%d", i)
				d, err := app.known(c, path)
				if err != nil {
					t.Fatal(err)
				}
				stw[path] = d
			}
			var got map[string]*span.Span
			waitFor(t, 10*time.Second, "the /stw spans", func() bool {
				traces, err := api.FetchTraces(context.Background(), c, "http://"+n.Addr()+"/api/traces?limit=0&service=attrapp")
				if err != nil {
					t.Fatal(err)
				}
				got = map[string]*span.Span{}
				for _, tr := range traces {
					for _, s := range tr {
						if p := pathOf(s); stw[p] != 0 && s.Kind == span.KindServer {
							got[p] = s
						}
					}
				}
				return len(got) == len(stw)
			})
			ok := 0
			for path, known := range stw {
				s := got[path]
				if s.Time == nil || s.Time.Full {
					t.Errorf("%s: time split %+v, want the always-on one", path, s.Time)
					continue
				}
				for c, v := range s.Time.NS {
					if c := span.TimeCategory(c); v != 0 && c != span.TimeGCSTW && c != span.TimeGCAssist {
						t.Errorf("%s: %s = %d outside deep mode", path, c.Name(), v)
					}
				}
				if v := s.Time.NS[span.TimeGCSTW]; math.Abs(float64(v)-float64(known)) > 0.2*float64(known) {
					t.Logf("%s: gc_stw %s, the GC paused %s", path, time.Duration(v), known)
				} else {
					ok++
				}
			}
			t.Logf("%d/%d requests: gc_stw within ±20%% of the runtime's pause", ok, requests)
			if ok*100 < 95*requests {
				t.Errorf("only %d of %d requests right", ok, requests)
			}
		})
	}
}
