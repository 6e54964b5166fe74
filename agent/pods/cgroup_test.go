package pods

import (
	"os"
	"strings"
	"testing"
)

const (
	cid  = "8e3b1f0c5d2a4b6c9e7f1a3b5c7d9e0f2a4b6c8d0e1f3a5b7c9d1e3f5a7b9c0d"
	uid  = "3c4b5a63-7f0b-4a3d-9c55-31b4c6f0e2d1"
	uidU = "3c4b5a63_7f0b_4a3d_9c55_31b4c6f0e2d1" // as the systemd driver writes it
	// static is a static pod's UID: kubelet's config hash.
	static = "8d5b05cf1a1f2f8a2f1f8ab1c3d4e5f6"
)

// v1Lines is a cgroup v1 host's /proc/PID/cgroup for a container under
// path: one line per hierarchy, the v2 line empty.
func v1Lines(path string) string {
	return "12:pids:" + path + "\n11:memory:" + path + "\n10:cpu,cpuacct:" + path + "\n1:name=systemd:" + path + "\n0::/\n"
}

func TestParseCgroup(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          Ref
	}{
		// containerd, systemd driver, cgroup v2: the three QoS classes.
		{"containerd systemd burstable", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope\n", Ref{cid, uid}},
		{"containerd systemd besteffort", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope\n", Ref{cid, uid}},
		{"containerd systemd guaranteed", "0::/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope\n", Ref{cid, uid}},
		// containerd, cgroupfs driver (k3s, kubeadm without systemd).
		{"containerd cgroupfs burstable", "0::/kubepods/burstable/pod" + uid + "/" + cid + "\n", Ref{cid, uid}},
		{"containerd cgroupfs besteffort", "0::/kubepods/besteffort/pod" + uid + "/" + cid + "\n", Ref{cid, uid}},
		{"containerd cgroupfs guaranteed", "0::/kubepods/pod" + uid + "/" + cid + "\n", Ref{cid, uid}},
		{"containerd cgroupfs v1", v1Lines("/kubepods/burstable/pod" + uid + "/" + cid), Ref{cid, uid}},
		{"containerd systemd v1", v1Lines("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope"), Ref{cid, uid}},
		// CRI-O.
		{"cri-o systemd", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/crio-" + cid + ".scope\n", Ref{cid, uid}},
		{"cri-o systemd guaranteed v1", v1Lines("/kubepods.slice/kubepods-pod" + uidU + ".slice/crio-" + cid + ".scope"), Ref{cid, uid}},
		{"cri-o cgroupfs", "0::/kubepods/besteffort/pod" + uid + "/crio-" + cid + "\n", Ref{cid, uid}},
		{"cri-o monitor is not the container", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/crio-conmon-" + cid + ".scope\n", Ref{}},
		// Docker (dockershim, cri-dockerd) and Docker alone.
		{"docker systemd in a pod", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/docker-" + cid + ".scope\n", Ref{cid, uid}},
		{"docker cgroupfs in a pod v1", v1Lines("/kubepods/burstable/pod" + uid + "/" + cid), Ref{cid, uid}},
		{"docker alone systemd", "0::/system.slice/docker-" + cid + ".scope\n", Ref{ContainerID: cid}},
		{"docker alone cgroupfs v1", v1Lines("/docker/" + cid), Ref{ContainerID: cid}},
		{"podman", "0::/machine.slice/libpod-" + cid + ".scope\n", Ref{ContainerID: cid}},
		// Nested and namespaced paths.
		{"kind node", "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope\n", Ref{cid, uid}},
		{"read from another pod's cgroup namespace", "0::/../../../kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope\n", Ref{cid, uid}},
		{"static pod", "0::/kubepods/burstable/pod" + static + "/" + cid + "\n", Ref{cid, static}},
		{"static pod systemd", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + static + ".slice/cri-containerd-" + cid + ".scope\n", Ref{cid, static}},
		{"v2 line wins over v1", "4:memory:/docker/" + strings.Repeat("a", 64) + "\n0::/kubepods/pod" + uid + "/" + cid + "\n", Ref{cid, uid}},
		{"trailing slash", "0::/kubepods/pod" + uid + "/" + cid + "/\n", Ref{cid, uid}},
		{"no trailing newline", "0::/kubepods/pod" + uid + "/" + cid, Ref{cid, uid}},
		// Not a container.
		{"root", "0::/\n", Ref{}},
		{"systemd service", "0::/system.slice/kubelet.service\n", Ref{}},
		{"user session", "0::/user.slice/user-1000.slice/session-3.scope\n", Ref{}},
		{"pod cgroup itself", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice\n", Ref{}},
		{"short id", "0::/kubepods/pod" + uid + "/abc123\n", Ref{}},
		{"upper-case id", "0::/kubepods/pod" + uid + "/" + strings.ToUpper(cid) + "\n", Ref{}},
		{"v1 host process", v1Lines("/user.slice"), Ref{}},
		{"empty", "", Ref{}},
		{"garbage", "not a cgroup file\n::\n", Ref{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseCgroup(tc.content); got != tc.want {
				t.Errorf("ParseCgroup(%q)\n = %+v\nwant %+v", tc.content, got, tc.want)
			}
		})
	}
}

func TestReadCgroup(t *testing.T) {
	// This test's own process: whatever it runs in, the file parses.
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skipf("no /proc/self/cgroup: %v", err)
	}
	got, err := ReadCgroup(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if want := ParseCgroup(string(data)); got != want {
		t.Errorf("ReadCgroup(self) = %+v, ParseCgroup of the file = %+v", got, want)
	}
	if _, err := ReadCgroup(1 << 30); err == nil {
		t.Error("ReadCgroup of a pid that cannot exist succeeded")
	}
}

func BenchmarkParseCgroup(b *testing.B) {
	content := "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope\n"
	for b.Loop() {
		ParseCgroup(content)
	}
}
