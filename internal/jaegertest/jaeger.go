package jaegertest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Jaeger is a running Jaeger. Its addresses are all on 127.0.0.1.
type Jaeger struct {
	OTLPGRPC string // OTLP/gRPC receiver, host:port
	OTLPHTTP string // OTLP/HTTP receiver, http://host:port (traces go to /v1/traces)
	Query    string // HTTP query API, http://host:port

	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has been waited for
	logPath string
}

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 5 * time.Second
	// startTries covers the window between picking a free port and Jaeger
	// binding it, in which another process may take it.
	startTries = 3
)

// Start builds Jaeger if needed, starts it on free loopback ports and
// returns once its query API answers and its OTLP ports accept connections.
// A cleanup stops exactly that process; if the test failed, the tail of
// Jaeger's log is printed.
func Start(tb testing.TB) *Jaeger {
	tb.Helper()
	bin := Build(tb)
	j, err := launch(bin, tb.TempDir()) // TempDir before Cleanup below, so removed after it
	if err != nil {
		tb.Fatalf("start Jaeger: %v", err)
	}
	tb.Cleanup(func() {
		if !j.Stop() {
			tb.Logf("jaegertest: Jaeger (pid %d) did not stop within %s of SIGTERM; killed it", j.cmd.Process.Pid, stopTimeout)
		}
		if tb.Failed() {
			tb.Logf("jaegertest: tail of Jaeger's log %s:\n%s", j.logPath, j.logTail(8192))
		}
	})
	return j
}

// Run is Start for programs that are not tests (scripts/benchdemo): it
// builds Jaeger if needed (progress to logf) and logs to a file in
// logDir. End it with Stop.
func Run(logDir string, logf func(string, ...any)) (*Jaeger, error) {
	bin, err := build(logf)
	if err != nil {
		return nil, fmt.Errorf("build Jaeger: %w", err)
	}
	j, err := launch(bin, logDir)
	if err != nil {
		return nil, fmt.Errorf("start Jaeger: %w", err)
	}
	return j, nil
}

func launch(bin, logDir string) (*Jaeger, error) {
	dir, err := toolsDir()
	if err != nil {
		return nil, err
	}
	var errs []error
	for try := 1; try <= startTries; try++ {
		j, err := start(bin, filepath.Join(dir, "config.yaml"), filepath.Join(logDir, fmt.Sprintf("jaeger-%d.log", try)))
		if err == nil {
			return j, nil
		}
		errs = append(errs, fmt.Errorf("try %d: %w", try, err))
	}
	return nil, errors.Join(errs...)
}

func start(bin, config, logPath string) (*Jaeger, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	j := &Jaeger{
		OTLPGRPC: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		OTLPHTTP: "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1])),
		Query:    "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2])),
		exited:   make(chan struct{}),
		logPath:  logPath,
	}
	cmd := exec.Command(bin, "--config", config)
	cmd.Env = append(os.Environ(),
		"LATSCOPE_JAEGER_OTLP_GRPC_PORT="+strconv.Itoa(ports[0]),
		"LATSCOPE_JAEGER_OTLP_HTTP_PORT="+strconv.Itoa(ports[1]),
		"LATSCOPE_JAEGER_QUERY_PORT="+strconv.Itoa(ports[2]),
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Jaeger dies with the test binary even if cleanups never run (a test
	// timeout panics the binary).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	j.cmd = cmd
	go func() {
		cmd.Wait()
		close(j.exited)
	}()
	if err := j.waitReady(); err != nil {
		j.kill()
		return nil, fmt.Errorf("%w\n%s", err, j.logTail(4096))
	}
	return j, nil
}

// waitReady polls until the query API answers and both OTLP ports accept
// connections, or Jaeger exits, or startTimeout passes.
func (j *Jaeger) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	client := &http.Client{Timeout: time.Second}
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-j.exited:
			return fmt.Errorf("jaeger exited during start: %v", j.cmd.ProcessState)
		default:
		}
		last = j.probe(client)
		if last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("jaeger not ready after %s: %w", startTimeout, last)
}

func (j *Jaeger) probe(client *http.Client) error {
	resp, err := client.Get(j.Query + "/api/services")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /api/services: %s", resp.Status)
	}
	for _, addr := range []string{j.OTLPGRPC, j.OTLPHTTP[len("http://"):]} {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		c.Close()
	}
	return nil
}

// Pid is Jaeger's process id.
func (j *Jaeger) Pid() int { return j.cmd.Process.Pid }

// Stop ends the process with SIGTERM, then SIGKILL if it lingers; false
// if it had to be killed.
func (j *Jaeger) Stop() bool {
	j.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.exited:
		return true
	case <-time.After(stopTimeout):
		j.kill()
		return false
	}
}

func (j *Jaeger) kill() {
	j.cmd.Process.Kill()
	<-j.exited
}

// logTail returns the last n bytes of Jaeger's log, starting at a line.
func (j *Jaeger) logTail(n int) string {
	b, err := os.ReadFile(j.logPath)
	if err != nil {
		return fmt.Sprintf("(read log: %v)", err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// freePorts returns n distinct loopback TCP ports free at the time of the
// call. All are held open until all are chosen so none repeats.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
