// Package propagation holds the socket programs that put trace context on
// outgoing requests (propagation.c): a sock_ops program that adds
// outgoing TCP connections to a sockhash and the sk_msg program that
// inserts a W3C traceparent into HTTP/1 request heads and HTTP/2 HEADERS
// frames of traced client calls. Libraries hand it their calls' context
// through the maps in bpf/include/propagation.h.
package propagation

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 Propagation propagation.c -- -I../include

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/latscope/latscope/bpf/calltracer"
)

// Load loads the socket programs with opts applied, sharing the call
// tracer's maps (its counters and traced processes).
func Load(opts calltracer.Options, shared map[string]*ebpf.Map) (*PropagationObjects, error) {
	spec, err := LoadPropagation()
	if err != nil {
		return nil, fmt.Errorf("read propagation BPF object: %w", err)
	}
	if err := calltracer.Configure(spec, opts); err != nil {
		return nil, fmt.Errorf("propagation: %w", err)
	}
	var objs PropagationObjects
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: calltracer.Replacements(spec, shared)}); err != nil {
		return nil, fmt.Errorf("load propagation BPF programs: %w", err)
	}
	return &objs, nil
}

// LoadMaps loads only the maps libraries leave client calls' contexts
// in (SharedMaps), for a tracer that does not inject: the socket
// programs and their sockhash need CAP_NET_ADMIN, the maps do not.
// Libraries built with opts.Inject off never write them; SweepPending
// reads them.
func LoadMaps(opts calltracer.Options, _ map[string]*ebpf.Map) (*PropagationObjects, error) {
	spec, err := LoadPropagation()
	if err != nil {
		return nil, fmt.Errorf("read propagation BPF object: %w", err)
	}
	var objs PropagationObjects
	for name, dst := range map[string]**ebpf.Map{"conn_pending": &objs.ConnPending, "handoffs": &objs.Handoffs, "received_by_root": &objs.ReceivedByRoot} {
		m, err := ebpf.NewMap(spec.Maps[name])
		if err != nil {
			objs.Close()
			return nil, fmt.Errorf("create %s map: %w", name, err)
		}
		*dst = m
	}
	return &objs, nil
}

// SharedMaps are the maps where libraries leave client calls' contexts
// and what their requests received (propagation.h), to pass as
// MapReplacements when loading them.
func (o *PropagationObjects) SharedMaps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{"conn_pending": o.ConnPending, "handoffs": o.Handoffs, "received_by_root": o.ReceivedByRoot}
}

// Attach attaches the programs: sock_ops to cgroup (a cgroup v2
// directory; its processes' outgoing connections are followed), sk_msg
// to the sockhash.
func (o *PropagationObjects) Attach(cgroup string) ([]link.Link, error) {
	ops, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: ebpf.AttachCGroupSockOps, Program: o.TrackSockets})
	if err != nil {
		return nil, fmt.Errorf("attach sock_ops to cgroup %s: %w", cgroup, err)
	}
	msg, err := link.AttachRawLink(link.RawLinkOptions{Target: o.Sockets.FD(), Program: o.InjectTraceparent, Attach: ebpf.AttachSkMsgVerdict})
	if err != nil {
		// Kernels before 6.10 attach sk_msg to a map without a link.
		if rerr := link.RawAttachProgram(link.RawAttachProgramOptions{Target: o.Sockets.FD(), Program: o.InjectTraceparent, Attach: ebpf.AttachSkMsgVerdict}); rerr != nil {
			ops.Close()
			return nil, fmt.Errorf("attach sk_msg program: %w", errors.Join(err, rerr))
		}
		return []link.Link{ops}, nil
	}
	return []link.Link{ops, msg}, nil
}

// MaxPendingAge is how long a client call's context waits for its request
// to leave before it counts as unsent (PENDING_MAX_AGE_NS, with margin).
const MaxPendingAge = 2 * time.Second

// SweepPending deletes the contexts of requests that were ready longer
// than MaxPendingAge ago (all of them, when tracing ends) and never seen
// leaving (connections latscope does not follow, frames it could not
// follow, a writer goroutine that never wrote), whether waiting by
// connection or still handed on, and returns how many: without it they
// would only be evicted, uncounted, by newer ones.
func (o *PropagationObjects) SweepPending(all bool) (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil { // bpf_ktime_get_ns's clock
		return 0, err
	}
	cutoff := uint64(ts.Nano()) - uint64(MaxPendingAge)
	if all {
		cutoff = math.MaxUint64
	}
	n, err := sweep[PropagationConnkey](o.ConnPending, cutoff)
	m, err2 := sweep[PropagationHandkey](o.Handoffs, cutoff)
	return n + m, errors.Join(err, err2)
}

// sweep deletes m's pending contexts (keyed by K) ready before cutoff.
func sweep[K any](m *ebpf.Map, cutoff uint64) (uint64, error) {
	var (
		k    K
		v    PropagationPendingCtx
		old  []K
		errs []error
		n    uint64
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if v.AtNs < cutoff {
			old = append(old, k)
		}
	}
	errs = append(errs, it.Err())
	for _, k := range old {
		if err := m.Delete(k); err == nil {
			n++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}
