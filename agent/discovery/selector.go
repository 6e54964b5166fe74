package discovery

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
