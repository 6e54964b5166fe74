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
 * Deep mode (attached for a bounded time; many hits per request):
 *   - runtime.casgstatus: every goroutine status change: parks (and why:
 *     the traceBlockReason gopark left in the M), wake-ups (netpoll's
 *     too, which never pass runtime.ready), preemptions; a goroutine back
 *     in _Grunning sends its off-CPU episode (SCHED_OFF: blocked since,
 *     runnable since, running again). One hook for all: a gopark hook
 *     for the reason cost ~8 more uprobe hits per request;
 *   - tp_btf sched_switch: the thread running such a goroutine leaves the
 *     CPU and comes back: preempted by the kernel (OS run queue,
 *     SCHED_OS_RUNNABLE) or sleeping in the kernel while the goroutine is
 *     running as far as Go knows (a blocking syscall, a page fault:
 *     SCHED_OS_BLOCKED).
 *
 * Only goroutines inside a traced frame (depth > 0 in frames.h's
 * goroutines map) are followed: a span starts and ends on its running
 * goroutine, so every change in between is seen once deep mode is on.
 */

#include "frames.h"
#include <bpf/bpf_core_read.h>

char __license[] SEC("license") = "GPL";

/* What a struct sched_event describes. */
enum sched_kind {
	SCHED_OFF = 1,         /* [start, mid) blocked (reason), [mid, end) runnable: Go's view */
	SCHED_OS_RUNNABLE = 2, /* [start, end) its thread was preempted by the kernel */
	SCHED_OS_BLOCKED = 3,  /* [start, end) its thread slept in the kernel (syscall, fault) */
	SCHED_STW = 4,         /* [start, end) the world was stopped (reason: stwReason) */
	SCHED_ASSIST = 5,      /* [start, end) the goroutine ran runtime.gcAssistAlloc */
};

/* reason of a SCHED_OFF that was not a park (preempted, yielded). */
#define REASON_NONE 0xff
/* reason of a park whose M could not be read. */
#define REASON_UNKNOWN 0xfe

struct sched_event {
	__u8 type;   /* RECORD_SCHED */
	__u8 kind;   /* enum sched_kind */
	__u8 reason; /* SCHED_OFF: traceBlockReason (Go 1.21: trace event byte); SCHED_STW: stwReason */
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
	SSTAT_TABLE_FULL,        /* lost: too many goroutines off CPU inside spans at once */
	SSTAT_STW_NOT_PAIRED,    /* a start of the world without its stop (attached mid-pause) */
	SSTAT_TLS_READ_FAILED,   /* lost: a thread's g could not be read from its TLS */
	SSTAT_MAX,
};

/* Go's goroutine statuses (runtime2.go; the same numbers 1.21..1.27). */
#define G_RUNNABLE 1
#define G_RUNNING 2
#define G_SYSCALL 3
#define G_WAITING 4
#define G_PREEMPTED 9

/* Per-process facts, written by the agent at attach. */
struct sched_proc {
	__u64 goid_off;   /* runtime.g.goid */
	__u64 gm_off;     /* runtime.g.m */
	__u64 curg_off;   /* runtime.m.curg */
	__u64 reason_off; /* runtime.m.waitTraceBlockReason */
	__s64 tls_off;    /* where g sits relative to the thread pointer (fs_base); 0: unknown */
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

/*
 * A goroutine inside a traced call that is off CPU as far as Go knows:
 * parked or made runnable without running. Keyed by its g's address, so
 * the status changes that end an episode (most of the hits) need no read
 * of the goroutine; deleted when it runs again, so the map holds only
 * goroutines off CPU right now (a g is reused only after it ran to its
 * end).
 */
struct gref {
	__u32 pid;
	__u32 _pad;
	__u64 g;
};

struct goff {
	__u64 goid;
	__u64 since;  /* left the CPU */
	__u64 wake;   /* made runnable after its park; 0: not yet */
	__u8 reason;  /* the park's reason, REASON_NONE if not parked */
	__u8 parked;
	__u8 _pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct gref);
	__type(value, struct goff);
} goff SEC(".maps");

/* A thread that left the CPU while running a goroutine inside a traced call. */
struct toff {
	__u64 goid;
	__u64 since;
	__u32 pid;
	__u8 blocked; /* slept in the kernel; else preempted (runnable) */
	__u8 _pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* thread id */
	__type(value, struct toff);
} toff SEC(".maps");

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
	bpf_ringbuf_submit(e, ring_wake(&events, wakeup_bytes));
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
 * runtime.startTheWorldWithSema(now int64, w worldStop) int64, after its
 * stack check: the world starts again. Sent for every traced process, in
 * or out of a span: a pause overlaps whatever ran then.
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

/*
 * Starts an off-CPU episode of g (a goroutine of the process sp
 * describes) if it is inside a traced call; why it parked is read from
 * its M when parked is set: gopark stores its traceReason in
 * m.waitTraceBlockReason before park_m, on that M, changes the status.
 * (The runtime's own parks that skip gopark leave an older reason there;
 * they are stop-the-world and GC waits, which gc_stw covers.)
 */
static __always_inline void go_off(struct gref *ref, void *g, struct sched_proc *sp, __u8 parked)
{
	if (bpf_map_lookup_elem(&goff, ref))
		return;
	struct gkey key = {.pid = ref->pid};
	if (read_goid(g, sp, &key) || !in_span(&key))
		return;
	struct goff o = {.goid = key.goid, .since = bpf_ktime_get_ns(), .reason = REASON_NONE, .parked = parked};
	if (parked) {
		void *m = 0;
		o.reason = REASON_UNKNOWN;
		if (bpf_probe_read_user(&m, sizeof(m), g + sp->gm_off) == 0 && m)
			bpf_probe_read_user(&o.reason, sizeof(o.reason), m + sp->reason_off);
	}
	if (bpf_map_update_elem(&goff, ref, &o, BPF_NOEXIST))
		sstat_inc(SSTAT_TABLE_FULL);
}

/*
 * The status changes that start or end an off-CPU episode: running again
 * (from runnable or waiting), parked, made runnable (woken, preempted,
 * yielded, out of a syscall without a P), preempted for a stack scan.
 */
static __always_inline int starts_or_ends_off(__u32 from, __u32 to)
{
	switch (to) {
	case G_RUNNING:
		return from == G_RUNNABLE || from == G_WAITING;
	case G_RUNNABLE:
		return from == G_WAITING || from == G_RUNNING || from == G_SYSCALL;
	case G_WAITING:
	case G_PREEMPTED:
		return from == G_RUNNING;
	}
	return 0;
}

/*
 * runtime.casgstatus(gp *g, oldval, newval uint32), at its first
 * instruction (nosplit: PUSHQ BP, emulated). RAX = gp, EBX = oldval,
 * ECX = newval; it runs on g0 or on gp itself, so gp is read, never the g
 * register. Go 1.26+ moves syscalls in and out of _Gsyscall without it;
 * their blocking shows in sched_switch instead.
 */
SEC("uprobe")
int go_status(struct pt_regs *ctx)
{
	__u32 from = (__u32)GO_PARAM2(ctx), to = (__u32)GO_PARAM3(ctx);
	if (!starts_or_ends_off(from, to))
		return 0; /* most hits: returns before any map or memory access */
	void *g = (void *)GO_PARAM1(ctx);
	struct gref ref = {.pid = bpf_get_current_pid_tgid() >> 32, .g = (__u64)g};
	if (to == G_RUNNING) {
		struct goff *o = bpf_map_lookup_elem(&goff, &ref);
		if (!o)
			return 0;
		__u64 now = bpf_ktime_get_ns();
		__u64 mid = o->since; /* not parked: runnable throughout */
		if (o->parked)
			mid = o->wake ? o->wake : now;
		send(SCHED_OFF, o->parked ? o->reason : REASON_NONE, ref.pid, o->goid, o->since, mid, now);
		bpf_map_delete_elem(&goff, &ref);
		return 0;
	}
	if (from == G_WAITING) { /* woken: to _Grunnable */
		struct goff *o = bpf_map_lookup_elem(&goff, &ref);
		if (o && o->parked && !o->wake)
			o->wake = bpf_ktime_get_ns();
		return 0;
	}
	struct sched_proc *sp = bpf_map_lookup_elem(&sched_procs, &ref.pid);
	if (sp)
		/* parked, or runnable (preempted, yielded, out of a syscall without
		 * a P), or preempted for a stack scan (resumed through ready) */
		go_off(&ref, g, sp, to == G_WAITING);
	return 0;
}

#if defined(__TARGET_ARCH_x86)

/* Kernel types read in sched_switch, resolved against its BTF (CO-RE). */
struct thread_struct {
	unsigned long fsbase;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	struct thread_struct thread;
} __attribute__((preserve_access_index));

/*
 * The goroutine the thread prev runs, from its TLS: g sits at fs_base +
 * tls_off (−8 with internal linking). On g0 (a systemstack call, or
 * the scheduler) the goroutine is m.curg, nil in the scheduler. prev is
 * the current task here, so its memory is the current mm.
 */
static __always_inline int thread_gkey(struct task_struct *prev, struct sched_proc *sp, struct gkey *key,
					void **gp)
{
	unsigned long fsbase = 0;
	void *g = 0;
	if (!sp->tls_off)
		return -1; /* unknown for this binary (externally linked): Go-level split only */
	if (bpf_core_read(&fsbase, sizeof(fsbase), &prev->thread.fsbase) || !fsbase ||
	    bpf_probe_read_user(&g, sizeof(g), (void *)(fsbase + sp->tls_off)) || !g) {
		sstat_inc(SSTAT_TLS_READ_FAILED);
		return -1;
	}
	if (read_goid(g, sp, key))
		return -1;
	*gp = g;
	if (key->goid != 0)
		return 0;
	void *m = 0, *curg = 0;
	if (bpf_probe_read_user(&m, sizeof(m), g + sp->gm_off) || !m ||
	    bpf_probe_read_user(&curg, sizeof(curg), m + sp->curg_off)) {
		sstat_inc(SSTAT_READ_G_FAILED);
		return -1;
	}
	if (!curg)
		return -1; /* the scheduler: no goroutine */
	*gp = curg;
	return read_goid(curg, sp, key);
}

/*
 * sched_switch(bool preempt, struct task_struct *prev, struct task_struct
 * *next, unsigned int prev_state) — the prev_state argument is there from
 * Linux 5.18. Runs on every context switch of the node: two hash lookups
 * when neither thread matters.
 */
SEC("tp_btf/sched_switch")
int sched_switch(__u64 *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	struct task_struct *prev = (struct task_struct *)ctx[1];
	struct task_struct *next = (struct task_struct *)ctx[2];
	__u32 tid = 0;
	if (bpf_core_read(&tid, sizeof(tid), &next->pid) == 0) {
		struct toff *t = bpf_map_lookup_elem(&toff, &tid);
		if (t) {
			send(t->blocked ? SCHED_OS_BLOCKED : SCHED_OS_RUNNABLE, 0, t->pid, t->goid, t->since,
			     t->since, now);
			bpf_map_delete_elem(&toff, &tid);
		}
	}
	struct gkey key = {};
	if (bpf_core_read(&key.pid, sizeof(key.pid), &prev->tgid))
		return 0;
	struct sched_proc *sp = bpf_map_lookup_elem(&sched_procs, &key.pid);
	void *g = 0;
	if (!sp || thread_gkey(prev, sp, &key, &g) || !in_span(&key))
		return 0;
	struct gref ref = {.pid = key.pid, .g = (__u64)g};
	if (bpf_map_lookup_elem(&goff, &ref))
		return 0; /* off CPU for Go already (its status changed, the switch to g0 not yet done) */
	if (bpf_core_read(&tid, sizeof(tid), &prev->pid))
		return 0;
	/* Runnable: preempted, or switched out before it could sleep. */
	__u8 blocked = !(ctx[0] & 1) && (__u32)ctx[3] != 0;
	struct toff t = {.goid = key.goid, .since = now, .pid = key.pid, .blocked = blocked};
	if (bpf_map_update_elem(&toff, &tid, &t, BPF_ANY))
		sstat_inc(SSTAT_TABLE_FULL);
	return 0;
}

#endif

/* Force the generated Go bindings to include these types. */
const struct sched_event *unused_sched_event __attribute__((unused));
const enum sched_kind *unused_sched_kind __attribute__((unused));
const enum sched_stat *unused_sched_stat __attribute__((unused));
