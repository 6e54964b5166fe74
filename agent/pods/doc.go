// Package pods owns the Kubernetes metadata of the node's processes: which
// container and pod a process runs in (ParseCgroup, from /proc/PID/cgroup:
// containerd, CRI-O and Docker, the systemd and cgroupfs drivers, cgroup
// v1 and v2), what the API server says of that pod and its owners
// (Resolver: an informer of this node's pods only, plus cached GETs of
// ReplicaSets and Jobs), and how that becomes OpenTelemetry resource
// attributes and service.name (Metadata.Resource, ServiceName).
//
// It needs, of the API server: get, list and watch on pods; get on
// apps/replicasets and batch/jobs. It reads KUBERNETES_SERVICE_HOST and
// KUBERNETES_SERVICE_PORT (InCluster), NODE_NAME (NodeName) and, in a pod,
// the service account's token and CA (NewClient).
//
// The agent's node wires a Resolver to discovery: a process whose pod is
// not known yet is looked up again when the informer reports a change.
package pods
