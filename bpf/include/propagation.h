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

/* HTTP/1: the request head a thread is about to write (key: pid_tgid). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct pending_ctx);
} writing SEC(".maps");

/*
 * HTTP/2: a HEADERS frame a process has encoded and is about to send, by
 * its connection's ports and its stream id. (Not by thread: grpc-go's
 * writer yields between encoding and sending, and may resume on another.)
 */
struct h2key {
	__u32 pid;
	__u16 local_port;
	__u16 remote_port;
	__u32 stream_id;
	__u32 _pad;
};


struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct h2key);
	__type(value, struct pending_ctx);
} h2_streams SEC(".maps");
