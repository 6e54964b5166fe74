// SPDX-License-Identifier: GPL-2.0
//go:build ignore

/*
 * calltracer: times calls of chosen Go functions per goroutine and links
 * goroutines to the frame that created them.
 *
 * One program serves every entry site and one every exit site; the
 * attach cookie says which function (and which site) fired. Entry pushes
 * a frame on the goroutine's frame stack, exit pops it and sends one
 * completed-call record to user space, so user space never pairs entries
 * with exits. The frame machinery is in frames.h, shared with the
 * instrumented libraries.
 */

#include "frames.h"

char __license[] SEC("license") = "GPL";

/*
 * Entry site of a traced function: the first instruction after the
 * stack-bound check falls through (PUSHQ BP on amd64, emulated by the
 * kernel), so it runs once per call even when morestack re-enters the
 * function from its first byte, and SP there equals SP at entry.
 */
SEC("uprobe")
int call_entry(struct pt_regs *ctx)
{
	frame_push(ctx, bpf_get_attach_cookie(ctx), 0);
	return 0;
}

/* Exit site of a traced function (one per return path). */
SEC("uprobe")
int call_exit(struct pt_regs *ctx)
{
	struct frame_exit x;
	if (frame_find(ctx, bpf_get_attach_cookie(ctx), &x) == 0)
		frame_pop(&x);
	return 0;
}

/*
 * Links a new goroutine to its creator's innermost traced frame (or to the
 * creator's own link), so chains continue across go statements. newg is
 * the new goroutine's g; its creator is found through newg.parentGoid,
 * which runtime.newproc1 sets (Go 1.21..1.27). Called before the new
 * goroutine is on a run queue, so it cannot run before it is linked.
 */
static __always_inline int link_goroutine(void *newg)
{
	struct gkey parent = {.pid = bpf_get_current_pid_tgid() >> 32};
	struct proc_config *pc = bpf_map_lookup_elem(&procs, &parent.pid);
	if (!pc)
		return 0;
	struct gkey child = {.pid = parent.pid};
	if (read_words(newg, pc->goid_off, pc->parent_goid_off, &child.goid, &parent.goid)) {
		stat_inc(STAT_READ_G_FAILED);
		return 0;
	}
	struct glink l = {};
	struct gstate *ps = bpf_map_lookup_elem(&goroutines, &parent);
	if (ps) {
		l.parent_call_id = ps->parent_call_id;
		l.parent_goid = ps->parent_goid;
		l.root_call_id = ps->root_call_id;
		l.trace_hi = ps->trace_hi;
		l.trace_lo = ps->trace_lo;
		__u32 d = ps->depth;
		if (d > 0 && d <= MAX_DEPTH) {
			if (root_keep_live(ps, parent.pid))
				return 0; /* the link could not expire: none */
			struct frame *f = &ps->frames[(d - 1) & (MAX_DEPTH - 1)];
			l.parent_call_id = f->call_id;
			l.parent_goid = parent.goid;
			f->flags |= CALL_SPAWNED;
		}
	} else {
		/* A linked creator that has traced nothing: pass its link on. */
		struct glink *pl = bpf_map_lookup_elem(&links, &parent);
		if (!pl)
			return 0; /* creator has no traced frame and no link: nothing to inherit */
		l = *pl;
	}
	if (!l.parent_call_id)
		return 0;
	if (bpf_map_update_elem(&links, &child, &l, BPF_ANY)) {
		stat_inc(STAT_GOROUTINE_TABLE_FULL);
		return 0;
	}
	stat_inc(STAT_GOROUTINE_LINKS);
	return 0;
}

/*
 * Where runtime.newproc1 (func newproc1(fn *funcval, callergp *g,
 * callerpc uintptr[, parked bool, waitreason waitReason]) *g) has returned
 * the new g: RAX. newproc1 runs on the system stack (g register = g0).
 */
SEC("uprobe")
int goroutine_created(struct pt_regs *ctx)
{
	return link_goroutine((void *)GO_RESULT1(ctx));
}

/*
 * At newproc's call runqput(pp *p, gp *g, next bool) right after newproc1:
 * the new g is the second argument, RBX. A CALL is emulated by the kernel;
 * the instructions right after newproc1's return are not (~10 us here).
 */
SEC("uprobe")
int goroutine_queued(struct pt_regs *ctx)
{
	return link_goroutine((void *)GO_PARAM2(ctx));
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
	struct gkey key = {};
	if (current_gkey(ctx, &key))
		return 0;
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &key);
	if (!gs) {
		/* Linked, never traced? (Most goroutines are neither: a lookup
		 * takes no lock, a delete does.) */
		if (bpf_map_lookup_elem(&links, &key))
			bpf_map_delete_elem(&links, &key);
		return 0;
	}
	__u32 depth = gs->depth;
	if (depth > MAX_DEPTH)
		depth = MAX_DEPTH;
	struct close_ctx cc = {.gs = gs, .key = &key, .now = now, .top = depth - 1, .match = -1};
	bpf_loop(depth, close_frame, &cc, 0);
	bpf_map_delete_elem(&goroutines, &key);
	return 0;
}
