// Package deploy holds latscope's Kubernetes packaging and its tests: the
// Helm chart (helm/latscope), the plain manifests rendered from it
// (kubernetes/latscope.yaml), and the agent's image (Dockerfile). It is a
// module of its own so Helm's dependencies stay out of latscope's.
//
// The tests render the chart with Helm's packages and decode every object
// strictly into the Kubernetes API types; capabilities_test.go proves, by
// running the real agent with only the chart's capabilities, what each
// capability is for. See docs/kubernetes.md.
package deploy

//go:generate go run ./cmd/manifests -chart helm/latscope -o kubernetes/latscope.yaml
