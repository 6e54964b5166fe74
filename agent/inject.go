package agent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
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
