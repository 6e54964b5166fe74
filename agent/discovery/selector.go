package discovery

import (
	"fmt"
	"slices"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// Selector picks processes. Every field that is set must match (AND); an
// empty Selector matches nothing. A process is traced when it matches any
// of Config.Selectors and none of Config.Exclude.
//
// The Kubernetes selectors (namespace, pod labels and annotations,
// container name) come with the Kubernetes packaging: they are added here
// as more fields, matched against pod metadata the same way.
type Selector struct {
	// Exe globs the executable's path as the process sees it
	// (/proc/PID/exe, in the process's mount namespace), doublestar
	// syntax: "/usr/local/bin/*", "**/catalog".
	Exe string `yaml:"exe,omitempty" json:"exe,omitempty"`
	// Name globs the process name (/proc/PID/comm, at most 15 bytes).
	Name string `yaml:"name,omitempty" json:"name,omitempty"`
	// Port: the process listens on this TCP port (IPv4 or IPv6).
	Port int `yaml:"port,omitempty" json:"port,omitempty"`
	// Cgroup globs the process's cgroup v2 path ("/system.slice/*.service",
	// "/kubepods.slice/**").
	Cgroup string `yaml:"cgroup,omitempty" json:"cgroup,omitempty"`
}

// Validate reports the first field of s that cannot match anything: a
// malformed glob, a port out of range, or no field set at all. The error
// names the field ("exe: bad glob \"[\"").
func (s Selector) Validate() error {
	if s == (Selector{}) {
		return fmt.Errorf("empty selector: set at least one of exe, name, port, cgroup")
	}
	for _, g := range []struct{ field, glob string }{{"exe", s.Exe}, {"name", s.Name}, {"cgroup", s.Cgroup}} {
		if g.glob != "" && !doublestar.ValidatePattern(g.glob) {
			return fmt.Errorf("%s: bad glob %q (doublestar syntax: *, **, ?, [a-z], {a,b})", g.field, g.glob)
		}
	}
	if s.Port < 0 || s.Port > 65535 {
		return fmt.Errorf("port: %d is not a TCP port (1-65535)", s.Port)
	}
	return nil
}

// Matches reports whether p satisfies every field s sets: Exe, Name and
// Cgroup are doublestar globs against p.Exe, p.Name and p.Cgroup; Port
// must be among the TCP ports p listens on. ports is called only when s
// sets Port and the other fields matched (reading ports costs a walk of
// /proc/PID/fd); a nil ports never matches a Port selector. An empty
// Selector matches nothing; so does a malformed glob (Validate reports
// it).
func (s Selector) Matches(p *Proc, ports func() []int) bool {
	if s == (Selector{}) || p == nil {
		return false
	}
	for _, g := range []struct{ glob, value string }{{s.Exe, p.Exe}, {s.Name, p.Name}, {s.Cgroup, p.Cgroup}} {
		if g.glob == "" {
			continue
		}
		if ok, err := doublestar.Match(g.glob, g.value); err != nil || !ok {
			return false
		}
	}
	if s.Port == 0 {
		return true
	}
	if ports == nil {
		return false
	}
	return slices.Contains(ports(), s.Port)
}

// String shows the fields s sets, for logs and `latscope ps`:
// `exe="/usr/bin/*" port=8080`.
func (s Selector) String() string {
	var parts []string
	for _, f := range []struct{ name, value string }{{"exe", s.Exe}, {"name", s.Name}, {"cgroup", s.Cgroup}} {
		if f.value != "" {
			parts = append(parts, fmt.Sprintf("%s=%q", f.name, f.value))
		}
	}
	if s.Port != 0 {
		parts = append(parts, fmt.Sprintf("port=%d", s.Port))
	}
	if len(parts) == 0 {
		return "(empty)"
	}
	return strings.Join(parts, " ")
}

// Selectors chooses the processes to trace: those matching some Include
// selector and no Exclude selector.
type Selectors struct {
	Include []Selector `yaml:"include,omitempty" json:"include,omitempty"`
	Exclude []Selector `yaml:"exclude,omitempty" json:"exclude,omitempty"`
}

// Validate reports the first selector that cannot match, naming it by
// list and index: `include[1]: exe: bad glob "["`.
func (s Selectors) Validate() error {
	for _, l := range []struct {
		name string
		sels []Selector
	}{{"include", s.Include}, {"exclude", s.Exclude}} {
		for i, sel := range l.sels {
			if err := sel.Validate(); err != nil {
				return fmt.Errorf("%s[%d]: %w", l.name, i, err)
			}
		}
	}
	return nil
}

// Match reports whether p is to be traced, and why: which selector
// included it (`include[0] (exe="**/catalog")`), or why not ("matches no
// selector", `excluded by exclude[2] (name="sh")`). Listening ports are
// read (ListeningPorts) at most once, and only when a selector that sets
// Port gets that far; when they cannot be read, port selectors do not
// match and the reason says so.
func (s Selectors) Match(p *Proc) (bool, string) {
	var (
		ports   []int
		portErr error
		read    bool
	)
	portsOf := func() []int {
		if !read {
			read = true
			ports, portErr = ListeningPorts(p.PID)
		}
		return ports
	}
	included := -1
	for i, sel := range s.Include {
		if sel.Matches(p, portsOf) {
			included = i
			break
		}
	}
	if included < 0 {
		switch {
		case len(s.Include) == 0:
			return false, "matches no selector (none configured)"
		case portErr != nil:
			return false, fmt.Sprintf("matches no selector (listening ports unreadable: %v)", portErr)
		}
		return false, "matches no selector"
	}
	for i, sel := range s.Exclude {
		if sel.Matches(p, portsOf) {
			return false, fmt.Sprintf("excluded by exclude[%d] (%s)", i, sel)
		}
	}
	return true, fmt.Sprintf("include[%d] (%s)", included, s.Include[included])
}
