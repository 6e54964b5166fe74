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

/* HTTP/2: a HEADERS frame a thread has encoded and is about to send. */
struct h2key {
	__u64 tid; /* pid_tgid */
	__u32 stream_id;
	__u32 _pad;
};

struct h2_pending {
	struct trace_ctx tc;
	__u64 at_ns; /* when the frame was encoded */
};

/*
 * A frame is sent within microseconds of its encoding, by the same
 * goroutine, almost always on the same thread. An older entry is one
 * whose frame left from another thread: it must not name a later frame
 * that reuses the stream id on another connection of this thread.
 */
#define H2_PENDING_MAX_AGE_NS (100ULL * 1000 * 1000)

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct h2key);
	__type(value, struct h2_pending);
} h2_streams SEC(".maps");
