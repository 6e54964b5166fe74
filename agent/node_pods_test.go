package agent

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/latscope/latscope/agent/config"
	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/agent/pods"
	"github.com/latscope/latscope/internal/fixture"
)

// Tier 3 for pod metadata: real fixture processes started in cgroups
// shaped like kubelet's (containerd and CRI-O, systemd and cgroupfs
// drivers) under the host's cgroup v2 hierarchy, the matching API objects
// served by client-go's fake clientset, a real node.

const testNodeName = "node-under-test"

// fakeContainer is a kubelet-shaped cgroup for one container of a pod.
type fakeContainer struct {
	id   string // 64 hex digits
	dir  string // the container's cgroup directory
	path string // its path in the hierarchy, as /proc/PID/cgroup says
}

// cgroupShape builds a container's cgroup path under top from the pod's
// UID and the container's id, as a runtime and cgroup driver name it.
type cgroupShape func(uid, id string) string

var (
	containerdSystemd cgroupShape = func(uid, id string) string {
		u := strings.ReplaceAll(uid, "-", "_")
		return "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice/cri-containerd-" + id + ".scope"
	}
	crioSystemd cgroupShape = func(uid, id string) string {
		u := strings.ReplaceAll(uid, "-", "_")
		return "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + u + ".slice/crio-" + id + ".scope"
	}
	containerdCgroupfs cgroupShape = func(uid, id string) string {
		return "kubepods/pod" + uid + "/" + id // guaranteed QoS
	}
	crioCgroupfs cgroupShape = func(uid, id string) string {
		return "kubepods/burstable/pod" + uid + "/crio-" + id
	}
)

// cgroups creates the test's kubelet-shaped cgroups under one directory
// of the hierarchy, and removes them all when the test ends, whatever
// happened: processes still in them are moved to the hierarchy's root,
// then the directories go, deepest first.
type cgroups struct {
	t    *testing.T
	root string // the hierarchy's mount point
	top  string // the test's directory in it
}

func newCgroups(t *testing.T) *cgroups {
	t.Helper()
	fixture.RequireRoot(t)
	root, err := cgroup2Root()
	if err != nil {
		msg := "the pod tests create kubelet-shaped cgroups in the cgroup v2 hierarchy: " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true: " + msg)
		}
		t.Skip(msg)
	}
	top := filepath.Join(root, fmt.Sprintf("latscope-test-%d-%s", os.Getpid(), randomHex(4)))
	if err := os.Mkdir(top, 0o755); err != nil {
		t.Fatalf("create a cgroup: %v", err)
	}
	cg := &cgroups{t: t, root: root, top: top}
	t.Cleanup(cg.remove)
	return cg
}

// container creates the cgroup of a container of pod uid, in shape.
func (cg *cgroups) container(uid string, shape cgroupShape) fakeContainer {
	cg.t.Helper()
	id := randomHex(32)
	dir := filepath.Join(cg.top, shape(uid, id))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		cg.t.Fatalf("create a cgroup: %v", err)
	}
	return fakeContainer{id: id, dir: dir, path: strings.TrimPrefix(dir, cg.root)}
}

func (cg *cgroups) remove() {
	var dirs []string
	filepath.WalkDir(cg.top, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	slices.Reverse(dirs) // children first
	for _, dir := range dirs {
		if procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, pid := range strings.Fields(string(procs)) {
				os.WriteFile(filepath.Join(cg.root, "cgroup.procs"), []byte(pid), 0)
			}
		}
		var err error
		for range 100 { // a process just killed may take a moment to leave
			if err = syscall.Rmdir(dir); err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			cg.t.Errorf("remove cgroup %s: %v", dir, err)
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func randomUID() string {
	h := randomHex(16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// startIn runs the service binary bin in container c's cgroup from its
// first instruction (clone3 CLONE_INTO_CGROUP): its exec is seen there.
// A zero c starts it in the test's own cgroup.
func startIn(t *testing.T, c fakeContainer, bin string) *service {
	t.Helper()
	cmd := exec.Command(bin)
	if c.dir != "" {
		dir, err := os.Open(c.dir)
		if err != nil {
			t.Fatal(err)
		}
		defer dir.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s in cgroup %s: %v", bin, c.path, err)
	}
	s := &service{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("%s did not start: %v", bin, err)
	}
	s.addr = strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	if c.dir != "" {
		cgroup, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", s.pid()))
		if err != nil || pods.ParseCgroup(string(cgroup)).ContainerID != c.id {
			t.Fatalf("pid %d is not in cgroup %s: %q %v", s.pid(), c.path, cgroup, err)
		}
	}
	return s
}

// testPodNode runs a node whose pod metadata comes from client.
func testPodNode(t *testing.T, client *fake.Clientset, mutate func(*config.Config)) *Node {
	t.Helper()
	n := testNodeWith(t, NodeOptions{Kubernetes: client}, func(c *config.Config) {
		c.Kubernetes.NodeName = testNodeName
		if mutate != nil {
			mutate(c)
		}
	})
	if n.pods == nil {
		t.Fatal("the node did not start its pod resolver")
	}
	return n
}

// podSpec describes a fake pod.
type podSpec struct {
	ns, name    string
	labels      map[string]string
	annotations map[string]string
	containers  []corev1.Container // default: one named "app"
	owner       []metav1.OwnerReference
}

// pod builds the Pod object of spec with UID uid, on the node, with
// running containers named → id in its status.
func (s podSpec) pod(uid string, running map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name, UID: types.UID(uid), Labels: s.labels, Annotations: s.annotations, OwnerReferences: s.owner},
		Spec:       corev1.PodSpec{NodeName: testNodeName, Containers: s.containers},
	}
	if len(p.Spec.Containers) == 0 {
		p.Spec.Containers = []corev1.Container{{Name: "app"}}
	}
	for _, c := range p.Spec.Containers {
		if id, ok := running[c.Name]; ok {
			p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, ContainerID: "containerd://" + id, Ready: true})
		}
	}
	return p
}

func controller(apiVersion, kind, name string) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID("uid-" + kind + "-" + name), Controller: &yes}}
}

// processTags are the Jaeger process tags of service's stored spans.
func processTags(t *testing.T, n *Node, service string) map[string]any {
	t.Helper()
	var tr struct {
		Data []struct {
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
				Tags        []struct {
					Key   string `json:"key"`
					Value any    `json:"value"`
				} `json:"tags"`
			} `json:"processes"`
		} `json:"data"`
	}
	apiGet(t, n, "/api/traces?limit=1&service="+url.QueryEscape(service), &tr)
	for _, trace := range tr.Data {
		for _, p := range trace.Processes {
			if p.ServiceName != service {
				continue
			}
			tags := map[string]any{}
			for _, kv := range p.Tags {
				tags[kv.Key] = kv.Value
			}
			return tags
		}
	}
	t.Fatalf("no trace of service %q", service)
	return nil
}

// Every span of a process in a pod carries the pod's metadata as process
// resource attributes, and service.name follows the pod's declarations:
// four pods, one per runtime and cgroup driver, each with another rule.
// The RED metrics carry the namespace and workload; a tag search finds
// the spans by them; a deleted pod's state is freed.
func TestNodePodMetadata(t *testing.T) {
	cg := newCgroups(t)
	dir := t.TempDir()
	svc := copyBinary(t, fixture.Build(t, "service", "local", fixture.Default), dir, "svc")

	type testPod struct {
		spec    podSpec
		shape   cgroupShape
		service string         // service.name expected
		want    map[string]any // workload attributes expected
	}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "catalog-5d8f9c7b6", UID: "uid-ReplicaSet-catalog-5d8f9c7b6",
		OwnerReferences: controller("apps/v1", "Deployment", "catalog")}}
	tests := []testPod{
		{podSpec{ns: "shop", name: "catalog-5d8f9c7b6-x7k2p", labels: map[string]string{"app.kubernetes.io/name": "not-this", "pod-template-hash": "5d8f9c7b6"},
			containers: []corev1.Container{{Name: "app", Env: []corev1.EnvVar{{Name: "OTEL_SERVICE_NAME", Value: "catalog-api"}}}, {Name: "proxy"}},
			owner:      controller("apps/v1", "ReplicaSet", rs.Name)},
			containerdSystemd, "catalog-api", map[string]any{"k8s.deployment.name": "catalog", "k8s.replicaset.name": rs.Name}},
		{podSpec{ns: "shop", name: "ledger-0", labels: map[string]string{"app.kubernetes.io/name": "ledger-api"}, owner: controller("apps/v1", "StatefulSet", "ledger")},
			crioCgroupfs, "ledger-api", map[string]any{"k8s.statefulset.name": "ledger"}},
		{podSpec{ns: "shop", name: "collector-zx9v2", owner: controller("apps/v1", "DaemonSet", "collector")},
			containerdCgroupfs, "collector", map[string]any{"k8s.daemonset.name": "collector"}},
		{podSpec{ns: "shop", name: "scratch"}, crioSystemd, "svc", map[string]any{}},
	}
	objects := []runtime.Object{rs}
	type started struct {
		testPod
		uid string
		c   fakeContainer
		pod *corev1.Pod
	}
	var all []started
	for _, tp := range tests {
		s := started{testPod: tp, uid: randomUID()}
		s.c = cg.container(s.uid, tp.shape)
		s.pod = tp.spec.pod(s.uid, map[string]string{"app": s.c.id, "proxy": randomHex(32)})
		objects = append(objects, s.pod)
		all = append(all, s)
	}
	client := fake.NewClientset(objects...)
	n := testPodNode(t, client, func(c *config.Config) {
		c.Selectors = []discovery.Selector{{Namespace: "shop", Exe: dir + "/*"}}
	})

	for _, s := range all {
		p := startIn(t, s.c, svc)
		waitFor(t, 5*time.Second, fmt.Sprintf("pod %s's process to be traced", s.spec.name), func() bool { return n.traced(p.pid()) != nil })
		if np := n.traced(p.pid()); np.execToAttached <= 0 {
			t.Errorf("pod %s: found by a scan, want at its exec", s.spec.name)
		}
		if got := p.get(t, "/hello/pod"); got != "hello POD\n" {
			t.Fatalf("answered %q", got)
		}
		waitFor(t, 5*time.Second, "a span of service "+s.service, func() bool { return serverSpans(t, n, s.service, "/hello/pod") >= 1 })
		tags := processTags(t, n, s.service)
		want := map[string]any{
			"k8s.namespace.name": "shop", "k8s.pod.name": s.spec.name, "k8s.pod.uid": s.uid,
			"k8s.container.name": "app", "container.id": s.c.id, "k8s.node.name": testNodeName,
		}
		for k, v := range s.want {
			want[k] = v
		}
		for k, v := range want {
			if tags[k] != v {
				t.Errorf("pod %s: process tag %s = %v, want %v", s.spec.name, k, tags[k], v)
			}
		}
		for _, k := range []string{"k8s.deployment.name", "k8s.replicaset.name", "k8s.statefulset.name", "k8s.daemonset.name", "k8s.job.name", "k8s.cronjob.name"} {
			if _, ok := want[k]; !ok && tags[k] != nil {
				t.Errorf("pod %s: process tag %s = %v, want none", s.spec.name, k, tags[k])
			}
		}
	}

	// /api/status names each process's pod.
	var st Status
	apiGet(t, n, "/api/status", &st)
	inPods := map[string]string{}
	for _, p := range st.Processes {
		if p.Pod != nil {
			inPods[p.Pod.Pod] = p.Pod.Namespace + "/" + p.Pod.Container + "/" + p.Service
		}
	}
	if want := map[string]string{"catalog-5d8f9c7b6-x7k2p": "shop/app/catalog-api", "ledger-0": "shop/app/ledger-api", "collector-zx9v2": "shop/app/collector", "scratch": "shop/app/svc"}; !maps.Equal(inPods, want) {
		t.Errorf("status pods %v, want %v", inPods, want)
	}
	if st.Kubernetes == nil || st.Kubernetes.Pods != 4 || !st.Kubernetes.Synced {
		t.Errorf("status kubernetes %+v, want 4 pods, synced", st.Kubernetes)
	}

	// RED metrics: labelled by namespace and workload.
	metricsText := httpText(t, "http://"+n.Addr()+"/metrics")
	for _, want := range []string{
		`k8s_namespace_name="shop",k8s_workload_kind="Deployment",k8s_workload_name="catalog"`,
		`k8s_namespace_name="shop",k8s_workload_kind="StatefulSet",k8s_workload_name="ledger"`,
	} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("/metrics has no series with %s", want)
		}
	}
	// The store finds spans by their pod's attributes.
	var found jaegerTraces
	apiGet(t, n, "/api/traces?limit=0&tags="+url.QueryEscape(`{"k8s.deployment.name":"catalog","k8s.namespace.name":"shop"}`), &found)
	if len(found.Data) != 1 {
		t.Errorf("tag search by deployment: %d traces, want 1", len(found.Data))
	}

	// A deleted pod's state is freed; the ReplicaSet it alone referred
	// to is forgotten with it.
	if n.pods.Stats().Owners != 1 {
		t.Errorf("owners cached %d, want the catalog ReplicaSet", n.pods.Stats().Owners)
	}
	if err := client.CoreV1().Pods("shop").Delete(context.Background(), all[0].spec.name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the deleted pod to be forgotten", func() bool { return n.pods.Stats().Pods == 3 })
	if _, res := n.pods.Lookup(pods.Ref{ContainerID: all[0].c.id, PodUID: all[0].uid}); res != pods.Pending {
		t.Errorf("deleted pod's container: %v, want no longer known", res)
	}
	if s := n.pods.Stats(); s.Owners != 0 || s.Containers != 3 {
		t.Errorf("after the delete: %+v, want no owner and the other pods' 3 containers", s)
	}
}

func httpText(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Namespace, label and annotation selectors pick exactly the expected
// processes among real ones in several fake pods and one on the host.
func TestNodePodSelectors(t *testing.T) {
	cg := newCgroups(t)
	dir := t.TempDir()
	svc := copyBinary(t, fixture.Build(t, "service", "local", fixture.Default), dir, "svc")
	host := copyBinary(t, svc, dir, "svc-host")

	cases := []struct {
		spec   podSpec
		traced bool
	}{
		{podSpec{ns: "shop", name: "backend", labels: map[string]string{"tier": "backend"}}, true},
		{podSpec{ns: "shop", name: "frontend", labels: map[string]string{"tier": "frontend"}}, false},
		{podSpec{ns: "elsewhere", name: "opted-in", annotations: map[string]string{discovery.TraceAnnotation: "true"}}, true},
		{podSpec{ns: "shop", name: "opted-out", labels: map[string]string{"tier": "backend"}, annotations: map[string]string{discovery.TraceAnnotation: "false"}}, false},
		{podSpec{ns: "kube-system", name: "system", labels: map[string]string{"tier": "backend"}}, false},
		{podSpec{ns: "kube-public", name: "public"}, true},
		{podSpec{ns: "shop", name: "canary", labels: map[string]string{"tier": "backend", "canary": "true"}}, false},
		{podSpec{ns: "shop", name: "multi", labels: map[string]string{"tier": "web"}, containers: []corev1.Container{{Name: "app"}, {Name: "edge"}}}, true},
	}
	var objects []runtime.Object
	containers := make([]fakeContainer, len(cases))
	for i, tc := range cases {
		uid := randomUID()
		containers[i] = cg.container(uid, []cgroupShape{containerdSystemd, crioSystemd, containerdCgroupfs, crioCgroupfs}[i%4])
		running := map[string]string{"app": containers[i].id}
		if tc.spec.name == "multi" {
			running = map[string]string{"app": randomHex(32), "edge": containers[i].id}
		}
		objects = append(objects, tc.spec.pod(uid, running))
	}
	n := testPodNode(t, fake.NewClientset(objects...), func(c *config.Config) {
		c.Selectors = []discovery.Selector{
			{Namespace: "shop", PodSelector: "tier=backend"},
			{Namespace: "kube-*"},
			{PodSelector: "tier in (web)", Container: "ed*"},
			{Name: "svc-host"},
			{Namespace: "*", Exe: host}, // never matches the host process: it is in no pod
		}
		c.Exclude = []discovery.Selector{{Namespace: "kube-system"}, {PodSelector: "canary=true"}}
	})

	procs := make([]*service, len(cases))
	for i := range cases {
		procs[i] = startIn(t, containers[i], svc)
	}
	onHost := startIn(t, fakeContainer{}, host)
	onHostNotPicked := startIn(t, fakeContainer{}, svc) // no pod, no selector

	for i, tc := range cases {
		p := procs[i]
		if tc.traced {
			waitFor(t, 5*time.Second, fmt.Sprintf("pod %s to be traced", tc.spec.name), func() bool { return n.traced(p.pid()) != nil })
		}
	}
	waitFor(t, 5*time.Second, "the host process to be traced", func() bool { return n.traced(onHost.pid()) != nil })
	if np := n.traced(onHost.pid()); np.pod != nil {
		t.Errorf("host process has pod %+v", np.pod)
	}
	// Every process has been considered: the others were not picked.
	for i, tc := range cases {
		p := procs[i]
		waitFor(t, 5*time.Second, fmt.Sprintf("pod %s to be considered", tc.spec.name), func() bool { return n.considered(p.pid()) })
		if got := n.traced(p.pid()) != nil; got != tc.traced {
			t.Errorf("pod %s/%s: traced %v, want %v", tc.spec.ns, tc.spec.name, got, tc.traced)
		}
	}
	waitFor(t, 5*time.Second, "the other host process to be considered", func() bool { return n.considered(onHostNotPicked.pid()) })
	if n.traced(onHostNotPicked.pid()) != nil {
		t.Error("a host process no selector picks is traced")
	}
	if np := n.traced(procs[7].pid()); np == nil || np.pod.Container != "edge" {
		t.Errorf("multi-container pod: traced %+v, want its edge container", np)
	}
}

// considered reports whether pid was looked at and is not waiting for
// its pod.
func (n *Node) considered(pid int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, evaluated := n.procs.evaluated[pid]
	_, waiting := n.procs.podWaiting[pid]
	return evaluated && !waiting
}

func (n *Node) waitingForPod(pid int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, waiting := n.procs.podWaiting[pid]
	return waiting
}

// A process whose pod the informer does not have at its exec, or whose
// container the pod's status does not name yet, waits and is traced
// when the informer reports it — not at a rescan; one whose pod never
// comes is traced without metadata after podWait, and counted.
func TestNodePodLateMetadata(t *testing.T) {
	cg := newCgroups(t)
	dir := t.TempDir()
	svc := copyBinary(t, fixture.Build(t, "service", "local", fixture.Default), dir, "svc-late")
	lost := copyBinary(t, svc, dir, "svc-lost")
	defer func(w time.Duration) { podWait = w }(podWait)
	podWait = 2 * time.Second

	client := fake.NewClientset()
	n := testPodNode(t, client, func(c *config.Config) {
		c.Selectors = []discovery.Selector{{Namespace: "late"}, {Name: "svc-lost"}}
		c.RescanInterval = time.Hour // only exec events and pod events can find them
	})
	create := func(p *corev1.Pod) {
		if _, err := client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// 1. The pod is not in the informer at the process's exec.
	uid := randomUID()
	c := cg.container(uid, containerdSystemd)
	before := startIn(t, c, svc)
	waitFor(t, 5*time.Second, "the process to wait for its pod", func() bool { return n.waitingForPod(before.pid()) })
	create(podSpec{ns: "late", name: "created-after"}.pod(uid, nil)) // single container: known from its cgroup
	waitFor(t, 5*time.Second, "the process to be traced once its pod is known", func() bool { return n.traced(before.pid()) != nil })
	if np := n.traced(before.pid()); np.execToAttached <= 0 || np.pod.Pod != "created-after" || np.pod.ContainerID != c.id {
		t.Errorf("traced %+v after %v: want its pod, from its exec", np.pod, np.execToAttached)
	}
	before.get(t, "/hello/late")
	waitFor(t, 5*time.Second, "its first request's span", func() bool { return serverSpans(t, n, "svc-late", "/hello/late") == 1 })

	// 2. The pod is known but its status does not name the container.
	uid = randomUID()
	c = cg.container(uid, crioCgroupfs)
	spec := podSpec{ns: "late", name: "two-containers", containers: []corev1.Container{{Name: "init-like"}, {Name: "app"}}}
	create(spec.pod(uid, nil))
	waitFor(t, 5*time.Second, "the pod in the informer", func() bool { return n.pods.Stats().Pods == 2 })
	unnamed := startIn(t, c, svc)
	waitFor(t, 5*time.Second, "the process to wait for its container", func() bool { return n.waitingForPod(unnamed.pid()) })
	if _, err := client.CoreV1().Pods("late").Update(context.Background(), spec.pod(uid, map[string]string{"app": c.id}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the process to be traced once its container is named", func() bool { return n.traced(unnamed.pid()) != nil })
	if np := n.traced(unnamed.pid()); np.execToAttached <= 0 || np.pod.Container != "app" {
		t.Errorf("traced %+v after %v: want container app, from its exec", np.pod, np.execToAttached)
	}

	// 3. The pod never comes: after podWait, matched without metadata.
	c = cg.container(randomUID(), containerdCgroupfs)
	never := startIn(t, c, lost)
	waitFor(t, 5*time.Second, "the process to wait for its pod", func() bool { return n.waitingForPod(never.pid()) })
	waitFor(t, 3*podWait, "the node to give up waiting", func() bool { return n.traced(never.pid()) != nil })
	if np := n.traced(never.pid()); np.pod != nil || np.Info.Resource != nil {
		t.Errorf("traced with pod %+v, resource %v: want none", np.pod, np.Info.Resource)
	}
	var unresolved uint64
	for _, c := range n.snapshot().Counters {
		if c.Name == "k8s_pod_unresolved" {
			unresolved = c.Value
		}
	}
	if unresolved != 1 {
		t.Errorf("k8s_pod_unresolved = %d, want 1", unresolved)
	}
}

// Outside Kubernetes (auto, no service environment, no kubeconfig) no
// resolver starts; false turns it off even with a client.
func TestNodePodsOff(t *testing.T) {
	fixture.RequireRoot(t)
	t.Setenv(pods.EnvServiceHost, "")
	t.Setenv(pods.EnvServicePort, "")
	for _, tc := range []struct {
		name    string
		enabled config.Switch
		client  bool
	}{{"auto outside a cluster", config.Auto, false}, {"false with a client", config.Off, true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.HTTP = "127.0.0.1:0"
			cfg.Kubernetes.Enabled = tc.enabled
			opts := NodeOptions{Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
			if tc.client {
				opts.Kubernetes = fake.NewClientset()
			}
			n, err := StartNodeWith(cfg, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer n.closeAll()
			if n.pods != nil {
				t.Error("pod resolver started")
			}
			if st := n.Status(); st.Kubernetes != nil {
				t.Errorf("status has kubernetes %+v", st.Kubernetes)
			}
		})
	}
	// Asked for, and impossible: an error that says what to do.
	cfg := config.Default()
	cfg.HTTP = "127.0.0.1:0"
	cfg.Kubernetes.Enabled = config.On
	t.Setenv(pods.EnvNodeName, "")
	_, err := StartNodeWith(cfg, NodeOptions{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Kubernetes: fake.NewClientset()})
	if err == nil || !strings.Contains(err.Error(), "--node-name") {
		t.Errorf("enabled without a node name: %v, want an error naming --node-name", err)
	}
}
