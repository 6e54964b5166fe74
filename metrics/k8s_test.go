package metrics

import (
	"maps"
	"testing"
	"time"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/span"
)

// podProcess is a process of pod name in namespace ns, owned by the
// workload attributes given (semconv keys).
func podProcess(ns, pod string, workload ...span.Attr) *span.Process {
	res := []span.Attr{
		attr(semconv.K8SNamespaceNameKey, ns), attr(semconv.K8SPodNameKey, pod),
		attr(semconv.K8SPodUIDKey, "uid-"+pod), attr(semconv.K8SContainerNameKey, "app"),
	}
	return &span.Process{PID: 7, ServiceName: "shop", Resource: append(res, workload...)}
}

func TestK8sValues(t *testing.T) {
	deploy := []span.Attr{attr(semconv.K8SDeploymentNameKey, "catalog"), attr(semconv.K8SReplicaSetNameKey, "catalog-5d8f")}
	for _, tc := range []struct {
		name string
		res  []span.Attr
		want [3]string
	}{
		{"not in Kubernetes", nil, [3]string{}},
		{"bare pod", podProcess("shop", "p").Resource, [3]string{"shop", "", ""}},
		{"deployment over its replicaset", podProcess("shop", "p", deploy...).Resource, [3]string{"shop", "Deployment", "catalog"}},
		{"bare replicaset", podProcess("shop", "p", attr(semconv.K8SReplicaSetNameKey, "rs")).Resource, [3]string{"shop", "ReplicaSet", "rs"}},
		{"cronjob over its job", podProcess("ops", "p", attr(semconv.K8SJobNameKey, "report-290"), attr(semconv.K8SCronJobNameKey, "report")).Resource, [3]string{"ops", "CronJob", "report"}},
		{"job", podProcess("ops", "p", attr(semconv.K8SJobNameKey, "once")).Resource, [3]string{"ops", "Job", "once"}},
		{"statefulset", podProcess("db", "p", attr(semconv.K8SStatefulSetNameKey, "pg")).Resource, [3]string{"db", "StatefulSet", "pg"}},
		{"daemonset", podProcess("kube-system", "p", attr(semconv.K8SDaemonSetNameKey, "proxy")).Resource, [3]string{"kube-system", "DaemonSet", "proxy"}},
		{"non-string value ignored", []span.Attr{{Key: string(semconv.K8SNamespaceNameKey), Value: int64(1)}}, [3]string{}},
	} {
		if got := k8sValues(tc.res); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The histograms carry the namespace and workload of the span's pod; the
// replicas of a workload share a series: the pod's name is no label.
func TestREDKubernetesLabels(t *testing.T) {
	r, reg := newTestRED(t, Options{})
	deploy := []span.Attr{attr(semconv.K8SDeploymentNameKey, "catalog"), attr(semconv.K8SReplicaSetNameKey, "catalog-5d8f")}
	var spans []*span.Span
	for i, p := range []*span.Process{
		podProcess("shop", "catalog-5d8f-a", deploy...),
		podProcess("shop", "catalog-5d8f-b", deploy...),
		podProcess("staging", "catalog-77aa-c", attr(semconv.K8SDeploymentNameKey, "catalog")),
		podProcess("db", "pg-0", attr(semconv.K8SStatefulSetNameKey, "pg")),
		shop, // outside Kubernetes
	} {
		s := serverSpan(i, 20*time.Millisecond)
		s.Process = p
		spans = append(spans, s)
	}
	if err := r.Export(spans); err != nil {
		t.Fatal(err)
	}
	got := map[[3]string]uint64{}
	for _, s := range gatherSeries(t, reg)["http_server_request_duration_seconds"] {
		for k := range s.labels {
			if k == "k8s_pod_name" || k == "k8s_pod_uid" {
				t.Errorf("label %s: the pod is a label only when asked (Options.PodLabel)", k)
			}
		}
		got[[3]string{s.labels["k8s_namespace_name"], s.labels["k8s_workload_kind"], s.labels["k8s_workload_name"]}] += s.count
	}
	want := map[[3]string]uint64{
		{"shop", "Deployment", "catalog"}:    2,
		{"staging", "Deployment", "catalog"}: 1,
		{"db", "StatefulSet", "pg"}:          1,
		{"", "", ""}:                         1,
	}
	if !maps.Equal(got, want) {
		t.Errorf("series (namespace, kind, workload) → count:\n got %v\nwant %v", got, want)
	}
}

// The overflow series keeps the service only: Kubernetes labels too are
// "_other".
func TestREDKubernetesOverflow(t *testing.T) {
	r, reg := newTestRED(t, Options{MaxSeries: 1})
	for i, ns := range []string{"a", "b"} {
		s := serverSpan(i, time.Millisecond)
		s.Process = podProcess(ns, "p", attr(semconv.K8SDeploymentNameKey, "d"))
		r.Export([]*span.Span{s})
	}
	series := gatherSeries(t, reg)["http_server_request_duration_seconds"]
	if len(series) != 2 {
		t.Fatalf("%d series, want the first and the overflow one", len(series))
	}
	for _, s := range series {
		if s.labels["k8s_namespace_name"] == "b" {
			t.Errorf("series %v past the limit", s.labels)
		}
		if s.labels["http_route"] == "_other" && (s.labels["k8s_namespace_name"] != "_other" || s.labels["k8s_workload_name"] != "_other") {
			t.Errorf("overflow series %v: want every label but service_name _other", s.labels)
		}
	}
}

// Asked for, the pod is a label too.
func TestREDPodLabel(t *testing.T) {
	r, reg := newTestRED(t, Options{PodLabel: true})
	deploy := attr(semconv.K8SDeploymentNameKey, "catalog")
	var spans []*span.Span
	for i, p := range []*span.Process{podProcess("shop", "catalog-a", deploy), podProcess("shop", "catalog-b", deploy), shop} {
		s := serverSpan(i, 20*time.Millisecond)
		s.Process = p
		spans = append(spans, s)
	}
	if err := r.Export(spans); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, s := range gatherSeries(t, reg)["http_server_request_duration_seconds"] {
		got[s.labels["k8s_pod_name"]] += s.count
	}
	if want := map[string]uint64{"catalog-a": 1, "catalog-b": 1, "": 1}; !maps.Equal(got, want) {
		t.Errorf("pod → count: got %v, want %v", got, want)
	}
}
