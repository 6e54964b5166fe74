// SPDX-License-Identifier: GPL-2.0
//go:build ignore

/*
 * database/sql: every query and exec a *sql.DB, *sql.Conn or *sql.Tx runs
 * (span kind client): both paths end in one DB method that receives the
 * query text in registers. Prepared statements (*sql.Stmt) take another
 * path: their QueryContext and ExecContext are traced, with the text the
 * statement was prepared from (Stmt.query). Checked against Go 1.21 - 1.27.
 */

#include "library.h"

char __license[] SEC("license") = "GPL";

/* Struct fields read, in lib_offsets order (see dbsql.go). */
enum dbsql_field {
	F_STMT_QUERY, /* database/sql.Stmt.query string */
	F_FIELD_MAX,
};

enum dbsql_probe {
	P_QUERY = 1, /* the statement, at entry */
	P_DONE,      /* its outcome, at return */
};

#define QUERY_MAX 256

struct query {
	struct lib_header h;
	__u64 len; /* full length: the text was truncated when larger */
	__u8 text[QUERY_MAX];
};

struct done {
	struct lib_header h;
	__u64 err; /* non-zero: the call returned an error */
};

const struct query *unused_query __attribute__((unused));
const struct done *unused_done __attribute__((unused));
const enum dbsql_probe *unused_probe __attribute__((unused));
const enum dbsql_field *unused_field __attribute__((unused));

/*
 * Reads the query text into a record for call_id; 0 when the text could
 * not be read (not counted here: the caller may retry).
 */
static __always_inline int query_record(__u64 call_id, __u64 ptr, __u64 len)
{
	struct query *r = LIB_RECORD(struct query, P_QUERY, call_id);
	if (!r)
		return 1; /* the ring was full: counted, nothing to retry */
	r->len = len;
	__u64 n = len < QUERY_MAX ? len : QUERY_MAX;
	if (n && bpf_probe_read_user(r->text, n, (void *)ptr)) {
		bpf_ringbuf_discard(r, BPF_RB_NO_WAKEUP);
		return 0;
	}
	lib_submit(r);
	return 1;
}

/*
 * The text is usually a constant in .rodata that nothing has read yet
 * when the query starts, and a uprobe cannot fault its page in. If it
 * cannot be read at entry, the frame keeps where it is (pointer and
 * length packed: user addresses fit in 48 bits) and the exit, after the
 * driver has read it, tries again.
 */
#define LATE_LEN_SHIFT 48

static __always_inline int send_query(struct pt_regs *ctx, __u64 ptr, __u64 len)
{
	struct gstate *gs = 0;
	__u64 call_id = frame_push_chain(ctx, bpf_get_attach_cookie(ctx), 0, 0, &gs);
	if (!call_id || !gs)
		return 0;
	if (!query_record(call_id, ptr, len)) {
		__u32 d = gs->depth;
		__u64 l = len < 0xffff ? len : 0xffff;
		if (d > 0 && d <= MAX_DEPTH)
			gs->frames[(d - 1) & (MAX_DEPTH - 1)].arg = ptr | (l << LATE_LEN_SHIFT);
	}
	return 0;
}

static __always_inline int send_done(struct pt_regs *ctx, __u64 err)
{
	struct frame_exit x;
	if (frame_find(ctx, bpf_get_attach_cookie(ctx), &x))
		return 0;
	if (x.arg && !query_record(x.call_id, x.arg & ((1ULL << LATE_LEN_SHIFT) - 1), x.arg >> LATE_LEN_SHIFT))
		stat_inc(STAT_LIB_READ_FAILED);
	struct done *r = LIB_RECORD(struct done, P_DONE, x.call_id);
	if (r) {
		r->err = err;
		lib_submit(r);
	}
	frame_pop(&x);
	return 0;
}

/*
 * func (db *DB) queryDC(ctx, txctx context.Context, dc *driverConn,
 *     releaseConn func(error), query string, args []any) (*Rows, error)
 * db: RAX; ctx: RBX, RCX; txctx: RDI, RSI; dc: R8; releaseConn: R9;
 * query: R10, R11 (args no longer fit in registers).
 */
SEC("uprobe")
int query_entry(struct pt_regs *ctx)
{
	return send_query(ctx, GO_PARAM8(ctx), GO_PARAM9(ctx));
}

/* Results: *Rows in RAX, error (itab, data) in RBX, RCX. */
SEC("uprobe")
int query_exit(struct pt_regs *ctx)
{
	return send_done(ctx, GO_PARAM2(ctx));
}

/*
 * func (db *DB) execDC(ctx context.Context, dc *driverConn,
 *     release func(error), query string, args []any) (res Result, err error)
 * db: RAX; ctx: RBX, RCX; dc: RDI; release: RSI; query: R8, R9.
 */
SEC("uprobe")
int exec_entry(struct pt_regs *ctx)
{
	return send_query(ctx, GO_PARAM6(ctx), GO_PARAM7(ctx));
}

/* Results: Result (itab, data) in RAX, RBX; error in RCX, RDI. */
SEC("uprobe")
int exec_exit(struct pt_regs *ctx)
{
	return send_done(ctx, GO_PARAM3(ctx));
}

/* The query text a *sql.Stmt was prepared from, as (ptr, len); 0 if unreadable. */
static __always_inline int stmt_query(void *stmt, __u64 *ptr, __u64 *len)
{
	struct lib_fields *fl = lib_fields();
	struct {
		__u64 ptr;
		__u64 len;
	} q = {};
	if (!fl || !stmt || bpf_probe_read_user(&q, sizeof(q), stmt + FIELD(fl, F_STMT_QUERY))) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 0;
	}
	*ptr = q.ptr;
	*len = q.len;
	return 1;
}

/*
 * func (s *Stmt) QueryContext(ctx context.Context, args ...any) (*Rows, error)
 * func (s *Stmt) ExecContext(ctx context.Context, args ...any) (Result, error)
 * s: RAX; ctx: RBX, RCX; args: RDI, RSI, R8. Results as queryDC's and
 * execDC's (query_exit, exec_exit).
 */
SEC("uprobe")
int stmt_entry(struct pt_regs *ctx)
{
	__u64 ptr = 0, len = 0;
	stmt_query((void *)GO_PARAM1(ctx), &ptr, &len);
	return send_query(ctx, ptr, len);
}
