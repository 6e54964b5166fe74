// Command manifests writes deploy/kubernetes/latscope.yaml: the chart
// rendered with its default values (manifest.Plain). Run by
// `cd deploy && GOWORK=off go generate ./...`.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/latscope/latscope/deploy/manifest"
)

func main() {
	chart := flag.String("chart", "helm/latscope", "the chart's `directory`")
	out := flag.String("o", "kubernetes/latscope.yaml", "the `file` to write")
	flag.Parse()
	b, err := manifest.Plain(*chart)
	if err != nil {
		fmt.Fprintln(os.Stderr, "manifests:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "manifests:", err)
		os.Exit(1)
	}
}
