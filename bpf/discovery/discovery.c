// SPDX-License-Identifier: GPL-2.0
//go:build ignore

/*
 * discovery: tells the agent that a process exec'd or exited, as it
 * happens, so probes are attached without polling /proc.
 *
 * Two BTF-typed tracepoints (tp_btf): sched_process_exec and
 * sched_process_exit. tp_btf costs the same as a raw tracepoint, and the
 * program is checked against the kernel's own prototype of the
 * tracepoint at load time instead of trusting a fixed argument layout.
 * Needs kernel >= 5.8 (ring buffer) with BTF (CO-RE).
 */

#include "base.h"
#include <bpf/bpf_core_read.h>

char __license[] SEC("license") = "GPL";

/*
 * The few kernel types read here, declared for CO-RE: preserve_access_index
 * makes every field access a relocation that the loader resolves against
 * the running kernel's BTF, so no offset is fixed at build time and no
 * vmlinux.h is needed. Field names are the kernel's.
 */
typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live; /* threads of the group that have not entered do_exit's accounting */
} __attribute__((preserve_access_index));

struct task_struct {
	struct task_struct *group_leader;
	struct signal_struct *signal;
	__u64 start_boottime; /* ns since boot, CLOCK_BOOTTIME; /proc/PID/stat field 22 in ns */
} __attribute__((preserve_access_index));

/* One record per event; the Go side reads it through bpf2go's twin. */
enum event_type {
	EVENT_EXEC = 1, /* the process (thread group) exec'd a new program */
	EVENT_EXIT = 2, /* the last thread of the process exited */
};

struct event {
	__u8 type; /* enum event_type */
	__u8 _pad[3];
	__u32 pid;            /* thread-group id: the process id user space knows */
	__u64 ktime_ns;       /* bpf_ktime_get_ns (CLOCK_MONOTONIC) when it happened */
	__u64 start_boottime; /* the process's start, ns since boot: with pid, its identity */
};

/* Counters, one per outcome; user space sums the per-CPU values. */
enum discovery_stat {
	STAT_EXEC_SENT,
	STAT_EXIT_SENT,
	STAT_EXEC_RINGBUF_FULL,
	STAT_EXIT_RINGBUF_FULL,
	STAT_EXIT_READ_FAILED,
	STAT_START_READ_FAILED,
	STAT_MAX,
};

/*
 * Sized by the agent at load time (Options.RingBytes). Events are 24
 * bytes (+8 of ring header): the default 256 KiB holds 8192 of them, far
 * more than a node execs between two reads.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Per-CPU: increments never contend between CPUs and need no atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void stat_inc(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);
	if (v)
		*v += 1;
}

/*
 * Sends one event. Every submit forces a wakeup, no batching: exec and
 * exit are rare (tens, at most thousands a second on a busy node; a wakeup
 * costs ~1.3 µs here), and the agent must attach probes before the new
 * program reaches its first traced call (event to user space: ~0.3 ms
 * p50 after fork, BenchmarkExecToEvent). A full ring drops the event, counted per kind: the agent's
 * periodic /proc rescan finds the processes it missed.
 */
static __always_inline void send(__u8 type, __u32 pid, struct task_struct *task, __u32 lost_stat,
				 __u32 sent_stat)
{
	__u64 start = 0;
	/* The group leader's start time is what /proc/PID/stat reports. */
	struct task_struct *leader = 0;
	if (bpf_core_read(&leader, sizeof(leader), &task->group_leader) ||
	    bpf_core_read(&start, sizeof(start), &leader->start_boottime))
		stat_inc(STAT_START_READ_FAILED); /* sent anyway, start 0: the pid is still news */

	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		stat_inc(lost_stat);
		return;
	}
	e->type = type;
	e->_pad[0] = 0;
	e->_pad[1] = 0;
	e->_pad[2] = 0;
	e->pid = pid;
	e->ktime_ns = bpf_ktime_get_ns();
	e->start_boottime = start;
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	stat_inc(sent_stat);
}

/*
 * sched_process_exec(struct task_struct *p, pid_t old_pid,
 *                    struct linux_binprm *bprm)
 * Fires in the exec'ing task once the new program is loaded and the thread
 * group is reduced to this one task. An exec from a non-leader thread has
 * already taken over the leader's pid by then (de_thread), so the current
 * tgid is the process id either way.
 */
SEC("tp_btf/sched_process_exec")
int process_exec(__u64 *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	send(EVENT_EXEC, bpf_get_current_pid_tgid() >> 32, task, STAT_EXEC_RINGBUF_FULL,
	     STAT_EXEC_SENT);
	return 0;
}

/*
 * sched_process_exit(struct task_struct *p) — 6.16+ adds `bool group_dead`,
 * which older kernels lack, so it is not read (the verifier rejects a
 * context access beyond the prototype).
 *
 * Fires for every exiting thread, in do_exit after
 * `group_dead = atomic_dec_and_test(&tsk->signal->live)` (same order from
 * 4.x to 6.18: checked in kernel/exit.c and by this package's tests). So
 * live == 0 here means no thread of the group is left running: the
 * process is gone. A thread-group leader's own exit (pid == tid) is NOT
 * that: the leader can exit long before the last thread.
 *
 * Two threads exiting at once can both see 0 (both decremented before
 * either read): the event may come twice; user space drops the duplicate
 * by (pid, start_boottime). It is never missed: the thread that brought
 * the count to 0 reads it after, and it cannot rise again.
 */
SEC("tp_btf/sched_process_exit")
int process_exit(__u64 *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct signal_struct *sig = 0;
	int live = 1;
	if (bpf_core_read(&sig, sizeof(sig), &task->signal) ||
	    bpf_core_read(&live, sizeof(live), &sig->live.counter)) {
		stat_inc(STAT_EXIT_READ_FAILED);
		return 0;
	}
	if (live != 0)
		return 0; /* other threads of the process still run */
	send(EVENT_EXIT, bpf_get_current_pid_tgid() >> 32, task, STAT_EXIT_RINGBUF_FULL,
	     STAT_EXIT_SENT);
	return 0;
}

/* Keep the types Go reads (bpf2go -type) in BTF though no code names them. */
const struct event *unused_event __attribute__((unused));
const enum event_type *unused_event_type __attribute__((unused));
const enum discovery_stat *unused_discovery_stat __attribute__((unused));
