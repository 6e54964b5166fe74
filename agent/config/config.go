// Package config owns the configuration of `latscope agent`: the Config
// struct, its defaults, strict YAML loading with errors that point at the
// file, line and field, validation, and the command-line flags that
// override a file.
//
// Precedence: defaults ← the file given with --config ← flags set on the
// command line. Selector flags (--exe, --name, --port, --cgroup,
// --namespace, --pod-selector, --container, --exclude-exe,
// --exclude-namespace) add to the file's selectors; every other flag
// replaces the file's value.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/attribution"
	"github.com/latscope/latscope/sampling"
)

// Config is the agent's configuration. YAML keys are the camelCase names
// in the struct tags; sizes are ByteSize ("128MiB"), durations Go duration
// strings ("250ms", "10s").
type Config struct {
	// Selectors pick the processes to trace: a process matching any
	// selector and no Exclude selector is traced.
	Selectors []discovery.Selector `yaml:"selectors,omitempty"`
	Exclude   []discovery.Selector `yaml:"exclude,omitempty"`
	// Funcs are Go symbol globs of user functions to trace besides the
	// instrumented libraries, as `latscope trace --funcs`.
	Funcs []string `yaml:"funcs,omitempty"`
	// HTTP is the host:port the trace API, metrics and UI listen on.
	HTTP  string `yaml:"http"`
	Store Store  `yaml:"store"`
	// Keep picks the traces exported over OTLP (the store and metrics see
	// all): see sampling.ParsePolicy.
	Keep sampling.Policy `yaml:"keep"`
	// Inject puts a traceparent on outgoing HTTP/1 and gRPC requests.
	Inject bool `yaml:"inject"`
	// MinDuration drops spans shorter than it (0 = keep all).
	MinDuration time.Duration `yaml:"minDuration"`
	// RingSize is the BPF ring buffer's size: a power of two >= 4096.
	// The default, 4MiB, holds ~0.6 s of 20 000 spans/s (~340 bytes a
	// span) against the agent's 50 ms drains; its memory counts twice in
	// the agent's RSS (the kernel maps the ring's pages twice, for
	// records that wrap around).
	RingSize ByteSize `yaml:"ringSize"`
	// MaxGoroutines bounds the goroutines tracked at once per node.
	MaxGoroutines int `yaml:"maxGoroutines"`
	// RescanInterval is how often /proc is rescanned for processes that
	// exec events missed (>= 1s).
	RescanInterval time.Duration `yaml:"rescanInterval"`
	// SettleReturns is how long the return sites learned at run time are
	// watched before they are considered settled; negative = off.
	SettleReturns time.Duration `yaml:"settleReturns"`
	// LogLevel is debug, info, warn or error.
	LogLevel    string      `yaml:"logLevel"`
	Export      Export      `yaml:"export"`
	Metrics     Metrics     `yaml:"metrics"`
	Kubernetes  Kubernetes  `yaml:"kubernetes"`
	Profile     Profile     `yaml:"profile"`
	Attribution Attribution `yaml:"attribution"`
}

// Attribution configures latency attribution (docs/attribution.md): the
// always-on part needs no setting; deep mode is switched on through the
// API (`latscope attribute`) or by Auto.
type Attribution struct {
	// Auto switches deep mode on by itself when a server operation's
	// p99 latency crosses a threshold (off while P99Above is 0).
	Auto attribution.TriggerConfig `yaml:"auto"`
}

// Profile configures CPU profiles of spans: on-CPU stacks of traced
// processes sampled by perf events and kept by the span they ran in.
type Profile struct {
	// CPUHz is how many times a second every CPU is sampled (1–1000; 0
	// turns sampling off). Each sample stands for 1/CPUHz s of CPU.
	CPUHz int `yaml:"cpuHz"`
	// StoreSize bounds the memory of the samples kept (>= 1MiB); the
	// oldest spans' samples go first.
	StoreSize ByteSize `yaml:"storeSize"`
}

// Kubernetes configures pod metadata: which pod and container each
// traced process runs in, from the API server, on its spans and for the
// selectors' namespace, podSelector and container fields.
type Kubernetes struct {
	// Enabled is auto (the default: on when the agent runs in a pod,
	// that is KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are
	// set, or when Kubeconfig is), true (on; the agent does not start
	// without an API server) or false.
	Enabled Switch `yaml:"enabled"`
	// NodeName is this node's name in the cluster; "" takes the
	// NODE_NAME environment variable (downward API: spec.nodeName).
	NodeName string `yaml:"nodeName,omitempty"`
	// Kubeconfig is a kubeconfig file to reach the API server with, for
	// an agent run outside the cluster; "" uses the pod's service
	// account.
	Kubeconfig string `yaml:"kubeconfig,omitempty"`
}

// Switch is a setting that is on, off, or decided at start: "auto",
// "true" or "false". In YAML, true and false may be booleans.
type Switch string

// The values of a Switch.
const (
	Auto Switch = "auto"
	On   Switch = "true"
	Off  Switch = "false"
)

// ParseSwitch parses "auto", "true" or "false" (and strconv.ParseBool's
// other spellings of true and false: 1, t, TRUE, 0, f, FALSE, …).
func ParseSwitch(s string) (Switch, error) {
	if s == string(Auto) {
		return Auto, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return "", fmt.Errorf("%q is not auto, true or false", s)
	}
	if b {
		return On, nil
	}
	return Off, nil
}

// UnmarshalYAML reads auto, true or false.
func (s *Switch) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want auto, true or false, not a %s", kindName(n.Kind))
	}
	v, err := ParseSwitch(n.Value)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalYAML writes auto as a string, true and false as booleans.
func (s Switch) MarshalYAML() (any, error) {
	switch s {
	case On:
		return true, nil
	case Off:
		return false, nil
	}
	return string(s), nil
}

// Store configures the in-memory trace store.
type Store struct {
	// Size bounds the store's memory (>= 1MiB); the oldest traces go first.
	Size ByteSize `yaml:"size"`
}

// Export configures links to other trace backends.
// Metrics tunes the RED metrics.
type Metrics struct {
	// PodLabel adds k8s_pod_name to the RED histograms (off: every
	// rollout would make new series; namespace and workload are labels).
	PodLabel bool `yaml:"podLabel"`
}

type Export struct {
	// JaegerQueryURL is a Jaeger UI/query base URL the UI links traces
	// to; optional, an absolute http(s) URL.
	JaegerQueryURL string `yaml:"jaegerQueryURL,omitempty"`
}

// Default returns the default configuration: no selectors, HTTP on
// 127.0.0.1:7070, a 128MiB store, keep all, inject on, a 4MiB ring,
// 16384 goroutines, rescans every 10s, settle returns for 10s, log level
// info, Kubernetes auto, CPU sampling at 99 Hz into 32MiB.
func Default() *Config {
	return &Config{
		HTTP:           "127.0.0.1:7070",
		Store:          Store{Size: 128 * MiB},
		Keep:           sampling.Policy{All: true},
		Inject:         true,
		RingSize:       4 * MiB,
		MaxGoroutines:  16384,
		RescanInterval: 10 * time.Second,
		SettleReturns:  10 * time.Second,
		LogLevel:       "info",
		Kubernetes:     Kubernetes{Enabled: Auto},
		Profile:        Profile{CPUHz: 99, StoreSize: 32 * MiB},
	}
}

// FieldError is one invalid setting. Path is the YAML path
// ("selectors[1].exe", "store.size") or, for a flag, the flag ("--http");
// File and Line say where the file sets it, when it does.
type FieldError struct {
	File string
	Line int
	Path string
	Err  error
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// Validate checks every setting. The error joins one *FieldError per
// invalid setting, each naming its field.
func (c *Config) Validate() error { return join(c.problems()) }

func join(errs []*FieldError) error {
	if len(errs) == 0 {
		return nil
	}
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}

var logLevels = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}

func (c *Config) problems() []*FieldError {
	var errs []*FieldError
	bad := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Err: fmt.Errorf(format, args...)})
	}
	for _, l := range []struct {
		key  string
		sels []discovery.Selector
	}{{"selectors", c.Selectors}, {"exclude", c.Exclude}} {
		for i, s := range l.sels {
			if err := s.Validate(); err != nil {
				path, msg := selectorPath(fmt.Sprintf("%s[%d]", l.key, i), err)
				bad(path, "%s", msg)
			}
		}
	}
	for i, f := range c.Funcs {
		if f == "" || strings.ContainsAny(f, ", \t\n") {
			bad(fmt.Sprintf("funcs[%d]", i), "%q is not a Go symbol glob (e.g. main.*, github.com/x/y.(*Cache).Get; no spaces or commas)", f)
		}
	}
	if err := checkListen(c.HTTP); err != nil {
		bad("http", "%v", err)
	}
	if c.Store.Size < MiB {
		bad("store.size", "%v is below the minimum of 1MiB", c.Store.Size)
	}
	if c.MinDuration < 0 {
		bad("minDuration", "%v is negative; use 0 to keep all spans", c.MinDuration)
	}
	if c.RingSize < 4096 || c.RingSize&(c.RingSize-1) != 0 {
		bad("ringSize", "%d bytes is not a power of two >= 4096 (e.g. 8MiB)", c.RingSize)
	}
	if c.MaxGoroutines < 1 {
		bad("maxGoroutines", "%d is not a positive number of goroutines", c.MaxGoroutines)
	}
	if c.RescanInterval < time.Second {
		bad("rescanInterval", "%v is shorter than the minimum of 1s", c.RescanInterval)
	}
	if c.Profile.CPUHz < 0 || c.Profile.CPUHz > 1000 {
		bad("profile.cpuHz", "%d is not a sampling rate of 1 to 1000 Hz (99 is the usual; 0 turns CPU sampling off)", c.Profile.CPUHz)
	}
	if c.Profile.StoreSize < MiB {
		bad("profile.storeSize", "%v is below the minimum of 1MiB", c.Profile.StoreSize)
	}
	if _, ok := logLevels[c.LogLevel]; !ok {
		bad("logLevel", "%q is not a log level (debug, info, warn, error)", c.LogLevel)
	}
	if u := c.Export.JaegerQueryURL; u != "" {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			bad("export.jaegerQueryURL", "%q is not an absolute http(s) URL (e.g. http://jaeger:16686)", u)
		}
	}
	if a := c.Attribution.Auto; a.P99Above < 0 || a.For < 0 || a.For > attribution.MaxDeep || a.Cooldown < 0 {
		switch {
		case a.P99Above < 0:
			bad("attribution.auto.p99Above", "%v is negative; use 0 to turn the trigger off", a.P99Above)
		case a.Cooldown < 0:
			bad("attribution.auto.cooldown", "%v is negative", a.Cooldown)
		default:
			bad("attribution.auto.for", "%v is not between 0 (the default, %v) and %v", a.For, attribution.DefaultTriggerFor, attribution.MaxDeep)
		}
	}
	k := c.Kubernetes
	if k.Enabled != Auto && k.Enabled != On && k.Enabled != Off {
		bad("kubernetes.enabled", "%q is not auto, true or false", k.Enabled)
	}
	if k.NodeName != "" {
		if msgs := validation.IsDNS1123Subdomain(k.NodeName); len(msgs) > 0 {
			bad("kubernetes.nodeName", "%q is not a node name: %s", k.NodeName, strings.Join(msgs, "; "))
		}
	}
	if k.Kubeconfig != "" {
		if fi, err := os.Stat(k.Kubeconfig); err != nil {
			bad("kubernetes.kubeconfig", "%v (give the path of a kubeconfig file, e.g. ~/.kube/config expanded)", err)
		} else if fi.IsDir() {
			bad("kubernetes.kubeconfig", "%s is a directory, not a kubeconfig file", k.Kubeconfig)
		}
	}
	return errs
}

// selectorPath turns discovery.Selector.Validate's "exe: bad glob" into
// the path "selectors[1].exe" and the message "bad glob".
func selectorPath(prefix string, err error) (path, msg string) {
	field, rest, ok := strings.Cut(err.Error(), ": ")
	switch field {
	case "exe", "name", "port", "cgroup", "namespace", "podSelector", "container":
		if ok {
			return prefix + "." + field, rest
		}
	}
	return prefix, err.Error()
}

func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. 127.0.0.1:7070)", addr)
	}
	// Port 0: the kernel picks a free port; the agent logs its URL.
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a TCP port (0-65535; 0 picks a free one)", addr, port)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Warnings lists settings that are valid but deserve a log line: an HTTP
// address that is not loopback (the trace API and UI have no
// authentication), and no selectors (the agent traces nothing).
func (c *Config) Warnings() []string {
	var w []string
	if host, _, err := net.SplitHostPort(c.HTTP); err == nil && !isLoopback(host) {
		where := host
		if host == "" || host == "0.0.0.0" || host == "::" {
			where = "every interface"
		}
		w = append(w, fmt.Sprintf("http: %s listens on %s, not loopback: the trace API and UI (no authentication) are reachable from other hosts", c.HTTP, where))
	}
	if len(c.Selectors) == 0 {
		w = append(w, "selectors: none set, so no process is traced but those of pods annotated latscope.io/trace: \"true\"; add some (--exe, --name, --port, --cgroup, --namespace, --pod-selector, --container or selectors in the config file)")
	}
	if c.Kubernetes.Enabled == Off {
		for _, l := range []struct {
			key  string
			sels []discovery.Selector
		}{{"selectors", c.Selectors}, {"exclude", c.Exclude}} {
			for i, s := range l.sels {
				if s.Namespace != "" || s.PodSelector != "" || s.Container != "" {
					w = append(w, fmt.Sprintf("%s[%d]: %s matches only processes in pods, and kubernetes.enabled is false: it matches nothing", l.key, i, s))
				}
			}
		}
		if c.Kubernetes.Kubeconfig != "" {
			w = append(w, "kubernetes.kubeconfig is set but kubernetes.enabled is false: pod metadata is off")
		}
	}
	return w
}

// SlogLevel returns LogLevel as a slog.Level (info if invalid).
func (c *Config) SlogLevel() slog.Level { return logLevels[c.LogLevel] }

// YAML returns the configuration as YAML that Load reads back to an equal
// Config: for --print-config and the status page.
func (c *Config) YAML() []byte {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		// Every field type marshals; an error here is a bug.
		panic(fmt.Sprintf("config: marshal YAML: %v", err))
	}
	enc.Close()
	return b.Bytes()
}

// Changed lists the top-level YAML keys ("store", "keep", …) whose values
// differ between c and o, sorted: a reload applies some settings and
// names the others as needing a restart.
func (c *Config) Changed(o *Config) []string {
	var a, b map[string]any
	if err := yaml.Unmarshal(c.YAML(), &a); err != nil {
		panic(fmt.Sprintf("config: read back YAML: %v", err))
	}
	if err := yaml.Unmarshal(o.YAML(), &b); err != nil {
		panic(fmt.Sprintf("config: read back YAML: %v", err))
	}
	var out []string
	for k := range a {
		if _, ok := b[k]; !ok {
			out = append(out, k)
		}
	}
	for k, v := range b {
		if !reflect.DeepEqual(a[k], v) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
