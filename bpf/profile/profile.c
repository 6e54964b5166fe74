// SPDX-License-Identifier: GPL-2.0
//go:build ignore

/*
 * profile: samples the on-CPU user stacks of traced Go processes and
 * names the span each sample belongs to.
 *
 * One perf event per CPU (cpu-clock, a fixed period) runs sample_cpu.
 * Samples of processes the call tracer does not trace (the procs map)
 * end at the first lookup. For the others the program finds the
 * goroutine the thread runs for, looks its traced frames up in the call
 * tracer's goroutine table, and sends the span id of its innermost open
 * call with the user stack, unwound by the kernel through Go's frame
 * pointers. User space symbolizes the stack from the binary's pclntab.
 *
 * The object is built on frames.h: the agent loads it with the call
 * tracer's maps in place of frames.h's (procs, goroutines, links,
 * live_roots), so it reads the same goroutine state the probes write.
 * Its own are the samples ring and its counters.
 *
 * Checked with Go 1.21–1.27 on amd64 (the TLS slot of g is amd64's).
 */

#include "frames.h"
#include <bpf/bpf_core_read.h>

char __license[] SEC("license") = "GPL";

/*
 * frames.h also holds the probes' frame functions, some of them bpf_loop
 * callbacks (plain static functions) this program does not use.
 */
#pragma clang diagnostic ignored "-Wunused-function"

#define MAX_STACK 127 /* the kernel's default perf_event_max_stack */

enum sample_flags {
	SAMPLE_KERNEL = 1 << 0,  /* the thread was in the kernel: the stack is where it entered */
	SAMPLE_SPAWNED = 1 << 1, /* on a goroutine with no traced call of its own running:
				  * attributed to the call that started it */
};

/* One sample; the user stack follows it in the record. */
struct cpu_sample {
	__u32 pid;
	__u32 tid;
	__u64 ktime_ns; /* CLOCK_MONOTONIC */
	__u64 goid;
	__u64 span_id; /* the span of the traced call it ran in (span_id() of frames.h) */
	__u64 trace_hi;
	__u64 trace_lo;
	__u32 cpu;
	__u8 flags; /* enum sample_flags */
	__u8 _pad[3];
	/* then the stack: PCs, innermost (the sampled instruction) first, then return addresses */
};

struct sample_buf {
	struct cpu_sample s;
	__u64 stack[MAX_STACK];
};

enum profile_stat {
	PROFILE_SENT,           /* samples sent */
	PROFILE_SPAWNED,        /* of them, on goroutines a traced call started */
	PROFILE_NOT_IN_SPAN,    /* the goroutine ran no traced call (background work) */
	PROFILE_TOO_YOUNG,      /* only in calls younger than min_duration_ns: their span may never be sent */
	PROFILE_NO_GOROUTINE,   /* the thread ran no goroutine (scheduler, idle, GC worker) */
	PROFILE_NO_TLS,         /* a process whose TLS slot of g is unknown */
	PROFILE_READ_G_FAILED,  /* g, m or goid could not be read */
	PROFILE_RINGBUF_FULL,   /* lost: the samples ring was full */
	PROFILE_STACK_FAILED,   /* sent without a stack: the kernel could not unwind it */
	PROFILE_MAX,
};

/* Set by the agent at load time. */
const volatile __u64 sample_wakeup_bytes = 256 * 1024;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 << 20);
} samples SEC(".maps");

/* A sample is built here: with its stack it is too big for the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sample_buf);
} sample_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROFILE_MAX);
	__type(key, __u32);
	__type(value, __u64);
} profile_stats SEC(".maps");

static __always_inline void profile_stat_inc(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&profile_stats, &stat);
	if (v)
		*v += 1;
}

/* The perf event program's context (UAPI struct bpf_perf_event_data). */
struct bpf_perf_event_data {
	struct go_regs regs; /* bpf_user_pt_regs_t: the interrupted registers */
	__u64 sample_period;
	__u64 addr;
};

/* The kernel fields read, declared for CO-RE (relocated at load). */
struct thread_struct {
	unsigned long fsbase;
} __attribute__((preserve_access_index));

struct task_struct {
	struct thread_struct thread;
} __attribute__((preserve_access_index));

/*
 * The goroutine the interrupted thread runs for. A probe reads g from
 * R14, but a sample may stop the thread anywhere (assembly, the kernel,
 * C code), so g comes from thread-local storage, where the runtime keeps
 * it: FS base + tls_off. On the system stack (systemstack, mcall, the
 * scheduler) that is g0, in a signal handler gsignal: the user goroutine
 * is then m.curg, and on a user goroutine m.curg is itself. No curg: the
 * thread schedules or idles.
 */
static __always_inline int sampled_goroutine(struct proc_config *pc, __u64 *goid)
{
#if defined(__TARGET_ARCH_x86)
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 fsbase = BPF_CORE_READ(task, thread.fsbase);
	void *g = 0, *m = 0, *curg = 0;
	if (bpf_probe_read_user(&g, sizeof(g), (void *)(fsbase + pc->tls_off)) ||
	    (g && bpf_probe_read_user(&m, sizeof(m), g + pc->gm_off)) ||
	    (m && bpf_probe_read_user(&curg, sizeof(curg), m + pc->curg_off))) {
		profile_stat_inc(PROFILE_READ_G_FAILED);
		return -1;
	}
	if (!curg) {
		profile_stat_inc(PROFILE_NO_GOROUTINE);
		return -1;
	}
	if (bpf_probe_read_user(goid, sizeof(*goid), curg + pc->goid_off)) {
		profile_stat_inc(PROFILE_READ_G_FAILED);
		return -1;
	}
	return 0;
#else
	profile_stat_inc(PROFILE_NO_TLS); /* the agent does not turn sampling on here */
	return -1;
#endif
}

/*
 * The span a sample belongs to: the goroutine's innermost open traced
 * call that has run at least min_duration_ns (a shorter one may end
 * below the threshold and never be sent: its caller's span holds the
 * sample instead). A goroutine with no such call but linked to the call
 * that started it, while that call's request runs (the rule of frames.h),
 * gives the sample to that call, flagged SAMPLE_SPAWNED.
 */
static __always_inline int sample_span(struct gkey *key, __u64 now, struct cpu_sample *s)
{
	__u64 parent = 0, root = 0, hi = 0, lo = 0;
	int young = 0;
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, key);
	if (gs) {
		__u32 d = gs->depth;
		if (d > MAX_DEPTH)
			d = MAX_DEPTH;
		for (int i = MAX_DEPTH - 1; i >= 0; i--) {
			if (i >= d)
				continue;
			struct frame *f = &gs->frames[i & (MAX_DEPTH - 1)];
			if (now - f->start_ns < min_duration_ns) {
				young = 1;
				continue;
			}
			s->span_id = span_id(key->pid, f->call_id);
			s->trace_hi = gs->trace_hi;
			s->trace_lo = gs->trace_lo;
			return 0;
		}
		parent = gs->parent_call_id;
		root = gs->root_call_id;
		hi = gs->trace_hi;
		lo = gs->trace_lo;
	} else {
		struct glink *l = bpf_map_lookup_elem(&links, key);
		if (l) {
			parent = l->parent_call_id;
			root = l->root_call_id;
			hi = l->trace_hi;
			lo = l->trace_lo;
		}
	}
	struct rootkey rk = {.pid = key->pid, .call_id = root};
	if (!parent || !root || !bpf_map_lookup_elem(&live_roots, &rk)) {
		profile_stat_inc(young ? PROFILE_TOO_YOUNG : PROFILE_NOT_IN_SPAN);
		return -1;
	}
	s->span_id = span_id(key->pid, parent);
	s->trace_hi = hi;
	s->trace_lo = lo;
	s->flags |= SAMPLE_SPAWNED;
	return 0;
}

static __always_inline int user_mode(struct bpf_perf_event_data *ctx)
{
#if defined(__TARGET_ARCH_x86)
	return (ctx->regs.cs & 3) == 3;
#else
	return (ctx->regs.pstate & 0xf) == 0; /* EL0 */
#endif
}

SEC("perf_event")
int sample_cpu(struct bpf_perf_event_data *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct gkey key = {.pid = pid_tgid >> 32};
	struct proc_config *pc = bpf_map_lookup_elem(&procs, &key.pid);
	if (!pc)
		return 0; /* not traced (or the idle task): nothing to count */
	if (!pc->tls_off) {
		profile_stat_inc(PROFILE_NO_TLS);
		return 0;
	}
	if (sampled_goroutine(pc, &key.goid))
		return 0;

	__u32 zero = 0;
	struct sample_buf *b = bpf_map_lookup_elem(&sample_scratch, &zero);
	if (!b)
		return 0;
	struct cpu_sample *s = &b->s;
	s->flags = user_mode(ctx) ? 0 : SAMPLE_KERNEL;
	s->ktime_ns = bpf_ktime_get_ns();
	if (sample_span(&key, s->ktime_ns, s))
		return 0;
	s->pid = key.pid;
	s->tid = (__u32)pid_tgid;
	s->goid = key.goid;
	s->cpu = bpf_get_smp_processor_id();
	s->_pad[0] = 0;
	s->_pad[1] = 0;
	s->_pad[2] = 0;

	/* Frame-pointer unwinding of the user stack (from the registers the
	 * thread entered the kernel with, when it was in the kernel). */
	long n = bpf_get_stack(ctx, b->stack, sizeof(b->stack), BPF_F_USER_STACK);
	if (n <= 0) {
		profile_stat_inc(PROFILE_STACK_FAILED);
		n = 0;
	}
	if (n > (long)sizeof(b->stack))
		n = sizeof(b->stack);
	if (bpf_ringbuf_output(&samples, b, sizeof(struct cpu_sample) + n, ring_wake(&samples, sample_wakeup_bytes))) {
		profile_stat_inc(PROFILE_RINGBUF_FULL);
		return 0;
	}
	profile_stat_inc(PROFILE_SENT);
	if (s->flags & SAMPLE_SPAWNED)
		profile_stat_inc(PROFILE_SPAWNED);
	return 0;
}

/* Keep the types Go reads (bpf2go -type) in BTF though no code names them. */
const struct cpu_sample *unused_cpu_sample __attribute__((unused));
const enum sample_flags *unused_sample_flags __attribute__((unused));
const enum profile_stat *unused_profile_stat __attribute__((unused));
