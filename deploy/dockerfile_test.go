package deploy

import (
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// dockerfile is deploy/Dockerfile's instructions, continuation lines
// joined, comments dropped.
func dockerfile(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	cur := ""
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		out = append(out, cur+l)
		cur = ""
	}
	return out
}

// TestDockerfileBuildsStatic runs the Dockerfile's own `go build` line
// (outside Docker: no container engine here) from the repository root and
// checks the binary is static: no ELF interpreter, no shared library.
func TestDockerfileBuildsStatic(t *testing.T) {
	var build string
	for _, ins := range dockerfile(t) {
		if cmd, ok := strings.CutPrefix(ins, "RUN "); ok && strings.Contains(cmd, "go build") {
			build = cmd
		}
	}
	if build == "" {
		t.Fatal("the Dockerfile has no RUN ... go build")
	}
	if !strings.Contains(build, "CGO_ENABLED=0") {
		t.Errorf("the build line %q does not set CGO_ENABLED=0", build)
	}
	out := filepath.Join(t.TempDir(), "latscope")
	if !strings.Contains(build, "-o /out/latscope") {
		t.Fatalf("the build line %q does not write /out/latscope (the final stage copies it)", build)
	}
	build = strings.NewReplacer("-o /out/latscope", "-o "+out, "$TARGETOS", "linux", "$TARGETARCH", runtime.GOARCH).Replace(build)
	cmd := exec.Command("sh", "-c", build)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has an ELF interpreter: it is not static")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v (%v)", libs, err)
	}
}

// TestDockerfileStages: the Go image is at least the go.mod's Go, and the
// final stage runs the binary the build stage wrote, as `latscope agent`.
func TestDockerfileStages(t *testing.T) {
	ins := dockerfile(t)
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	need := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindStringSubmatch(string(gomod))
	var from, entry, copied string
	for _, i := range ins {
		switch {
		case strings.HasPrefix(i, "FROM golang:"):
			from = i
		case strings.HasPrefix(i, "ENTRYPOINT "):
			entry = strings.TrimPrefix(i, "ENTRYPOINT ")
		case strings.HasPrefix(i, "COPY --from=build /out/latscope "):
			copied = strings.TrimPrefix(i, "COPY --from=build /out/latscope ")
		}
	}
	have := regexp.MustCompile(`^FROM golang:(\d+)\.(\d+)`).FindStringSubmatch(from)
	if need == nil || have == nil {
		t.Fatalf("cannot compare Go versions: go.mod %v, Dockerfile %q", need, from)
	}
	version := func(m []string) int { a, _ := strconv.Atoi(m[1]); b, _ := strconv.Atoi(m[2]); return a*1000 + b }
	if version(have) < version(need) {
		t.Errorf("%s is older than go.mod's go %s.%s", from, need[1], need[2])
	}
	var argv []string
	if err := json.Unmarshal([]byte(entry), &argv); err != nil {
		t.Fatalf("ENTRYPOINT %s is not the exec form: %v", entry, err)
	}
	if len(argv) != 2 || argv[0] != copied || argv[1] != "agent" {
		t.Errorf("ENTRYPOINT %v, want [%s agent]", argv, copied)
	}
	if !strings.Contains(strings.Join(ins, "\n"), "\nUSER 0:0\n") {
		t.Error("the final stage does not say it runs as root (USER 0:0)")
	}
}
