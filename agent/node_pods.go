package agent

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/latscope/latscope/agent/config"
	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/agent/pods"
)

// podWait bounds how long a process in a pod's cgroup waits for the
// informer to name its pod and container (kubelet reports a started
// container's id about a second after its exec; more under load). Past
// it the process is matched without pod metadata, and counted
// (k8s_pod_unresolved). A variable for tests.
var podWait = 30 * time.Second

const (
	// maxPodWaiting bounds the processes waiting at once; more are
	// matched at once without pod metadata, and counted.
	maxPodWaiting = 1024
	// podSyncWait bounds how long StartNode waits for the first list of
	// the node's pods; past it the node starts, and processes wait for
	// their pod as above.
	podSyncWait = 20 * time.Second
)

// podWaiting is a process whose pod or container the resolver did not
// know when it was considered.
type podWaiting struct {
	start uint64    // the process instance (start time)
	exec  time.Time // its exec event's time; zero when found by a scan
	until time.Time // when the node gives up waiting
}

// startPods starts the pod resolver when Kubernetes is enabled
// (config.Kubernetes): with client when the caller gave one, else with
// one built from the in-cluster configuration or the kubeconfig. With
// enabled auto, outside a pod and without a kubeconfig, nothing starts;
// a failure is an error when Kubernetes was asked for (enabled true, or
// a kubeconfig given), a warning otherwise.
func (n *Node) startPods(k config.Kubernetes, client kubernetes.Interface) error {
	if k.Enabled == config.Off || (k.Enabled == config.Auto && client == nil && k.Kubeconfig == "" && !pods.InCluster()) {
		return nil
	}
	asked := k.Enabled == config.On || k.Kubeconfig != ""
	fail := func(err error) error {
		if asked {
			return err
		}
		n.log.Warn("Kubernetes pod metadata is off: the agent runs in a pod but cannot use the API server (set kubernetes.enabled: false to silence this)", "err", err)
		return nil
	}
	if client == nil {
		// client-go logs through klog (to stderr, in its own format):
		// send it to the agent's log. (A caller giving its client owns
		// klog's settings.)
		klog.SetSlogLogger(n.log.With("component", "client-go"))
		var err error
		if client, err = pods.NewClient(k.Kubeconfig); err != nil {
			return fail(err)
		}
	}
	node := pods.NodeName(k.NodeName)
	if node == "" {
		return fail(errors.New("kubernetes: this node's name is unknown: set --node-name (kubernetes.nodeName), or NODE_NAME from the downward API (fieldRef: spec.nodeName)"))
	}
	changed := make(chan struct{}, 1)
	r, err := pods.Start(pods.Options{Client: client, NodeName: node, Log: n.log, Changed: func() {
		select {
		case changed <- struct{}{}:
		default: // a retry is pending already
		}
	}})
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), podSyncWait)
	defer cancel()
	if !r.WaitSynced(ctx) {
		n.log.Warn("Kubernetes: the node's pods are not listed yet; processes in pods wait for theirs", "node", node, "wait", podWait)
	}
	n.pods, n.podsChanged = r, changed
	n.log.Info("Kubernetes pod metadata on", "node", node, "pods", r.Stats().Pods)
	return nil
}

// podOf looks up the pod of process p and fills p.Pod. It returns the
// pod's metadata (nil when p is in no known pod), and false when p must
// wait for its pod: it is then considered again when the informer
// reports a change (retryPods), for at most podWait. Only Go processes
// wait: no other can be traced.
func (n *Node) podOf(p *discovery.Proc, execTime time.Time) (*pods.Metadata, bool) {
	if n.pods == nil {
		return nil, true
	}
	ref, err := pods.ReadCgroup(p.PID)
	if err != nil {
		return nil, true // gone, or unreadable: Attach says which
	}
	meta, res := n.pods.Lookup(ref)
	n.mu.Lock()
	w, waiting := n.procs.podWaiting[p.PID]
	if waiting && w.start != p.StartTime {
		waiting = false // the pid was reused
	}
	switch {
	case res != pods.Pending:
		delete(n.procs.podWaiting, p.PID)
		n.mu.Unlock()
		if meta != nil {
			p.Pod = &discovery.PodFacts{Namespace: meta.Namespace, Name: meta.Pod, Container: meta.Container, Labels: meta.Labels, Annotations: meta.Annotations}
		}
		return meta, true
	case waiting && time.Now().After(w.until):
		delete(n.procs.podWaiting, p.PID)
		n.procs.podUnresolved++
		n.mu.Unlock()
		n.log.Warn("pod of a process still unknown: matching it without pod metadata", "pid", p.PID, "exe", p.Exe, "container", ref.ContainerID, "pod_uid", ref.PodUID, "waited", podWait)
		return nil, true
	case waiting:
		n.mu.Unlock()
		return nil, false
	}
	full := len(n.procs.podWaiting) >= maxPodWaiting
	if full {
		n.procs.podUnresolved++
	}
	n.mu.Unlock()
	if full || !isGo(p.PID) {
		return nil, true
	}
	n.mu.Lock()
	n.procs.podWaiting[p.PID] = podWaiting{start: p.StartTime, exec: execTime, until: time.Now().Add(podWait)}
	n.mu.Unlock()
	return nil, false
}

// isGo reports whether process pid runs a Go binary (it has Go's build
// information).
func isGo(pid int) bool {
	_, err := buildinfo.ReadFile(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil
}

// retryPods considers again the processes waiting for their pod: after
// the informer reported a change, and at housekeeping (which gives up on
// those that waited podWait).
func (n *Node) retryPods() {
	n.mu.Lock()
	if len(n.procs.podWaiting) == 0 {
		n.mu.Unlock()
		return
	}
	type retry struct {
		pid  int
		exec time.Time
	}
	var due []retry
	for pid, w := range n.procs.podWaiting {
		due = append(due, retry{pid, w.exec})
	}
	n.mu.Unlock()
	for _, r := range due {
		n.consider(r.pid, r.exec)
	}
}
