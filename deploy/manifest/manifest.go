// Package manifest renders the latscope Helm chart (deploy/helm/latscope)
// with Helm's own Go packages: the objects `helm install` creates, in
// Helm's install order, and the plain manifests of deploy/kubernetes that
// `kubectl apply -f` takes.
package manifest

import (
	"fmt"
	"path"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
)

// Release is the release name and namespace the plain manifests are
// rendered for.
const Release = "latscope"

// RegenerateCommand regenerates deploy/kubernetes/latscope.yaml from the
// chart; run it from the repository root.
const RegenerateCommand = "cd deploy && GOWORK=off go generate ./..."

// Document is one rendered Kubernetes object.
type Document struct {
	// Source is the template that produced it ("latscope/templates/daemonset.yaml").
	Source string
	// Kind is the object's kind ("DaemonSet").
	Kind string
	// YAML is the object, without a leading "---".
	YAML string
}

// Options name the release a chart is rendered for.
type Options struct {
	Release   string // release name; default Release
	Namespace string // default Release
	// Service is the value of the app.kubernetes.io/managed-by label;
	// default "Helm".
	Service string
}

// Render renders the chart in chartDir with values over the chart's own
// values.yaml, as `helm template` does, and returns its objects in Helm's
// install order (NOTES.txt and empty templates left out). Errors are
// the chart's load, values or template errors, naming the template.
func Render(chartDir string, values map[string]any, o Options) ([]Document, error) {
	if o.Release == "" {
		o.Release = Release
	}
	if o.Namespace == "" {
		o.Namespace = Release
	}
	ch, err := loader.LoadDir(chartDir)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", chartDir, err)
	}
	if values == nil {
		values = map[string]any{}
	}
	vals, err := chartutil.ToRenderValues(ch, values, chartutil.ReleaseOptions{Name: o.Release, Namespace: o.Namespace, Revision: 1, IsInstall: true}, nil)
	if err != nil {
		return nil, fmt.Errorf("values of chart %s: %w", chartDir, err)
	}
	if o.Service != "" {
		vals["Release"].(map[string]any)["Service"] = o.Service
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("render chart %s: %w", chartDir, err)
	}
	for name := range files {
		if path.Base(name) == "NOTES.txt" {
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return nil, fmt.Errorf("sort rendered objects of %s: %w", chartDir, err)
	}
	if len(hooks) > 0 {
		return nil, fmt.Errorf("chart %s: hooks (%s) are not expected: the plain manifests could not reproduce them", chartDir, hooks[0].Path)
	}
	docs := make([]Document, 0, len(manifests))
	for _, m := range manifests {
		kind := ""
		if m.Head != nil {
			kind = m.Head.Kind
		}
		docs = append(docs, Document{Source: m.Name, Kind: kind, YAML: strings.TrimSpace(m.Content) + "\n"})
	}
	return docs, nil
}

// Plain renders the chart in chartDir with its default values for
// release and namespace Release, as one multi-document YAML file for
// `kubectl apply -f`: a header saying how it was made, the Namespace, then
// the chart's objects in install order, each under a "# Source:" line as
// `helm template` prints them.
func Plain(chartDir string) ([]byte, error) {
	docs, err := Render(chartDir, nil, Options{Service: "kubectl"})
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# The latscope node agent, rendered from deploy/helm/latscope with its\n")
	fmt.Fprintf(&b, "# default values for namespace %q. Generated: do not edit; change the chart\n", Release)
	fmt.Fprintf(&b, "# and run `%s`.\n", RegenerateCommand)
	fmt.Fprintf(&b, "# Install: kubectl apply -f deploy/kubernetes/latscope.yaml (docs/kubernetes.md).\n")
	fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", Release)
	for _, d := range docs {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s", d.Source, d.YAML)
	}
	return []byte(b.String()), nil
}
