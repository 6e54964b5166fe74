package config

import (
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/sampling"
)

// parse binds the agent flags to a fresh FlagSet, parses args and builds
// the configuration.
func parse(t *testing.T, args ...string) (*Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := Bind(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return f.Config()
}

func TestFlagsDefaults(t *testing.T) {
	c, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("no flags: %+v, want Default()", *c)
	}
	// The defaults shown in -help are the real ones.
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	Bind(fs)
	for name, want := range map[string]string{"kubernetes": "auto", "node-name": "", "kubeconfig": "", "http": "127.0.0.1:7070", "store-size": "128MiB", "keep": "all", "ring-size": "4MiB", "max-goroutines": "16384", "rescan": "10s", "settle-returns": "10s", "log-level": "info", "min-duration": "0s", "profile-hz": "99", "profile-size": "32MiB"} {
		if got := fs.Lookup(name).DefValue; got != want {
			t.Errorf("--%s default %q, want %q", name, got, want)
		}
	}
}

func TestFlagsEveryOption(t *testing.T) {
	c, err := parse(t,
		"--exe", "/srv/*", "--name", "api", "--port", "8080", "--cgroup", "/k8s/**", "--exclude-exe", "**/tool",
		"--funcs", "main.*, main.(*T).M", "--http", "0.0.0.0:9000", "--store-size", "1GiB", "--keep", "errors,p99.9",
		"--no-inject", "--min-duration", "50us", "--ring-size", "32MiB", "--max-goroutines", "100",
		"--rescan", "1m", "--settle-returns", "-1s", "--log-level", "warn",
		"--namespace", "shop", "--pod-selector", "app=catalog,tier!=cache", "--container", "app", "--exclude-namespace", "kube-*",
		"--kubernetes", "false", "--node-name", "node-1", "--profile-hz", "0", "--profile-size", "1MiB")
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Selectors: []discovery.Selector{{Cgroup: "/k8s/**"}, {Container: "app"}, {Exe: "/srv/*"}, {Name: "api"}, {Namespace: "shop"}, {PodSelector: "app=catalog,tier!=cache"}, {Port: 8080}},
		Exclude:   []discovery.Selector{{Exe: "**/tool"}, {Namespace: "kube-*"}},
		Funcs:     []string{"main.*", "main.(*T).M"},
		HTTP:      "0.0.0.0:9000", Store: Store{Size: GiB},
		Keep:   sampling.Policy{Errors: true, Percentile: 99.9},
		Inject: false, MinDuration: 50 * time.Microsecond, RingSize: 32 * MiB, MaxGoroutines: 100,
		RescanInterval: time.Minute, SettleReturns: -time.Second, LogLevel: "warn",
		Kubernetes: Kubernetes{Enabled: Off, NodeName: "node-1"},
		Profile:    Profile{CPUHz: 0, StoreSize: MiB},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", *c, *want)
	}
}

func TestFlagsOverrideFile(t *testing.T) {
	file := writeFile(t, fullYAML)
	c, err := parse(t, "--config", file, "--http", "127.0.0.1:1", "--ring-size", "4KiB", "--funcs", "pkg.F",
		"--exe", "/opt/a", "--exe", "/opt/b", "--port", "9", "--exclude-exe", "/opt/c")
	if err != nil {
		t.Fatal(err)
	}
	want := fullConfig
	want.HTTP, want.RingSize, want.Funcs = "127.0.0.1:1", 4*KiB, []string{"pkg.F"}
	// Selector flags append to the file's, in flag order within a flag.
	want.Selectors = append(append([]discovery.Selector{}, fullConfig.Selectors...), discovery.Selector{Exe: "/opt/a"}, discovery.Selector{Exe: "/opt/b"}, discovery.Selector{Port: 9})
	want.Exclude = append(append([]discovery.Selector{}, fullConfig.Exclude...), discovery.Selector{Exe: "/opt/c"})
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("got  %+v\nwant %+v", *c, want)
	}
	// Flags not set leave the file's values, even the ones equal to the
	// flag's default.
	c, err = parse(t, "--config", file)
	if err != nil || !reflect.DeepEqual(*c, fullConfig) {
		t.Errorf("file alone: %+v, %v", c, err)
	}
	// --no-inject=false turns injection back on over a file's false.
	c, err = parse(t, "--config", file, "--no-inject=false")
	if err != nil || !c.Inject {
		t.Errorf("--no-inject=false: inject = %v, %v", c.Inject, err)
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--store-size", "12XB"}, `--store-size: "12XB" is not a size (e.g. 128MiB)`},
		{[]string{"--store-size", "1KiB"}, "--store-size: 1KiB is below the minimum of 1MiB"},
		{[]string{"--ring-size", "5000"}, "--ring-size: 5000 bytes is not a power of two"},
		{[]string{"--keep", "fast"}, `--keep: keep policy "fast": term "fast": unknown rule`},
		{[]string{"--min-duration", "250"}, `--min-duration: 250 has no unit: add one, e.g. "250s"`},
		{[]string{"--min-duration", "-5ms"}, "--min-duration: -5ms is negative"},
		{[]string{"--rescan", "soon"}, `--rescan: "soon" is not a duration`},
		{[]string{"--rescan", "10ms"}, "--rescan: 10ms is shorter than the minimum of 1s"},
		{[]string{"--settle-returns", "0"}, "--settle-returns: 0 has no unit"},
		{[]string{"--max-goroutines", "many"}, `--max-goroutines: "many" is not an integer`},
		{[]string{"--max-goroutines", "-1"}, "--max-goroutines: -1 is not a positive"},
		{[]string{"--http", "7070"}, `--http: "7070" is not host:port`},
		{[]string{"--log-level", "trace"}, `--log-level: "trace" is not a log level`},
		{[]string{"--profile-hz", "-1"}, "--profile-hz: -1 is not a sampling rate of 1 to 1000 Hz"},
		{[]string{"--profile-hz", "often"}, `--profile-hz: "often" is not an integer`},
		{[]string{"--profile-size", "1KiB"}, "--profile-size: 1KiB is below the minimum of 1MiB"},
		{[]string{"--funcs", "main.a b"}, `--funcs: "main.a b" is not a Go symbol glob`},
		{[]string{"--exe", "["}, `--exe: bad glob "["`},
		{[]string{"--exe", ""}, "--exe: empty exe glob"},
		{[]string{"--cgroup", "/a/[b"}, `--cgroup: bad glob "/a/[b"`},
		{[]string{"--port", "http"}, `--port: "http" is not a TCP port`},
		{[]string{"--port", "70000"}, "--port: 70000 is not a TCP port"},
		{[]string{"--exclude-exe", "{a"}, `--exclude-exe: bad glob "{a"`},
		{[]string{"--namespace", "[a"}, `--namespace: bad glob "[a"`},
		{[]string{"--namespace", ""}, "--namespace: empty namespace glob"},
		{[]string{"--pod-selector", "app in prod"}, `--pod-selector: "app in prod" is not a label selector`},
		{[]string{"--pod-selector", ""}, "--pod-selector: empty label selector"},
		{[]string{"--container", "{x"}, `--container: bad glob "{x"`},
		{[]string{"--exclude-namespace", "[a"}, `--exclude-namespace: bad glob "[a"`},
		{[]string{"--kubernetes", "maybe"}, `--kubernetes: "maybe" is not auto, true or false`},
		{[]string{"--node-name", "Node_1"}, `--node-name: "Node_1" is not a node name`},
		{[]string{"--kubeconfig", "/nonexistent/kubeconfig"}, "--kubeconfig: stat /nonexistent/kubeconfig: no such file or directory"},
		{[]string{"--config", "/nonexistent/agent.yaml"}, "read config: open /nonexistent/agent.yaml"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := parse(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestFlagsFileErrorsKeepLines(t *testing.T) {
	file := writeFile(t, "http: 127.0.0.1:1\nlogLevel: loud\nstore:\n  size: 1KiB\n")
	// The flag fixes logLevel; the file's store.size stays wrong and is
	// reported at its line.
	_, err := parse(t, "--config", file, "--log-level", "debug")
	if err == nil || !strings.Contains(err.Error(), "agent.yaml:4: store.size: 1KiB") || strings.Contains(err.Error(), "logLevel") {
		t.Errorf("error %v: want only store.size at agent.yaml:4", err)
	}
	_, err = parse(t, "--config", writeFile(t, "store:\n  sise: 1\n"))
	if err == nil || !strings.Contains(err.Error(), "agent.yaml:2: store.sise: unknown field") {
		t.Errorf("error %v: want the unknown field at its line", err)
	}
}
