// SPDX-License-Identifier: GPL-2.0
//go:build ignore

/*
 * sched: where the time of a goroutine inside a traced call went, for
 * latency attribution (the user side is the attribution package).
 *
 * Always on (rare hits, see docs/attribution.md for rates):
 *   - runtime.stopTheWorldWithSema / startTheWorldWithSema: the
 *     stop-the-world windows of each traced process (SCHED_STW);
 *   - runtime.gcAssistAlloc, entry and exits: GC mark assists made by a
 *     goroutine inside a traced call (SCHED_ASSIST).
 *
 * Only goroutines inside a traced frame (depth > 0 in frames.h's
 * goroutines map) are followed.
 */

#include "frames.h"

char __license[] SEC("license") = "GPL";

/* What a struct sched_event describes. */
enum sched_kind {
	SCHED_STW = 4,    /* [start, end) the world was stopped (reason: stwReason) */
	SCHED_ASSIST = 5, /* [start, end) the goroutine ran runtime.gcAssistAlloc */
};

struct sched_event {
	__u8 type;   /* RECORD_SCHED */
	__u8 kind;   /* enum sched_kind */
	__u8 reason; /* SCHED_STW: stwReason */
	__u8 _pad;
	__u32 pid;
	__u64 goid;  /* 0 for SCHED_STW */
	__u64 start; /* CLOCK_MONOTONIC ns */
	__u64 mid;
	__u64 end;
};

/* Every outcome is counted; user space sums the per-CPU slots. */
enum sched_stat {
	SSTAT_SENT = 0,          /* records sent */
	SSTAT_RINGBUF_FULL,      /* lost: the ring buffer had no room */
	SSTAT_READ_G_FAILED,     /* lost: a goroutine's g could not be read */
	SSTAT_TABLE_FULL,        /* lost: too many goroutines assisting inside spans at once */
	SSTAT_STW_NOT_PAIRED,    /* a start of the world without its stop (attached mid-pause) */
	SSTAT_MAX,
};

/* Per-process facts, written by the agent at attach. */
struct sched_proc {
	__u64 goid_off; /* runtime.g.goid */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct sched_proc);
} sched_procs SEC(".maps");

/* A stop-the-world in progress, per process (worldsema serializes them). */
struct stw_open {
	__u64 start;
	__u8 reason;
	__u8 _pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct stw_open);
} stw_open SEC(".maps");

/* Assists in progress: goroutine -> start. An assist never nests. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct gkey);
	__type(value, __u64);
} assist_open SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SSTAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sched_stats SEC(".maps");

static __always_inline void sstat_inc(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&sched_stats, &stat);
	if (v)
		*v += 1;
}

/* Sends one record; wake-ups batched as emit() in frames.h does. */
static __always_inline void send(__u8 kind, __u8 reason, __u32 pid, __u64 goid, __u64 start, __u64 mid,
				 __u64 end)
{
	struct sched_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		sstat_inc(SSTAT_RINGBUF_FULL);
		return;
	}
	e->type = RECORD_SCHED;
	e->kind = kind;
	e->reason = reason;
	e->_pad = 0;
	e->pid = pid;
	e->goid = goid;
	e->start = start;
	e->mid = mid;
	e->end = end;
	__u64 wake = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
										  : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, wake);
	sstat_inc(SSTAT_SENT);
}

/* Reads g.goid into key->goid; -1 (counted) when g cannot be read. */
static __always_inline int read_goid(void *g, struct sched_proc *sp, struct gkey *key)
{
	if (!g || bpf_probe_read_user(&key->goid, sizeof(key->goid), g + sp->goid_off)) {
		sstat_inc(SSTAT_READ_G_FAILED);
		return -1;
	}
	return 0;
}

/* A goroutine is followed while it has an open traced frame. */
static __always_inline int in_span(struct gkey *key)
{
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, key);
	return gs && gs->depth > 0;
}

/*
 * runtime.stopTheWorldWithSema(reason stwReason) worldStop, at the
 * instruction after its stack check (g0; reason in AL; checked 1.21..1.27).
 */
SEC("uprobe")
int stw_start(struct pt_regs *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	if (!bpf_map_lookup_elem(&sched_procs, &pid))
		return 0;
	struct stw_open s = {.start = bpf_ktime_get_ns(), .reason = (__u8)GO_PARAM1(ctx)};
	bpf_map_update_elem(&stw_open, &pid, &s, BPF_ANY);
	return 0;
}

/*
 * Where runtime.startTheWorldWithSema(now int64, w worldStop) int64 has
 * returned (its RETs, single-stepped: twice per GC cycle): the world runs
 * again. Sent for every traced process, in or out of a span: a pause
 * overlaps whatever ran then.
 */
SEC("uprobe")
int stw_end(struct pt_regs *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct stw_open *s = bpf_map_lookup_elem(&stw_open, &pid);
	if (!s) {
		if (bpf_map_lookup_elem(&sched_procs, &pid))
			sstat_inc(SSTAT_STW_NOT_PAIRED);
		return 0;
	}
	send(SCHED_STW, s->reason, pid, 0, s->start, s->start, now);
	bpf_map_delete_elem(&stw_open, &pid);
	return 0;
}

/* The goroutine a user-g hook fired on; -1 outside traced processes. */
static __always_inline int user_gkey(struct pt_regs *ctx, struct gkey *key)
{
	key->pid = bpf_get_current_pid_tgid() >> 32;
	key->_pad = 0;
	struct sched_proc *sp = bpf_map_lookup_elem(&sched_procs, &key->pid);
	if (!sp)
		return -1;
	return read_goid(GO_G(ctx), sp, key);
}

/*
 * runtime.gcAssistAlloc(gp *g), after its stack check, on the assisting
 * goroutine itself (1.21..1.27). It may park (gcParkAssist) inside: that
 * wait is part of the assist.
 */
SEC("uprobe")
int assist_start(struct pt_regs *ctx)
{
	struct gkey key;
	if (user_gkey(ctx, &key) || !in_span(&key))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&assist_open, &key, &now, BPF_ANY))
		sstat_inc(SSTAT_TABLE_FULL);
	return 0;
}

/* Where gcAssistAlloc has returned (its callers' resume sites or its RETs). */
SEC("uprobe")
int assist_end(struct pt_regs *ctx)
{
	struct gkey key;
	if (user_gkey(ctx, &key))
		return 0;
	__u64 *start = bpf_map_lookup_elem(&assist_open, &key);
	if (!start)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	send(SCHED_ASSIST, 0, key.pid, key.goid, *start, *start, now);
	bpf_map_delete_elem(&assist_open, &key);
	return 0;
}

/* Force the generated Go bindings to include these types. */
const struct sched_event *unused_sched_event __attribute__((unused));
const enum sched_kind *unused_sched_kind __attribute__((unused));
const enum sched_stat *unused_sched_stat __attribute__((unused));
