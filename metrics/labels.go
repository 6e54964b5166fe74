package metrics

import (
	"strconv"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/span"
)

// facts are the span attributes the RED histograms read, gathered in one
// pass over span.Attrs. Numbers stay numbers (-1: absent) so that the hot
// path formats nothing: a label value is formatted once, when its series
// is created.
type facts struct {
	method, route, protocolVersion, errorType string
	serverAddress                             string
	rpcSystem, rpcService, rpcMethod          string
	dbSystem, dbOperation, dbNamespace        string
	statusCode, serverPort, grpcStatusCode    int64
	hasMethod, hasRPCSystem, hasDBSystem      bool
}

func gather(s *span.Span) facts {
	f := facts{statusCode: -1, serverPort: -1, grpcStatusCode: -1}
	for _, a := range s.Attrs {
		switch a.Key {
		case string(semconv.HTTPRequestMethodKey):
			f.method, f.hasMethod = knownMethod(str(a.Value)), true
		case string(semconv.HTTPResponseStatusCodeKey):
			f.statusCode = num(a.Value)
		case string(semconv.HTTPRouteKey):
			f.route = str(a.Value)
		case string(semconv.NetworkProtocolVersionKey):
			f.protocolVersion = str(a.Value)
		case string(semconv.ErrorTypeKey):
			f.errorType = str(a.Value)
		case string(semconv.ServerAddressKey):
			f.serverAddress = str(a.Value)
		case string(semconv.ServerPortKey):
			f.serverPort = num(a.Value)
		case string(semconv.RPCSystemKey):
			f.rpcSystem, f.hasRPCSystem = str(a.Value), true
		case string(semconv.RPCServiceKey):
			f.rpcService = str(a.Value)
		case string(semconv.RPCMethodKey):
			f.rpcMethod = str(a.Value)
		case string(semconv.RPCGRPCStatusCodeKey):
			f.grpcStatusCode = num(a.Value)
		case string(semconv.DBSystemNameKey):
			f.dbSystem, f.hasDBSystem = str(a.Value), true
		case string(semconv.DBOperationNameKey):
			f.dbOperation = str(a.Value)
		case string(semconv.DBNamespaceKey):
			f.dbNamespace = str(a.Value)
		}
	}
	return f
}

// str returns a string attribute value; other types are not expected
// for the keys read as strings and count as absent.
func str(v any) string {
	s, _ := v.(string)
	return s
}

// num returns an integer attribute value, whatever its Go integer type
// (libraries set int64, some record fields are unsigned); -1 when absent
// or not an integer.
func num(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int:
		return int64(n)
	case int32:
		return int64(n)
	case uint16:
		return int64(n)
	case uint32:
		return int64(n)
	case uint64:
		return int64(n)
	}
	return -1
}

// semconvOther is semconv's value for what the instrumentation cannot
// name: an unknown HTTP method (the raw method comes from the client and
// would let anyone create series at will), an error without a type.
const semconvOther = "_OTHER"

// knownMethod returns m if it is one of the methods of RFC 9110 and
// RFC 5789 (semconv's list), else "_OTHER".
func knownMethod(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
		return m
	}
	return semconvOther
}

// key is one label set of one histogram: strs and nums hold its label
// values in an order each metric defines (see the values functions in
// red.go), nums as numbers, -1 meaning an empty label. It is comparable,
// so it keys the series cache without building strings per span.
type key struct {
	strs [6]string
	nums [2]int64
	// k8s are the Kubernetes labels' values (k8sLabels' order).
	k8s [3]string
	pod string // k8s_pod_name, with Options.PodLabel
	// other marks the overflow series of strs[0] (the service): every
	// other label is "_other".
	other bool
}

// overflowValue is the label value of every label but service_name in the
// series that takes the observations past the cardinality limit.
const overflowValue = "_other"

// formatNum formats a numeric label value; -1 is an absent one.
func formatNum(n int64) string {
	if n < 0 {
		return ""
	}
	return strconv.FormatInt(n, 10)
}

// k8sLabels are the Kubernetes labels every histogram ends with: the
// pod's namespace and its workload, the outermost controller that owns
// it (Deployment, StatefulSet, DaemonSet, CronJob, else Job or
// ReplicaSet) as kind and name, from the span's process resource
// (k8s.namespace.name, k8s.deployment.name, …). One kind and one name
// rather than one label per semconv workload attribute: two labels, not
// six mostly empty ones, and one query groups every kind
// (sum by (k8s_workload_name)). Their cardinality is the node's
// workloads. The pod's name is never a label: every rollout would
// create new series.
var k8sLabels = [3]string{"k8s_namespace_name", "k8s_workload_kind", "k8s_workload_name"}

// podLabel is the label Options.PodLabel adds.
const podLabel = "k8s_pod_name"

// withK8s returns a histogram's labels followed by k8sLabels.
func withK8s(labels ...string) []string { return append(labels, k8sLabels[:]...) }

// k8sValues reads the values of k8sLabels from a process's resource
// attributes; all "" outside Kubernetes.
func k8sValues(resource []span.Attr) [3]string {
	var ns, deployment, replicaSet, statefulSet, daemonSet, job, cronJob string
	for _, a := range resource {
		switch a.Key {
		case string(semconv.K8SNamespaceNameKey):
			ns = str(a.Value)
		case string(semconv.K8SDeploymentNameKey):
			deployment = str(a.Value)
		case string(semconv.K8SReplicaSetNameKey):
			replicaSet = str(a.Value)
		case string(semconv.K8SStatefulSetNameKey):
			statefulSet = str(a.Value)
		case string(semconv.K8SDaemonSetNameKey):
			daemonSet = str(a.Value)
		case string(semconv.K8SJobNameKey):
			job = str(a.Value)
		case string(semconv.K8SCronJobNameKey):
			cronJob = str(a.Value)
		}
	}
	switch {
	case deployment != "":
		return [3]string{ns, "Deployment", deployment}
	case cronJob != "":
		return [3]string{ns, "CronJob", cronJob}
	case statefulSet != "":
		return [3]string{ns, "StatefulSet", statefulSet}
	case daemonSet != "":
		return [3]string{ns, "DaemonSet", daemonSet}
	case job != "":
		return [3]string{ns, "Job", job}
	case replicaSet != "":
		return [3]string{ns, "ReplicaSet", replicaSet}
	}
	return [3]string{ns, "", ""}
}
