/* SPDX-License-Identifier: GPL-2.0 */
/*
 * propagation.h: how a library's probes hand a client call's trace
 * context to the socket program that puts it on the wire
 * (bpf/propagation/propagation.c). The maps belong to the propagation
 * object: the agent loads every library with these replaced by its maps.
 */
#pragma once

#include "library.h"

/* A client call's context, from when its request is ready to be sent. */
struct pending_ctx {
	struct trace_ctx tc;
	__u64 at_ns;
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
	if (bpf_map_update_elem(&conn_pending, k, &p, BPF_NOEXIST)) {
		stat_inc(STAT_INJECT_UNSENT);
		bpf_map_update_elem(&conn_pending, k, &p, BPF_ANY);
	}
}
