// Command genfields regenerates symbolizer/fields.json: for every
// instrumented library (agent.Libraries) it builds the library's Linker
// program with every supported Go toolchain ("std" libraries; third-party
// modules: with each tabled module version), reads the offsets of the
// library's Fields from DWARF and writes the table, one version per line.
//
// Usage (from the repository root):
//
//	go run ./scripts/genfields [-o symbolizer/fields.json]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/symbolizer"
)

// toolchains are the latest patch releases of every supported Go minor.
var toolchains = []string{"go1.21.13", "go1.22.12", "go1.23.12", "go1.24.9", "go1.25.4", "local", "go1.27.3"}

func main() {
	out := flag.String("o", "symbolizer/fields.json", "table to write")
	flag.Parse()
	table := symbolizer.FieldTable{}
	for _, lib := range agent.Libraries {
		if lib.Module != "std" {
			fmt.Fprintf(os.Stderr, "genfields: %s: only standard-library modules are tabulated so far\n", lib.Name)
			continue
		}
		for _, tc := range toolchains {
			key, row, err := measure(lib.Linker, tc, lib.Fields)
			if err != nil {
				fmt.Fprintf(os.Stderr, "genfields: %s with %s: %v\n", lib.Name, tc, err)
				os.Exit(1)
			}
			if table["std"] == nil {
				table["std"] = map[string]map[string]uint64{}
			}
			if table["std"][key] == nil {
				table["std"][key] = map[string]uint64{}
			}
			for k, v := range row {
				table["std"][key][k] = v
			}
			fmt.Fprintf(os.Stderr, "%s %s: %d fields\n", lib.Name, key, len(row))
		}
	}
	if err := os.WriteFile(*out, symbolizer.FormatFieldTable(table), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "genfields:", err)
		os.Exit(1)
	}
}

// measure builds src with toolchain and returns the table key (go1.NN)
// and the offsets of fields present in that release.
func measure(src, toolchain string, fields []string) (string, map[string]uint64, error) {
	dir, err := os.MkdirTemp("", "genfields")
	if err != nil {
		return "", nil, err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module genfields.probe\n\ngo 1.21\n"), 0o644); err != nil {
		return "", nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "probe")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+toolchain, "GOFLAGS=", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("go build: %v\n%s", err, out)
	}
	b, err := symbolizer.Open(bin)
	if err != nil {
		return "", nil, err
	}
	defer b.Close()
	row := map[string]uint64{}
	for _, f := range fields {
		name, optional := strings.CutPrefix(f, "?")
		offs, source, err := b.FieldOffsets("std", []string{name})
		if err != nil || source != "dwarf" {
			if optional {
				continue // absent in this release
			}
			return "", nil, fmt.Errorf("%s: %v", name, err)
		}
		row[name] = offs[0]
	}
	minor := strings.Join(strings.SplitN(b.GoVersion, ".", 3)[:2], ".")
	return minor, row, nil
}
