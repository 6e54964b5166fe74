package discovery

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
)

// tcpListen is TCP_LISTEN in the st column of /proc/net/tcp.
const tcpListen = "0A"

// ListeningPorts returns the TCP ports process pid listens on, IPv4 and
// IPv6, sorted, each once: the listening sockets of its network namespace
// (/proc/PID/net/tcp, tcp6) whose inodes are among its open files
// (/proc/PID/fd). It walks every open file, so it costs more than Inspect:
// call it only when a selector needs ports. Errors: ErrGone (wrapped) when
// the process exited; a permission error saying what is needed.
func ListeningPorts(pid int) ([]int, error) {
	ports, err := listeningPorts(pid)
	if err != nil {
		return nil, fmt.Errorf("listening ports of process %d: %w", pid, procError(err))
	}
	return ports, nil
}

func listeningPorts(pid int) ([]int, error) {
	inodes, err := socketInodes(pid)
	if err != nil {
		return nil, err
	}
	if len(inodes) == 0 {
		return nil, nil
	}
	var ports []int
	for _, file := range []string{"net/tcp", "net/tcp6"} {
		p, err := listenersIn(procPath(pid, file), inodes)
		if errors.Is(err, fs.ErrNotExist) && file == "net/tcp6" {
			continue // a kernel without IPv6
		}
		if err != nil {
			return nil, err
		}
		ports = append(ports, p...)
	}
	slices.Sort(ports)
	return slices.Compact(ports), nil
}

// socketInodes returns the inodes of the sockets among pid's open files
// (links "socket:[INODE]" in /proc/PID/fd).
func socketInodes(pid int) (map[uint64]bool, error) {
	dir := procPath(pid, "fd")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	inodes := make(map[uint64]bool)
	for _, e := range entries {
		target, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		if s, ok := strings.CutPrefix(target, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				inodes[ino] = true
			}
		}
	}
	return inodes, nil
}

// listenersIn returns the ports of the listening sockets in a
// /proc/net/tcp-format file whose inodes are in inodes. A line:
//
//	sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
//	0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 12345 ...
func listenersIn(path string, inodes map[uint64]bool) ([]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ports []int
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != tcpListen {
			continue
		}
		ino, err := strconv.ParseUint(fields[9], 10, 64)
		if err != nil || !inodes[ino] {
			continue
		}
		_, portHex, ok := strings.Cut(fields[1], ":")
		if !ok {
			continue
		}
		if port, err := strconv.ParseUint(portHex, 16, 16); err == nil {
			ports = append(ports, int(port))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return ports, nil
}
