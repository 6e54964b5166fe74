/* SPDX-License-Identifier: GPL-2.0 */
/*
 * library.h: what an instrumented library's probes share. A library's
 * entry and exit programs wrap frame_push / frame_find + frame_pop, so its
 * calls are ordinary frames (nested, linked across goroutines, unwound on
 * panics), and send what they read from the library's structs as
 * RECORD_LIB records keyed by the call id.
 *
 * Struct field offsets differ by Go and library version: the agent writes
 * them per process into lib_offsets, in the order of the library's field
 * enum, and they are read here, never hard-coded.
 */
#pragma once

#include "frames.h"

/* Set by the agent when it loads the library's object. */
const volatile __u8 lib_id = 0;

static __always_inline struct lib_fields *lib_fields(void)
{
	struct lib_key k = {.pid = bpf_get_current_pid_tgid() >> 32, .lib = lib_id};
	return bpf_map_lookup_elem(&lib_offsets, &k);
}

/* Field offset i of this library (i is a constant of its field enum). */
#define FIELD(fields, i) ((fields)->off[(i) & (LIB_MAX_FIELDS - 1)])

/* Reserves a library record of type T for call_id; 0 when the ring is full. */
#define LIB_RECORD(T, probe_, call_id_)                                                      \
	({                                                                                   \
		T *r_ = bpf_ringbuf_reserve(&events, sizeof(T), 0);                          \
		if (r_) {                                                                    \
			__builtin_memset(r_, 0, sizeof(T));                                  \
			r_->h.type = RECORD_LIB;                                             \
			r_->h.lib = lib_id;                                                  \
			r_->h.probe = (probe_);                                              \
			r_->h.pid = bpf_get_current_pid_tgid() >> 32;                        \
			r_->h.call_id = (call_id_);                                          \
		} else {                                                                     \
			stat_inc(STAT_RINGBUF_FULL);                                         \
		}                                                                            \
		r_;                                                                          \
	})

static __always_inline void lib_submit(void *r)
{
	__u64 wake = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes
			     ? BPF_RB_FORCE_WAKEUP
			     : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(r, wake);
}

/* Reads a pointer-sized field at base+off; 0 on failure (counted). */
static __always_inline __u64 read_ptr(void *base, __u64 off)
{
	__u64 v = 0;
	if (!base || bpf_probe_read_user(&v, sizeof(v), base + off)) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 0;
	}
	return v;
}

/*
 * Copies the Go string (ptr, len) at base+off into buf (size n, a power
 * of two), truncated; returns the string's full length.
 */
static __always_inline __u64 read_gostring(void *base, __u64 off, void *buf, __u32 n)
{
	struct {
		__u64 ptr;
		__u64 len;
	} s = {};
	if (!base || bpf_probe_read_user(&s, sizeof(s), base + off)) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 0;
	}
	__u64 len = s.len;
	if (len > n)
		len = n;
	if (len && bpf_probe_read_user(buf, len, (void *)s.ptr)) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 0;
	}
	return s.len;
}
