// Package config owns the configuration of `latscope agent`: the Config
// struct, its defaults, strict YAML loading with errors that point at the
// file, line and field, validation, and the command-line flags that
// override a file.
//
// Precedence: defaults ← the file given with --config ← flags set on the
// command line. Selector flags (--exe, --name, --port, --cgroup,
// --exclude-exe) add to the file's selectors; every other flag replaces
// the file's value.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/latscope/latscope/agent/discovery"
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
	LogLevel string `yaml:"logLevel"`
	Export   Export `yaml:"export"`
}

// Store configures the in-memory trace store.
type Store struct {
	// Size bounds the store's memory (>= 1MiB); the oldest traces go first.
	Size ByteSize `yaml:"size"`
}

// Export configures links to other trace backends.
type Export struct {
	// JaegerQueryURL is a Jaeger UI/query base URL the UI links traces
	// to; optional, an absolute http(s) URL.
	JaegerQueryURL string `yaml:"jaegerQueryURL,omitempty"`
}

// Default returns the default configuration: no selectors, HTTP on
// 127.0.0.1:7070, a 128MiB store, keep all, inject on, an 8MiB ring,
// 16384 goroutines, rescans every 10s, settle returns for 10s, log level
// info.
func Default() *Config {
	return &Config{
		HTTP:           "127.0.0.1:7070",
		Store:          Store{Size: 128 * MiB},
		Keep:           sampling.Policy{All: true},
		Inject:         true,
		RingSize:       8 * MiB,
		MaxGoroutines:  16384,
		RescanInterval: 10 * time.Second,
		SettleReturns:  10 * time.Second,
		LogLevel:       "info",
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
	if _, ok := logLevels[c.LogLevel]; !ok {
		bad("logLevel", "%q is not a log level (debug, info, warn, error)", c.LogLevel)
	}
	if u := c.Export.JaegerQueryURL; u != "" {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			bad("export.jaegerQueryURL", "%q is not an absolute http(s) URL (e.g. http://jaeger:16686)", u)
		}
	}
	return errs
}

// selectorPath turns discovery.Selector.Validate's "exe: bad glob" into
// the path "selectors[1].exe" and the message "bad glob".
func selectorPath(prefix string, err error) (path, msg string) {
	field, rest, ok := strings.Cut(err.Error(), ": ")
	switch field {
	case "exe", "name", "port", "cgroup":
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
		w = append(w, "selectors: none set, so no process is traced; add some (--exe, --name, --port, --cgroup or selectors in the config file)")
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
