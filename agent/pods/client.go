package pods

import (
	"fmt"
	"os"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Environment variables the package reads.
const (
	// EnvServiceHost and EnvServicePort are set by kubelet in every pod:
	// the API server's in-cluster address. Both set: the agent runs in a
	// pod (InCluster).
	EnvServiceHost = "KUBERNETES_SERVICE_HOST"
	EnvServicePort = "KUBERNETES_SERVICE_PORT"
	// EnvNodeName names the node, from the downward API
	// (fieldRef: spec.nodeName), when the configuration does not.
	EnvNodeName = "NODE_NAME"
)

// userAgent identifies the agent's requests in the API server's audit
// log.
const userAgent = "latscope-agent"

// InCluster reports whether the agent runs in a pod: KUBERNETES_SERVICE_HOST
// and KUBERNETES_SERVICE_PORT are set.
func InCluster() bool {
	return os.Getenv(EnvServiceHost) != "" && os.Getenv(EnvServicePort) != ""
}

// NodeName returns configured if it is set, else $NODE_NAME ("" if
// neither is).
func NodeName(configured string) string {
	if configured != "" {
		return configured
	}
	return os.Getenv(EnvNodeName)
}

// NewClient connects to the API server: with kubeconfig "", as the pod's
// service account (its token and CA under
// /var/run/secrets/kubernetes.io/serviceaccount); else with the current
// context of the kubeconfig file at that path, for an agent run outside
// the cluster. Errors say which of the two failed and why.
func NewClient(kubeconfig string) (kubernetes.Interface, error) {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig == "" {
		if cfg, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("kubernetes: in-cluster configuration: %w (outside a cluster, give a kubeconfig with --kubeconfig; or turn pod metadata off with --kubernetes=false)", err)
		}
	} else if cfg, err = kubeconfigREST(kubeconfig); err != nil {
		return nil, err
	}
	cfg.UserAgent = userAgent
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client for %s: %w", cfg.Host, err)
	}
	return c, nil
}

// kubeconfigREST returns the REST configuration of the kubeconfig file
// at path's current context, read by client-go's clientcmd as kubectl
// reads it (relative paths, exec plugins, auth providers, proxies).
func kubeconfigREST(path string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: kubeconfig %s: %w (check it with kubectl --kubeconfig %s config view)", path, err, path)
	}
	return cfg, nil
}
