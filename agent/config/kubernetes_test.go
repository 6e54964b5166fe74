package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/latscope/latscope/agent/discovery"
)

func TestLoadKubernetes(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		yaml string
		want Kubernetes
	}{
		{"kubernetes:\n  enabled: auto\n", Kubernetes{Enabled: Auto}},
		{"kubernetes:\n  enabled: true\n", Kubernetes{Enabled: On}},
		{"kubernetes:\n  enabled: false\n", Kubernetes{Enabled: Off}},
		{"kubernetes:\n  enabled: \"false\"\n", Kubernetes{Enabled: Off}},
		{"kubernetes:\n  nodeName: ip-10-0-1-17.eu-west-1.compute.internal\n", Kubernetes{Enabled: Auto, NodeName: "ip-10-0-1-17.eu-west-1.compute.internal"}},
		{"kubernetes:\n  kubeconfig: " + kubeconfig + "\n", Kubernetes{Enabled: Auto, Kubeconfig: kubeconfig}},
		{"kubernetes: {}\n", Kubernetes{Enabled: Auto}},
	} {
		c, err := Load(writeFile(t, tc.yaml))
		if err != nil {
			t.Errorf("%q: %v", tc.yaml, err)
			continue
		}
		if c.Kubernetes != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.yaml, c.Kubernetes, tc.want)
		}
		back, err := Load(writeFile(t, string(c.YAML())))
		if err != nil || !reflect.DeepEqual(back, c) {
			t.Errorf("%q: YAML round trip:\n%s\ngave %+v, %v", tc.yaml, c.YAML(), back, err)
		}
	}
}

func TestLoadKubernetesErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, yaml, want string }{
		{"bad switch", "kubernetes:\n  enabled: maybe\n", `agent.yaml:2: kubernetes.enabled: "maybe" is not auto, true or false`},
		{"yes is not a boolean in YAML 1.2", "kubernetes:\n  enabled: yes\n", `kubernetes.enabled: "yes" is not auto, true or false`},
		{"switch as a list", "kubernetes:\n  enabled: [true]\n", "agent.yaml:2: kubernetes.enabled: want a single value, not a list"},
		{"unknown field", "kubernetes:\n  node: a\n", "agent.yaml:2: kubernetes.node: unknown field (known: enabled, nodeName, kubeconfig)"},
		{"bad node name", "kubernetes:\n  nodeName: Node_1\n", `agent.yaml:2: kubernetes.nodeName: "Node_1" is not a node name`},
		{"missing kubeconfig", "kubernetes:\n  kubeconfig: " + dir + "/nope\n", "agent.yaml:2: kubernetes.kubeconfig: stat " + dir + "/nope: no such file or directory"},
		{"kubeconfig is a directory", "kubernetes:\n  kubeconfig: " + dir + "\n", "agent.yaml:2: kubernetes.kubeconfig: " + dir + " is a directory"},
		{"bad pod selector", "selectors:\n  - podSelector: \"env in prod\"\n", `agent.yaml:2: selectors[0].podSelector: "env in prod" is not a label selector`},
		{"bad namespace glob", "exclude:\n  - namespace: \"[kube\"\n", `agent.yaml:2: exclude[0].namespace: bad glob "[kube"`},
		{"bad container glob", "selectors:\n  - namespace: a\n    container: \"{x\"\n", `agent.yaml:3: selectors[0].container: bad glob "{x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeFile(t, tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error\n%v\nwant\n%s", err, tc.want)
			}
		})
	}
}

func TestParseSwitch(t *testing.T) {
	for in, want := range map[string]Switch{"auto": Auto, "true": On, "1": On, "TRUE": On, "false": Off, "0": Off, "f": Off} {
		if got, err := ParseSwitch(in); err != nil || got != want {
			t.Errorf("ParseSwitch(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "Auto", "on", "yes"} {
		if _, err := ParseSwitch(in); err == nil {
			t.Errorf("ParseSwitch(%q) succeeded", in)
		}
	}
}

// Pod selectors with Kubernetes off can match nothing: a warning, not an
// error (the same file may serve nodes with and without Kubernetes).
func TestWarningsKubernetesOff(t *testing.T) {
	c := Default()
	c.Selectors = []discovery.Selector{{Exe: "/srv/*"}, {Namespace: "shop"}}
	c.Exclude = []discovery.Selector{{PodSelector: "canary"}}
	c.Kubernetes.Enabled = Off
	w := strings.Join(c.Warnings(), "\n")
	for _, want := range []string{`selectors[1]: namespace="shop" matches only processes in pods`, `exclude[0]: podSelector="canary" matches only`} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings\n%s\nwant %q", w, want)
		}
	}
	if strings.Contains(w, "selectors[0]") {
		t.Errorf("warnings\n%s\nname a selector without Kubernetes fields", w)
	}
	c.Kubernetes.Enabled = Auto
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("Kubernetes auto: warnings %q", w)
	}
}
