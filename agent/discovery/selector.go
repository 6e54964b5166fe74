package discovery

import (
	"fmt"

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
