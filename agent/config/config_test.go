package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/attribution"
	"github.com/latscope/latscope/sampling"
)

// writeFile writes content to agent.yaml in a temporary directory.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefault(t *testing.T) {
	d := Default()
	for _, tc := range []struct {
		field     string
		got, want any
	}{
		{"selectors", d.Selectors, []discovery.Selector(nil)},
		{"exclude", d.Exclude, []discovery.Selector(nil)},
		{"funcs", d.Funcs, []string(nil)},
		{"http", d.HTTP, "127.0.0.1:7070"},
		{"store.size", d.Store.Size, 128 * MiB},
		{"keep", d.Keep, sampling.Policy{All: true}},
		{"inject", d.Inject, true},
		{"minDuration", d.MinDuration, time.Duration(0)},
		{"ringSize", d.RingSize, 4 * MiB},
		{"maxGoroutines", d.MaxGoroutines, 16384},
		{"rescanInterval", d.RescanInterval, 10 * time.Second},
		{"settleReturns", d.SettleReturns, 10 * time.Second},
		{"logLevel", d.LogLevel, "info"},
		{"export.jaegerQueryURL", d.Export.JaegerQueryURL, ""},
		{"kubernetes", d.Kubernetes, Kubernetes{Enabled: Auto}},
		{"metrics.podLabel", d.Metrics.PodLabel, false},
		{"profile", d.Profile, Profile{CPUHz: 99, StoreSize: 32 * MiB}},
		{"attribution", d.Attribution, Attribution{}},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("default %s = %v, want %v", tc.field, tc.got, tc.want)
		}
	}
	if err := d.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	if w := d.Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], "selectors:") {
		t.Errorf("Default().Warnings() = %q, want only the no-selectors warning", w)
	}
	// Every field of Config has a row above.
	if n := reflect.TypeFor[Config]().NumField(); n != 18 {
		t.Errorf("Config has %d fields: add the new ones to this test", n)
	}
}

const fullYAML = `# every option
selectors:
  - exe: /usr/local/bin/*
  - name: checkout
    port: 8080
  - cgroup: /system.slice/*.service
  - namespace: shop
    podSelector: app in (catalog, cart),!canary
    container: "app*"
exclude:
  - exe: "**/debug-*"
  - namespace: kube-*
funcs: ["main.*", "github.com/x/y.(*Cache).Get"]
http: "[::1]:9090"
store:
  size: 512MB
keep: errors,duration>500ms,p99,ratio=0.05
inject: false
minDuration: 100us
ringSize: 16MiB
maxGoroutines: 4096
rescanInterval: 30s
settleReturns: -1s
logLevel: debug
export:
  jaegerQueryURL: https://jaeger.example:16686/
kubernetes:
  enabled: true
  nodeName: node-1.example
profile:
  cpuHz: 999
  storeSize: 64MiB
attribution:
  auto:
    p99Above: 250ms
    for: 30s
    cooldown: 5m
`

var fullConfig = Config{
	Selectors: []discovery.Selector{{Exe: "/usr/local/bin/*"}, {Name: "checkout", Port: 8080}, {Cgroup: "/system.slice/*.service"},
		{Namespace: "shop", PodSelector: "app in (catalog, cart),!canary", Container: "app*"}},
	Exclude: []discovery.Selector{{Exe: "**/debug-*"}, {Namespace: "kube-*"}},
	Funcs:   []string{"main.*", "github.com/x/y.(*Cache).Get"},
	HTTP:    "[::1]:9090",
	Store:   Store{Size: 512e6},
	Keep:    sampling.Policy{Errors: true, MinDuration: 500 * time.Millisecond, Percentile: 99, Ratio: 0.05},
	Inject:  false, MinDuration: 100 * time.Microsecond, RingSize: 16 * MiB, MaxGoroutines: 4096,
	RescanInterval: 30 * time.Second, SettleReturns: -time.Second, LogLevel: "debug",
	Export:      Export{JaegerQueryURL: "https://jaeger.example:16686/"},
	Kubernetes:  Kubernetes{Enabled: On, NodeName: "node-1.example"},
	Profile:     Profile{CPUHz: 999, StoreSize: 64 * MiB},
	Attribution: Attribution{Auto: attribution.TriggerConfig{P99Above: 250 * time.Millisecond, For: 30 * time.Second, Cooldown: 5 * time.Minute}},
}

func TestLoadFullRoundTrip(t *testing.T) {
	c, err := Load(writeFile(t, fullYAML))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*c, fullConfig) {
		t.Fatalf("Load:\n%+v\nwant\n%+v", *c, fullConfig)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("warnings %q", w)
	}
	for name, cfg := range map[string]*Config{"full": c, "default": Default()} {
		back, err := Load(writeFile(t, string(cfg.YAML())))
		if err != nil {
			t.Fatalf("%s: Load(YAML()): %v\n%s", name, err, cfg.YAML())
		}
		if !reflect.DeepEqual(back, cfg) {
			t.Errorf("%s: YAML round trip:\n%s\ngave %+v", name, cfg.YAML(), *back)
		}
	}
}

func TestLoadPartialAndEmpty(t *testing.T) {
	c, err := Load(writeFile(t, "store:\n  size: 1GiB\nexport:\n  jaegerQueryURL: ~\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Store.Size = GiB
	if !reflect.DeepEqual(c, want) {
		t.Errorf("partial file: %+v, want defaults but store.size", *c)
	}
	for _, empty := range []string{"", "# nothing\n", "---\n"} {
		c, err := Load(writeFile(t, empty))
		if err != nil || !reflect.DeepEqual(c, Default()) {
			t.Errorf("file %q: %+v, %v; want defaults", empty, c, err)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // each must appear in the error
	}{
		{"unknown top-level", "http: 127.0.0.1:1\ncolour: red\n", []string{"agent.yaml:2: colour: unknown field (known: selectors, exclude, funcs, http, store"}},
		{"unknown nested", "store:\n  sise: 1GiB\n", []string{"agent.yaml:2: store.sise: unknown field (known: size)"}},
		{"unknown in selector", "selectors:\n  - exe: a\n  - exee: b\n", []string{"agent.yaml:3: selectors[1].exee: unknown field (known: exe, name, port, cgroup, namespace, podSelector, container)"}},
		{"bad glob", "selectors:\n  - exe: /bin/*\n  - exe: \"[\"\n", []string{`agent.yaml:3: selectors[1].exe: bad glob "["`}},
		{"empty selector", "exclude:\n  - {}\n", []string{"agent.yaml:2: exclude[0]: empty selector"}},
		{"selector port", "selectors:\n  - port: 70000\n", []string{"agent.yaml:2: selectors[0].port: 70000 is not a TCP port"}},
		{"selectors not a list", "selectors:\n  exe: a\n", []string{"agent.yaml:2: selectors: want a list, not a mapping"}},
		{"store not a mapping", "store: 1GiB\n", []string{"agent.yaml:1: store: want a mapping with the fields size, not a single value"}},
		{"bad size", "store:\n  size: 12XB\n", []string{`agent.yaml:2: store.size: "12XB" is not a size (e.g. 128MiB)`}},
		{"small store", "store:\n  size: 1000\n", []string{"agent.yaml:2: store.size: 1KB is below the minimum of 1MiB"}},
		{"duration without unit", "minDuration: 250\n", []string{`agent.yaml:1: minDuration: 250 has no unit: add one, e.g. "250s" or "250ms"`}},
		{"zero without unit", "settleReturns: 0\n", []string{"settleReturns: 0 has no unit"}},
		{"bad duration", "rescanInterval: soon\n", []string{`agent.yaml:1: rescanInterval: "soon" is not a duration`}},
		{"short rescan", "rescanInterval: 500ms\n", []string{"agent.yaml:1: rescanInterval: 500ms is shorter than the minimum of 1s"}},
		{"long deep period", "attribution:\n  auto:\n    p99Above: 1s\n    for: 2h\n", []string{"agent.yaml:4: attribution.auto.for: 2h0m0s is not between 0 (the default, 1m0s) and 1h0m0s"}},
		{"negative min duration", "minDuration: -1ms\n", []string{"agent.yaml:1: minDuration: -1ms is negative"}},
		{"bad bool", "inject: maybe\n", []string{`agent.yaml:1: inject: "maybe" is not a boolean`}},
		{"bad int", "maxGoroutines: lots\n", []string{`agent.yaml:1: maxGoroutines: "lots" is not an integer`}},
		{"zero goroutines", "maxGoroutines: 0\n", []string{"agent.yaml:1: maxGoroutines: 0 is not a positive"}},
		{"ring not power of two", "ringSize: 5000\n", []string{"agent.yaml:1: ringSize: 5000 bytes is not a power of two >= 4096"}},
		{"ring too small", "ringSize: 2KiB\n", []string{"agent.yaml:1: ringSize: 2048 bytes is not a power of two >= 4096"}},
		{"bad keep", "keep: errors,fast\n", []string{`agent.yaml:1: keep: keep policy "errors,fast": term "fast": unknown rule`, "syntax:"}},
		{"bad http", "http: localhost\n", []string{`agent.yaml:1: http: "localhost" is not host:port`}},
		{"bad http port", "http: localhost:http\n", []string{`agent.yaml:1: http: "localhost:http": port "http" is not a TCP port`}},
		{"profile rate", "profile:\n  cpuHz: 5000\n", []string{"agent.yaml:2: profile.cpuHz: 5000 is not a sampling rate of 1 to 1000 Hz"}},
		{"small profile store", "profile:\n  storeSize: 10KiB\n", []string{"agent.yaml:2: profile.storeSize: 10KiB is below the minimum of 1MiB"}},
		{"bad log level", "logLevel: loud\n", []string{`agent.yaml:1: logLevel: "loud" is not a log level (debug, info, warn, error)`}},
		{"bad jaeger url", "export:\n  jaegerQueryURL: jaeger:16686\n", []string{`agent.yaml:2: export.jaegerQueryURL: "jaeger:16686" is not an absolute http(s) URL`}},
		{"relative jaeger url", "export:\n  jaegerQueryURL: /jaeger\n", []string{"export.jaegerQueryURL"}},
		{"bad func glob", "funcs:\n  - main.*\n  - \"main.a, main.b\"\n", []string{`agent.yaml:3: funcs[1]: "main.a, main.b" is not a Go symbol glob`}},
		{"funcs not a list", "funcs: main.*\n", []string{"agent.yaml:1: funcs: want a list, not a single value"}},
		{"list for a value", "http: [a, b]\n", []string{"agent.yaml:1: http: want a single value, not a list"}},
		{"duplicate key", "http: 127.0.0.1:1\nhttp: 127.0.0.1:2\n", []string{"agent.yaml:2: http: given twice (first at line 1)"}},
		{"several at once", "logLevel: loud\nringSize: 5000\n", []string{"agent.yaml:1: logLevel", "\n", "agent.yaml:2: ringSize"}},
		{"syntax", "store: [\n", []string{"agent.yaml: yaml:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeFile(t, tc.yaml))
			if err == nil {
				t.Fatalf("Load succeeded on\n%s", tc.yaml)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, want)
				}
			}
		})
	}
}

func TestLoadErrorTypes(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want os.ErrNotExist", err)
	}
	_, err = Load(writeFile(t, "store:\n  size: 1KiB\n"))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "store.size" || fe.Line != 2 || !strings.HasSuffix(fe.File, "agent.yaml") {
		t.Errorf("error %v: want a *FieldError for store.size at line 2", err)
	}
}

func TestWarnings(t *testing.T) {
	for _, tc := range []struct {
		http string
		warn string // "" = no HTTP warning
	}{
		{"127.0.0.1:7070", ""},
		{"localhost:7070", ""},
		{"[::1]:7070", ""},
		{"0.0.0.0:7070", "listens on every interface"},
		{":7070", "listens on every interface"},
		{"10.1.2.3:7070", "listens on 10.1.2.3, not loopback"},
		{"node1:7070", "listens on node1, not loopback"},
	} {
		c := Default()
		c.Selectors = []discovery.Selector{{Exe: "*"}}
		c.HTTP = tc.http
		if err := c.Validate(); err != nil {
			t.Errorf("http %q: %v (a non-loopback address is allowed)", tc.http, err)
		}
		w := strings.Join(c.Warnings(), "\n")
		if (tc.warn == "") != (w == "") || !strings.Contains(w, tc.warn) {
			t.Errorf("http %q: warnings %q, want %q", tc.http, w, tc.warn)
		}
	}
}

func TestSlogLevel(t *testing.T) {
	c := Default()
	for _, l := range []string{"debug", "info", "warn", "error"} {
		c.LogLevel = l
		if got := c.SlogLevel().String(); !strings.EqualFold(got, l) {
			t.Errorf("SlogLevel(%s) = %s", l, got)
		}
	}
}

func TestChanged(t *testing.T) {
	a, b := Default(), Default()
	if got := a.Changed(b); len(got) != 0 {
		t.Fatalf("equal configurations differ in %v", got)
	}
	b.Store.Size *= 2
	b.Funcs = []string{"main.*"}
	b.Selectors = append(b.Selectors, discovery.Selector{Name: "x"})
	if got := a.Changed(b); strings.Join(got, ",") != "funcs,selectors,store" {
		t.Errorf("Changed = %v, want [funcs selectors store]", got)
	}
}
