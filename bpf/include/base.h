/* SPDX-License-Identifier: GPL-2.0 */
/*
 * base.h: the few kernel UAPI definitions latscope's BPF programs need,
 * declared here so the programs build without kernel or arch headers
 * (the same object is loaded on every kernel that has BTF and ringbuf).
 */
#pragma once

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_SOCKHASH = 18,
	BPF_MAP_TYPE_SK_STORAGE = 24,
	BPF_MAP_TYPE_RINGBUF = 27,
};

/* bpf_map_update_elem flags */
#define BPF_ANY 0
#define BPF_NOEXIST 1

/* map_flags */
#define BPF_F_NO_PREALLOC (1U << 0)

/* bpf_sk_storage_get flags */
#define BPF_SK_STORAGE_GET_F_CREATE (1ULL << 0)

/* bpf_ringbuf_submit / bpf_ringbuf_query flags */
#define BPF_RB_NO_WAKEUP (1ULL << 0)
#define BPF_RB_FORCE_WAKEUP (1ULL << 1)
#define BPF_RB_AVAIL_DATA 0

/* bpf_get_stack flags */
#define BPF_F_USER_STACK (1ULL << 8)

#include <bpf/bpf_helpers.h>

/* Socket program contexts (UAPI layouts; only the fields used). */
#define __bpf_md_ptr(type, name)                                                                   \
	union {                                                                                    \
		type name;                                                                         \
		__u64 : 64;                                                                        \
	} __attribute__((aligned(8)))

struct bpf_sock;

struct sk_msg_md {
	__bpf_md_ptr(void *, data);
	__bpf_md_ptr(void *, data_end);
	__u32 family;
	__u32 remote_ip4; /* network byte order */
	__u32 local_ip4;  /* network byte order */
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port; /* network byte order */
	__u32 local_port;  /* host byte order */
	__u32 size;        /* total size of the message */
	__bpf_md_ptr(struct bpf_sock *, sk);
};

struct bpf_sock_ops {
	__u32 op;
	union {
		__u32 args[4];
		__u32 reply;
		__u32 replylong[4];
	};
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 is_fullsock;
	__u32 snd_cwnd;
	__u32 srtt_us;
	__u32 bpf_sock_ops_cb_flags;
	__u32 state;
	__u32 rtt_min;
	__u32 snd_ssthresh;
	__u32 rcv_nxt;
	__u32 snd_nxt;
	__u32 snd_una;
	__u32 mss_cache;
	__u32 ecn_flags;
	__u32 rate_delivered;
	__u32 rate_interval_us;
	__u32 packets_out;
	__u32 retrans_out;
	__u32 total_retrans;
	__u32 segs_in;
	__u32 data_segs_in;
	__u32 segs_out;
	__u32 data_segs_out;
	__u32 lost_out;
	__u32 sacked_out;
	__u32 sk_txhash;
	__u64 bytes_received;
	__u64 bytes_acked;
	__bpf_md_ptr(struct bpf_sock *, sk);
};

#define SK_DROP 0
#define SK_PASS 1
#define BPF_SOCK_OPS_TCP_CONNECT_CB 3
#define BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB 4
#define AF_INET 2
#define AF_INET6 10

/*
 * The flags for submitting a ring buffer record. Notifications are
 * batched: the reader drains on a short timer and is woken early only
 * when `threshold` bytes are pending, by the records that take the ring
 * past it (those within WAKE_WINDOW above it; records are smaller). A
 * wakeup is an interrupt (a VM exit, ~1.3 µs here, where a silent submit
 * costs ~0.26 µs): once the reader has been woken, more of them only
 * make the traced service pay most when the reader is behind.
 */
#define WAKE_WINDOW 4096

static __always_inline __u64 ring_wake(void *ring, __u64 threshold)
{
	__u64 pending = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);
	return pending >= threshold && pending < threshold + WAKE_WINDOW ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}
