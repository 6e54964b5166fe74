// Package jaegertest runs a real Jaeger v2 backend for tests and reads back
// what it stored. The binary is built from the module in tools/jaeger (so
// Jaeger's dependencies stay out of latscope's go.mod) and configured by
// tools/jaeger/config.yaml: OTLP in, memory storage, HTTP query API out, every
// listener on 127.0.0.1.
package jaegertest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildTimeout bounds one go build of Jaeger. A build from empty module and
// build caches took 5m15s on a 2-core machine.
const buildTimeout = 25 * time.Minute

var buildMu sync.Mutex

// Build compiles Jaeger from tools/jaeger once and returns the binary's path.
// The binary is cached under the user cache directory, keyed by the tools
// module's go.mod and go.sum and the Go version, so later calls (in any
// process) return at once. Concurrent test processes wait for one build.
func Build(tb testing.TB) string {
	tb.Helper()
	path, err := build(tb.Logf)
	if err != nil {
		tb.Fatalf("build Jaeger: %v", err)
	}
	return path
}

func build(logf func(string, ...any)) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	dir, err := toolsDir()
	if err != nil {
		return "", err
	}
	key, err := buildKey(dir)
	if err != nil {
		return "", err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	cache = filepath.Join(cache, "latscope-jaeger")
	out := filepath.Join(cache, "jaeger-"+key)
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(filepath.Join(cache, "build.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have finished the build while we waited.
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}

	logf("jaegertest: building Jaeger from %s into %s; the first build downloads and compiles Jaeger and takes several minutes", dir, out)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	tmp := out + ".tmp"
	args := []string{"build", "-trimpath", "-o", tmp, "github.com/jaegertracing/jaeger/cmd/jaeger"}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	// GOFLAGS is cleared so a caller's flags (-mod=mod, -tags) cannot change
	// what is built: the go.sum in tools/jaeger is what pins the build.
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w after %s", ctx.Err(), buildTimeout)
		}
		return "", fmt.Errorf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	logf("jaegertest: built Jaeger in %s", time.Since(start).Round(time.Second))
	return out, nil
}

// toolsDir finds tools/jaeger: beside this source file, or else (when
// compiled with -trimpath) above the working directory, which go test sets
// to the package's directory.
func toolsDir() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	if filepath.IsAbs(file) {
		dir := filepath.Join(filepath.Dir(file), "..", "..", "tools", "jaeger")
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Clean(dir), nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		dir := filepath.Join(d, "tools", "jaeger")
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("tools/jaeger/go.mod not found above %s", wd)
		}
	}
}

// buildKey hashes what decides the binary. config.yaml is not part of it:
// Jaeger reads it at start.
func buildKey(dir string) (string, error) {
	h := sha256.New()
	for _, name := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", name, len(b))
		h.Write(b)
	}
	fmt.Fprintf(h, "%s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return hex.EncodeToString(h.Sum(nil)[:8]), nil
}

// lockFile takes an exclusive flock on path, waiting for other holders.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
