package deploy

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/latscope/latscope/deploy/manifest"
)

// wantCapabilities is the chart's exact capability set; each one's
// purpose is proven in capabilities_test.go.
var wantCapabilities = []string{"BPF", "PERFMON", "SYS_PTRACE", "NET_ADMIN", "DAC_READ_SEARCH"}

// pod is what checkAgentPod expects of a render.
type pod struct {
	port     int
	storeMiB int64
	memMiB   int64  // memory request and limit
	cgroup   string // host path of the cgroup v2 mount; "" = none
}

// checkAgentPod checks what must hold of every render: the security
// posture, probes, resources, the downward API and the mounts.
func checkAgentPod(t *testing.T, o *objects, want pod) {
	t.Helper()
	ds := o.daemonSet
	c := agentContainer(t, ds)
	spec := ds.Spec.Template.Spec
	if !spec.HostPID {
		t.Error("hostPID is not set: the agent must see the node's processes")
	}
	if spec.HostNetwork || spec.HostIPC {
		t.Errorf("hostNetwork=%v hostIPC=%v: the agent needs neither", spec.HostNetwork, spec.HostIPC)
	}

	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("the agent container has no securityContext.capabilities")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("the agent container is privileged")
	}
	if got := capNames(sc.Capabilities.Add); !reflect.DeepEqual(got, wantCapabilities) {
		t.Errorf("capabilities.add = %v, want exactly %v", got, wantCapabilities)
	}
	if got := capNames(sc.Capabilities.Drop); !reflect.DeepEqual(got, []string{"ALL"}) {
		t.Errorf("capabilities.drop = %v, want [ALL]", got)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}

	var http *corev1.ContainerPort
	for i := range c.Ports {
		if c.Ports[i].Name == "http" {
			http = &c.Ports[i]
		}
	}
	if http == nil || int(http.ContainerPort) != want.port {
		t.Errorf("container port http = %+v, want %d", http, want.port)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: none, want GET %s on port http", p.name, p.path)
			continue
		}
		if g := p.probe.HTTPGet; g.Path != p.path || g.Port != intstr.FromString("http") {
			t.Errorf("%s probe: GET %s on %s, want %s on http", p.name, g.Path, g.Port.String(), p.path)
		}
	}

	for _, r := range []struct {
		name string
		list corev1.ResourceList
	}{{"requests", c.Resources.Requests}, {"limits", c.Resources.Limits}} {
		mem, ok := r.list[corev1.ResourceMemory]
		if !ok || mem.Value() != want.memMiB<<20 {
			t.Errorf("resources.%s.memory = %v, want %dMi (store %dMiB + overhead)", r.name, mem.String(), want.memMiB, want.storeMiB)
		}
		if _, ok := r.list[corev1.ResourceCPU]; !ok {
			t.Errorf("resources.%s.cpu is not set", r.name)
		}
	}

	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e := env["NODE_NAME"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME = %+v, want the downward API's spec.nodeName", e)
	}
	if e := env["GOMEMLIMIT"]; e.Value == "" {
		t.Error("GOMEMLIMIT is not set")
	}

	if len(c.Args) == 0 || c.Args[0] != "--config=/etc/latscope/agent.yaml" {
		t.Errorf("args = %v, want --config=/etc/latscope/agent.yaml first", c.Args)
	}
	if ds.Spec.Template.Annotations["checksum/config"] == "" {
		t.Error("the pod template has no checksum/config annotation")
	}

	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	var hostPaths []string
	for _, v := range spec.Volumes {
		m, ok := mounts[v.Name]
		if !ok {
			t.Errorf("volume %s is not mounted", v.Name)
			continue
		}
		switch {
		case v.ConfigMap != nil:
			if v.ConfigMap.Name != o.configMap.Name || m.MountPath != "/etc/latscope" {
				t.Errorf("config volume: ConfigMap %s at %s, want %s at /etc/latscope", v.ConfigMap.Name, m.MountPath, o.configMap.Name)
			}
		case v.HostPath != nil:
			hostPaths = append(hostPaths, v.HostPath.Path+" at "+m.MountPath)
			if !m.ReadOnly {
				t.Errorf("host path %s is mounted writable", v.HostPath.Path)
			}
		default:
			t.Errorf("volume %s: unexpected source %+v", v.Name, v.VolumeSource)
		}
	}
	var wantHost []string
	if want.cgroup != "" {
		wantHost = []string{want.cgroup + " at /sys/fs/cgroup"}
	}
	if !reflect.DeepEqual(hostPaths, wantHost) {
		t.Errorf("host paths %v, want %v", hostPaths, wantHost)
	}

	eff := printConfig(t, o.configMap)
	if got, want := eff["http"], fmt.Sprintf("0.0.0.0:%d", want.port); got != want {
		t.Errorf("the agent's http = %v, want %s (probes and port-forward connect to the pod, not its loopback)", got, want)
	}
	if got, want := fmt.Sprint(eff["store"].(map[string]any)["size"]), fmt.Sprintf("%dMiB", want.storeMiB); got != want {
		t.Errorf("the agent's store.size = %s, want %s", got, want)
	}
}

// capNames returns capability names as strings, in their order.
func capNames(caps []corev1.Capability) []string {
	out := []string{}
	for _, c := range caps {
		out = append(out, string(c))
	}
	return out
}

// rules flattens a ClusterRole to "group/resource" → sorted verbs.
func rules(o *objects) map[string][]string {
	out := map[string][]string{}
	for _, r := range o.clusterRole.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				k := res
				if g != "" {
					k = g + "/" + res
				}
				out[k] = append(out[k], r.Verbs...)
				sort.Strings(out[k])
			}
		}
	}
	return out
}

func TestChartDefaults(t *testing.T) {
	o, _ := render(t, "")
	if want := []string{"ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "DaemonSet"}; !reflect.DeepEqual(o.kinds, want) {
		t.Errorf("kinds %v, want %v", o.kinds, want)
	}
	checkAgentPod(t, o, pod{port: 7070, storeMiB: 128, memMiB: 320, cgroup: "/sys/fs/cgroup"})

	spec := o.daemonSet.Spec.Template.Spec
	if want := []corev1.Toleration{{Operator: corev1.TolerationOpExists}}; !reflect.DeepEqual(spec.Tolerations, want) {
		t.Errorf("tolerations %+v, want %+v (every node)", spec.Tolerations, want)
	}
	if spec.ServiceAccountName != o.serviceAccount.Name {
		t.Errorf("pod service account %q, want %q", spec.ServiceAccountName, o.serviceAccount.Name)
	}

	wantRules := map[string][]string{
		"pods":             {"get", "list", "watch"},
		"apps/replicasets": {"get"},
		"batch/jobs":       {"get"},
	}
	if got := rules(o); !reflect.DeepEqual(got, wantRules) {
		t.Errorf("ClusterRole grants %v, want %v", got, wantRules)
	}
	b := o.clusterRoleBinding
	if b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != o.clusterRole.Name || len(b.Subjects) != 1 ||
		b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != o.serviceAccount.Name || b.Subjects[0].Namespace != manifest.Release {
		t.Errorf("ClusterRoleBinding %+v does not bind %s to service account %s/%s", b, o.clusterRole.Name, manifest.Release, o.serviceAccount.Name)
	}
}

// TestChartRBACReadOnly holds for every render: whatever rules a values
// file gives, the chart's defaults only ever read.
func TestChartRBACReadOnly(t *testing.T) {
	for _, file := range []string{"", "testdata/all-values.yaml"} {
		o, _ := render(t, file)
		for res, verbs := range rules(o) {
			for _, v := range verbs {
				if v != "get" && v != "list" && v != "watch" {
					t.Errorf("%s: ClusterRole grants %s on %s; only get, list and watch", file, v, res)
				}
			}
		}
	}
}

func TestChartAllValues(t *testing.T) {
	o, _ := render(t, "testdata/all-values.yaml")
	if want := []string{"ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "Service", "DaemonSet", "ServiceMonitor"}; !reflect.DeepEqual(o.kinds, want) {
		t.Errorf("kinds %v, want %v", o.kinds, want)
	}
	// 512MiB store + 96MiB overhead.
	checkAgentPod(t, o, pod{port: 9090, storeMiB: 512, memMiB: 608, cgroup: "/sys/fs/cgroup/unified"})

	ds := o.daemonSet
	c := agentContainer(t, ds)
	spec := ds.Spec.Template.Spec
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", what, got, want)
		}
	}
	check("name", ds.Name, "node-tracer")
	check("image", c.Image, "registry.example.com/obs/latscope:9.9.9")
	check("imagePullPolicy", c.ImagePullPolicy, corev1.PullAlways)
	check("imagePullSecrets", spec.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "registry-pull"}})
	check("selector label", ds.Spec.Selector.MatchLabels["app.kubernetes.io/name"], "tracer")
	check("service account", [2]string{spec.ServiceAccountName, o.serviceAccount.Name}, [2]string{"tracer-sa", "tracer-sa"})
	check("service account annotations", o.serviceAccount.Annotations, map[string]string{"example.com/owner": "sre"})
	check("rules", rules(o), map[string][]string{"pods": {"get", "list", "watch"}})
	check("args", c.Args, []string{"--config=/etc/latscope/agent.yaml", "--log-level=warn"})
	check("OTEL_EXPORTER_OTLP_ENDPOINT", env["OTEL_EXPORTER_OTLP_ENDPOINT"].Value, "http://otel-collector.observability:4318")
	check("OTEL_EXPORTER_OTLP_PROTOCOL", env["OTEL_EXPORTER_OTLP_PROTOCOL"].Value, "http/protobuf")
	check("OTEL_EXPORTER_OTLP_HEADERS", env["OTEL_EXPORTER_OTLP_HEADERS"], corev1.EnvVar{Name: "OTEL_EXPORTER_OTLP_HEADERS", ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "otlp-auth"}, Key: "otlp-headers"}}})
	check("OTEL_EXPORTER_OTLP_TIMEOUT", env["OTEL_EXPORTER_OTLP_TIMEOUT"].Value, "5000")
	check("GOMEMLIMIT", env["GOMEMLIMIT"].Value, "560MiB") // 608 - 96/2
	check("cpu request", c.Resources.Requests.Cpu().String(), "200m")
	check("cpu limit", c.Resources.Limits.Cpu().String(), "2")
	check("seccompProfile", string(c.SecurityContext.SeccompProfile.Type), "RuntimeDefault")
	check("appArmorProfile", string(c.SecurityContext.AppArmorProfile.Type), "RuntimeDefault")
	check("tolerations", spec.Tolerations, []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "tracing", Effect: corev1.TaintEffectNoSchedule}})
	// Helm merges maps into the defaults: kubernetes.io/os stays unless set to null.
	check("nodeSelector", spec.NodeSelector, map[string]string{"kubernetes.io/os": "linux", "node-role.example.com/traced": "true"})
	check("affinity set", spec.Affinity != nil && spec.Affinity.NodeAffinity != nil, true)
	check("priorityClassName", spec.PriorityClassName, "system-node-critical")
	check("pod annotation", ds.Spec.Template.Annotations["example.com/team"], "sre")
	check("pod label", ds.Spec.Template.Labels["example.com/tier"], "observability")
	check("updateStrategy", string(ds.Spec.UpdateStrategy.Type), "OnDelete")
	check("terminationGracePeriodSeconds", *spec.TerminationGracePeriodSeconds, int64(45))
	check("liveness", [4]int32{c.LivenessProbe.InitialDelaySeconds, c.LivenessProbe.PeriodSeconds, c.LivenessProbe.TimeoutSeconds, c.LivenessProbe.FailureThreshold}, [4]int32{20, 15, 3, 5})
	check("readiness", [3]int32{c.ReadinessProbe.PeriodSeconds, c.ReadinessProbe.TimeoutSeconds, c.ReadinessProbe.FailureThreshold}, [3]int32{3, 2, 2})

	svc := o.service
	check("service ports", [2]any{svc.Spec.Ports[0].Port, svc.Spec.Ports[0].TargetPort}, [2]any{int32(9090), intstr.FromString("http")})
	check("service selector", svc.Spec.Selector, ds.Spec.Selector.MatchLabels)
	check("service annotations", svc.Annotations, map[string]string{"example.com/scrape": "true"})
	sm := o.serviceMonitor
	check("serviceMonitor label", sm.Labels["release"], "kube-prometheus-stack")
	check("serviceMonitor selector", sm.Spec.Selector.MatchLabels, svc.Spec.Selector)
	ep := sm.Spec.Endpoints[0]
	check("serviceMonitor endpoint", [4]string{ep.Port, ep.Path, string(ep.Interval), string(ep.ScrapeTimeout)}, [4]string{"http", "/metrics", "15s", "10s"})

	eff := printConfig(t, o.configMap)
	for key, want := range map[string]any{
		"keep":           "errors,duration>500ms,p99,ratio=0.01",
		"inject":         true,
		"minDuration":    "100µs",
		"ringSize":       "16MiB",
		"maxGoroutines":  float64(32768),
		"rescanInterval": "30s",
		"settleReturns":  "20s",
		"logLevel":       "debug",
		"funcs":          []any{"main.*"},
		"export":         map[string]any{"jaegerQueryURL": "http://jaeger-query.observability:16686"},
	} {
		check("the agent's "+key, eff[key], want)
	}
	check("the agent's selectors", len(eff["selectors"].([]any)), 2)
	check("the agent's exclude", len(eff["exclude"].([]any)), 1)
}

// TestChartInjectOff: without injection the host's cgroup hierarchy is
// not mounted.
func TestChartInjectOff(t *testing.T) {
	docs, err := manifest.Render(chartDir, map[string]any{"config": map[string]any{"inject": false}}, manifest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := decodeAll(t, docs)
	checkAgentPod(t, o, pod{port: 7070, storeMiB: 128, memMiB: 320})
	if eff := printConfig(t, o.configMap); eff["inject"] != false {
		t.Errorf("the agent's inject = %v, want false", eff["inject"])
	}
}

// TestChartConfigChecksum: a configuration change changes the pod
// template (the DaemonSet rolls); the same values render the same.
func TestChartConfigChecksum(t *testing.T) {
	sum := func(values map[string]any) string {
		docs, err := manifest.Render(chartDir, values, manifest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return decodeAll(t, docs).daemonSet.Spec.Template.Annotations["checksum/config"]
	}
	base := sum(nil)
	if again := sum(nil); again != base {
		t.Errorf("checksum differs between two renders of the same values: %s, %s", base, again)
	}
	for _, v := range []map[string]any{
		{"config": map[string]any{"keep": "errors"}},
		{"store": map[string]any{"sizeMiB": 256}},
		{"config": map[string]any{"extra": map[string]any{"logLevel": "debug"}}},
	} {
		if got := sum(v); got == base {
			t.Errorf("values %v: the checksum did not change, the DaemonSet would not roll", v)
		}
	}
}

// TestChartLint runs Helm's own linter (`helm lint`): no warning or
// error, for the defaults and for every value set.
func TestChartLint(t *testing.T) {
	for _, file := range []string{"", "testdata/all-values.yaml"} {
		_, values := render(t, file)
		l := lint.All(chartDir, values, manifest.Release, false)
		for _, m := range l.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("helm lint (values %q): %v", file, m)
			}
		}
	}
}

// TestPlainManifests: deploy/kubernetes/latscope.yaml is the chart
// rendered with its defaults, and every object in it decodes strictly.
func TestPlainManifests(t *testing.T) {
	const file = "kubernetes/latscope.yaml"
	want, err := manifest.Plain(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (create it with `%s`)", err, manifest.RegenerateCommand)
	}
	if string(got) != string(want) {
		t.Errorf("%s is not the chart's default render: regenerate it with `%s` (from the repository root) and commit it\n%s", file, manifest.RegenerateCommand, firstDiff(string(got), string(want)))
	}

	var docs []manifest.Document
	for _, part := range strings.Split(string(got), "\n---\n")[1:] {
		var head struct{ Kind string }
		if err := decodeLoose(part, &head); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		docs = append(docs, manifest.Document{Source: file, Kind: head.Kind, YAML: part})
	}
	o := decodeAll(t, docs)
	if o.namespace == nil || o.namespace.Name != manifest.Release {
		t.Errorf("%s does not create namespace %s first", file, manifest.Release)
	}
	if o.daemonSet == nil || o.daemonSet.Namespace != manifest.Release {
		t.Errorf("%s: the DaemonSet is not in namespace %s", file, manifest.Release)
	}
	kinds := slices.Clone(o.kinds)
	if want := []string{"Namespace", "ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "DaemonSet"}; !reflect.DeepEqual(kinds, want) {
		t.Errorf("%s kinds %v, want %v", file, kinds, want)
	}
}

// firstDiff shows the first line where two texts differ.
func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d: file has %q, chart renders %q", i+1, x, y)
		}
	}
	return ""
}
