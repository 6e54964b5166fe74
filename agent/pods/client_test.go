package pods

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestInClusterAndNodeName(t *testing.T) {
	for _, tc := range []struct {
		host, port string
		want       bool
	}{{"10.96.0.1", "443", true}, {"10.96.0.1", "", false}, {"", "443", false}, {"", "", false}} {
		t.Setenv(EnvServiceHost, tc.host)
		t.Setenv(EnvServicePort, tc.port)
		if got := InCluster(); got != tc.want {
			t.Errorf("host %q port %q: InCluster = %v", tc.host, tc.port, got)
		}
	}
	t.Setenv(EnvNodeName, "from-env")
	if got := NodeName("configured"); got != "configured" {
		t.Errorf("NodeName(configured) = %q", got)
	}
	if got := NodeName(""); got != "from-env" {
		t.Errorf("NodeName(\"\") = %q, want $NODE_NAME", got)
	}
}

// writeKubeconfig writes a kubeconfig for server with a token file
// named relative to it.
func writeKubeconfig(t *testing.T, server, current string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	kc := `apiVersion: v1
kind: Config
current-context: ` + current + `
clusters:
- name: test
  cluster:
    server: ` + server + `
    insecure-skip-tls-verify: true
contexts:
- name: test
  context:
    cluster: test
    user: agent
- name: orphan
  context:
    cluster: missing
    user: agent
users:
- name: agent
  user:
    tokenFile: token
`
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A kubeconfig's current context reaches its server with its user's
// credentials (a token file relative to the kubeconfig).
func TestNewClientKubeconfig(t *testing.T) {
	var auth, agent string
	// TLS: like kubectl, clientcmd sends credentials to secure servers only.
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth, agent = r.Header.Get("Authorization"), r.Header.Get("User-Agent")
		if r.URL.Path != "/api/v1/namespaces/shop/pods/catalog" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(&corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "catalog", UID: "u-1"},
		})
	}))
	defer srv.Close()

	c, err := NewClient(writeKubeconfig(t, srv.URL, "test"))
	if err != nil {
		t.Fatal(err)
	}
	pod, err := c.CoreV1().Pods("shop").Get(context.Background(), "catalog", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.UID != "u-1" {
		t.Errorf("pod %+v", pod.ObjectMeta)
	}
	if auth != "Bearer s3cret" || !strings.HasPrefix(agent, userAgent) {
		t.Errorf("Authorization %q, User-Agent %q: want the token file's token and %s", auth, agent, userAgent)
	}
}

func TestNewClientErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("{not yaml"), 0o600)
	for _, tc := range []struct {
		name, kubeconfig string
		env              map[string]string
		want             string
	}{
		{"missing file", filepath.Join(dir, "nope"), nil, "no such file"},
		{"not a kubeconfig", garbage, nil, "kubeconfig " + garbage},
		{"unknown current context", writeKubeconfig(t, "https://127.0.0.1:6443", "elsewhere"), nil, `context was not found for specified context: elsewhere`},
		{"context's cluster missing", writeKubeconfig(t, "https://127.0.0.1:6443", "orphan"), nil, `config view`},
		{"not in a cluster", "", map[string]string{EnvServiceHost: "", EnvServicePort: ""}, "give a kubeconfig with --kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := NewClient(tc.kubeconfig)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
