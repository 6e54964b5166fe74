// SPDX-License-Identifier: GPL-2.0
//go:build ignore

/*
 * github.com/redis/go-redis/v9: each command and each pipeline a client
 * sends (span kind client). Checked against go-redis v9.7.3 - v9.23.0
 * built with Go 1.21 - 1.27 (go tool objdump: arguments as below).
 *
 * Commands: (*baseClient).process through v9.22; from v9.23 process is a
 * one-line wrapper that every toolchain inlines into its method value
 * wrapper (process-fm), so its callee (*baseClient).processStartingAt is
 * probed too. Both take (c *baseClient, ctx, cmd Cmder, ...) in the same
 * registers and return an error.
 */

#include "library.h"

char __license[] SEC("license") = "GPL";

/* Struct fields read, in lib_offsets order (see goredis.go). */
enum goredis_field {
	F_CLIENT_OPT,      /* baseClient.opt *Options */
	F_OPTIONS_NETWORK, /* Options.Network string ("tcp", "unix") */
	F_OPTIONS_ADDR,    /* Options.Addr string */
	F_OPTIONS_DB,      /* Options.DB int */
	F_CMD_ARGS,        /* baseCmd.args []interface{} */
	F_FIELD_MAX,
};

/* Records, by lib_header.probe. */
enum goredis_probe {
	P_COMMAND = 1, /* struct command, at a command's entry */
	P_PIPELINE,    /* struct pipeline, at a pipeline's entry */
	P_RESULT,      /* struct result, at either's return */
};

/* Where the client sends to: its Options. */
struct server {
	__u8 network[8];
	__u8 addr[64];
	__s64 db;
};

struct command {
	struct lib_header h;
	struct server srv;
	__u8 name[32]; /* args[0]: the command name as the program wrote it */
	__u64 name_len;
};

struct pipeline {
	struct lib_header h;
	struct server srv;
	__u64 count; /* commands sent; a transaction's include its MULTI and EXEC */
	__u8 tx;     /* processTxPipeline: MULTI ... EXEC */
	__u8 _pad[7];
};

struct result {
	struct lib_header h;
	__u64 err;         /* non-zero: an error was returned (itab) */
	__u64 err_len;     /* its message's full length, when it has one */
	__u8 err_head[16]; /* the message's start: "redis: nil", "ERR ...", "WRONGTYPE ..." */
	__u8 name[32];     /* the command name, when it could not be read at entry */
	__u64 name_len;
};

const struct command *unused_command __attribute__((unused));
const struct pipeline *unused_pipeline __attribute__((unused));
const struct result *unused_result __attribute__((unused));
const enum goredis_field *unused_field __attribute__((unused));
const enum goredis_probe *unused_probe __attribute__((unused));

/* A command's own frame: its record was sent by an outer probe of the same command. */
#define ARG_SEEN 1ULL
#define ARG_NAME_LATE 2ULL /* the name was unreadable at entry: read it at the return */

static __always_inline void read_server(void *client, struct lib_fields *fl, struct server *s)
{
	void *opt = (void *)read_ptr(client, FIELD(fl, F_CLIENT_OPT));
	struct snap *o = snap_begin();
	if (!opt || !o)
		return;
	/* *Options' fields at once. */
	snap_want(o, FIELD(fl, F_OPTIONS_NETWORK), SNAP_STRING);
	snap_want(o, FIELD(fl, F_OPTIONS_ADDR), SNAP_STRING);
	snap_want(o, FIELD(fl, F_OPTIONS_DB), SNAP_WORD);
	snap_read(o, opt);
	snap_gostring(o, FIELD(fl, F_OPTIONS_NETWORK), s->network, sizeof(s->network));
	snap_gostring(o, FIELD(fl, F_OPTIONS_ADDR), s->addr, sizeof(s->addr));
	s->db = snap_ptr(o, FIELD(fl, F_OPTIONS_DB));
}

/*
 * func (c *baseClient) process(ctx context.Context, cmd Cmder) error
 * func (c *baseClient) processStartingAt(ctx context.Context, cmd Cmder, startAttempt int, start time.Time) error
 * c in RAX, ctx in RBX, RCX, cmd (itab, data) in RDI, RSI. cmd's data is
 * a *XxxCmd: every one embeds baseCmd as its first field, so baseCmd's
 * offsets apply to it directly. args[0] is an interface{} holding the
 * command name, a string (not pointer-shaped: the eface data points to
 * the string header). Keys and values (args[1:]) are never read.
 */
/* args[0] of cmd (an eface {type, data}; data -> string header). */
static __always_inline __u64 command_name(void *cmd, struct lib_fields *fl, __u8 *buf, __u32 n)
{
	__u64 args = 0, name = 0;
	if (!cmd || bpf_probe_read_user(&args, sizeof(args), cmd + FIELD(fl, F_CMD_ARGS)) || !args ||
	    bpf_probe_read_user(&name, sizeof(name), (void *)args + 8) || !name)
		return 0;
	return try_gostring((void *)name, 0, buf, n);
}

SEC("uprobe")
int command_entry(struct pt_regs *ctx)
{
	void *client = (void *)GO_PARAM1(ctx);
	__u64 cmd = GO_PARAM5(ctx);
	struct gstate *gs = 0;
	__u64 call_id = frame_push_chain(ctx, bpf_get_attach_cookie(ctx), cmd, 0, &gs);
	if (!call_id || !gs)
		return 0;
	/*
	 * A binary built without inlining (-gcflags=-l) has v9.23's process
	 * out of line, calling processStartingAt with the same cmd: the
	 * inner frame stays a plain call, the command is described once.
	 */
	__u32 d = gs->depth;
	if (d >= 2 && d <= MAX_DEPTH && (gs->frames[(d - 2) & (MAX_DEPTH - 1)].arg & ~3ULL) == cmd) {
		gs->frames[(d - 1) & (MAX_DEPTH - 1)].arg = cmd | ARG_SEEN;
		return 0;
	}
	struct lib_fields *fl = lib_fields();
	if (!fl)
		return 0;
	struct command *r = LIB_RECORD(struct command, P_COMMAND, call_id);
	if (!r)
		return 0;
	read_server(client, fl, &r->srv);
	r->name_len = command_name((void *)cmd, fl, r->name, sizeof(r->name));
	if (!r->name_len) {
		/* Often a constant in a page not yet touched; by the command's
		 * return it has been written out, so its page is there. */
		gs->frames[(d - 1) & (MAX_DEPTH - 1)].arg = cmd | ARG_NAME_LATE;
	}
	lib_submit(r);
	return 0;
}

/*
 * func (c *baseClient) processPipeline(ctx context.Context, cmds []Cmder) error
 * func (c *baseClient) processTxPipeline(ctx context.Context, cmds []Cmder) error
 * c in RAX, ctx in RBX, RCX, cmds (ptr, len, cap) in RDI, RSI, R8.
 */
static __always_inline int pipeline_entry(struct pt_regs *ctx, __u8 tx)
{
	void *client = (void *)GO_PARAM1(ctx);
	__u64 n = GO_PARAM5(ctx);
	__u64 call_id = frame_push(ctx, bpf_get_attach_cookie(ctx), 0);
	struct lib_fields *fl = lib_fields();
	if (!call_id || !fl)
		return 0;
	struct pipeline *r = LIB_RECORD(struct pipeline, P_PIPELINE, call_id);
	if (!r)
		return 0;
	read_server(client, fl, &r->srv);
	r->count = n;
	r->tx = tx;
	lib_submit(r);
	return 0;
}

SEC("uprobe")
int pipeline_entry_plain(struct pt_regs *ctx)
{
	return pipeline_entry(ctx, 0);
}

SEC("uprobe")
int pipeline_entry_tx(struct pt_regs *ctx)
{
	return pipeline_entry(ctx, 1);
}

/*
 * The error result (itab, data) in RAX, RBX. go-redis's server replies
 * are proto.RedisError (a string type: data points to the string header)
 * or, from v9.17, pointers to structs whose first field is the message
 * (proto.LoadingError{msg string} ...); redis.Nil is
 * RedisError("redis: nil"). So the message's start is read from data as
 * a string header: user space tells a miss from an error by it. Other
 * errors (network, context) have no such header: the read is a sniff,
 * its failure not a loss (not counted), and user space checks what it got.
 *
 * A global function: the verifier checks it once, on its own, so its
 * branches never multiply the paths through frame_find and frame_pop in
 * result_exit.
 */
__noinline int send_result(__u64 call_id, __u64 err, __u64 data, __u64 late_cmd)
{
	struct result *r = LIB_RECORD(struct result, P_RESULT, call_id);
	if (!r)
		return 0;
	r->err = err;
	struct lib_fields *fl = lib_fields();
	if (late_cmd && fl) {
		r->name_len = command_name((void *)late_cmd, fl, r->name, sizeof(r->name));
		if (!r->name_len)
			stat_inc(STAT_LIB_READ_FAILED);
	}
	struct {
		__u64 ptr;
		__u64 len;
	} s = {};
	if (err && data && !bpf_probe_read_user(&s, sizeof(s), (void *)data) && s.len > 0 && s.len < 4096) {
		__u64 n = s.len < sizeof(r->err_head) ? s.len : sizeof(r->err_head);
		if (!bpf_probe_read_user(r->err_head, n, (void *)s.ptr))
			r->err_len = s.len;
	}
	lib_submit(r);
	return 0;
}

/* The exit of commands and pipelines. */
SEC("uprobe")
int result_exit(struct pt_regs *ctx)
{
	__u64 err = GO_RESULT1(ctx);
	__u64 data = GO_PARAM2(ctx);
	struct frame_exit x;
	if (frame_find(ctx, bpf_get_attach_cookie(ctx), &x))
		return 0;
	if (!(x.arg & ARG_SEEN))
		send_result(x.call_id, err, data, x.arg & ARG_NAME_LATE ? x.arg & ~3ULL : 0);
	frame_pop(&x);
	return 0;
}
