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
 * A snapshot of a struct in the traced process: the fields a program
 * uses, read with one bpf_probe_read_user. A read costs ~100 ns on the
 * kernels measured (6.18 with hardened usercopy and SRSO mitigations: the
 * checks around the copy, not the copy) whatever its size up to a few
 * hundred bytes, so a program reads each struct once, takes its fields
 * from the snapshot and reads only the bytes its strings point to:
 *
 *	struct snap *s = snap_begin();
 *	if (!s)
 *		return 0;
 *	snap_want(s, FIELD(fl, F_X_PTR), SNAP_WORD);
 *	snap_want(s, FIELD(fl, F_X_NAME), SNAP_STRING);
 *	snap_read(s, x);
 *	void *p = (void *)snap_ptr(s, FIELD(fl, F_X_PTR));
 *	snap_gostring(s, FIELD(fl, F_X_NAME), buf, sizeof(buf));
 *
 * The read spans the fields wanted, from the first one's word to the end
 * of the last one, never past it (the object may end there, before an
 * unmapped page), and at most SNAP_MAX bytes. A field the snapshot does
 * not hold (beyond SNAP_MAX, or the read failed) is read on its own, as
 * read_ptr and read_gostring do: what a field reads, and every failure
 * counted, is the same as without the snapshot. Fields are the words of
 * a Go struct: 8-aligned on 64-bit targets.
 *
 * The snapshot is the CPU's (a program's stack, 512 bytes, has no room
 * for it): a program holds one at a time, snap_reset starts the next.
 * Like every per-CPU scratch buffer, it is only the program's own while
 * the program is not preempted (a kernel with full preemption can run
 * another uprobe's program on the CPU in between).
 */
#define SNAP_MAX 256
#define SNAP_WORD 8    /* a pointer or an int */
#define SNAP_STRING 16 /* a string (data, len) */

struct snap {
	__u64 w[SNAP_MAX / 8]; /* the object's words from offset `from` on */
	__u64 base;            /* the object's address; 0 when not read */
	__u64 from;
	__u64 to; /* snap_want: the end of the fields wanted; snap_read: of w's bytes */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct snap);
} snap_scratch SEC(".maps");

/* Empties s, for the fields of another object. */
static __always_inline void snap_reset(struct snap *s)
{
	s->base = 0;
	s->from = s->to = 0;
}

/* The CPU's snapshot, emptied (0 never happens: an array's only entry). */
static __always_inline struct snap *snap_begin(void)
{
	__u32 zero = 0;
	struct snap *s = bpf_map_lookup_elem(&snap_scratch, &zero);
	if (s)
		snap_reset(s);
	return s;
}

/* Asks for the field of size bytes at off. */
static __always_inline void snap_want(struct snap *s, __u64 off, __u64 size)
{
	if (!s->to || off < s->from)
		s->from = off;
	if (off + size > s->to)
		s->to = off + size;
}

/* Reads the fields wanted of the object at base (0: none read). Not counted. */
static __always_inline void snap_read(struct snap *s, void *base)
{
	s->from &= ~7ULL; /* the first field's word: within the object */
	__u64 n = s->to > s->from ? s->to - s->from : 0;
	s->base = (__u64)base;
	s->to = s->from; /* holds nothing until read */
	if (n > SNAP_MAX)
		n = SNAP_MAX;
	if (base && n && bpf_probe_read_user(s->w, n, base + s->from) == 0)
		s->to = s->from + n;
}

/*
 * Copies the n words (1 or 2, a constant) at off of the object into dst,
 * from the snapshot when it holds them, else read from the object; 0 on
 * success. Not counted.
 */
static __always_inline int snap_words(struct snap *s, __u64 off, __u64 *dst, int n)
{
	__u64 at = off - s->from;
	if (off >= s->from && at < SNAP_MAX && at + 8 * n <= s->to - s->from && !(at & 7)) {
		for (int i = 0; i < n; i++)
			dst[i] = s->w[(at / 8 + i) & (SNAP_MAX / 8 - 1)]; /* masked: in bounds for the verifier */
		return 0;
	}
	return !s->base || bpf_probe_read_user(dst, 8 * n, (void *)(s->base + off)) ? -1 : 0;
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
