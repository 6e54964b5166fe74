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
const volatile __u8 inject_enabled = 0; /* put trace context on outgoing requests */

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
	bpf_ringbuf_submit(r, ring_wake(&events, wakeup_bytes));
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
 * Copies the Go string (ptr, len) at base+off into buf (size n),
 * truncated; returns the string's full length, 0 when it could not be
 * read. Not counted: a caller that can retry later uses it directly.
 * (A uprobe cannot fault pages in: a string in a page the program has not
 * touched yet, such as a constant in .rodata, reads as missing.)
 */
static __always_inline __u64 try_gostring(void *base, __u64 off, void *buf, __u32 n)
{
	struct {
		__u64 ptr;
		__u64 len;
	} s = {};
	if (!base || bpf_probe_read_user(&s, sizeof(s), base + off))
		return 0;
	__u64 len = s.len;
	if (len > n)
		len = n;
	if (len && bpf_probe_read_user(buf, len, (void *)s.ptr))
		return 0;
	return s.len;
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

/*
 * The library programs' snapshot (snapshot.h): a program holds one at a
 * time, snap_reset starts the next. It is the CPU's (a program's stack,
 * 512 bytes, has no room for it), apart from the one frame bookkeeping
 * reads the goroutine with (words_scratch), so neither overwrites the
 * other whatever order a program uses them in.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct snap);
} snap_scratch SEC(".maps");

/* The CPU's snapshot, emptied (0 never happens: an array's only entry). */
static __always_inline struct snap *snap_begin(void)
{
	__u32 zero = 0;
	struct snap *s = bpf_map_lookup_elem(&snap_scratch, &zero);
	if (s)
		snap_reset(s);
	return s;
}

/* The pointer-sized field at off; 0 on failure (counted), as read_ptr. */
static __always_inline __u64 snap_ptr(struct snap *s, __u64 off)
{
	__u64 v = 0;
	if (snap_words(s, off, &v, 1)) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 0;
	}
	return v;
}

/*
 * Copies the Go string at off into buf (size n), truncated; returns its
 * full length, 0 when it could not be read (counted), as read_gostring.
 */
static __always_inline __u64 snap_gostring(struct snap *s, __u64 off, void *buf, __u32 n)
{
	__u64 str[2] = {}; /* data, len */
	if (snap_words(s, off, str, 2)) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 0;
	}
	__u64 len = str[1];
	if (len > n)
		len = n;
	if (len && bpf_probe_read_user(buf, len, (void *)str[0])) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 0;
	}
	return str[1];
}

/* W3C trace context, as received or to be sent. */
struct trace_ctx {
	__u64 trace_hi;
	__u64 trace_lo;
	__u64 span_id;
	__u8 flags;
	__u8 valid;
	__u8 _pad[6];
};

static __always_inline int hexval(__u8 c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* W3C: lowercase hex only */
}

/* Parses n hex digits at v into *out; 0 on success. */
static __always_inline int parse_hex(const __u8 *v, int n, __u64 *out)
{
	__u64 x = 0;
#pragma unroll
	for (int i = 0; i < 16; i++) {
		if (i >= n)
			break;
		int d = hexval(v[i]);
		if (d < 0)
			return -1;
		x = (x << 4) | d;
	}
	*out = x;
	return 0;
}

#define TRACEPARENT_LEN 55 /* 00-<32 hex>-<16 hex>-<2 hex> */

/* Parses a traceparent value (version 00); 0 on success. */
static __always_inline int parse_traceparent(const __u8 *v, struct trace_ctx *tc)
{
	__u64 flags;
	if (v[0] != '0' || v[1] != '0' || v[2] != '-' || v[35] != '-' || v[52] != '-')
		return -1;
	if (parse_hex(v + 3, 16, &tc->trace_hi) || parse_hex(v + 19, 16, &tc->trace_lo) ||
	    parse_hex(v + 36, 16, &tc->span_id) || parse_hex(v + 53, 2, &flags))
		return -1;
	if ((tc->trace_hi | tc->trace_lo) == 0 || tc->span_id == 0)
		return -1; /* all-zero ids are invalid */
	tc->flags = flags;
	tc->valid = 1;
	return 0;
}
