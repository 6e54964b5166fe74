// SPDX-License-Identifier: GPL-2.0
//go:build ignore

/*
 * calltracer: times calls of chosen Go functions per goroutine and links
 * goroutines to the frame that created them.
 *
 * One program serves every entry site and one every exit site; the
 * attach cookie says which function (and which site) fired. Entry pushes
 * a frame on the goroutine's frame stack (a map keyed by pid and goid);
 * exit pops it and sends one completed-call record to user space, so
 * user space never pairs entries with exits.
 *
 * Frames are identified by the stack depth of their SP measured from the
 * top of the goroutine stack (g.stack.hi - SP). Go copies a goroutine's
 * stack when it grows, which moves every SP but keeps that distance, and
 * it tells frames of a recursive function apart. A panic that unwinds
 * past traced frames skips their exits; the next traced frame that
 * returns below them closes them, flagged CALL_UNWOUND.
 */

#include "base.h"
#include "goabi.h"

#define MAX_DEPTH 32 /* power of two: indexes are masked for the verifier */

char __license[] SEC("license") = "GPL";

/* Attach cookie layout, written by the agent for every probe site. */
#define COOKIE_FUNC(c) ((__u32)(c))
#define COOKIE_SP_DELTA(c) (((c) >> 32) & 0xffff)

enum call_flags {
	CALL_UNWOUND = 1 << 0, /* never returned: unwound by a panic or Goexit */
	CALL_SPAWNED = 1 << 1, /* started goroutines: they may return after it */
};

/* Every outcome worth knowing is counted; user space sums the per-CPU slots. */
enum tracer_stat {
	STAT_CALLS = 0,              /* completed calls sent */
	STAT_FILTERED_SHORT,         /* calls shorter than min_duration_ns, by request */
	STAT_UNWOUND,                /* frames closed without their own return */
	STAT_GOROUTINE_LINKS,        /* goroutines linked to a creating frame */
	STAT_RINGBUF_FULL,           /* lost: ring buffer had no room */
	STAT_STACK_TOO_DEEP,         /* lost: more than MAX_DEPTH traced frames */
	STAT_EXIT_WITHOUT_ENTRY,     /* exit seen, entry not (probe attached mid-call) */
	STAT_GOROUTINE_TABLE_FULL,   /* lost: goroutine map full */
	STAT_READ_G_FAILED,          /* lost: could not read the g struct */
	STAT_UNKNOWN_PROCESS,        /* probe hit in a process with no config */
	STAT_SYSTEM_STACK,           /* probe hit on g0 (system stack): no goroutine */
	STAT_MAX,
};

/* One completed (or unwound) call: the only message to user space. */
struct call_event {
	__u64 start_ns;       /* CLOCK_MONOTONIC */
	__u64 end_ns;
	__u64 goid;
	__u64 parent_goid;    /* goid of the parent frame's goroutine */
	__u64 call_id;        /* unique per process run */
	__u64 parent_call_id; /* 0: no traced parent */
	__u32 pid;            /* tgid */
	__u32 tid;            /* thread at return */
	__u32 func_id;
	__u32 cpu;            /* CPU at return */
	__u32 start_tid;      /* thread at entry */
	__u16 depth;          /* frame index within its goroutine */
	__u16 flags;          /* enum call_flags */
};

/* Per-process facts, written by the agent before attaching. */
struct proc_config {
	__u64 goid_off;        /* runtime.g.goid */
	__u64 parent_goid_off; /* runtime.g.parentGoid (Go >= 1.21) */
	__u64 stack_hi_off;    /* runtime.g.stack.hi */
};

struct frame {
	__u64 start_ns;
	__u64 call_id;
	__u32 sp_off; /* g.stack.hi - SP at entry */
	__u32 func_id;
	__u32 tid;
	__u32 flags; /* CALL_SPAWNED */
};

struct gkey {
	__u32 pid;
	__u32 _pad;
	__u64 goid;
};

struct gstate {
	__u32 depth;           /* frames in use */
	__u32 overflow;        /* entries not pushed because frames was full */
	__u64 parent_goid;     /* creator goroutine, when linked */
	__u64 parent_call_id;  /* creator's frame at go statement, 0 if none */
	struct frame frames[MAX_DEPTH];
};

/* Tunables set by the agent at load time. */
const volatile __u64 min_duration_ns = 0;
const volatile __u64 wakeup_bytes = 256 * 1024;
const volatile __u8 count_hits = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct proc_config);
} procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct gkey);
	__type(value, struct gstate);
} goroutines SEC(".maps");

/* A zeroed gstate to insert from: it is too big for the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gstate);
} gstate_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} call_seq SEC(".maps");

/* Hits per attach cookie, only when count_hits is set (tests, `symbols`). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} hits SEC(".maps");

/* Force the generated Go bindings to include these types. */
const struct call_event *unused_call_event __attribute__((unused));
const enum tracer_stat *unused_tracer_stat __attribute__((unused));
const enum call_flags *unused_call_flags __attribute__((unused));

static __always_inline void stat_inc(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);
	if (v)
		*v += 1;
}

static __always_inline void count_hit(__u64 cookie)
{
	if (!count_hits)
		return;
	__u64 *v = bpf_map_lookup_elem(&hits, &cookie);
	if (!v) {
		/* Another CPU may insert the key first: then ours fails with
		 * EEXIST and the lookup below finds this CPU's (zeroed) slot. */
		__u64 zero = 0;
		bpf_map_update_elem(&hits, &cookie, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&hits, &cookie);
	}
	if (v)
		*v += 1;
}

/* Unique per process run without a shared atomic: per-CPU sequence | CPU. */
static __always_inline __u64 next_call_id(void)
{
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&call_seq, &zero);
	if (!seq)
		return 0;
	*seq += 1;
	return (*seq << 12) | (bpf_get_smp_processor_id() & 0xfff);
}

/* The goroutine a probe fired on, read from the g register. */
static __always_inline int current_goroutine(struct pt_regs *ctx, struct proc_config *pc,
					     struct gkey *key, __u64 *stack_hi)
{
	void *g = GO_G(ctx);
	if (bpf_probe_read_user(&key->goid, sizeof(key->goid), g + pc->goid_off) ||
	    bpf_probe_read_user(stack_hi, sizeof(*stack_hi), g + pc->stack_hi_off)) {
		stat_inc(STAT_READ_G_FAILED);
		return -1;
	}
	if (key->goid == 0) {
		stat_inc(STAT_SYSTEM_STACK); /* g0 and gsignal have goid 0 */
		return -1;
	}
	return 0;
}

static __always_inline struct gstate *gstate_create(struct gkey *key, __u64 parent_goid,
						    __u64 parent_call_id)
{
	__u32 zero = 0;
	struct gstate *gs = bpf_map_lookup_elem(&gstate_scratch, &zero);
	if (!gs)
		return 0;
	gs->depth = 0;
	gs->overflow = 0;
	gs->parent_goid = parent_goid;
	gs->parent_call_id = parent_call_id;
	if (bpf_map_update_elem(&goroutines, key, gs, BPF_ANY)) {
		stat_inc(STAT_GOROUTINE_TABLE_FULL);
		return 0;
	}
	return bpf_map_lookup_elem(&goroutines, key);
}

/*
 * Sends frames[idx] as a completed call ending now. Ring buffer
 * notifications are batched: the reader polls on a short timer and is
 * woken early only once wakeup_bytes are pending (a wakeup per event costs
 * ~1.3 µs here, a silent submit ~0.26 µs).
 */
static __always_inline void emit(struct gstate *gs, struct gkey *key, __u32 idx, __u64 now,
				 __u16 flags)
{
	struct frame *f = &gs->frames[idx & (MAX_DEPTH - 1)];
	if (flags & CALL_UNWOUND) {
		stat_inc(STAT_UNWOUND);
	} else if (now - f->start_ns < min_duration_ns) {
		stat_inc(STAT_FILTERED_SHORT);
		return;
	}
	struct call_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		stat_inc(STAT_RINGBUF_FULL);
		return;
	}
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	e->start_ns = f->start_ns;
	e->end_ns = now;
	e->goid = key->goid;
	e->call_id = f->call_id;
	if (idx > 0) {
		e->parent_goid = key->goid;
		e->parent_call_id = gs->frames[(idx - 1) & (MAX_DEPTH - 1)].call_id;
	} else {
		e->parent_goid = gs->parent_goid;
		e->parent_call_id = gs->parent_call_id;
	}
	e->pid = key->pid;
	e->tid = (__u32)pid_tgid;
	e->func_id = f->func_id;
	e->cpu = bpf_get_smp_processor_id();
	e->start_tid = f->tid;
	e->depth = idx;
	e->flags = flags | f->flags;
	__u64 wake = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes
			     ? BPF_RB_FORCE_WAKEUP
			     : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, wake);
	stat_inc(STAT_CALLS);
}

/*
 * Closing frames runs in a bpf_loop callback: the verifier checks the
 * callback once instead of every unrolled path of up to MAX_DEPTH emits.
 * Frames top..match+1 are closed as unwound, frame match as returned.
 */
struct close_ctx {
	struct gstate *gs;
	struct gkey *key;
	__u64 now;
	int top;
	int match;
};

static long close_frame(__u64 i, void *arg)
{
	struct close_ctx *cc = arg;
	int idx = cc->top - (int)i;
	if (idx < 0 || idx >= MAX_DEPTH)
		return 1;
	emit(cc->gs, cc->key, idx, cc->now, idx > cc->match ? CALL_UNWOUND : 0);
	return 0;
}

/*
 * Entry site of a traced function: the first instruction after the
 * stack-bound check falls through (PUSHQ BP on amd64, emulated by the
 * kernel), so it runs once per call even when morestack re-enters the
 * function from its first byte, and SP there equals SP at entry.
 */
SEC("uprobe")
int call_entry(struct pt_regs *ctx)
{
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u64 now = bpf_ktime_get_ns();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct gkey key = {.pid = pid_tgid >> 32};
	__u64 stack_hi;

	count_hit(cookie);
	struct proc_config *pc = bpf_map_lookup_elem(&procs, &key.pid);
	if (!pc) {
		stat_inc(STAT_UNKNOWN_PROCESS);
		return 0;
	}
	if (current_goroutine(ctx, pc, &key, &stack_hi))
		return 0;

	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &key);
	if (!gs) {
		gs = gstate_create(&key, 0, 0);
		if (!gs)
			return 0;
	}
	__u32 d = gs->depth;
	if (d >= MAX_DEPTH) {
		gs->overflow += 1;
		stat_inc(STAT_STACK_TOO_DEEP);
		return 0;
	}
	struct frame *f = &gs->frames[d & (MAX_DEPTH - 1)];
	f->start_ns = now;
	f->call_id = next_call_id();
	f->sp_off = stack_hi - (GO_SP(ctx) + COOKIE_SP_DELTA(cookie));
	f->func_id = COOKIE_FUNC(cookie);
	f->tid = (__u32)pid_tgid;
	f->flags = 0;
	gs->depth = d + 1;
	return 0;
}

/*
 * Exit site of a traced function (one per return path). The frame that
 * returns is the one whose sp_off and function match; frames above it
 * were skipped by a panic and are closed here as unwound.
 */
SEC("uprobe")
int call_exit(struct pt_regs *ctx)
{
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u64 now = bpf_ktime_get_ns();
	struct gkey key = {.pid = bpf_get_current_pid_tgid() >> 32};
	__u64 stack_hi;

	count_hit(cookie);
	struct proc_config *pc = bpf_map_lookup_elem(&procs, &key.pid);
	if (!pc) {
		stat_inc(STAT_UNKNOWN_PROCESS);
		return 0;
	}
	if (current_goroutine(ctx, pc, &key, &stack_hi))
		return 0;
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &key);
	if (!gs) {
		stat_inc(STAT_EXIT_WITHOUT_ENTRY);
		return 0;
	}

	__u32 sp_off = stack_hi - (GO_SP(ctx) + COOKIE_SP_DELTA(cookie));
	__u32 func_id = COOKIE_FUNC(cookie);
	__u32 depth = gs->depth;
	if (depth > MAX_DEPTH)
		return 0;
	int match = -1;
	for (int i = 0; i < MAX_DEPTH; i++) {
		if (i >= depth)
			break;
		__u32 idx = depth - 1 - i;
		struct frame *f = &gs->frames[idx & (MAX_DEPTH - 1)];
		if (f->sp_off > sp_off)
			continue; /* deeper frame: unwound past */
		if (f->sp_off == sp_off && f->func_id == func_id)
			match = idx;
		break;
	}
	if (match < 0) {
		/* Frames deeper than the recorded ones were never pushed. */
		if (gs->overflow > 0 &&
		    (depth == 0 || gs->frames[(depth - 1) & (MAX_DEPTH - 1)].sp_off < sp_off)) {
			gs->overflow -= 1;
			return 0;
		}
		stat_inc(STAT_EXIT_WITHOUT_ENTRY);
		return 0;
	}
	struct close_ctx cc = {.gs = gs, .key = &key, .now = now, .top = depth - 1, .match = match};
	bpf_loop(depth - match, close_frame, &cc, 0);
	gs->depth = match;
	/* Overflowed frames are all deeper than any recorded one: gone now. */
	gs->overflow = 0;
	return 0;
}

/*
 * runtime.newproc1 returns the new goroutine's g (Go 1.21..1.27:
 * func newproc1(fn *funcval, callergp *g, callerpc uintptr[, parked bool,
 * waitreason waitReason]) *g). It runs on the system stack (g register =
 * g0), so the creator is found through newg.parentGoid, which newproc1
 * sets. Probed at its return sites, before newproc puts newg on a run
 * queue, so the child cannot run before it is linked.
 */
SEC("uprobe")
int goroutine_created(struct pt_regs *ctx)
{
	struct gkey parent = {.pid = bpf_get_current_pid_tgid() >> 32};
	struct proc_config *pc = bpf_map_lookup_elem(&procs, &parent.pid);
	if (!pc)
		return 0;
	void *newg = (void *)GO_RESULT1(ctx);
	struct gkey child = {.pid = parent.pid};
	if (bpf_probe_read_user(&child.goid, sizeof(child.goid), newg + pc->goid_off) ||
	    bpf_probe_read_user(&parent.goid, sizeof(parent.goid), newg + pc->parent_goid_off)) {
		stat_inc(STAT_READ_G_FAILED);
		return 0;
	}
	struct gstate *ps = bpf_map_lookup_elem(&goroutines, &parent);
	if (!ps)
		return 0; /* creator has no traced frame and no link: nothing to inherit */

	__u64 link = ps->parent_call_id;
	__u64 link_goid = ps->parent_goid;
	__u32 d = ps->depth;
	if (d > 0 && d <= MAX_DEPTH) {
		struct frame *f = &ps->frames[(d - 1) & (MAX_DEPTH - 1)];
		link = f->call_id;
		link_goid = parent.goid;
		f->flags |= CALL_SPAWNED;
	}
	if (!link)
		return 0;
	if (gstate_create(&child, link_goid, link))
		stat_inc(STAT_GOROUTINE_LINKS);
	return 0;
}

/*
 * runtime.goexit1 runs on the exiting goroutine (g register = its g) at
 * the end of every goroutine. Frames still open were unwound (Goexit);
 * close them, then forget the goroutine so the map stays bounded.
 */
SEC("uprobe")
int goroutine_exit(struct pt_regs *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	struct gkey key = {.pid = bpf_get_current_pid_tgid() >> 32};
	__u64 stack_hi;
	struct proc_config *pc = bpf_map_lookup_elem(&procs, &key.pid);
	if (!pc)
		return 0;
	if (current_goroutine(ctx, pc, &key, &stack_hi))
		return 0;
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &key);
	if (!gs)
		return 0;
	__u32 depth = gs->depth;
	if (depth > MAX_DEPTH)
		depth = MAX_DEPTH;
	struct close_ctx cc = {.gs = gs, .key = &key, .now = now, .top = depth - 1, .match = -1};
	bpf_loop(depth, close_frame, &cc, 0);
	bpf_map_delete_elem(&goroutines, &key);
	return 0;
}
