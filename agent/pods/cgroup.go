package pods

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Ref is what a process's cgroup says of the container it runs in: the
// container runtime's id (64 hex digits for containerd, CRI-O and Docker)
// and, when the cgroup is kubelet's, the pod's UID.
type Ref struct {
	// ContainerID is the runtime's container id, as pod status names it
	// after the runtime scheme ("containerd://<ContainerID>").
	ContainerID string
	// PodUID is the pod's UID in its API form (dashes,
	// "0b5c7c1e-8d3a-4f0e-9a53-1f0f6a8c2b7d"); for a static pod it is
	// kubelet's config hash (32 hex digits), which the mirror pod carries
	// in its kubernetes.io/config.mirror annotation. "" when the cgroup
	// is not under kubepods (a Docker container outside Kubernetes).
	PodUID string
}

// IsZero reports whether r names no container: the process is not in a
// container's cgroup.
func (r Ref) IsZero() bool { return r.ContainerID == "" }

var (
	// podUIDPattern finds kubelet's pod directory in a cgroup path, with
	// the systemd driver ("kubepods-burstable-pod<uid, _ for ->.slice")
	// or the cgroupfs driver ("/kubepods/burstable/pod<uid>"). Static
	// pods' UIDs are 32 hex digits without dashes.
	podUIDPattern = regexp.MustCompile(`(?:^|[/-])pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})(?:\.slice)?(?:/|$)`)
	// containerPattern is a cgroup path's last element when it is a
	// container's: "cri-containerd-<id>.scope", "crio-<id>.scope",
	// "docker-<id>.scope", "libpod-<id>.scope" (systemd driver), or the
	// bare id (cgroupfs driver: "/kubepods/…/pod<uid>/<id>",
	// "/docker/<id>"). CRI-O's monitor ("crio-conmon-<id>.scope") is not
	// in the container and does not match.
	containerPattern = regexp.MustCompile(`^(?:(?:cri-containerd|crio|docker|libpod)-)?([0-9a-f]{64})(?:\.scope)?$`)
)

// ParseCgroup reads the content of /proc/PID/cgroup (cgroup v1
// "ID:controllers:path" lines and the v2 "0::path" line alike) and
// returns the container the process runs in. The v2 line is preferred;
// on a v1 host, the first line naming a container is used. The zero Ref
// when no line names a container (a host process, a systemd service,
// kubelet's pod-level cgroup itself).
func ParseCgroup(content string) Ref {
	var found Ref
	for line := range strings.Lines(content) {
		line = strings.TrimRight(line, "\n")
		// hierarchy-ID:controller-list:cgroup-path; the path may hold ':'.
		_, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		controllers, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		r := parsePath(path)
		if r.IsZero() {
			continue
		}
		if controllers == "" && strings.HasPrefix(line, "0:") {
			return r // the v2 line
		}
		if found.IsZero() {
			found = r
		}
	}
	return found
}

// parsePath returns the container a cgroup path names. The path may be
// relative to the reader's cgroup namespace ("/../../kubepods-…"), or
// nested under another slice (kind's "/kubelet.slice/kubelet-kubepods.slice/…"):
// only the pod and container elements matter.
func parsePath(path string) Ref {
	path = strings.TrimSuffix(path, "/")
	last := path[strings.LastIndexByte(path, '/')+1:]
	m := containerPattern.FindStringSubmatch(last)
	if m == nil {
		return Ref{}
	}
	r := Ref{ContainerID: m[1]}
	if m := podUIDPattern.FindStringSubmatch(path); m != nil {
		r.PodUID = strings.ReplaceAll(m[1], "_", "-")
	}
	return r
}

// ReadCgroup reads /proc/PID/cgroup and returns the container process pid
// runs in (the zero Ref when it is not in one). Errors are those of
// reading the file: the process exited (fs.ErrNotExist) or the agent may
// not read it.
func ReadCgroup(pid int) (Ref, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return Ref{}, fmt.Errorf("read the cgroup of process %d: %w", pid, err)
	}
	return ParseCgroup(string(data)), nil
}
