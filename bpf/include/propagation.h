/* SPDX-License-Identifier: GPL-2.0 */
/*
 * propagation.h: how a library's probes hand a client call's trace
 * context to the socket program that puts it on the wire
 * (bpf/propagation/propagation.c). The maps belong to the propagation
 * object: the agent loads every library with these replaced by its maps.
 */
#pragma once

#include "library.h"
#include <bpf/bpf_core_read.h>

/* The ids of a traceparent value, to compare values by. */
struct tp_ids {
	__u64 trace_hi;
	__u64 trace_lo;
	__u64 span_id;
};

#define RECV_MAX 4 /* valid traceparent values kept per received request */

/*
 * The traceparent header values a server request received. W3C allows
 * one: a request with two or more has no valid context (the W3C test
 * suite's test_traceparent_duplicated: the server starts a new trace),
 * but a proxy that forwards its headers sends them all on, so all are
 * kept to recognize the copies.
 */
struct received {
	struct tp_ids v[RECV_MAX]; /* the valid values, in header order */
	__u8 n;                    /* valid values in v */
	__u8 lines;                /* traceparent header lines, valid or not (up to 255) */
	__u8 _pad[6];
};

/* A client call's context, from when its request is ready to be sent. */
struct pending_ctx {
	struct trace_ctx tc;
	__u64 at_ns;
	__u32 stream_id; /* entries keyed by goroutine: the HTTP/2 stream (0: HTTP/1) */
	__u32 _pad;
	/*
	 * The root of the request chain the call belongs to: what that
	 * received is looked up (received_by_root) only when the request
	 * carries a traceparent already, which few do.
	 */
	__u64 root_call_id;
};

/*
 * A request is sent within microseconds to milliseconds of being ready.
 * An entry older than this was never seen leaving (a connection latscope
 * does not follow, or its frames could not be followed); it must not
 * name a later request. The agent sweeps such entries out and counts
 * them (propagation_unsent).
 */
#define PENDING_MAX_AGE_NS (1000ULL * 1000 * 1000)

/*
 * A request a process is about to send, by its connection's ports: for
 * HTTP/1 (stream_id 0) the next request head on the connection (a client
 * connection carries one request at a time); for HTTP/2 the HEADERS frame
 * of stream_id. Not by thread: Go's writer goroutines may move to another
 * thread between preparing a request and the write call (the garbage
 * collector preempts them, grpc-go's writer yields).
 */
struct connkey {
	__u32 pid;
	__u16 local_port;
	__u16 remote_port;
	__u32 stream_id;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct connkey);
	__type(value, struct pending_ctx);
} conn_pending SEC(".maps");

/* The port of the *net.TCPAddr in the net.Addr at netfd+addr_off; 0 if none. */
static __always_inline __u16 addr_port(__u64 netfd, __u64 addr_off, __u64 port_off)
{
	__u64 addr = 0;
	__s64 port = 0;
	if (bpf_probe_read_user(&addr, sizeof(addr), (void *)netfd + addr_off + 8) || !addr ||
	    bpf_probe_read_user(&port, sizeof(port), (void *)addr + port_off) || port <= 0 || port > 0xffff)
		return 0;
	return port;
}

/*
 * Where in Go's net package a connection's ports are: a *net.TCPConn's
 * conn.fd (*netFD), its laddr and raddr (net.Addr holding *TCPAddr), and
 * TCPAddr.Port. Libraries table these per Go version.
 */
struct tcp_offsets {
	__u64 conn_fd; /* net.TCPConn.conn + net.conn.fd */
	__u64 laddr, raddr, port;
};

/*
 * Fills k's ports from conn, a *net.TCPConn. Another net.Conn (TLS, a
 * wrapper) gives nonsense here, almost always an impossible port: 0 is
 * returned then, and the request is not injected.
 */
static __always_inline int tcp_conn_ports(__u64 conn, struct tcp_offsets *o, struct connkey *k)
{
	__u64 fd = 0;
	if (!conn || bpf_probe_read_user(&fd, sizeof(fd), (void *)conn + o->conn_fd) || !fd)
		return 0;
	k->local_port = addr_port(fd, o->laddr, o->port);
	k->remote_port = addr_port(fd, o->raddr, o->port);
	return k->local_port && k->remote_port;
}

/*
 * What a request chain received, by its root (the server request): kept
 * from the server request's start to its end when it carried any
 * traceparent, so its client calls can tell a forwarded copy (a proxy
 * copying request headers) from a value the application set itself.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct rootkey);
	__type(value, struct received);
} received_by_root SEC(".maps");

/* What the request chain rooted at root received; 0 if nothing (or it has ended). */
static __always_inline struct received *chain_received(__u32 pid, __u64 root)
{
	if (!root)
		return 0;
	struct rootkey rk = {.pid = pid, .call_id = root};
	return bpf_map_lookup_elem(&received_by_root, &rk);
}

/*
 * A request whose socket is not known yet, handed on by what will lead to
 * it: the goroutine that writes it next (the socket program, running in
 * the writing thread, reads which goroutine that thread runs), or a
 * library object that goroutine will take (e.g. net/http's *Request, from
 * the caller's goroutine to the connection's writer goroutine). The
 * socket program moves a goroutine's entry into conn_pending, by the
 * ports of the socket it writes on: nothing here depends on the type of
 * the connection the library holds (a wrapper, a pool's conn), only on
 * the socket underneath.
 */
enum hand_kind {
	HAND_GOROUTINE = 1, /* id: goid */
	HAND_OBJECT = 2,    /* id: the object's address */
};

struct handkey {
	__u32 pid;
	__u32 kind; /* enum hand_kind */
	__u64 id;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct handkey);
	__type(value, struct pending_ctx);
} handoffs SEC(".maps");

/*
 * Leaves p under k. An entry already there was never seen leaving (its
 * writer moved on without writing it, or wrote it where the socket
 * programs do not look): counted, replaced.
 */
static __always_inline void hand_on(struct handkey *k, struct pending_ctx *p)
{
	if (bpf_map_update_elem(&handoffs, k, p, BPF_NOEXIST)) {
		stat_inc(STAT_INJECT_UNSENT);
		bpf_map_update_elem(&handoffs, k, p, BPF_ANY);
	}
}

#if defined(__TARGET_ARCH_x86)
/* The kernel's thread state, for CO-RE (only the field read). */
struct thread_struct___prop {
	unsigned long fsbase;
} __attribute__((preserve_access_index));

struct task_struct___prop {
	struct thread_struct___prop thread;
} __attribute__((preserve_access_index));

/*
 * The g the current thread runs, from its thread-local storage at FS base
 * + pc->tls_off (symbolizer.GTLS: -8 for Go's own linker, elsewhere with
 * an external one); 0 if unknown or unreadable. Go sets FS base with
 * arch_prctl, which keeps the kernel's copy current, so it is right for
 * the running task too. Readable from socket programs: they run in the
 * sending thread.
 */
static __always_inline __u64 tls_g(struct proc_config *pc)
{
	struct task_struct___prop *t = (void *)bpf_get_current_task();
	__u64 fs = 0, g = 0;
	if (!pc->tls_off || bpf_core_read(&fs, sizeof(fs), &t->thread.fsbase) || !fs ||
	    bpf_probe_read_user(&g, sizeof(g), (void *)(fs + pc->tls_off)))
		return 0;
	return g;
}
#else
/* arm64 keeps g in R28 and in TLS only with cgo: not read here. */
static __always_inline __u64 tls_g(struct proc_config *pc)
{
	return 0;
}
#endif

/*
 * Whether the socket programs will see which goroutine writes: the g in
 * this thread's TLS is the probe's goroutine (checked per call, not
 * trusted from the binary alone). When it is not (the TLS slot unknown,
 * arm64), libraries fall back to the connection's ports.
 */
static __always_inline int tls_g_ok(struct pt_regs *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct proc_config *pc = bpf_map_lookup_elem(&procs, &pid);
	if (!pc)
		return 0;
	__u64 g = tls_g(pc);
	return g && g == (__u64)GO_G(ctx);
}

/*
 * An HTTP/1 client call's request is about to go out on the connection
 * keyed by k (tcp: its ports could be read; a TLS or unknown connection
 * cannot be followed): hand the call's trace context, kept by goroutine g
 * in the library's ctx_map, to the socket programs, which insert it into
 * the connection's next request head. A connection carries one request at
 * a time, so a context a previous request left and never sent is counted
 * and replaced; with no context for this call, one left there must not
 * name it.
 */
static __always_inline void hand_over_ctx(void *ctx_map, struct gkey *g, struct connkey *k, int tcp)
{
	struct trace_ctx *tc = bpf_map_lookup_elem(ctx_map, g);
	if (!tc) {
		if (tcp)
			bpf_map_delete_elem(&conn_pending, k);
		return;
	}
	if (!tcp) {
		stat_inc(STAT_INJECT_FAILED);
		return;
	}
	struct pending_ctx p = {.tc = *tc, .at_ns = bpf_ktime_get_ns()};
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, g);
	if (gs)
		p.root_call_id = gs->root_call_id;
	if (bpf_map_update_elem(&conn_pending, k, &p, BPF_NOEXIST)) {
		stat_inc(STAT_INJECT_UNSENT);
		bpf_map_update_elem(&conn_pending, k, &p, BPF_ANY);
	}
}
