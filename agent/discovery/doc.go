// Package discovery finds the processes the node agent traces: it learns
// of every exec and exit from the kernel as they happen (Watch, over the
// BPF program in bpf/discovery), lists and inspects processes through
// /proc (PIDs, Inspect, ListeningPorts), and decides which ones to trace
// (Selector, Selectors).
//
// It knows nothing about tracing: the agent wires a Watcher's events and
// a periodic PIDs rescan (which repairs any event the watcher had to
// drop) to Inspect, Selectors.Match and its attach machinery.
//
// /proc is the agent's own: run the agent in the host's PID namespace so
// that the pids it sees are those the kernel reports.
package discovery
