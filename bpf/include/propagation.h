/* SPDX-License-Identifier: GPL-2.0 */
/*
 * propagation.h: how a library's probes hand a client call's trace
 * context to the socket program that puts it on the wire
 * (bpf/propagation/propagation.c). The maps belong to the propagation
 * object: the agent loads every library with these replaced by its maps.
 */
#pragma once

#include "library.h"

/* HTTP/1: the request head a thread is about to write (key: pid_tgid). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct trace_ctx);
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

struct h2_pending {
	struct trace_ctx tc;
	__u64 at_ns; /* when the frame was encoded */
};

/*
 * A frame is sent within microseconds to milliseconds of its encoding.
 * An entry older than this was never seen leaving (its connection was
 * opened before latscope attached, or its frames could not be followed);
 * it must not name a later frame of a connection that reuses the ports.
 */
#define H2_PENDING_MAX_AGE_NS (1000ULL * 1000 * 1000)

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct h2key);
	__type(value, struct h2_pending);
} h2_streams SEC(".maps");
