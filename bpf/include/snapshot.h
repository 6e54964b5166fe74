/* SPDX-License-Identifier: GPL-2.0 */
/*
 * snapshot.h: reading several fields of one struct in the traced process
 * with one bpf_probe_read_user (see struct snap).
 */
#pragma once

#include "base.h"

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
 * A snapshot lives in a per-CPU array (a program's stack, 512 bytes, has
 * no room for it): library.h's snap_begin, frames.h's read_words. Like
 * every per-CPU scratch buffer, it is only the program's own while the
 * program is not preempted (a kernel with full preemption can run
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

/* Empties s, for the fields of another object. */
static __always_inline void snap_reset(struct snap *s)
{
	s->base = 0;
	s->from = s->to = 0;
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

