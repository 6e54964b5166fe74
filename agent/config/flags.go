package config

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/sampling"
)

// Flags are the agent's command-line options, registered by Bind. Every
// option of Config has a flag; see Config for the precedence.
type Flags struct {
	fs                                  *flag.FlagSet
	config                              *string
	exe, name, port, cgroup, excludeExe list
	namespace, podSelector, container   list
	excludeNamespace                    list
}

// list is a repeatable flag: each use appends.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

// flagPaths maps each single-valued flag to the Config field it sets.
var flagPaths = map[string]string{
	"funcs":             "funcs",
	"http":              "http",
	"store-size":        "store.size",
	"keep":              "keep",
	"no-inject":         "inject",
	"metrics-pod-label": "metrics.podLabel",
	"min-duration":      "minDuration",
	"ring-size":         "ringSize",
	"max-goroutines":    "maxGoroutines",
	"rescan":            "rescanInterval",
	"settle-returns":    "settleReturns",
	"log-level":         "logLevel",
	"kubernetes":        "kubernetes.enabled",
	"node-name":         "kubernetes.nodeName",
	"kubeconfig":        "kubernetes.kubeconfig",
	"profile-hz":        "profile.cpuHz",
	"profile-size":      "profile.storeSize",
	"deep-p99-above":    "attribution.auto.p99Above",
}

// pathFlags is flagPaths inverted.
var pathFlags = func() map[string]string {
	m := make(map[string]string, len(flagPaths))
	for fl, p := range flagPaths {
		m[p] = fl
	}
	return m
}()

// Bind registers the agent's flags on fs. Values are checked by
// Flags.Config, after fs.Parse, so errors name the flag.
func Bind(fs *flag.FlagSet) *Flags {
	d := Default()
	f := &Flags{fs: fs}
	f.config = fs.String("config", "", "YAML configuration `file`; flags set on the command line override it")
	fs.Var(&f.exe, "exe", "trace processes whose executable path matches `GLOB` (repeatable; doublestar syntax)")
	fs.Var(&f.name, "name", "trace processes whose name (/proc/PID/comm) matches `GLOB` (repeatable)")
	fs.Var(&f.port, "port", "trace processes listening on TCP port `N` (repeatable)")
	fs.Var(&f.cgroup, "cgroup", "trace processes whose cgroup v2 path matches `GLOB` (repeatable)")
	fs.Var(&f.namespace, "namespace", "trace processes of pods whose namespace matches `GLOB` (repeatable)")
	fs.Var(&f.podSelector, "pod-selector", "trace processes of pods whose labels match the label selector `SEL`, e.g. 'app=catalog,env in (prod)' (repeatable)")
	fs.Var(&f.container, "container", "trace processes of containers whose name matches `GLOB` (repeatable)")
	fs.Var(&f.excludeExe, "exclude-exe", "never trace processes whose executable path matches `GLOB` (repeatable)")
	fs.Var(&f.excludeNamespace, "exclude-namespace", "never trace processes of pods whose namespace matches `GLOB` (repeatable)")
	fs.String("funcs", "", "comma-separated Go symbol globs of user functions to trace, e.g. 'main.*,github.com/x/y.(*Cache).Get'")
	fs.String("http", d.HTTP, "`host:port` of the trace API, metrics and UI (a non-loopback address exposes them)")
	fs.String("store-size", d.Store.Size.String(), "memory bound of the in-memory trace store (`SIZE`, e.g. 512MiB)")
	fs.String("keep", d.Keep.String(), "traces exported over OTLP (`POLICY`): "+sampling.PolicySyntax)
	fs.Bool("no-inject", false, "do not put a traceparent on outgoing HTTP/1 and gRPC requests")
	fs.Bool("metrics-pod-label", false, "label the RED histograms with k8s_pod_name too (every rollout makes new series)")
	fs.String("min-duration", d.MinDuration.String(), "drop spans shorter than `D` (e.g. 100us)")
	fs.String("ring-size", d.RingSize.String(), "BPF ring buffer size (`SIZE`, a power of two >= 4KiB)")
	fs.String("max-goroutines", strconv.Itoa(d.MaxGoroutines), "goroutines tracked at once (`N`)")
	fs.String("rescan", d.RescanInterval.String(), "interval `D` between /proc rescans for missed processes (>= 1s)")
	fs.String("settle-returns", d.SettleReturns.String(), "how long `D` learned return sites are watched (negative = off)")
	fs.String("log-level", d.LogLevel, "log `level`: debug, info, warn or error")
	fs.String("kubernetes", string(d.Kubernetes.Enabled), "pod metadata on spans and pod selectors: `MODE` is auto (on in a pod, or with --kubeconfig), true or false")
	fs.String("node-name", "", "this node's `name` in the cluster (default $NODE_NAME)")
	fs.String("kubeconfig", "", "kubeconfig `file` to reach the API server from outside the cluster (default: the pod's service account)")
	fs.String("profile-hz", strconv.Itoa(d.Profile.CPUHz), "sample the on-CPU stacks of traced processes `N` times a second per CPU, for CPU profiles of spans (1-1000; 0: off)")
	fs.String("profile-size", d.Profile.StoreSize.String(), "memory bound of the CPU samples kept by span (`SIZE`, e.g. 64MiB)")
	fs.String("deep-p99-above", "0s", "switch deep latency attribution on for a minute when a server operation's p99 exceeds `D` (0: never by itself)")
	return f
}

// Config builds the configuration: Default, then the --config file if
// given, then the flags set on the command line (selector flags append to
// the file's selectors), then Validate. An error from a flag names it
// (`--store-size: "12XB" is not a size (e.g. 128MiB)`); one from the file
// names the file, line and field.
func (f *Flags) Config() (*Config, error) {
	c, pos := Default(), positions{}
	if *f.config != "" {
		var err error
		if c, pos, err = load(*f.config); err != nil {
			return nil, err
		}
	}
	var errs []*FieldError
	set := map[string]bool{} // YAML paths set by a flag
	f.fs.Visit(func(fl *flag.Flag) {
		if err := f.apply(c, fl.Name, fl.Value.String()); err != nil {
			errs = append(errs, &FieldError{Path: "--" + fl.Name, Err: err})
		}
		if p, ok := flagPaths[fl.Name]; ok {
			set[p] = true
		}
	})
	if len(errs) > 0 {
		return nil, join(errs)
	}
	errs = c.problems()
	for _, e := range errs {
		key, _, _ := strings.Cut(e.Path, "[") // funcs[2] → funcs
		if fl, ok := pathFlags[key]; ok && set[key] {
			e.Path = "--" + fl
		} else if *f.config != "" {
			e.File, e.Line = *f.config, pos[e.Path]
		}
	}
	if len(errs) > 0 {
		return nil, join(errs)
	}
	return c, nil
}

// apply sets the option of flag name to value.
func (f *Flags) apply(c *Config, name, value string) error {
	var err error
	switch name {
	case "exe", "name", "port", "cgroup", "namespace", "pod-selector", "container":
		sels, err := selectors(name, map[string]list{
			"exe": f.exe, "name": f.name, "port": f.port, "cgroup": f.cgroup,
			"namespace": f.namespace, "pod-selector": f.podSelector, "container": f.container,
		}[name])
		c.Selectors = append(c.Selectors, sels...)
		return err
	case "exclude-exe":
		sels, err := selectors("exe", f.excludeExe)
		c.Exclude = append(c.Exclude, sels...)
		return err
	case "exclude-namespace":
		sels, err := selectors("namespace", f.excludeNamespace)
		c.Exclude = append(c.Exclude, sels...)
		return err
	case "funcs":
		c.Funcs = nil
		for _, p := range strings.Split(value, ",") {
			if p = strings.TrimSpace(p); p != "" {
				c.Funcs = append(c.Funcs, p)
			}
		}
	case "http":
		c.HTTP = value
	case "store-size":
		c.Store.Size, err = ParseByteSize(value)
	case "keep":
		c.Keep, err = sampling.ParsePolicy(value)
	case "no-inject":
		var off bool
		off, err = strconv.ParseBool(value)
		c.Inject = !off
	case "metrics-pod-label":
		c.Metrics.PodLabel, err = strconv.ParseBool(value)
	case "min-duration":
		c.MinDuration, err = duration(value)
	case "ring-size":
		c.RingSize, err = ParseByteSize(value)
	case "max-goroutines":
		c.MaxGoroutines, err = strconv.Atoi(value)
		if err != nil {
			err = fmt.Errorf("%q is not an integer", value)
		}
	case "rescan":
		c.RescanInterval, err = duration(value)
	case "settle-returns":
		c.SettleReturns, err = duration(value)
	case "log-level":
		c.LogLevel = value
	case "kubernetes":
		c.Kubernetes.Enabled, err = ParseSwitch(value)
	case "node-name":
		c.Kubernetes.NodeName = value
	case "kubeconfig":
		c.Kubernetes.Kubeconfig = value
	case "profile-hz":
		c.Profile.CPUHz, err = strconv.Atoi(value)
		if err != nil {
			err = fmt.Errorf("%q is not an integer", value)
		}
	case "profile-size":
		c.Profile.StoreSize, err = ParseByteSize(value)
	case "deep-p99-above":
		c.Attribution.Auto.P99Above, err = duration(value)
	}
	return err
}

// selectors turns the values of a selector flag into selectors of one
// field each, checked.
func selectors(field string, values list) ([]discovery.Selector, error) {
	var out []discovery.Selector
	for _, v := range values {
		var s discovery.Selector
		switch field {
		case "exe":
			s.Exe = v
		case "name":
			s.Name = v
		case "cgroup":
			s.Cgroup = v
		case "namespace":
			s.Namespace = v
		case "pod-selector":
			s.PodSelector = v
		case "container":
			s.Container = v
		case "port":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("%q is not a TCP port (1-65535)", v)
			}
			s.Port = n
		}
		if v == "" {
			if field == "pod-selector" {
				return nil, fmt.Errorf("empty label selector")
			}
			return nil, fmt.Errorf("empty %s glob", field)
		}
		if err := s.Validate(); err != nil {
			_, msg := selectorPath("", err)
			return nil, fmt.Errorf("%s", msg)
		}
		out = append(out, s)
	}
	return out, nil
}

// duration parses a Go duration; a number without a unit, even 0, is
// refused as in the YAML file.
func duration(s string) (time.Duration, error) {
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, fmt.Errorf("%s has no unit: add one, e.g. %q or %q", s, s+"s", s+"ms")
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (e.g. 250ms, 10s, 1m30s)", s)
	}
	return d, nil
}
