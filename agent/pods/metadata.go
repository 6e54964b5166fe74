package pods

import (
	"strings"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	corev1 "k8s.io/api/core/v1"

	"github.com/latscope/latscope/span"
)

// Workload kinds, as Kubernetes names the controllers that own pods.
const (
	KindDeployment  = "Deployment"
	KindReplicaSet  = "ReplicaSet"
	KindStatefulSet = "StatefulSet"
	KindDaemonSet   = "DaemonSet"
	KindJob         = "Job"
	KindCronJob     = "CronJob"
)

// Workload is the chain of controllers that own a pod, each "" when it
// has none of that kind: a Deployment's pod has ReplicaSet and
// Deployment; a CronJob's, Job and CronJob; a bare pod none.
type Workload struct {
	Deployment  string `json:"deployment,omitempty"`
	ReplicaSet  string `json:"replicaSet,omitempty"`
	StatefulSet string `json:"statefulSet,omitempty"`
	DaemonSet   string `json:"daemonSet,omitempty"`
	Job         string `json:"job,omitempty"`
	CronJob     string `json:"cronJob,omitempty"`
}

// Top returns the outermost controller of the chain, the one a person
// deploys: its kind (KindDeployment, …) and name; "", "" for a bare pod.
func (w Workload) Top() (kind, name string) {
	for _, c := range []struct{ kind, name string }{
		{KindDeployment, w.Deployment}, {KindCronJob, w.CronJob}, {KindStatefulSet, w.StatefulSet},
		{KindDaemonSet, w.DaemonSet}, {KindJob, w.Job}, {KindReplicaSet, w.ReplicaSet},
	} {
		if c.name != "" {
			return c.kind, c.name
		}
	}
	return "", ""
}

// attributes are w's semconv resource attributes, outermost first.
func (w Workload) attributes() []span.Attr {
	var out []span.Attr
	for _, c := range []struct {
		key   string
		value string
	}{
		{string(semconv.K8SDeploymentNameKey), w.Deployment},
		{string(semconv.K8SReplicaSetNameKey), w.ReplicaSet},
		{string(semconv.K8SStatefulSetNameKey), w.StatefulSet},
		{string(semconv.K8SDaemonSetNameKey), w.DaemonSet},
		{string(semconv.K8SCronJobNameKey), w.CronJob},
		{string(semconv.K8SJobNameKey), w.Job},
	} {
		if c.value != "" {
			out = append(out, span.Attr{Key: c.key, Value: c.value})
		}
	}
	return out
}

// Metadata is what the resolver knows of the container a process runs
// in and of its pod. It is immutable once returned.
type Metadata struct {
	Namespace   string   `json:"namespace"`
	Pod         string   `json:"pod"`
	PodUID      string   `json:"podUID"`
	Container   string   `json:"container"`
	ContainerID string   `json:"containerID"`
	Node        string   `json:"node"`
	Workload    Workload `json:"workload"`
	// ServiceName is service.name by the pod's declarations (see
	// ServiceName); "" leaves the process's own (its OTEL_SERVICE_NAME,
	// else its executable's name).
	ServiceName string `json:"serviceName,omitempty"`
	// Labels and Annotations are the pod's, shared with the resolver's
	// cache: read only.
	Labels      map[string]string `json:"-"`
	Annotations map[string]string `json:"-"`
}

// Resource returns m as OpenTelemetry resource attributes (semconv keys):
// k8s.namespace.name, k8s.pod.name, k8s.pod.uid, k8s.container.name,
// container.id, k8s.node.name and the workload's (k8s.deployment.name,
// k8s.replicaset.name, k8s.statefulset.name, k8s.daemonset.name,
// k8s.cronjob.name, k8s.job.name), each only when known. A new slice
// each call.
func (m *Metadata) Resource() []span.Attr {
	out := make([]span.Attr, 0, 12)
	for _, a := range []struct{ key, value string }{
		{string(semconv.K8SNamespaceNameKey), m.Namespace},
		{string(semconv.K8SPodNameKey), m.Pod},
		{string(semconv.K8SPodUIDKey), m.PodUID},
		{string(semconv.K8SContainerNameKey), m.Container},
		{string(semconv.ContainerIDKey), m.ContainerID},
		{string(semconv.K8SNodeNameKey), m.Node},
	} {
		if a.value != "" {
			out = append(out, span.Attr{Key: a.key, Value: a.value})
		}
	}
	return append(out, m.Workload.attributes()...)
}

// Recommended labels (kubernetes.io/docs/concepts/overview/working-with-objects/common-labels).
const labelAppName = "app.kubernetes.io/name"

// envServiceName is the OpenTelemetry SDKs' service name variable.
const envServiceName = "OTEL_SERVICE_NAME"

// ServiceName returns service.name for container c of pod: c's
// OTEL_SERVICE_NAME env value in the pod spec, else the pod's
// app.kubernetes.io/name label, else the workload's name (w.Top). ""
// when none is set, and when c's value is not in the spec (valueFrom a
// ConfigMap, Secret or field, or a $(VAR) reference): the process's own
// environment then holds the value kubelet resolved, which the agent
// reads by default.
func ServiceName(pod *corev1.Pod, c *corev1.Container, w Workload) string {
	if c != nil {
		// The last entry of a name wins, as in the container.
		var last *corev1.EnvVar
		for i := range c.Env {
			if c.Env[i].Name == envServiceName {
				last = &c.Env[i]
			}
		}
		switch {
		case last == nil:
		case last.ValueFrom != nil, strings.Contains(last.Value, "$("):
			return ""
		case last.Value != "":
			return last.Value
		}
	}
	if v := pod.Labels[labelAppName]; v != "" {
		return v
	}
	_, name := w.Top()
	return name
}
