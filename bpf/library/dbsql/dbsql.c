// SPDX-License-Identifier: GPL-2.0
//go:build ignore

/*
 * database/sql: every query and exec a *sql.DB, *sql.Conn or *sql.Tx runs
 * (span kind client): both paths end in one DB method that receives the
 * query text in registers. Prepared statements (*sql.Stmt) take another
 * path: their QueryContext and ExecContext are traced, with the text the
 * statement was prepared from (Stmt.query). Checked against Go 1.21 - 1.27.
 * Each call also says where its connection goes (server address, port,
 * database) for the drivers whose connections it can read: see
 * conn_server.
 */

#include "library.h"

char __license[] SEC("license") = "GPL";

/*
 * Struct fields read, in lib_offsets order (see dbsql.go): database/sql's
 * own (offsets by Go release), then each driver's (by driver version).
 */
enum dbsql_field {
	F_STMT_QUERY,      /* database/sql.Stmt.query string */
	F_STMT_CGDS,       /* Stmt.cgds *driverStmt: set for a Tx's or Conn's statement */
	F_STMT_CSS,        /* Stmt.css []connStmt: a DB statement's connections */
	F_CONNSTMT_DC,     /* connStmt.dc *driverConn */
	F_DS_LOCKER,       /* driverStmt.Locker sync.Locker: always its *driverConn */
	F_DC_CI,           /* driverConn.ci driver.Conn: the driver's connection */
	F_DC_DB,           /* driverConn.db *DB */
	F_DB_CONNECTOR,    /* DB.connector driver.Connector */
	F_DSN_DSN,         /* dsnConnector.dsn string: what sql.Open was given */
	F_ITAB_FUN,        /* runtime.itab.fun (Go 1.21; 0 after) */
	F_ABI_ITAB_FUN,    /* internal/abi.ITab.Fun (Go 1.22 on; 0 before) */
	F_MYSQL_CONN_CFG,  /* go-sql-driver/mysql: mysqlConn.cfg *Config */
	F_MYSQL_NET,       /* Config.Net string: "tcp", "unix", ... */
	F_MYSQL_ADDR,      /* Config.Addr string: host:port or socket path */
	F_MYSQL_DBNAME,    /* Config.DBName string */
	F_PGX_CONN_CONFIG, /* jackc/pgx/v5/stdlib: Conn.connConfig pgx.ConnConfig */
	F_PGX_CONFIG,      /* pgx.ConnConfig.Config pgconn.Config (embedded) */
	F_PGCONN_HOST,     /* pgconn.Config.Host string: host or socket directory */
	F_PGCONN_PORT,     /* pgconn.Config.Port uint16 */
	F_PGCONN_DATABASE, /* pgconn.Config.Database string */
	F_PQ_CONN_CFG,     /* lib/pq (v1.11 on): conn.cfg Config, the host it reached */
	F_PQ_HOST,         /* Config.Host string */
	F_PQ_PORT,         /* Config.Port uint16 */
	F_PQ_DATABASE,     /* Config.Database string */
	F_FIELD_MAX,
};

/*
 * Function addresses, in lib_offsets after the fields (slot F_FIELD_MAX +
 * i), at this process's run-time addresses; 0 when not linked. An
 * interface's itab lists its methods sorted by name: driver.Conn's first
 * is Begin, driver.Connector's Connect. Comparing an itab's first method
 * with these tells which driver's connection a driverConn holds; one per
 * driver, in enum dbsql_driver order.
 */
enum dbsql_func {
	FN_MYSQL_BEGIN,  /* github.com/go-sql-driver/mysql.(*mysqlConn).Begin */
	FN_PGX_BEGIN,    /* github.com/jackc/pgx/v5/stdlib.(*Conn).Begin */
	FN_PQ_BEGIN,     /* github.com/lib/pq.(*conn).Begin */
	FN_SQLITE_BEGIN, /* modernc.org/sqlite.(*conn).Begin */
	FN_DSN_CONNECT,  /* database/sql.(*dsnConnector).Connect: sql.Open's connector */
	FN_MAX,
};

/* The driver whose connection a call ran on. */
enum dbsql_driver {
	D_UNKNOWN, /* none latscope reads (counted: STAT_DB_SERVER_UNKNOWN) */
	D_MYSQL,
	D_PGX,
	D_PQ,
	D_SQLITE,
	D_MAX,
};

enum dbsql_probe {
	P_QUERY = 1, /* the statement and its connection's server, at entry */
	P_DONE,      /* its outcome, at return */
};

/* What a query record holds (its flags). */
enum dbsql_query_flag {
	Q_TEXT = 1,   /* the statement's text */
	Q_SERVER = 2, /* the server of its connection */
};

#define QUERY_MAX 256
#define ADDR_MAX 128
#define NS_MAX 128
/* Longer strings are misread offsets, not configuration. */
#define CONFIG_STR_MAX 4096

/* Where a connection goes, as the driver's configuration says. */
struct server {
	__u64 addr_len; /* full length of addr (truncated to ADDR_MAX); 0: none */
	__u64 ns_len;   /* the same for ns */
	__u16 port;     /* the configured port; 0: none, or inside addr */
	__u8 driver;    /* enum dbsql_driver */
	__u8 _pad[5];
	__u8 net[8];         /* mysql: Config.Net */
	__u8 addr[ADDR_MAX]; /* host, host:port, socket path or directory */
	__u8 ns[NS_MAX];     /* database name; SQLite: what sql.Open was given */
};

struct query {
	struct lib_header h;
	__u64 len; /* full length: the text was truncated when larger */
	__u32 flags; /* enum dbsql_query_flag */
	__u32 _pad;
	struct server srv;
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
const enum dbsql_func *unused_func __attribute__((unused));
const enum dbsql_driver *unused_driver __attribute__((unused));
const enum dbsql_query_flag *unused_query_flag __attribute__((unused));

struct go_iface {
	__u64 tab;
	__u64 data;
};

/* The first method of an itab (0 when unreadable, counted). */
static __always_inline __u64 itab_first(struct lib_fields *fl, __u64 tab)
{
	__u64 off = FIELD(fl, F_ITAB_FUN);
	if (!off)
		off = FIELD(fl, F_ABI_ITAB_FUN);
	return read_ptr((void *)tab, off);
}

/* A configuration string into buf (n: a power of two); its full length. */
static __always_inline __u64 config_string(void *base, __u64 off, void *buf, __u32 n)
{
	__u64 len = read_gostring(base, off, buf, n);
	if (len > CONFIG_STR_MAX) {
		stat_inc(STAT_LIB_READ_FAILED);
		__builtin_memset(buf, 0, n);
		return 0;
	}
	return len;
}

/* Host, port and database of a PostgreSQL driver's config struct at cfg. */
static __always_inline void pg_server(struct lib_fields *fl, void *cfg, __u64 host, __u64 port, __u64 db,
				      struct server *s)
{
	s->addr_len = config_string(cfg, FIELD(fl, host), s->addr, ADDR_MAX);
	s->ns_len = config_string(cfg, FIELD(fl, db), s->ns, NS_MAX);
	if (bpf_probe_read_user(&s->port, sizeof(s->port), cfg + FIELD(fl, port)))
		stat_inc(STAT_LIB_READ_FAILED);
}

/*
 * Fills s from the driver's connection dc holds (a *driverConn): which
 * driver it is, by the first method of its driver.Conn itab, then that
 * driver's configuration. A read per field, at each call: connections
 * opened before latscope attached are read as well as new ones.
 */
static __always_inline void conn_server(struct lib_fields *fl, void *dc, struct server *s)
{
	struct go_iface ci = {};
	if (!dc) {
		stat_inc(STAT_DB_SERVER_UNKNOWN); /* a statement not prepared on any connection yet */
		return;
	}
	if (bpf_probe_read_user(&ci, sizeof(ci), dc + FIELD(fl, F_DC_CI)) || !ci.tab) {
		stat_inc(STAT_LIB_READ_FAILED);
		return;
	}
	__u64 first = itab_first(fl, ci.tab);
	__u8 d = D_UNKNOWN;
#pragma unroll
	for (int i = 0; i < FN_DSN_CONNECT; i++) {
		__u64 a = FIELD(fl, F_FIELD_MAX + i);
		if (a && a == first)
			d = i + 1;
	}
	s->driver = d;
	void *conn = (void *)ci.data;
	switch (d) {
	case D_MYSQL: {
		void *cfg = (void *)read_ptr(conn, FIELD(fl, F_MYSQL_CONN_CFG));
		if (!cfg)
			return;
		config_string(cfg, FIELD(fl, F_MYSQL_NET), s->net, sizeof(s->net));
		s->addr_len = config_string(cfg, FIELD(fl, F_MYSQL_ADDR), s->addr, ADDR_MAX);
		s->ns_len = config_string(cfg, FIELD(fl, F_MYSQL_DBNAME), s->ns, NS_MAX);
		return;
	}
	case D_PGX:
		pg_server(fl, conn + FIELD(fl, F_PGX_CONN_CONFIG) + FIELD(fl, F_PGX_CONFIG), F_PGCONN_HOST,
			  F_PGCONN_PORT, F_PGCONN_DATABASE, s);
		return;
	case D_PQ:
		pg_server(fl, conn + FIELD(fl, F_PQ_CONN_CFG), F_PQ_HOST, F_PQ_PORT, F_PQ_DATABASE, s);
		return;
	case D_SQLITE: {
		/* The file is only in what sql.Open was given: SQLite drivers
		 * have no connector of their own, sql.Open makes a dsnConnector. */
		void *db = (void *)read_ptr(dc, FIELD(fl, F_DC_DB));
		struct go_iface c = {};
		if (!db || bpf_probe_read_user(&c, sizeof(c), db + FIELD(fl, F_DB_CONNECTOR)) || !c.tab) {
			stat_inc(STAT_LIB_READ_FAILED);
			return;
		}
		__u64 dsn = FIELD(fl, F_FIELD_MAX + FN_DSN_CONNECT);
		if (dsn && itab_first(fl, c.tab) == dsn)
			s->ns_len = config_string((void *)c.data, FIELD(fl, F_DSN_DSN), s->ns, NS_MAX);
		else
			s->driver = D_UNKNOWN; /* sql.OpenDB with a connector of its own */
		break;
	}
	}
	if (s->driver == D_UNKNOWN)
		stat_inc(STAT_DB_SERVER_UNKNOWN);
}

/*
 * Copies the query text into r; 0 when it could not be read (not counted
 * here: the caller may retry).
 */
static __always_inline int read_text(struct query *r, __u64 ptr, __u64 len)
{
	r->len = len;
	__u64 n = len < QUERY_MAX ? len : QUERY_MAX;
	if (n && bpf_probe_read_user(r->text, n, (void *)ptr))
		return 0;
	r->flags |= Q_TEXT;
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

/* At a call's entry: the statement's text and its connection's server. */
static __always_inline int send_query(struct pt_regs *ctx, __u64 ptr, __u64 len, void *dc)
{
	struct gstate *gs = 0;
	__u64 call_id = frame_push_chain(ctx, bpf_get_attach_cookie(ctx), 0, 0, &gs);
	if (!call_id || !gs)
		return 0;
	struct query *r = LIB_RECORD(struct query, P_QUERY, call_id);
	if (!r)
		return 0; /* the ring was full: counted */
	struct lib_fields *fl = lib_fields();
	if (fl) {
		conn_server(fl, dc, &r->srv);
		r->flags |= Q_SERVER;
	}
	if (!read_text(r, ptr, len)) {
		__u32 d = gs->depth;
		__u64 l = len < 0xffff ? len : 0xffff;
		if (d > 0 && d <= MAX_DEPTH)
			gs->frames[(d - 1) & (MAX_DEPTH - 1)].arg = ptr | (l << LATE_LEN_SHIFT);
	}
	lib_submit(r);
	return 0;
}

static __always_inline int send_done(struct pt_regs *ctx, __u64 err)
{
	struct frame_exit x;
	if (frame_find(ctx, bpf_get_attach_cookie(ctx), &x))
		return 0;
	if (x.arg) {
		/* The text the entry could not read. */
		struct query *q = LIB_RECORD(struct query, P_QUERY, x.call_id);
		if (q) {
			if (read_text(q, x.arg & ((1ULL << LATE_LEN_SHIFT) - 1), x.arg >> LATE_LEN_SHIFT)) {
				lib_submit(q);
			} else {
				bpf_ringbuf_discard(q, BPF_RB_NO_WAKEUP);
				stat_inc(STAT_LIB_READ_FAILED);
			}
		}
	}
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
	return send_query(ctx, GO_PARAM8(ctx), GO_PARAM9(ctx), (void *)GO_PARAM6(ctx));
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
	return send_query(ctx, GO_PARAM6(ctx), GO_PARAM7(ctx), (void *)GO_PARAM4(ctx));
}

/* Results: Result (itab, data) in RAX, RBX; error in RCX, RDI. */
SEC("uprobe")
int exec_exit(struct pt_regs *ctx)
{
	return send_done(ctx, GO_PARAM3(ctx));
}

/* The query text a *sql.Stmt was prepared from, as (ptr, len); 0 if unreadable. */
static __always_inline int stmt_query(struct lib_fields *fl, void *stmt, __u64 *ptr, __u64 *len)
{
	struct {
		__u64 ptr;
		__u64 len;
	} q = {};
	if (!stmt || bpf_probe_read_user(&q, sizeof(q), stmt + FIELD(fl, F_STMT_QUERY))) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 0;
	}
	*ptr = q.ptr;
	*len = q.len;
	return 1;
}

/*
 * The connection a statement runs on (a *driverConn), known at entry: a
 * Tx's or Conn's statement has one (cgds, whose Locker is it); a DB's
 * takes any of the connections it was prepared on (css), all from the
 * same connector, so the first tells the server as well as the one
 * chosen later. 0 when unreadable.
 */
static __always_inline void *stmt_conn(struct lib_fields *fl, void *stmt)
{
	if (!stmt)
		return 0;
	void *ds = (void *)read_ptr(stmt, FIELD(fl, F_STMT_CGDS));
	if (ds)
		return (void *)read_ptr(ds, FIELD(fl, F_DS_LOCKER) + 8); /* the interface's data word */
	struct {
		__u64 ptr;
		__u64 len;
	} css = {};
	if (bpf_probe_read_user(&css, sizeof(css), stmt + FIELD(fl, F_STMT_CSS)) || !css.len)
		return 0; /* none yet: it prepares on the connection it takes */
	return (void *)read_ptr((void *)css.ptr, FIELD(fl, F_CONNSTMT_DC));
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
	void *stmt = (void *)GO_PARAM1(ctx);
	__u64 ptr = 0, len = 0;
	void *dc = 0;
	struct lib_fields *fl = lib_fields();
	if (fl) {
		stmt_query(fl, stmt, &ptr, &len);
		dc = stmt_conn(fl, stmt);
	} else {
		stat_inc(STAT_LIB_READ_FAILED);
	}
	return send_query(ctx, ptr, len, dc);
}
