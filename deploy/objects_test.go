package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/latscope/latscope/deploy/manifest"
)

const (
	chartDir = "helm/latscope"
	repoRoot = ".."
)

// objects are a render's objects, decoded strictly into their API types.
type objects struct {
	serviceAccount     *corev1.ServiceAccount
	configMap          *corev1.ConfigMap
	clusterRole        *rbacv1.ClusterRole
	clusterRoleBinding *rbacv1.ClusterRoleBinding
	daemonSet          *appsv1.DaemonSet
	service            *corev1.Service
	serviceMonitor     *monitoringv1.ServiceMonitor
	namespace          *corev1.Namespace
	kinds              []string // in render order
}

// decodeStrict decodes one YAML object into v: a key given twice or a
// field v's type does not have is an error, as with `kubectl apply
// --validate=strict`.
func decodeStrict(doc string, v any) error {
	j, err := yaml.YAMLToJSONStrict([]byte(doc))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// decodeAll decodes every document into its type; a kind the chart is
// not expected to create fails the test.
func decodeAll(t *testing.T, docs []manifest.Document) *objects {
	t.Helper()
	o := &objects{}
	for _, d := range docs {
		var target any
		switch d.Kind {
		case "ServiceAccount":
			o.serviceAccount = &corev1.ServiceAccount{}
			target = o.serviceAccount
		case "ConfigMap":
			o.configMap = &corev1.ConfigMap{}
			target = o.configMap
		case "ClusterRole":
			o.clusterRole = &rbacv1.ClusterRole{}
			target = o.clusterRole
		case "ClusterRoleBinding":
			o.clusterRoleBinding = &rbacv1.ClusterRoleBinding{}
			target = o.clusterRoleBinding
		case "DaemonSet":
			o.daemonSet = &appsv1.DaemonSet{}
			target = o.daemonSet
		case "Service":
			o.service = &corev1.Service{}
			target = o.service
		case "ServiceMonitor":
			o.serviceMonitor = &monitoringv1.ServiceMonitor{}
			target = o.serviceMonitor
		case "Namespace":
			o.namespace = &corev1.Namespace{}
			target = o.namespace
		default:
			t.Fatalf("%s: unexpected kind %q", d.Source, d.Kind)
		}
		if err := decodeStrict(d.YAML, target); err != nil {
			t.Fatalf("%s (%s) does not decode strictly into its API type: %v\n%s", d.Source, d.Kind, err, d.YAML)
		}
		o.kinds = append(o.kinds, d.Kind)
	}
	return o
}

// render renders the chart with the values file (none: defaults) and
// decodes its objects.
func render(t *testing.T, valuesFile string) (*objects, map[string]any) {
	t.Helper()
	values := map[string]any{}
	if valuesFile != "" {
		b, err := os.ReadFile(valuesFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &values); err != nil {
			t.Fatalf("%s: %v", valuesFile, err)
		}
	}
	docs, err := manifest.Render(chartDir, values, manifest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, docs), values
}

// agentContainer is the DaemonSet's one container.
func agentContainer(t *testing.T, ds *appsv1.DaemonSet) *corev1.Container {
	t.Helper()
	if ds == nil {
		t.Fatal("no DaemonSet rendered")
	}
	if n := len(ds.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("DaemonSet has %d containers, want the agent alone", n)
	}
	return &ds.Spec.Template.Spec.Containers[0]
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "latscope-deploy-test-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// latscopeBinary builds the real latscope from the repository root, once;
// LATSCOPE_BINARY names a prebuilt one instead.
func latscopeBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binPath = os.Getenv("LATSCOPE_BINARY"); binPath != "" {
			return
		}
		binPath = filepath.Join(binDir, "latscope")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/latscope")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/latscope: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// printConfig runs `latscope agent --config FILE --print-config` on the
// ConfigMap's agent.yaml and returns the effective configuration.
func printConfig(t *testing.T, cm *corev1.ConfigMap) map[string]any {
	t.Helper()
	if cm == nil {
		t.Fatal("no ConfigMap rendered")
	}
	text, ok := cm.Data["agent.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no agent.yaml (keys: %v)", cm.Name, keys(cm.Data))
	}
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(latscopeBinary(t), "agent", "--config", file, "--print-config")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the agent rejects the chart's configuration: %v\n%s\nconfiguration:\n%s", err, stderr.String(), text)
	}
	var eff map[string]any
	if err := yaml.Unmarshal(stdout.Bytes(), &eff); err != nil {
		t.Fatalf("--print-config output: %v\n%s", err, stdout.String())
	}
	return eff
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// lower turns capability names as Kubernetes spells them (SYS_PTRACE)
// into setpriv's (sys_ptrace).
func lower(caps []corev1.Capability) []string {
	out := make([]string, len(caps))
	for i, c := range caps {
		out[i] = strings.ToLower(string(c))
	}
	return out
}

// decodeLoose decodes YAML into v, ignoring fields v does not have.
func decodeLoose(doc string, v any) error { return yaml.Unmarshal([]byte(doc), v) }
