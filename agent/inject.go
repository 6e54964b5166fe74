package agent

import (
	"bufio"
	"errors"
	"fmt"
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
	conns, err := outgoingIPv4(pid)
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

// outgoingIPv4 returns pid's established IPv4 TCP connections that are
// not accepted on one of its listening ports, by file descriptor, keyed
// as the socket programs key them.
func outgoingIPv4(pid int) (map[int]propagation.PropagationSockkey, error) {
	table, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return nil, fmt.Errorf("read TCP table of pid %d: %w", pid, err)
	}
	const (
		established = "01"
		listen      = "0A"
	)
	listening := map[uint32]bool{}
	byInode := map[string]propagation.PropagationSockkey{}
	for _, line := range strings.Split(string(table), "\n")[1:] {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		lip, lport, err1 := hexAddr(f[1])
		rip, rport, err2 := hexAddr(f[2])
		if err1 != nil || err2 != nil {
			continue
		}
		switch f[3] {
		case listen:
			listening[lport] = true
		case established:
			// The sockets map's keys only need to be unique.
			byInode[f[9]] = propagation.PropagationSockkey{LocalIp4: lip, RemoteIp4: rip, LocalPort: lport, RemotePort: rport}
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

// hexAddr parses /proc/net/tcp's "0100007F:1F90": the IPv4 address as the
// kernel's 32-bit word, the port in host order.
func hexAddr(s string) (uint32, uint32, error) {
	ip, port, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("address %q", s)
	}
	a, err := strconv.ParseUint(ip, 16, 32)
	if err != nil {
		return 0, 0, err
	}
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return 0, 0, err
	}
	return uint32(a), uint32(p), nil
}
