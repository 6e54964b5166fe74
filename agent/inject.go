package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/latscope/latscope/bpf/propagation"
)

// enableInjection attaches the socket programs that put trace context on
// outgoing requests to the root cgroup v2. It returns why injection is
// unavailable, if it is.
func (t *Tracer) enableInjection() error {
	cg, err := cgroup2Root()
	if err != nil {
		return err
	}
	t.injectLinks, err = t.prop.Attach(cg)
	return err
}

func (t *Tracer) closeInjection() error {
	var errs []error
	for _, l := range t.injectLinks {
		errs = append(errs, l.Close())
	}
	t.injectLinks = nil
	return errors.Join(errs...)
}

// cgroup2Root finds where the cgroup v2 hierarchy is mounted
// (/sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones).
func cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup v2: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mount-point ... - fstype source options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(pre)
		if ok && len(fields) >= 5 && strings.HasPrefix(post, "cgroup2 ") {
			return fields[4], nil
		}
	}
	return "", errors.New("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)")
}

// adoptConnections adds the outgoing TCP connections pid opened before
// its probes were attached to the socket programs' map, so requests on
// them (keep-alive HTTP/1 connections, gRPC channels) carry trace context
// too; the sock_ops program only sees connections as they are
// established. It duplicates each socket with pidfd_getfd (which needs
// the right to ptrace pid). Connections whose local port is one pid
// listens on are accepted ones, not its own: left out.
func (t *Tracer) adoptConnections(pid int) (int, error) {
	conns, err := outgoing(pid)
	if err != nil || len(conns) == 0 {
		return 0, err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return 0, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	n := 0
	var errs []error
	for fd, key := range conns {
		dup, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			errs = append(errs, fmt.Errorf("pidfd_getfd %d/%d: %w", pid, fd, err))
			continue
		}
		err = t.prop.Sockets.Update(key, uint64(dup), ebpf.UpdateNoExist)
		unix.Close(dup)
		switch {
		case err == nil:
			n++
		case errors.Is(err, ebpf.ErrKeyExist):
			// already followed (shared with another traced process)
		default:
			// e.g. EBUSY: the socket is in another program's sockmap
			errs = append(errs, fmt.Errorf("add connection %d/%d: %w", pid, fd, err))
		}
	}
	return n, errors.Join(errs...)
}

// outgoing returns pid's established TCP connections (IPv4 and IPv6)
// that are not accepted on one of its listening ports, by file
// descriptor, keyed for the sockets map (keys only need be unique).
func outgoing(pid int) (map[int]propagation.PropagationSockkey, error) {
	listening := map[uint32]bool{}
	byInode := map[string]propagation.PropagationSockkey{}
	for _, t := range []struct {
		file   string
		family uint32
	}{{"tcp", unix.AF_INET}, {"tcp6", unix.AF_INET6}} {
		table, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, t.file))
		if errors.Is(err, fs.ErrNotExist) && t.family == unix.AF_INET6 {
			continue // IPv6 disabled
		}
		if err != nil {
			return nil, fmt.Errorf("read TCP table of pid %d: %w", pid, err)
		}
		const (
			established = "01"
			listen      = "0A"
		)
		for _, line := range strings.Split(string(table), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			f := strings.Fields(line)
			if len(f) < 10 {
				continue
			}
			key := propagation.PropagationSockkey{Family: t.family}
			var err1, err2 error
			key.LocalIp, key.LocalPort, err1 = hexAddr(f[1])
			key.RemoteIp, key.RemotePort, err2 = hexAddr(f[2])
			if err1 != nil || err2 != nil {
				continue
			}
			switch f[3] {
			case listen:
				listening[key.LocalPort] = true
			case established:
				byInode[f[9]] = key
			}
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, fmt.Errorf("list descriptors of pid %d: %w", pid, err)
	}
	out := map[int]propagation.PropagationSockkey{}
	for _, e := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		inode, ok := strings.CutPrefix(target, "socket:[")
		if err != nil || !ok {
			continue
		}
		key, ok := byInode[strings.TrimSuffix(inode, "]")]
		fd, err := strconv.Atoi(e.Name())
		if !ok || err != nil || listening[key.LocalPort] {
			continue
		}
		out[fd] = key
	}
	return out, nil
}

// hexAddr parses /proc/net/tcp's "0100007F:1F90" (and tcp6's 32 hex
// digits): the address as the kernel's 32-bit words, the port.
func hexAddr(s string) ([4]uint32, uint32, error) {
	var ip [4]uint32
	h, port, ok := strings.Cut(s, ":")
	if !ok || (len(h) != 8 && len(h) != 32) {
		return ip, 0, fmt.Errorf("address %q", s)
	}
	for i := 0; i < len(h)/8; i++ {
		w, err := strconv.ParseUint(h[8*i:8*i+8], 16, 32)
		if err != nil {
			return ip, 0, err
		}
		ip[i] = uint32(w)
	}
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return ip, 0, err
	}
	return ip, uint32(p), nil
}
