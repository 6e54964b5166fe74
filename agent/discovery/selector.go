package discovery

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/bmatcuk/doublestar/v4"
	"k8s.io/apimachinery/pkg/labels"
)

// Selector picks processes. Every field that is set must match (AND); an
// empty Selector matches nothing. A process is traced when it matches any
// of Config.Selectors and none of Config.Exclude (see Selectors for the
// pod annotation that overrides both).
//
// Namespace, PodSelector and Container match the pod metadata the agent
// fills in Proc.Pod when Kubernetes is enabled: a selector that sets any
// of them never matches a process that is not in a pod.
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
	// Namespace globs the pod's namespace ("shop", "team-*").
	Namespace string `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	// PodSelector selects pods by their labels, in Kubernetes'
	// label-selector syntax ("app=catalog,tier!=cache",
	// "env in (prod,staging)", "!canary").
	PodSelector string `yaml:"podSelector,omitempty" json:"podSelector,omitempty"`
	// Container globs the container's name in its pod spec.
	Container string `yaml:"container,omitempty" json:"container,omitempty"`
}

// TraceAnnotation is the pod annotation that overrides the selectors for
// every process of its pod: "true" traces them even when no selector
// picks them (exclude selectors still apply), "false" never traces them
// whatever picks them. Other values are ignored.
const TraceAnnotation = "latscope.io/trace"

// PodFacts is what a selector may match of the pod a process runs in.
type PodFacts struct {
	Namespace string
	Name      string // the pod's name
	Container string // the container's name in the pod spec
	// Labels and Annotations are the pod's; read only.
	Labels      map[string]string
	Annotations map[string]string
}

// kubernetes reports whether s sets a field only a process in a pod can
// match.
func (s Selector) kubernetes() bool {
	return s.Namespace != "" || s.PodSelector != "" || s.Container != ""
}

// podSelectors caches parsed label selectors by their text: a selector is
// matched at every exec. It holds the selectors configured since start
// (reloads add theirs), a handful.
var podSelectors sync.Map // string → labels.Selector

// parsePodSelector parses a label selector, once per text.
func parsePodSelector(text string) (labels.Selector, error) {
	if v, ok := podSelectors.Load(text); ok {
		return v.(labels.Selector), nil
	}
	sel, err := labels.Parse(text)
	if err != nil {
		return nil, err
	}
	podSelectors.Store(text, sel)
	return sel, nil
}

// Validate reports the first field of s that cannot match anything: a
// malformed glob or label selector, a port out of range, or no field set
// at all. The error names the field ("exe: bad glob \"[\"",
// "podSelector: …").
func (s Selector) Validate() error {
	if s == (Selector{}) {
		return fmt.Errorf("empty selector: set at least one of exe, name, port, cgroup, namespace, podSelector, container")
	}
	for _, g := range s.globs(nil) {
		if g.glob != "" && !doublestar.ValidatePattern(g.glob) {
			return fmt.Errorf("%s: bad glob %q (doublestar syntax: *, **, ?, [a-z], {a,b})", g.field, g.glob)
		}
	}
	if s.Port < 0 || s.Port > 65535 {
		return fmt.Errorf("port: %d is not a TCP port (1-65535)", s.Port)
	}
	if s.PodSelector != "" {
		if _, err := parsePodSelector(s.PodSelector); err != nil {
			return fmt.Errorf("podSelector: %q is not a label selector (e.g. \"app=catalog,tier!=cache\", \"env in (prod,staging)\"): %w", s.PodSelector, err)
		}
	}
	return nil
}

// glob is one glob field of a selector and the value of p it matches.
type glob struct{ field, glob, value string }

// globs lists s's glob fields with p's values (none when p is nil).
func (s Selector) globs(p *Proc) [5]glob {
	g := [5]glob{{field: "exe", glob: s.Exe}, {field: "name", glob: s.Name}, {field: "cgroup", glob: s.Cgroup}, {field: "namespace", glob: s.Namespace}, {field: "container", glob: s.Container}}
	if p != nil {
		g[0].value, g[1].value, g[2].value = p.Exe, p.Name, p.Cgroup
		if p.Pod != nil {
			g[3].value, g[4].value = p.Pod.Namespace, p.Pod.Container
		}
	}
	return g
}

// Matches reports whether p satisfies every field s sets: Exe, Name and
// Cgroup are doublestar globs against p.Exe, p.Name and p.Cgroup;
// Namespace and Container globs against p.Pod's; PodSelector a label
// selector against p.Pod's labels; Port must be among the TCP ports p
// listens on. A selector with a Kubernetes field never matches a process
// without p.Pod. ports is called only when s sets Port and the other
// fields matched (reading ports costs a walk of /proc/PID/fd); a nil
// ports never matches a Port selector. An empty Selector matches
// nothing; so does a malformed glob or label selector (Validate reports
// it).
func (s Selector) Matches(p *Proc, ports func() []int) bool {
	if s == (Selector{}) || p == nil || (p.Pod == nil && s.kubernetes()) {
		return false
	}
	for _, g := range s.globs(p) {
		if g.glob == "" {
			continue
		}
		if ok, err := doublestar.Match(g.glob, g.value); err != nil || !ok {
			return false
		}
	}
	if s.PodSelector != "" {
		sel, err := parsePodSelector(s.PodSelector)
		if err != nil || !sel.Matches(labels.Set(p.Pod.Labels)) {
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
	for _, f := range []struct{ name, value string }{{"namespace", s.Namespace}, {"podSelector", s.PodSelector}, {"container", s.Container}} {
		if f.value != "" {
			parts = append(parts, fmt.Sprintf("%s=%q", f.name, f.value))
		}
	}
	if len(parts) == 0 {
		return "(empty)"
	}
	return strings.Join(parts, " ")
}

// Selectors chooses the processes to trace: those matching some Include
// selector and no Exclude selector. A pod's TraceAnnotation overrides
// the Include list for every process of the pod: "latscope.io/trace":
// "true" includes them even when no Include selector matches (an Exclude
// selector still wins: the node's operator has the last word), "false"
// never traces them, whatever the selectors say.
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
// included it (`include[0] (exe="**/catalog")`, `pod annotation
// latscope.io/trace=true`), or why not ("matches no selector",
// `excluded by exclude[2] (name="sh")`, `pod annotation
// latscope.io/trace=false`). Listening ports are read (ListeningPorts) at
// most once, and only when a selector that sets Port gets that far; when
// they cannot be read, port selectors do not match and the reason says
// so.
func (s Selectors) Match(p *Proc) (bool, string) {
	var annotation string
	if p.Pod != nil {
		annotation = p.Pod.Annotations[TraceAnnotation]
	}
	if annotation == "false" {
		return false, "pod annotation " + TraceAnnotation + "=false"
	}
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
	if included < 0 && annotation != "true" {
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
	if included < 0 {
		return true, "pod annotation " + TraceAnnotation + "=true"
	}
	return true, fmt.Sprintf("include[%d] (%s)", included, s.Include[included])
}
