package pods

import (
	"context"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/latscope/latscope/span"
)

const node = "node-a"

// ids are container ids, 64 hex digits each.
func id(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}

func ctrl(apiVersion, kind, name string, uid types.UID) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: uid, Controller: &yes}}
}

// deployment returns a Deployment's ReplicaSet and the pod it made.
func deployment(ns, name, hash string) (*appsv1.ReplicaSet, *corev1.Pod) {
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name + "-" + hash, UID: types.UID("rs-" + name),
		OwnerReferences: ctrl("apps/v1", "Deployment", name, types.UID("deploy-"+name)),
	}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: rs.Name + "-x7k2p", UID: types.UID("11111111-2222-3333-4444-" + hash + "00000"),
			Labels:          map[string]string{"app": name, "pod-template-hash": hash},
			OwnerReferences: ctrl("apps/v1", "ReplicaSet", rs.Name, rs.UID),
		},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app"}}},
	}
	return rs, pod
}

// running sets the status of pod's containers: name → container id.
func running(pod *corev1.Pod, ids map[string]string) *corev1.Pod {
	pod = pod.DeepCopy()
	pod.Status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		if cid, ok := ids[c.Name]; ok {
			pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, ContainerID: "containerd://" + cid})
		}
	}
	return pod
}

type harness struct {
	t       *testing.T
	r       *Resolver
	client  *fake.Clientset
	changed chan struct{}
}

func newHarness(t *testing.T, client *fake.Clientset) *harness {
	t.Helper()
	h := &harness{t: t, client: client, changed: make(chan struct{}, 100)}
	r, err := Start(Options{Client: client, NodeName: node, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Changed: func() {
			select {
			case h.changed <- struct{}{}:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !r.WaitSynced(ctx) {
		t.Fatal("informer did not sync")
	}
	h.r = r
	return h
}

// until waits (informer events are asynchronous) for cond.
func (h *harness) until(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-h.changed:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			h.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (h *harness) lookup(ref Ref) (*Metadata, Result) { return h.r.Lookup(ref) }

func (h *harness) create(pod *corev1.Pod) {
	h.t.Helper()
	if _, err := h.client.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) update(pod *corev1.Pod) {
	h.t.Helper()
	if _, err := h.client.CoreV1().Pods(pod.Namespace).Update(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func TestResolverDeploymentPod(t *testing.T) {
	rs, pod := deployment("shop", "catalog", "5d8f9c7b6")
	pod.Spec.Containers = []corev1.Container{{Name: "app"}, {Name: "sidecar"}}
	pod = running(pod, map[string]string{"app": id('a'), "sidecar": id('b')})
	h := newHarness(t, fake.NewClientset(rs, pod))
	h.until("the pod", func() bool { return h.r.Stats().Containers == 2 })

	m, res := h.lookup(Ref{ContainerID: id('a'), PodUID: string(pod.UID)})
	if res != Found {
		t.Fatalf("Lookup: %v", res)
	}
	want := []span.Attr{
		{Key: "k8s.namespace.name", Value: "shop"},
		{Key: "k8s.pod.name", Value: pod.Name},
		{Key: "k8s.pod.uid", Value: string(pod.UID)},
		{Key: "k8s.container.name", Value: "app"},
		{Key: "container.id", Value: id('a')},
		{Key: "k8s.node.name", Value: node},
		{Key: "k8s.deployment.name", Value: "catalog"},
		{Key: "k8s.replicaset.name", Value: rs.Name},
	}
	if got := m.Resource(); !reflect.DeepEqual(got, want) {
		t.Errorf("Resource:\n%v\nwant\n%v", got, want)
	}
	if m.ServiceName != "catalog" || m.Labels["app"] != "catalog" {
		t.Errorf("service %q labels %v: want the Deployment's name and the pod's labels", m.ServiceName, m.Labels)
	}
	// The container id alone finds it too (a cgroup without the pod).
	if m, res := h.lookup(Ref{ContainerID: id('b')}); res != Found || m.Container != "sidecar" {
		t.Errorf("Lookup by id: %v %+v", res, m)
	}
	if _, res := h.lookup(Ref{ContainerID: id('c')}); res != NotInPod {
		t.Errorf("unknown id outside any pod cgroup: %v, want NotInPod", res)
	}
	if _, res := h.lookup(Ref{}); res != NotInPod {
		t.Errorf("no container: %v, want NotInPod", res)
	}
	// A second replica of the ReplicaSet costs no GET.
	_, pod2 := deployment("shop", "catalog", "5d8f9c7b6")
	pod2.Name, pod2.UID = pod2.Name+"-2", "22222222-2222-3333-4444-000000000000"
	h.create(running(pod2, map[string]string{"app": id('d')}))
	h.until("the second pod", func() bool { _, res := h.lookup(Ref{ContainerID: id('d')}); return res == Found })
	if s := h.r.Stats(); s.OwnerLookups != 1 || s.Owners != 1 {
		t.Errorf("stats %+v: want one GET, one owner cached", s)
	}

	// Deleted: its state goes; the owner stays while the other replica
	// refers to it, and goes with it.
	if err := h.client.CoreV1().Pods("shop").Delete(context.Background(), pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.until("the pod to be forgotten", func() bool { return h.r.Stats().Pods == 1 })
	if _, res := h.lookup(Ref{ContainerID: id('a'), PodUID: string(pod.UID)}); res != Pending {
		t.Errorf("deleted pod's container: %v, want Pending (its cgroup names a pod no longer known)", res)
	}
	if s := h.r.Stats(); s.Containers != 1 || s.Owners != 1 {
		t.Errorf("stats after one delete %+v: want 1 container, 1 owner", s)
	}
	if err := h.client.CoreV1().Pods("shop").Delete(context.Background(), pod2.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.until("every pod to be forgotten", func() bool { return h.r.Stats().Pods == 0 })
	if s := h.r.Stats(); s.Containers != 0 || s.Owners != 0 {
		t.Errorf("stats after deleting all %+v: want nothing cached", s)
	}
}

// A process whose pod is not known yet, or whose container the status
// does not name yet, is Pending; the informer's add or update resolves
// it and calls Changed.
func TestResolverPending(t *testing.T) {
	h := newHarness(t, fake.NewClientset())
	_, pod := deployment("shop", "cart", "7f6e5d4c3")
	pod.OwnerReferences = nil // a bare pod
	pod.Spec.Containers = []corev1.Container{{Name: "app"}, {Name: "proxy"}}
	ref := Ref{ContainerID: id('a'), PodUID: string(pod.UID)}
	if _, res := h.lookup(ref); res != Pending {
		t.Fatalf("pod not created yet: %v, want Pending", res)
	}
	h.create(pod)
	h.until("the pod", func() bool { return h.r.Stats().Pods == 1 })
	if _, res := h.lookup(ref); res != Pending {
		t.Fatalf("two containers, no status: %v, want Pending", res)
	}
	h.update(running(pod, map[string]string{"proxy": id('b')}))
	h.until("the status", func() bool { return h.r.Stats().Containers == 1 })
	if _, res := h.lookup(ref); res != Pending {
		t.Fatalf("status names the other container only: %v, want Pending", res)
	}
	h.update(running(pod, map[string]string{"proxy": id('b'), "app": id('a')}))
	h.until("the app's status", func() bool { _, res := h.lookup(ref); return res == Found })
	m, _ := h.lookup(ref)
	if m.Container != "app" || m.Workload != (Workload{}) || m.ServiceName != "" {
		t.Errorf("bare pod: %+v, want container app, no workload, no service name", m)
	}
}

// A single-container pod is known from its cgroup's pod UID alone.
func TestResolverSingleContainer(t *testing.T) {
	_, pod := deployment("shop", "cart", "7f6e5d4c3")
	h := newHarness(t, fake.NewClientset(pod))
	h.until("the pod", func() bool { return h.r.Stats().Pods == 1 })
	m, res := h.lookup(Ref{ContainerID: id('e'), PodUID: string(pod.UID)})
	if res != Found || m.Container != "app" || m.ContainerID != id('e') {
		t.Fatalf("Lookup: %v %+v", res, m)
	}
	// An init container makes it ambiguous.
	pod = pod.DeepCopy()
	pod.Spec.InitContainers = []corev1.Container{{Name: "migrate"}}
	h.update(pod)
	h.until("the update", func() bool {
		_, res := h.lookup(Ref{ContainerID: id('e'), PodUID: string(pod.UID)})
		return res == Pending
	})
}

func TestResolverStaticPod(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "kube-system", Name: "etcd-" + node, UID: "99999999-8888-7777-6666-555555555555",
			Annotations:     map[string]string{mirrorAnnotation: static},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node, UID: "node-uid"}},
		},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "etcd"}}},
	}
	h := newHarness(t, fake.NewClientset(pod))
	h.until("the pod", func() bool { return h.r.Stats().Pods == 1 })
	m, res := h.lookup(Ref{ContainerID: id('f'), PodUID: static})
	if res != Found || m.Pod != pod.Name || m.PodUID != string(pod.UID) || m.Workload != (Workload{}) {
		t.Fatalf("static pod by its config hash: %v %+v", res, m)
	}
}

func TestResolverOtherNode(t *testing.T) {
	_, pod := deployment("shop", "cart", "7f6e5d4c3")
	pod.Spec.NodeName = "node-b"
	h := newHarness(t, fake.NewClientset(running(pod, map[string]string{"app": id('a')})))
	if s := h.r.Stats(); s.Pods != 0 {
		t.Errorf("another node's pod is cached: %+v", s)
	}
	// The informer asked the server for this node's pods only.
	asked := 0
	for _, a := range h.client.Actions() {
		if a.GetVerb() != "list" && a.GetVerb() != "watch" {
			continue
		}
		asked++
		var fs string
		switch a := a.(type) {
		case k8stesting.ListActionImpl:
			fs = a.ListRestrictions.Fields.String()
		case k8stesting.WatchActionImpl:
			fs = a.WatchRestrictions.Fields.String()
		}
		if fs != "spec.nodeName="+node {
			t.Errorf("%s %s with field selector %q, want spec.nodeName=%s", a.GetVerb(), a.GetResource().Resource, fs, node)
		}
	}
	if asked == 0 {
		t.Error("the informer neither listed nor watched pods")
	}
}

func TestResolverWorkloads(t *testing.T) {
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "batch", Name: "report-29000000", UID: "job-uid",
		OwnerReferences: ctrl("batch/v1", "CronJob", "report", "cj-uid")}}
	bareJob := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "batch", Name: "once", UID: "once-uid"}}
	bareRS := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "batch", Name: "plain", UID: "plain-uid"}}
	for _, tc := range []struct {
		name  string
		owner []metav1.OwnerReference
		want  Workload
	}{
		{"cronjob", ctrl("batch/v1", "Job", job.Name, job.UID), Workload{Job: job.Name, CronJob: "report"}},
		{"job", ctrl("batch/v1", "Job", "once", "once-uid"), Workload{Job: "once"}},
		{"statefulset", ctrl("apps/v1", "StatefulSet", "db", "sts-uid"), Workload{StatefulSet: "db"}},
		{"daemonset", ctrl("apps/v1", "DaemonSet", "agent", "ds-uid"), Workload{DaemonSet: "agent"}},
		{"bare replicaset", ctrl("apps/v1", "ReplicaSet", "plain", "plain-uid"), Workload{ReplicaSet: "plain"}},
		{"replaced replicaset", ctrl("apps/v1", "ReplicaSet", "plain", "other-uid"), Workload{ReplicaSet: "plain"}},
		{"another group's kind", ctrl("argoproj.io/v1alpha1", "Rollout", "r", "ro-uid"), Workload{}},
		{"no controller", nil, Workload{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOwners(fake.NewClientset(job, bareJob, bareRS), slog.New(slog.NewTextHandler(io.Discard, nil)))
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "batch", Name: "p", OwnerReferences: tc.owner}}
			if got := o.workload(pod); got != tc.want {
				t.Errorf("workload %+v, want %+v", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		w          Workload
		kind, name string
	}{
		{Workload{Deployment: "d", ReplicaSet: "d-1"}, KindDeployment, "d"},
		{Workload{ReplicaSet: "r"}, KindReplicaSet, "r"},
		{Workload{Job: "j-1", CronJob: "j"}, KindCronJob, "j"},
		{Workload{Job: "j"}, KindJob, "j"},
		{Workload{StatefulSet: "s"}, KindStatefulSet, "s"},
		{Workload{DaemonSet: "ds"}, KindDaemonSet, "ds"},
		{Workload{}, "", ""},
	} {
		if kind, name := tc.w.Top(); kind != tc.kind || name != tc.name {
			t.Errorf("%+v.Top() = %s %s, want %s %s", tc.w, kind, name, tc.kind, tc.name)
		}
	}
}

// Without get on replicasets, the Deployment is named from the
// ReplicaSet's name and the pod-template-hash label, and the failure is
// remembered: not one GET per pod.
func TestResolverOwnerForbidden(t *testing.T) {
	rs, pod := deployment("shop", "catalog", "5d8f9c7b6")
	client := fake.NewClientset(rs)
	client.PrependReactor("get", "replicasets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "replicasets"}, rs.Name, nil)
	})
	o := newOwners(client, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for range 3 {
		if w := o.workload(pod); w != (Workload{Deployment: "catalog", ReplicaSet: rs.Name}) {
			t.Errorf("workload %+v, want the Deployment derived from the ReplicaSet's name", w)
		}
	}
	if l, f := o.lookups.Load(), o.failures.Load(); l != 1 || f != 1 {
		t.Errorf("%d lookups, %d failed: want one failed GET remembered", l, f)
	}
	// Without the label, nothing is derived.
	delete(pod.Labels, "pod-template-hash")
	o = newOwners(client, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if w := o.workload(pod); w != (Workload{ReplicaSet: rs.Name}) {
		t.Errorf("workload %+v, want the ReplicaSet only", w)
	}
}

func TestServiceName(t *testing.T) {
	env := func(vs ...corev1.EnvVar) *corev1.Container { return &corev1.Container{Name: "app", Env: vs} }
	lit := func(v string) corev1.EnvVar { return corev1.EnvVar{Name: "OTEL_SERVICE_NAME", Value: v} }
	labelled := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app.kubernetes.io/name": "label-name"}}}
	bare := &corev1.Pod{}
	deploy := Workload{Deployment: "deploy-name", ReplicaSet: "deploy-name-1"}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		c    *corev1.Container
		w    Workload
		want string
	}{
		{"env value first", labelled, env(lit("env-name")), deploy, "env-name"},
		{"last env entry wins", labelled, env(lit("first"), lit("second")), deploy, "second"},
		{"env from a ConfigMap: the process's own", labelled, env(corev1.EnvVar{Name: "OTEL_SERVICE_NAME", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{Key: "k"}}}), deploy, ""},
		{"env with a reference: the process's own", labelled, env(lit("$(POD_NAME)")), deploy, ""},
		{"empty env value: the label", labelled, env(lit("")), deploy, "label-name"},
		{"other env: the label", labelled, env(corev1.EnvVar{Name: "OTEL_RESOURCE_ATTRIBUTES", Value: "a=b"}), deploy, "label-name"},
		{"label", labelled, env(), deploy, "label-name"},
		{"workload", bare, env(), deploy, "deploy-name"},
		{"cronjob", bare, env(), Workload{Job: "j-1", CronJob: "j"}, "j"},
		{"nothing", bare, env(), Workload{}, ""},
		{"no container", labelled, nil, deploy, "label-name"},
	} {
		if got := ServiceName(tc.pod, tc.c, tc.w); got != tc.want {
			t.Errorf("%s: ServiceName = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestTrim(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		Annotations:   map[string]string{lastApplied: "{…}", "latscope.io/trace": "true"},
	}}
	shared := pod.Annotations
	if _, err := trim(pod); err != nil {
		t.Fatal(err)
	}
	if pod.ManagedFields != nil || !reflect.DeepEqual(pod.Annotations, map[string]string{"latscope.io/trace": "true"}) {
		t.Errorf("trimmed pod: managed fields %v, annotations %v", pod.ManagedFields, pod.Annotations)
	}
	if len(shared) != 2 {
		t.Error("trim changed the annotations map it was given")
	}
}
