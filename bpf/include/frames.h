/* SPDX-License-Identifier: GPL-2.0 */
/*
 * frames.h: per-goroutine frame stacks, shared by the call tracer and by
 * every instrumented library (bpf/library/...). Each library's object
 * declares these maps too; the agent loads it with the call tracer's maps
 * in their place, so all probes share one set of stacks and one ring.
 *
 * Frames are identified by the stack depth of their SP measured from the
 * top of the goroutine stack (g.stack.hi - SP). Go copies a goroutine's
 * stack when it grows, which moves every SP but keeps that distance, and
 * it tells frames of a recursive function apart. A panic that unwinds
 * past traced frames skips their exits; the next traced frame that
 * returns below them closes them, flagged CALL_UNWOUND.
 *
 * A goroutine inherits the frame that ran its go statement, and with it
 * the chain's root call (the request) and trace id. The link holds only while that
 * root runs: a goroutine created during a request and still working after
 * it (a pool worker, a connection's read loop) starts new roots, so
 * unrelated requests never merge into one trace.
 */
#pragma once

#include "base.h"
#include "goabi.h"
#include "snapshot.h"

#define MAX_DEPTH 32 /* power of two: indexes are masked for the verifier */

/* Attach cookie layout, written by the agent for every probe site. */
#define COOKIE_FUNC(c) ((__u32)(c))
/* Signed: a site after the function returned sees SP 8 bytes above entry. */
#define COOKIE_SP_DELTA(c) ((__s64)(__s16)(((c) >> 32) & 0xffff))
/*
 * An exit site in a caller (symbolizer.ResumeSites) that also runs on
 * paths that did not call the traced function: finding no frame there is
 * no error.
 */
#define COOKIE_SHARED(c) ((c) >> 63)
/*
 * An entry site of a function whose returns are probed where each call
 * site's caller resumes, learned as call sites show up (learned_return).
 */
#define COOKIE_LEARN(c) (((c) >> 62) & 1)

/* The first byte of every ring buffer record says what follows. */
enum record_type {
	RECORD_CALL = 1, /* struct call_event */
	RECORD_LIB = 2,  /* struct lib_header + a library's payload */
	RECORD_RET_SITE = 3, /* struct ret_site_event */
	RECORD_SCHED = 4, /* struct sched_event (bpf/sched: latency attribution) */
};

enum call_flags {
	CALL_UNWOUND = 1 << 0, /* never returned: unwound by a panic or Goexit */
	CALL_SPAWNED = 1 << 1, /* started goroutines: they may return after it */
	CALL_ROOT = 1 << 2,    /* first frame of a chain (a request) */
	CALL_EXIT_MISSED = 1 << 3, /* its return was not seen (or will not be): closed late */
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
	STAT_UNKNOWN_PROCESS,        /* probe hit in an untraced process running a traced file */
	STAT_SYSTEM_STACK,           /* probe hit on g0 (system stack): no goroutine */
	STAT_LINKS_EXPIRED,          /* goroutine links dropped: their request had ended */
	STAT_ROOTS_TABLE_FULL,       /* lost: too many requests in flight to bound links */
	STAT_LIB_READ_FAILED,        /* library data could not be read (span kept) */
	STAT_INJECTED,               /* outgoing requests given a traceparent */
	STAT_INJECT_PRESENT,         /* outgoing requests that already had one: left alone */
	STAT_INJECT_FAILED,          /* outgoing requests whose injection failed */
	STAT_INJECT_OFF,             /* outgoing requests not given one: injection off */
	STAT_INJECT_SOCKET_BUSY,     /* connections another sk_msg program owns: no injection on them */
	STAT_EXIT_MISSED,            /* frames whose return was not seen, closed by a later call */
	STAT_INJECT_UNSENT,          /* outgoing requests whose context was ready but never seen leaving */
	STAT_RET_SITES_REPORTED,     /* new call sites of learned functions, sent to the agent */
	STAT_RET_SITES_FULL,         /* call sites not reported: ret_sites table full */
	STAT_RET_SITE_LATE,          /* calls from a call site not probed yet, the function's own exits gone */
	STAT_STREAM_START_UNSEEN,    /* streams that ended whose start was not seen: no span */
	STAT_DB_SERVER_UNKNOWN,      /* database calls on a connection whose driver latscope cannot read */
	STAT_INJECT_REPLACED,        /* outgoing requests whose forwarded copy of the received traceparent was replaced */
	STAT_INJECT_TLS,             /* outgoing requests over TLS: encrypted at the socket, no traceparent */
	STAT_INJECT_NO_CONN,         /* client calls that ended before their request reached a connection */
	STAT_INJECT_CONN_UNKNOWN,    /* outgoing requests whose socket could not be found */
	STAT_INCOMING_UNREAD,        /* incoming requests whose headers were not all looked through for a traceparent */
	STAT_MAX,
};

/* One completed (or unwound) call. */
struct call_event {
	__u8 type; /* RECORD_CALL */
	__u8 _pad;
	__u16 flags;          /* enum call_flags */
	__u32 pid;            /* tgid */
	__u64 start_ns;       /* CLOCK_MONOTONIC */
	__u64 end_ns;
	__u64 goid;
	__u64 parent_goid;    /* goid of the parent frame's goroutine */
	__u64 call_id;        /* unique per process run */
	__u64 parent_call_id; /* 0: no traced parent */
	__u32 tid;            /* thread at return */
	__u32 func_id;
	__u32 cpu;            /* CPU at return */
	__u32 start_tid;      /* thread at entry */
	__u16 depth;          /* frame index within its goroutine */
	__u16 _pad2;
	__u32 _pad3;
	__u64 trace_id_hi;    /* W3C trace id, big-endian halves */
	__u64 trace_id_lo;
};

/*
 * Library data about a call, sent before the call's own record: at the
 * call's entry and/or at its return. The library's payload follows.
 */
struct lib_header {
	__u8 type; /* RECORD_LIB */
	__u8 lib;  /* library id, set by the agent per process in lib_config */
	__u16 probe; /* which of the library's records follows */
	__u32 pid;
	__u64 call_id;
};

/*
 * A call site of a learned function (COOKIE_LEARN) with no probe where it
 * resumes yet: the agent looks at the code there and answers in ret_sites.
 */
struct ret_site_event {
	__u8 type;  /* RECORD_RET_SITE */
	__u8 level; /* 0: the call's return address; n: that of the n-th tail caller above */
	__u16 _pad;
	__u32 pid;
	__u32 func_id;
	__u32 _pad2;
	__u64 ret; /* the return address */
};

/* Per-process facts, written by the agent before attaching. */
struct proc_config {
	__u64 goid_off;        /* runtime.g.goid */
	__u64 parent_goid_off; /* runtime.g.parentGoid (Go >= 1.21) */
	__u64 stack_hi_off;    /* runtime.g.stack.hi */
	/*
	 * Where a thread that was not stopped at a probe (a CPU sample) finds
	 * its goroutine: the g it runs is at FS base + tls_off (amd64; 0:
	 * unknown), and when that is g0 or gsignal the user goroutine is
	 * g.m.curg.
	 */
	__s64 tls_off;
	__u64 gm_off;   /* runtime.g.m */
	__u64 curg_off; /* runtime.m.curg */
};

struct frame {
	__u64 start_ns;
	__u64 call_id;
	__u32 sp_off; /* g.stack.hi - SP at entry */
	__u32 func_id;
	__u32 tid;
	__u32 flags; /* CALL_SPAWNED, CALL_ROOT */
	__u64 arg;   /* kept for the exit probe by a library's entry probe */
};

struct gkey {
	__u32 pid;
	__u32 _pad;
	__u64 goid;
};

struct gstate {
	__u32 depth;           /* frames in use */
	__u32 overflow;        /* entries not pushed because frames was full */
	__u32 root_live;       /* its root frame (a request) is in live_roots */
	__u32 _pad;
	__u64 goid;            /* its goroutine (the map key's), for programs holding only gs */
	__u64 parent_goid;     /* creator goroutine, when linked */
	__u64 parent_call_id;  /* creator's frame at go statement, 0 if none */
	__u64 root_call_id;    /* the chain's root (request), 0 if none */
	__u64 trace_hi;        /* the chain's trace id: random at its root, */
	__u64 trace_lo;        /* inherited, or continued from a request's traceparent */
	struct frame frames[MAX_DEPTH];
};

struct rootkey {
	__u32 pid;
	__u32 _pad;
	__u64 call_id;
};

/* Tunables set by the agent at load time. */
const volatile __u64 min_duration_ns = 0;
const volatile __u64 wakeup_bytes = 256 * 1024;
const volatile __u8 count_hits = 0;
const volatile __u64 id_salt = 0; /* span ids: see span_id() and agent/callchain */

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

/*
 * A goroutine linked to its creator's frame that has not traced a call
 * itself yet. Most goroutines a request starts (timers, context watchers,
 * I/O helpers) never do: they cost this small entry, not a gstate, which
 * is made from the link at the goroutine's first traced call.
 */
struct glink {
	__u64 parent_goid;
	__u64 parent_call_id;
	__u64 root_call_id;
	__u64 trace_hi;
	__u64 trace_lo;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct gkey);
	__type(value, struct glink);
} links SEC(".maps");

/*
 * Roots (requests) still running that goroutines were linked to: a link
 * to another root has expired. A root joins when the first goroutine is
 * linked to its chain (link_goroutine), not when it starts: most
 * requests start none, and an insert and a delete per request cost.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct rootkey);
	__type(value, __u8);
} live_roots SEC(".maps");

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

/* read_words' snapshot (snapshot.h), apart from the libraries' own. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct snap);
} words_scratch SEC(".maps");

/* Hits per attach cookie, only when count_hits is set (tests, `symbols`). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} hits SEC(".maps");

/* A call site of a learned function, by its return address (or a tail caller's). */
struct ret_key {
	__u32 pid;
	__u32 func_id;
	__u64 ret;
};

enum ret_site_state {
	RET_SITE_PENDING = 0, /* reported, the agent has not answered yet */
	RET_SITE_PROBED = 1,  /* the caller's resume site is probed: it sees the return */
	RET_SITE_TAIL = 2,    /* the caller returns right after: look one frame up */
	RET_SITE_REFUSED = 3, /* no resume site: the function's own RET must see it */
};

/* The agent's answers about call sites (enum ret_site_state). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ret_key);
	__type(value, __u8);
} ret_sites SEC(".maps");

/*
 * Struct field offsets of each instrumented library, per process (they
 * differ by Go and library version), in the order of the library's field
 * enum. Written by the agent, read by library.h's FIELD().
 */
#define LIB_MAX_FIELDS 64 /* power of two: indexes are masked */

struct lib_key {
	__u32 pid;
	__u32 lib;
};

struct lib_fields {
	__u64 off[LIB_MAX_FIELDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* written at attach only: allocate per process */
	__uint(max_entries, 4096);
	__type(key, struct lib_key);
	__type(value, struct lib_fields);
} lib_offsets SEC(".maps");

/* splitmix64's finalizer, as agent/callchain's mix. */
static __always_inline __u64 mix64(__u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* The span id of a call, computed the same way in user space. */
static __always_inline __u64 span_id(__u32 pid, __u64 call_id)
{
	__u64 v = mix64(id_salt ^ ((__u64)pid << 32) ^ mix64(call_id));
	return v ? v : 1;
}

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

/*
 * Reads the 8-byte fields at base+a and base+b, as one snapshot: one
 * read when they lie within SNAP_MAX bytes (g's goid and stack.hi,
 * goid and parentGoid), else one each. 0 on success.
 */
static __always_inline int read_words(void *base, __u64 a, __u64 b, __u64 *va, __u64 *vb)
{
	__u32 zero = 0;
	struct snap *s = bpf_map_lookup_elem(&words_scratch, &zero);
	if (!s)
		return -1;
	snap_reset(s);
	snap_want(s, a, SNAP_WORD);
	snap_want(s, b, SNAP_WORD);
	snap_read(s, base);
	return snap_words(s, a, va, 1) || snap_words(s, b, vb, 1);
}

/* The goroutine a probe fired on, read from the g register. */
static __always_inline int current_goroutine(struct pt_regs *ctx, struct proc_config *pc,
					     struct gkey *key, __u64 *stack_hi)
{
	void *g = GO_G(ctx);
	if (read_words(g, pc->goid_off, pc->stack_hi_off, &key->goid, stack_hi)) {
		stat_inc(STAT_READ_G_FAILED);
		return -1;
	}
	if (key->goid == 0) {
		stat_inc(STAT_SYSTEM_STACK); /* g0 and gsignal have goid 0 */
		return -1;
	}
	return 0;
}

/*
 * The goroutine a hook (a program that pushes no frame) fired on, as the
 * goroutine maps key it; -1 in a process latscope does not trace, or
 * when it cannot be read (counted).
 */
static __always_inline int current_gkey(struct pt_regs *ctx, struct gkey *key)
{
	__u64 stack_hi;
	key->pid = bpf_get_current_pid_tgid() >> 32;
	struct proc_config *pc = bpf_map_lookup_elem(&procs, &key->pid);
	if (!pc)
		return -1;
	return current_goroutine(ctx, pc, key, &stack_hi);
}

static __always_inline struct gstate *gstate_create(struct gkey *key, __u64 parent_goid,
						    __u64 parent_call_id, __u64 root_call_id,
						    __u64 trace_hi, __u64 trace_lo)
{
	__u32 zero = 0;
	struct gstate *gs = bpf_map_lookup_elem(&gstate_scratch, &zero);
	if (!gs)
		return 0;
	gs->depth = 0;
	gs->overflow = 0;
	gs->root_live = 0;
	gs->_pad = 0;
	gs->goid = key->goid;
	gs->parent_goid = parent_goid;
	gs->parent_call_id = parent_call_id;
	gs->root_call_id = root_call_id;
	gs->trace_hi = trace_hi;
	gs->trace_lo = trace_lo;
	if (bpf_map_update_elem(&goroutines, key, gs, BPF_ANY)) {
		stat_inc(STAT_GOROUTINE_TABLE_FULL);
		return 0;
	}
	return bpf_map_lookup_elem(&goroutines, key);
}

/*
 * What a call's record says besides its frame: its goroutine, its parent
 * call and its trace. Read from the goroutine's state when the call is
 * sent from its own frame stack (frame_origin); kept with a frame that
 * outlives its function (frame_detach) until it is sent.
 */
struct call_origin {
	__u64 goid;
	__u64 parent_goid;    /* the parent frame's goroutine */
	__u64 parent_call_id; /* 0: no traced parent */
	__u64 trace_hi;
	__u64 trace_lo;
	__u32 pid;
	__u16 depth; /* frame index within its goroutine */
	__u16 _pad;
};

static __always_inline void frame_origin(struct gstate *gs, struct gkey *key, __u32 idx, struct call_origin *o)
{
	o->pid = key->pid;
	o->goid = key->goid;
	o->depth = idx;
	o->_pad = 0;
	if (idx > 0) {
		o->parent_goid = key->goid;
		o->parent_call_id = gs->frames[(idx - 1) & (MAX_DEPTH - 1)].call_id;
	} else {
		o->parent_goid = gs->parent_goid;
		o->parent_call_id = gs->parent_call_id;
	}
	o->trace_hi = gs->trace_hi;
	o->trace_lo = gs->trace_lo;
}

/* A root frame (a request) leaves its goroutine: links to it expire. */
static __always_inline void end_root(struct gstate *gs, struct gkey *key, struct frame *f)
{
	if (!(f->flags & CALL_ROOT))
		return;
	if (gs->root_live) {
		struct rootkey rk = {.pid = key->pid, .call_id = f->call_id};
		bpf_map_delete_elem(&live_roots, &rk);
		gs->root_live = 0;
	}
	gs->root_call_id = 0;
}

/*
 * A goroutine is being linked to gs's chain: its root must be in
 * live_roots while it runs. The goroutine that started the root adds it
 * at its first go statement; a linked goroutine's root was added when
 * it was linked (or has ended: the new link then expires). 0 when the
 * root is live, -1 (counted) when the table is full.
 */
static __always_inline int root_keep_live(struct gstate *gs, __u32 pid)
{
	if (gs->root_live || !gs->root_call_id || gs->depth == 0 ||
	    gs->frames[0].call_id != gs->root_call_id)
		return 0;
	struct rootkey rk = {.pid = pid, .call_id = gs->root_call_id};
	__u8 one = 1;
	if (bpf_map_update_elem(&live_roots, &rk, &one, BPF_ANY)) {
		stat_inc(STAT_ROOTS_TABLE_FULL);
		return -1;
	}
	gs->root_live = 1;
	return 0;
}

/* Sends the call of frame f, from origin o, as completed now. */
static __always_inline void send_call(struct frame *f, struct call_origin *o, __u64 now, __u16 flags)
{
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
	e->type = RECORD_CALL;
	e->_pad = 0;
	e->_pad2 = 0;
	e->_pad3 = 0;
	e->start_ns = f->start_ns;
	e->end_ns = now;
	e->goid = o->goid;
	e->call_id = f->call_id;
	e->parent_goid = o->parent_goid;
	e->parent_call_id = o->parent_call_id;
	e->pid = o->pid;
	e->tid = (__u32)pid_tgid;
	e->func_id = f->func_id;
	e->cpu = bpf_get_smp_processor_id();
	e->start_tid = f->tid;
	e->depth = o->depth;
	e->flags = flags | f->flags;
	e->trace_id_hi = o->trace_hi;
	e->trace_id_lo = o->trace_lo;
	bpf_ringbuf_submit(e, ring_wake(&events, wakeup_bytes));
	stat_inc(STAT_CALLS);
}

/* Sends frames[idx] as a completed call ending now. */
static __always_inline void emit(struct gstate *gs, struct gkey *key, __u32 idx, __u64 now,
				 __u16 flags)
{
	struct frame *f = &gs->frames[idx & (MAX_DEPTH - 1)];
	end_root(gs, key, f);
	struct call_origin o;
	frame_origin(gs, key, idx, &o);
	send_call(f, &o, now, flags);
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

struct stale_ctx {
	struct gstate *gs;
	struct gkey *key;
	__u64 now;
	__u32 sp_off;
};

/* Closes the top frame while it is not above sp_off (see frame_push). */
static long close_stale(__u64 i, void *arg)
{
	struct stale_ctx *c = arg;
	__u32 d = c->gs->depth;
	if (d == 0 || d > MAX_DEPTH || c->gs->frames[(d - 1) & (MAX_DEPTH - 1)].sp_off < c->sp_off)
		return 1;
	emit(c->gs, c->key, d - 1, c->now, CALL_UNWOUND | CALL_EXIT_MISSED);
	stat_inc(STAT_EXIT_MISSED);
	c->gs->depth = d - 1;
	return 0;
}

/* How many tail-calling callers learned_return looks through. */
#define LEARN_LEVELS 3

/* Tells the agent about a call site it has not seen (once: PENDING marks it). */
static __always_inline void report_ret_site(struct ret_key *k, int level)
{
	__u8 pending = RET_SITE_PENDING;
	long err = bpf_map_update_elem(&ret_sites, k, &pending, BPF_NOEXIST);
	if (err) {
		if (err != -17 /* EEXIST: another CPU reported it */)
			stat_inc(STAT_RET_SITES_FULL);
		return;
	}
	struct ret_site_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		bpf_map_delete_elem(&ret_sites, k); /* report it again next time */
		stat_inc(STAT_RINGBUF_FULL);
		return;
	}
	e->type = RECORD_RET_SITE;
	e->level = level;
	e->_pad = 0;
	e->_pad2 = 0;
	e->pid = k->pid;
	e->func_id = k->func_id;
	e->ret = k->ret;
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP); /* rare, and the sooner probed the better */
	stat_inc(STAT_RET_SITES_REPORTED);
}

/*
 * learned_return finds where this call's return will be seen, for a
 * function whose returns are probed where its callers resume, call site
 * by call site, as the agent learns them (COOKIE_LEARN; amd64 only).
 * Its own RET is single-stepped by the kernel (~10 µs on a VM) where the
 * caller's next branch or call is emulated (~0.4 µs).
 *
 * at is where the return address is (SP at the first instruction). The
 * agent has either probed the first emulated instruction after that
 * address (PROBED), or found the caller returns right after (TAIL: its
 * epilogue keeps the results), and the return is then seen where *its*
 * caller resumes: one frame up, whose return address sits above the
 * frame pointer the caller set up (Go keeps frame pointers; at an entry
 * site before PUSH BP, BP is still the caller's).
 *
 * On success *slot is the address of the return address whose caller's
 * probe will see the return, the SP the frame is matched at. Otherwise
 * (a new call site, reported now; one being looked at; one the agent
 * refused) the function's own RET must see it, if it is still probed.
 */
static __always_inline int learned_return(struct pt_regs *ctx, __u32 pid, __u32 func_id, __u64 at, __u64 *slot)
{
	struct ret_key k = {.pid = pid, .func_id = func_id};
	__u64 fp = GO_FP(ctx);
	for (int level = 0; level < LEARN_LEVELS; level++) {
		if (level > 0) {
			if (level > 1 && bpf_probe_read_user(&fp, sizeof(fp), (void *)fp))
				return -1; /* the next caller's frame pointer */
			at = fp + 8;
		}
		if (bpf_probe_read_user(&k.ret, sizeof(k.ret), (void *)at))
			return -1;
		__u8 *v = bpf_map_lookup_elem(&ret_sites, &k);
		if (!v) {
			report_ret_site(&k, level);
			return -1;
		}
		if (*v == RET_SITE_PROBED) {
			*slot = at;
			return 0;
		}
		if (*v != RET_SITE_TAIL)
			return -1;
	}
	return -1;
}

/*
 * The agent detached the function's own exit probes once its call sites
 * settled: it marks that with the return address 0.
 */
static __always_inline int own_exits_gone(__u32 pid, __u32 func_id)
{
	struct ret_key k = {.pid = pid, .func_id = func_id, .ret = 0};
	return bpf_map_lookup_elem(&ret_sites, &k) != 0;
}

/*
 * frame_push records the entry of the function the cookie names on the
 * current goroutine and returns the new frame's call id (0: not recorded,
 * the reason counted); arg is kept in the frame for its exit probe. At an entry site SP + the cookie's SP delta is SP
 * at the function's first instruction.
 */
/* frame_push_chain options */
#define PUSH_NEW_CHAIN 1 /* at depth 0, start a new chain even if linked (a server request) */

static __always_inline __u64 frame_push_chain(struct pt_regs *ctx, __u64 cookie, __u64 arg,
					      int opts, struct gstate **gsp)
{
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
		struct glink *l = bpf_map_lookup_elem(&links, &key);
		if (l) {
			struct glink lv = *l;
			bpf_map_delete_elem(&links, &key);
			gs = gstate_create(&key, lv.parent_goid, lv.parent_call_id, lv.root_call_id, lv.trace_hi, lv.trace_lo);
		} else {
			gs = gstate_create(&key, 0, 0, 0, 0, 0);
		}
		if (!gs)
			return 0;
	}
	__u64 sp = GO_SP(ctx) + COOKIE_SP_DELTA(cookie);
	__u32 missed = 0;
	if (COOKIE_LEARN(cookie) && learned_return(ctx, key.pid, COOKIE_FUNC(cookie), sp, &sp) &&
	    own_exits_gone(key.pid, COOKIE_FUNC(cookie))) {
		/* Nothing will see this return: say so on the span. */
		missed = CALL_EXIT_MISSED;
		stat_inc(STAT_RET_SITE_LATE);
	}
	__u32 sp_off = stack_hi - sp;
	__u32 d = gs->depth;
	/*
	 * A new call is deeper than every call still running on its goroutine.
	 * Frames at or below its SP have returned unseen (a return path no exit
	 * probe covers): close them now, flagged, rather than let them parent
	 * later calls.
	 */
	if (d > 0 && d <= MAX_DEPTH && gs->frames[(d - 1) & (MAX_DEPTH - 1)].sp_off >= sp_off) {
		struct stale_ctx sc = {.gs = gs, .key = &key, .now = now, .sp_off = sp_off};
		bpf_loop(MAX_DEPTH, close_stale, &sc, 0);
		d = gs->depth;
	}
	if (d >= MAX_DEPTH) {
		gs->overflow += 1;
		stat_inc(STAT_STACK_TOO_DEEP);
		return 0;
	}
	__u64 call_id = next_call_id();
	__u32 flags = 0;
	if (d == 0) {
		/* A link is good for the life of the request it came from. */
		struct rootkey rk = {.pid = key.pid, .call_id = gs->root_call_id};
		if (gs->parent_call_id && (opts & PUSH_NEW_CHAIN)) {
			gs->parent_call_id = 0;
			gs->parent_goid = 0;
		} else if (gs->parent_call_id && !bpf_map_lookup_elem(&live_roots, &rk)) {
			gs->parent_call_id = 0;
			gs->parent_goid = 0;
			gs->root_call_id = 0;
			stat_inc(STAT_LINKS_EXPIRED);
		}
		if (!gs->parent_call_id) {
			/*
			 * A new chain: a new trace. 64 random bits, and the
			 * call id (unique in the process) mixed with the pid and
			 * the agent's secret salt: unique, and unguessable.
			 */
			gs->trace_hi = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
			gs->trace_lo = span_id(key.pid, call_id ^ gs->trace_hi) | 1;
			if (gs->root_live) {
				/* The last root's end went unseen: retire it now. */
				rk.call_id = gs->root_call_id;
				bpf_map_delete_elem(&live_roots, &rk);
				gs->root_live = 0;
			}
			gs->root_call_id = call_id;
			flags = CALL_ROOT;
		}
	}
	struct frame *f = &gs->frames[d & (MAX_DEPTH - 1)];
	f->start_ns = now;
	f->call_id = call_id;
	f->sp_off = sp_off;
	f->func_id = COOKIE_FUNC(cookie);
	f->tid = (__u32)pid_tgid;
	f->flags = flags | missed;
	f->arg = arg;
	gs->depth = d + 1;
	if (gsp)
		*gsp = gs;
	return call_id;
}

static __always_inline __u64 frame_push(struct pt_regs *ctx, __u64 cookie, __u64 arg)
{
	return frame_push_chain(ctx, cookie, arg, 0, 0);
}

/*
 * The search for the returning frame runs in a bpf_loop callback, like
 * closing frames: checked once by the verifier, not once per unrolled
 * path of every library's exit program (it halved load time).
 */
struct find_ctx {
	struct gstate *gs;
	__u32 depth;
	__u32 sp_off;
	__u32 func_id;
	int match;
};

static long find_frame(__u64 i, void *arg)
{
	struct find_ctx *c = arg;
	if (i >= c->depth)
		return 1;
	__u32 idx = c->depth - 1 - i;
	struct frame *f = &c->gs->frames[idx & (MAX_DEPTH - 1)];
	if (f->sp_off > c->sp_off)
		return 0; /* deeper frame: unwound past */
	if (f->sp_off == c->sp_off && f->func_id == c->func_id)
		c->match = idx;
	return 1;
}

/* What frame_find learned, for frame_pop. */
struct frame_exit {
	struct gstate *gs;
	struct gkey key;
	__u64 now;
	__u64 call_id; /* the returning frame's */
	__u64 arg;     /* what its entry probe kept */
	__u32 depth;
	int match;
};

/*
 * frame_find locates the frame returning at an exit site: the one whose
 * sp_off and function match. Frames above it were skipped by a panic.
 * Returns 0 when found; the caller may send library data for x->call_id
 * and must then call frame_pop.
 */
static __always_inline int frame_find(struct pt_regs *ctx, __u64 cookie, struct frame_exit *x)
{
	__u64 stack_hi;
	x->now = bpf_ktime_get_ns();
	x->key.pid = bpf_get_current_pid_tgid() >> 32;
	x->key._pad = 0;

	count_hit(cookie);
	struct proc_config *pc = bpf_map_lookup_elem(&procs, &x->key.pid);
	if (!pc) {
		stat_inc(STAT_UNKNOWN_PROCESS);
		return -1;
	}
	if (current_goroutine(ctx, pc, &x->key, &stack_hi))
		return -1;
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &x->key);
	if (!gs) {
		if (!COOKIE_SHARED(cookie))
			stat_inc(STAT_EXIT_WITHOUT_ENTRY);
		return -1;
	}
	__u32 sp_off = stack_hi - (GO_SP(ctx) + COOKIE_SP_DELTA(cookie));
	__u32 func_id = COOKIE_FUNC(cookie);
	__u32 depth = gs->depth;
	if (depth > MAX_DEPTH)
		return -1;
	struct find_ctx fc = {.gs = gs, .depth = depth, .sp_off = sp_off, .func_id = func_id, .match = -1};
	bpf_loop(MAX_DEPTH, find_frame, &fc, 0);
	int match = fc.match;
	if (match < 0) {
		/* Frames deeper than the recorded ones were never pushed. (A
		 * shared site may not be such a return: it leaves the count,
		 * which the next pop clears.) */
		if (gs->overflow > 0 && !COOKIE_SHARED(cookie) &&
		    (depth == 0 || gs->frames[(depth - 1) & (MAX_DEPTH - 1)].sp_off < sp_off)) {
			gs->overflow -= 1;
			return -1;
		}
		if (!COOKIE_SHARED(cookie))
			stat_inc(STAT_EXIT_WITHOUT_ENTRY);
		return -1;
	}
	x->gs = gs;
	x->depth = depth;
	x->match = match;
	x->call_id = gs->frames[match & (MAX_DEPTH - 1)].call_id;
	x->arg = gs->frames[match & (MAX_DEPTH - 1)].arg;
	return 0;
}

/* frame_pop sends the returning frame and the frames unwound above it. */
static __always_inline void frame_pop(struct frame_exit *x)
{
	struct close_ctx cc = {.gs = x->gs, .key = &x->key, .now = x->now, .top = x->depth - 1, .match = x->match};
	bpf_loop(x->depth - x->match, close_frame, &cc, 0);
	x->gs->depth = x->match;
	/* Overflowed frames are all deeper than any recorded one: gone now. */
	x->gs->overflow = 0;
}

/*
 * frame_detach takes the returning frame off its goroutine's stack without
 * sending it: its call goes on after the function returned (a gRPC client
 * stream lasts until the stream ends, whichever goroutine ends it). *f and
 * *o receive what send_call needs to send it later. Frames above it were
 * skipped by a panic: closed as in frame_pop. Its parent may now return
 * first: flagged CALL_SPAWNED, so user space keeps the parent findable
 * for this late child (a frame at depth 0 has its creator's frame as
 * parent, flagged when the goroutine was linked).
 */
static __always_inline void frame_detach(struct frame_exit *x, struct frame *f, struct call_origin *o)
{
	struct gstate *gs = x->gs;
	int match = x->match;
	struct frame *mf = &gs->frames[match & (MAX_DEPTH - 1)];
	*f = *mf;
	frame_origin(gs, &x->key, match, o);
	end_root(gs, &x->key, mf);
	struct close_ctx cc = {.gs = gs, .key = &x->key, .now = x->now, .top = x->depth - 1, .match = match};
	bpf_loop(x->depth - match - 1, close_frame, &cc, 0);
	if (match > 0)
		gs->frames[(match - 1) & (MAX_DEPTH - 1)].flags |= CALL_SPAWNED;
	gs->depth = match;
	gs->overflow = 0;
}

/* Force the generated Go bindings to include these types. */
const struct call_event *unused_call_event __attribute__((unused));
const struct lib_header *unused_lib_header __attribute__((unused));
const enum tracer_stat *unused_tracer_stat __attribute__((unused));
const enum call_flags *unused_call_flags __attribute__((unused));
const enum record_type *unused_record_type __attribute__((unused));
const struct lib_key *unused_lib_key __attribute__((unused));
const struct lib_fields *unused_lib_fields __attribute__((unused));
const struct ret_site_event *unused_ret_site_event __attribute__((unused));
const struct ret_key *unused_ret_key __attribute__((unused));
const enum ret_site_state *unused_ret_site_state __attribute__((unused));
