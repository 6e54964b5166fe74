// Command genoffsets regenerates symbolizer/offsets.json and
// symbolizer/blockreasons.json: it builds a tiny program with every
// supported Go toolchain (the latest patch release of each minor), reads
// runtime.g and runtime.m field offsets and the runtime.traceBlockReason
// constants from its DWARF and writes the tables, one Go release per line.
//
// Usage (from the repository root):
//
//	go run ./scripts/genoffsets [-o symbolizer/offsets.json] [-reasons symbolizer/blockreasons.json] [toolchain ...]
//
// "local" names the Go that runs the command. Toolchains are fetched by
// the go command (GOTOOLCHAIN) when not already in the module cache.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/latscope/latscope/symbolizer"
)

// toolchains are the latest patch releases of every supported Go minor.
var toolchains = []string{"go1.21.13", "go1.22.12", "go1.23.12", "go1.24.9", "go1.25.4", "local", "go1.27.3"}

// probeSource is the program whose DWARF is read: it only needs to link
// the runtime.
const probeSource = "package main\n\nfunc main() { println(\"offsets\") }\n"

func main() {
	out := flag.String("o", "symbolizer/offsets.json", "offsets table to write")
	reasons := flag.String("reasons", "symbolizer/blockreasons.json", "block reasons table to write")
	flag.Parse()
	list := toolchains
	if flag.NArg() > 0 {
		list = flag.Args()
	}
	if err := run(*out, *reasons, list); err != nil {
		fmt.Fprintln(os.Stderr, "genoffsets:", err)
		os.Exit(1)
	}
}

func run(out, reasonsOut string, list []string) error {
	dir, err := os.MkdirTemp("", "genoffsets")
	if err != nil {
		return fmt.Errorf("create work dir: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module genoffsets.probe\n\ngo 1.21\n"), 0o644); err != nil {
		return fmt.Errorf("write probe go.mod: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(probeSource), 0o644); err != nil {
		return fmt.Errorf("write probe source: %w", err)
	}
	table := make(map[string]symbolizer.TableEntry)
	reasons := make(map[string]map[string]uint8)
	for _, tc := range list {
		key, e, r, err := measure(dir, tc)
		if err != nil {
			return err
		}
		if prev, dup := table[key]; dup && prev != e {
			return fmt.Errorf("%s: offsets %+v differ from another %s toolchain's %+v", tc, e, key, prev)
		}
		if prev, dup := reasons[key]; dup && !maps.Equal(prev, r) {
			return fmt.Errorf("%s: block reasons %v differ from another %s toolchain's %v", tc, r, key, prev)
		}
		table[key], reasons[key] = e, r
		slog.Info("measured", "toolchain", tc, "release", key, "goid", e.GoID, "parentGoid", e.ParentGoID, "stackHi", e.StackHi, "m", e.M, "mCurg", e.MCurG, "mWaitReason", e.MWaitReason, "blockReasons", len(r))
	}
	if err := os.WriteFile(out, symbolizer.FormatTable(table), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.WriteFile(reasonsOut, symbolizer.FormatBlockReasons(reasons), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", reasonsOut, err)
	}
	return nil
}

// measure builds the probe with toolchain tc (GOARCH=amd64, with DWARF)
// and returns its Go minor release, offsets and block reasons.
func measure(dir, tc string) (string, symbolizer.TableEntry, map[string]uint8, error) {
	bin := filepath.Join(dir, "probe-"+tc)
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+tc, "GOFLAGS=", "GOWORK=off", "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", symbolizer.TableEntry{}, nil, fmt.Errorf("build probe with %s: %v\n%s", tc, err, b)
	}
	b, err := symbolizer.Open(bin)
	if err != nil {
		return "", symbolizer.TableEntry{}, nil, fmt.Errorf("open probe built with %s: %w", tc, err)
	}
	defer b.Close()
	o, err := b.DWARFOffsets()
	if err != nil {
		return "", symbolizer.TableEntry{}, nil, fmt.Errorf("offsets of probe built with %s: %w", tc, err)
	}
	r, err := b.DWARFBlockReasons()
	if err != nil {
		return "", symbolizer.TableEntry{}, nil, fmt.Errorf("block reasons of probe built with %s: %w", tc, err)
	}
	v := b.GoVersion
	if i := strings.Index(v, "."); i >= 0 {
		if j := strings.Index(v[i+1:], "."); j >= 0 {
			v = v[:i+1+j]
		}
	}
	return v, symbolizer.TableEntry{GoID: o.GoID, ParentGoID: o.ParentGoID, StackHi: o.StackHi, M: o.M, MCurG: o.MCurG, MWaitReason: o.MWaitReason}, r, nil
}
