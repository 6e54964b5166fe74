// Command genfields regenerates symbolizer/fields.json: for every
// instrumented library (agent.Libraries) it builds the library's Linker
// program with every supported Go toolchain ("std" libraries, and the
// builds whose GOEXPERIMENT changes a layout the probes read; third-party
// modules: with each tabled module version, built with the local Go or,
// for a release that no longer builds with it, the newest toolchain that
// does), reads the offsets of the library's Fields from DWARF and writes
// the table, one version per line. The fields of a library's Deps are
// measured the same way, with each Dep's Linker and Versions.
//
// Usage (from the repository root):
//
//	go run ./scripts/genfields [-o symbolizer/fields.json] [-lib NAME]
//
// With -lib only that library (its Library.Name) is measured again; the
// other rows are kept from the table as it is.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/bpf/library"
	"github.com/latscope/latscope/symbolizer"
)

// toolchains are the latest patch releases of every supported Go minor.
var toolchains = []string{"go1.21.13", "go1.22.12", "go1.23.12", "go1.24.9", "go1.25.4", "local", "go1.27.3"}

// experimentBuilds are the standard library's further rows: a release
// built with a GOEXPERIMENT that changes a layout the probes read (the
// runtime's maps), "toolchain+experiment" (symbolizer.StdTableKey).
var experimentBuilds = []string{"go1.24.9+noswissmap", "go1.25.4+noswissmap", "go1.27.3+mapsplitgroup"}

func main() {
	out := flag.String("o", "symbolizer/fields.json", "table to write")
	only := flag.String("lib", "", "measure only this library (by name), keep the table's other rows")
	flag.Parse()
	table := symbolizer.FieldTable{}
	if *only != "" {
		old, err := os.ReadFile(*out)
		if err == nil {
			err = json.Unmarshal(old, &table)
		}
		if err != nil {
			fail("read "+*out, err)
		}
	}
	add := func(module, key string, row map[string]uint64) {
		if table[module] == nil {
			table[module] = map[string]map[string]uint64{}
		}
		if table[module][key] == nil {
			table[module][key] = map[string]uint64{}
		}
		for k, v := range row {
			table[module][key][k] = v
		}
	}
	found := false
	for _, lib := range agent.Libraries {
		if *only != "" && lib.Name != *only {
			continue
		}
		if len(lib.Fields) == 0 {
			continue // reads registers only
		}
		found = true
		if *only != "" && lib.Module != "std" {
			delete(table, lib.Module) // its rows are the library's alone
		}
		own := fieldsOf(lib, lib.Module)
		if len(own) > 0 && lib.Module == "std" {
			for _, tc := range append(toolchains[:len(toolchains):len(toolchains)], experimentBuilds...) {
				key, row, err := measure(lib.Linker, tc, "", "", own)
				if err != nil {
					fail(lib.Name+" with "+tc, err)
				}
				add("std", key, row)
				fmt.Fprintf(os.Stderr, "%s %s: %d fields\n", lib.Name, key, len(row))
			}
		} else if len(own) > 0 {
			measureModule(lib.Name, lib.Linker, lib.Module, lib.Versions, own, add)
		}
		for _, d := range lib.Deps {
			delete(table, d.Module) // versions no longer tabled go
			measureModule(lib.Name, d.Linker, d.Module, d.Versions, fieldsOf(lib, d.Module), add)
		}
	}
	if !found {
		fail("-lib "+*only, errors.New("no instrumented library of that name reads struct fields"))
	}
	if err := os.WriteFile(*out, symbolizer.FormatFieldTable(table), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "genfields:", err)
		os.Exit(1)
	}
}

// fieldsOf returns lib's fields that module's version selects.
func fieldsOf(lib *library.Library, module string) []string {
	var out []string
	for _, f := range lib.Fields {
		if lib.ModuleOf(f) == module {
			out = append(out, f)
		}
	}
	return out
}

// measureModule tabulates fields of module at each of versions.
func measureModule(name, linker, module string, versions, fields []string, add func(module, key string, row map[string]uint64)) {
	for _, v := range versions {
		row, tc, err := measureVersion(linker, module, v, fields)
		if err != nil {
			fail(name+" "+module+" "+v, err)
		}
		add(module, v, row)
		fmt.Fprintf(os.Stderr, "%s %s %s (%s): %d fields\n", name, module, v, tc, len(row))
	}
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "genfields: %s: %v\n", what, err)
	os.Exit(1)
}

// buildError is a Linker program that did not build with a toolchain.
type buildError struct{ err error }

func (e *buildError) Error() string { return e.err.Error() }

// measureVersion measures module at version with the local Go, else with
// the newest toolchain that builds it: older releases of a module may no
// longer link with a newer Go (CloudWeGo Hertz before v0.10.4 pulls in a
// bytedance/sonic that does not build with Go 1.26). It returns the
// toolchain used.
func measureVersion(src, module, version string, fields []string) (map[string]uint64, string, error) {
	order := []string{"local"}
	for i := len(toolchains) - 1; i >= 0; i-- {
		if toolchains[i] != "local" {
			order = append(order, toolchains[i])
		}
	}
	var build *buildError
	for _, tc := range order {
		_, row, err := measure(src, tc, module, version, fields)
		if !errors.As(err, &build) {
			return row, tc, err
		}
	}
	return nil, "", fmt.Errorf("no toolchain of %v builds it: %w", order, build)
}

// measure builds src with toolchain (and module at version, when given)
// and returns the Go release (go1.NN) and the offsets of the fields
// present in that build.
func measure(src, toolchain, module, version string, fields []string) (string, map[string]uint64, error) {
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
	toolchain, experiment, _ := strings.Cut(toolchain, "+")
	env := append(os.Environ(), "GOTOOLCHAIN="+toolchain, "GOEXPERIMENT="+experiment, "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	steps := [][]string{{"build", "-o", bin, "."}}
	if module != "" {
		steps = [][]string{{"get", module + "@" + version}, {"mod", "tidy"}, {"build", "-o", bin, "."}}
	}
	for _, args := range steps {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			if args[0] == "build" {
				return "", nil, &buildError{err}
			}
			return "", nil, err
		}
	}
	b, err := symbolizer.Open(bin)
	if err != nil {
		return "", nil, err
	}
	defer b.Close()
	row := map[string]uint64{}
	for _, f := range fields {
		name, optional := strings.CutPrefix(f, "?")
		// DWARF itself: FieldOffsets would answer from the table first.
		offs, err := b.DWARFFieldOffsets([]string{name})
		if err != nil {
			if optional {
				continue // absent in this release
			}
			return "", nil, fmt.Errorf("%s: %v", name, err)
		}
		row[name] = offs[0]
	}
	key, ok := symbolizer.StdTableKey(b.GoVersion)
	if !ok {
		return "", nil, fmt.Errorf("cannot parse Go version %q", b.GoVersion)
	}
	return key, row, nil
}
