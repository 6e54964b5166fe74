// SPDX-License-Identifier: GPL-2.0
//go:build ignore

/*
 * github.com/cloudwego/hertz: requests a Hertz server handles (span kind
 * server, continuing an incoming W3C traceparent) and requests of its
 * HTTP/1 client (span kind client, with a traceparent put on the wire by
 * bpf/propagation). Both of Hertz's network layers: netpoll (its default
 * on Linux) and "standard" (Go's net package). The signatures below
 * are the same in Hertz v0.9.2 - v0.10.4; agent/hertz_test.go runs
 * v0.9.2 built with Go 1.21 - 1.22 and v0.10.4 with Go 1.21 - 1.27.
 */

#include "propagation.h"

char __license[] SEC("license") = "GPL";

/* Struct fields read, in lib_offsets order (see hertz.go). */
enum hertz_field {
	F_CTX_CONN,          /* app.RequestContext.conn network.Conn */
	F_CTX_REQUEST,       /* app.RequestContext.Request protocol.Request */
	F_CTX_RESPONSE,      /* app.RequestContext.Response protocol.Response */
	F_CTX_FULL_PATH,     /* app.RequestContext.fullPath string: the matched route */
	F_REQ_HEADER,        /* protocol.Request.Header RequestHeader */
	F_REQ_URI,           /* protocol.Request.uri URI */
	F_REQ_IS_TLS,        /* protocol.Request.isTLS bool */
	F_RH_CONTENT_LENGTH, /* protocol.RequestHeader.contentLength int */
	F_RH_METHOD,         /* protocol.RequestHeader.method []byte */
	F_RH_REQUEST_URI,    /* protocol.RequestHeader.requestURI []byte */
	F_RH_HOST,           /* protocol.RequestHeader.host []byte */
	F_RH_PROTOCOL,       /* protocol.RequestHeader.protocol string ("HTTP/1.1") */
	F_RH_H,              /* protocol.RequestHeader.h []argsKV: the other header fields */
	F_KV_KEY,            /* protocol.argsKV.key []byte */
	F_KV_VALUE,          /* protocol.argsKV.value []byte */
	F_URI_SCHEME,        /* protocol.URI.scheme []byte */
	F_URI_PATH,          /* protocol.URI.path []byte (no query) */
	F_URI_HOST,          /* protocol.URI.host []byte */
	F_RESP_HEADER,       /* protocol.Response.Header ResponseHeader */
	F_RSH_STATUS,        /* protocol.ResponseHeader.statusCode int (0: 200) */
	F_CLIENT_CONN,       /* http1.clientConn.c network.Conn */
	/* The connection of each network layer, and its ports. */
	F_HNETPOLL_CONN,     /* hertz network/netpoll.Conn.Conn network.Conn (a *netpoll.connection) */
	F_HSTANDARD_CONN,    /* hertz network/standard.Conn.c net.Conn (a *net.TCPConn) */
	F_NP_NETFD,          /* netpoll.connection.netFD (embedded) */
	F_NP_LADDR,          /* netpoll.netFD.localAddr net.Addr */
	F_NP_RADDR,          /* netpoll.netFD.remoteAddr net.Addr */
	F_TCPCONN_CONN,      /* net.TCPConn.conn */
	F_CONN_FD,           /* net.conn.fd *netFD */
	F_NETFD_LADDR,       /* net.netFD.laddr net.Addr */
	F_NETFD_RADDR,       /* net.netFD.raddr net.Addr */
	F_TCPADDR_IP,        /* net.TCPAddr.IP []byte */
	F_TCPADDR_PORT,      /* net.TCPAddr.Port int */
	F_FIELD_MAX,
};

/* Records, by lib_header.probe. */
enum hertz_probe {
	P_SERVER_REQUEST = 1,
	P_SERVER_RESPONSE,
	P_CLIENT_REQUEST,
	P_CLIENT_RESPONSE,
};

struct server_request {
	struct lib_header h;
	struct trace_ctx parent; /* from the request's traceparent header, if valid */
	__u8 method[16];
	__u8 target[128]; /* the request target as received: path and query */
	__u8 host[64];    /* the Host header */
	__u8 protocol[16];
	__u8 peer_ip[16]; /* the client's address: 4 or 16 bytes (peer_ip_len) */
	__u64 target_len; /* full length: target was truncated when larger */
	__s64 content_length;
	__s64 peer_port;
	__u8 peer_ip_len;
	__u8 tls;
	__u8 _pad[6];
};

struct server_response {
	struct lib_header h;
	__s64 status; /* 0: none set, which Hertz sends as 200 */
	__u8 route[64]; /* the route that matched ("/product/:id"), when one did */
	__u64 route_len;
};

struct client_request {
	struct lib_header h;
	__u8 method[16]; /* empty: GET */
	__u8 scheme[8];
	__u8 host[64];
	__u8 path[128];
	__u64 path_len;
};

struct client_response {
	struct lib_header h;
	__s64 status;
	__u64 err; /* non-zero: Do returned an error */
};

const struct server_request *unused_sreq __attribute__((unused));
const struct server_response *unused_sresp __attribute__((unused));
const struct client_request *unused_creq __attribute__((unused));
const struct client_response *unused_cresp __attribute__((unused));
const enum hertz_field *unused_field __attribute__((unused));
const enum hertz_probe *unused_probe __attribute__((unused));

/*
 * Client calls' own trace context, by goroutine, while HostClient.Do
 * runs: each attempt takes its connection on the same goroutine.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct gkey);
	__type(value, struct trace_ctx);
} client_ctx SEC(".maps");

struct goslice {
	__u64 ptr;
	__u64 len;
};

/* A TCP endpoint of a connection: its *net.TCPAddr's IP and port. */
struct endpoint {
	__u8 ip[16];
	__u64 ip_len;
	__s64 port;
};

/*
 * Reads the *net.TCPAddr held in the net.Addr interface at addr_iface
 * (itab, data); 0 when it is one: an IP of 4 or 16 bytes and a port.
 */
static __always_inline int read_endpoint(struct lib_fields *fl, __u64 addr_iface, struct endpoint *e)
{
	__u64 addr = 0;
	struct goslice ip = {};
	if (bpf_probe_read_user(&addr, sizeof(addr), (void *)addr_iface + 8) || !addr ||
	    bpf_probe_read_user(&ip, sizeof(ip), (void *)addr + FIELD(fl, F_TCPADDR_IP)) ||
	    bpf_probe_read_user(&e->port, sizeof(e->port), (void *)addr + FIELD(fl, F_TCPADDR_PORT)))
		return -1;
	if (ip.len != 4 && ip.len != 16)
		return -1; /* not an IP: another net.Addr (a unix socket) */
	if (e->port <= 0 || e->port > 0xffff)
		return -1;
	e->ip_len = ip.len;
	return bpf_probe_read_user(e->ip, ip.len == 16 ? 16 : 4, (void *)ip.ptr) ? -1 : 0;
}

/*
 * The local and remote endpoints of inner, the connection of one of
 * Hertz's network layers: a *netpoll.connection (its netFD holds both
 * addresses) or a *net.TCPConn. Which one it is, is not known: a
 * *net.TCPConn starts with a pointer (its netFD), a netpoll connection
 * with its file descriptor, a small integer that cannot be read as an
 * address, so the net layout is tried first, then netpoll's. Both
 * endpoints must be TCP addresses with ports: anything else (TLS, a unix
 * socket) is not taken for one.
 */
static __always_inline int inner_endpoints(struct lib_fields *fl, __u64 inner, struct endpoint *local,
					   struct endpoint *remote)
{
	__u64 fd = 0;
	if (!inner)
		return -1;
	if (!bpf_probe_read_user(&fd, sizeof(fd), (void *)inner + FIELD(fl, F_TCPCONN_CONN) + FIELD(fl, F_CONN_FD)) &&
	    fd && !read_endpoint(fl, fd + FIELD(fl, F_NETFD_LADDR), local) &&
	    !read_endpoint(fl, fd + FIELD(fl, F_NETFD_RADDR), remote))
		return 0;
	__u64 nfd = inner + FIELD(fl, F_NP_NETFD);
	if (!read_endpoint(fl, nfd + FIELD(fl, F_NP_LADDR), local) && !read_endpoint(fl, nfd + FIELD(fl, F_NP_RADDR), remote))
		return 0;
	return -1;
}

/*
 * The endpoints of conn, the data word of a Hertz network.Conn: a
 * *netpoll.Conn or *standard.Conn, each wrapping its layer's connection
 * in an interface (F_HNETPOLL_CONN, F_HSTANDARD_CONN). With deep, one
 * more wrapper is looked through, in the same place: the server's
 * standard.TLSConn (its c is a *tls.Conn, whose first field is the TCP
 * connection) and the statefulConn the standard layer uses to sense
 * disconnections (its first field is the *standard.Conn).
 */
static __always_inline int conn_endpoints(struct lib_fields *fl, __u64 conn, int deep, struct endpoint *local,
					  struct endpoint *remote)
{
	__u64 np = 0, std = 0, in = 0;
	if (!conn)
		return -1;
	bpf_probe_read_user(&np, sizeof(np), (void *)conn + FIELD(fl, F_HNETPOLL_CONN) + 8);
	bpf_probe_read_user(&std, sizeof(std), (void *)conn + FIELD(fl, F_HSTANDARD_CONN) + 8);
	if (!inner_endpoints(fl, np, local, remote) || (std != np && !inner_endpoints(fl, std, local, remote)))
		return 0;
	if (!deep || !std || bpf_probe_read_user(&in, sizeof(in), (void *)std + 8))
		return -1;
	return inner_endpoints(fl, in, local, remote);
}

/*
 * Request header fields: protocol.argsKV{key, value []byte; noValue
 * bool}, 56 bytes, unchanged since Hertz forked it from fasthttp. Hertz
 * keeps Host, Content-Type, Content-Length, User-Agent, Connection and
 * cookies apart: the rest (a traceparent among them) are in h, in the
 * order received.
 */
#define ARGS_KV_SIZE 56
#define MAX_HEADERS 32

struct header_scan {
	__u64 kvs; /* h's array */
	__u64 n;
	__u64 key_off;
	__u64 value_off;
	struct trace_ctx tc;
};

/* One header field: is it "traceparent" (any case) with a valid value? */
static long scan_header(__u64 i, void *arg)
{
	struct header_scan *s = arg;
	if (i >= s->n)
		return 1;
	void *kv = (void *)(s->kvs + i * ARGS_KV_SIZE);
	struct goslice key = {}, value = {};
	if (bpf_probe_read_user(&key, sizeof(key), kv + s->key_off)) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 1;
	}
	if (key.len != 11)
		return 0;
	__u8 kb[11];
	if (bpf_probe_read_user(kb, sizeof(kb), (void *)key.ptr)) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 1;
	}
	/* Hertz normalizes names ("Traceparent") unless told not to. */
	const char want[] = "traceparent";
	for (int j = 0; j < 11; j++) {
		__u8 c = kb[j];
		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (c != want[j])
			return 0;
	}
	__u8 v[TRACEPARENT_LEN];
	if (bpf_probe_read_user(&value, sizeof(value), kv + s->value_off) || value.len < TRACEPARENT_LEN ||
	    bpf_probe_read_user(v, sizeof(v), (void *)value.ptr))
		return 1;
	parse_traceparent(v, &s->tc);
	return 1;
}

/*
 * func (engine *Engine) ServeHTTP(c context.Context, ctx *app.RequestContext)
 * RAX = engine, RBX/RCX = c, RDI = ctx, kept in the frame for the exit.
 * http1.Server.Serve calls it (through suite.Core) once per request read
 * from a connection, on the goroutine that serves the connection: a
 * netpoll worker taken from a pool for each batch of requests, or the
 * standard transport's goroutine per connection. It routes the request
 * and runs the handler chain; the response is written after it returns.
 * The request's headers are parsed by then, its URI not yet.
 */
SEC("uprobe")
int server_entry(struct pt_regs *ctx)
{
	void *rc = (void *)GO_PARAM4(ctx);
	struct gstate *gs = 0;
	/* A request starts a chain of its own, whatever goroutine serves it. */
	__u64 call_id = frame_push_chain(ctx, bpf_get_attach_cookie(ctx), (__u64)rc, PUSH_NEW_CHAIN, &gs);
	struct lib_fields *fl = lib_fields();
	if (!call_id || !fl || !gs || !rc)
		return 0;
	void *req = rc + FIELD(fl, F_CTX_REQUEST);
	void *hdr = req + FIELD(fl, F_REQ_HEADER);
	/* The RequestHeader's fields read below, at once. */
	struct snap *rh = snap_begin();
	if (!rh)
		return 0;
	snap_want(rh, FIELD(fl, F_RH_H), SNAP_STRING); /* a slice's data, len */
	snap_want(rh, FIELD(fl, F_RH_METHOD), SNAP_STRING);
	snap_want(rh, FIELD(fl, F_RH_REQUEST_URI), SNAP_STRING);
	snap_want(rh, FIELD(fl, F_RH_HOST), SNAP_STRING);
	snap_want(rh, FIELD(fl, F_RH_PROTOCOL), SNAP_STRING);
	snap_want(rh, FIELD(fl, F_RH_CONTENT_LENGTH), SNAP_WORD);
	snap_read(rh, hdr);
	__u64 h[2] = {}; /* data, len */
	if (snap_words(rh, FIELD(fl, F_RH_H), h, 2))
		stat_inc(STAT_LIB_READ_FAILED);
	struct header_scan s = {.kvs = h[0], .n = h[1], .key_off = FIELD(fl, F_KV_KEY), .value_off = FIELD(fl, F_KV_VALUE)};
	if (h[1])
		bpf_loop(MAX_HEADERS, scan_header, &s, 0);
	struct server_request *r = LIB_RECORD(struct server_request, P_SERVER_REQUEST, call_id);
	if (s.tc.valid && gs->depth == 1) {
		/* Continue the caller's trace. */
		gs->trace_hi = s.tc.trace_hi;
		gs->trace_lo = s.tc.trace_lo;
		if (r)
			r->parent = s.tc;
	}
	if (!r)
		return 0;
	snap_gostring(rh, FIELD(fl, F_RH_METHOD), r->method, sizeof(r->method));
	r->target_len = snap_gostring(rh, FIELD(fl, F_RH_REQUEST_URI), r->target, sizeof(r->target));
	snap_gostring(rh, FIELD(fl, F_RH_HOST), r->host, sizeof(r->host));
	snap_gostring(rh, FIELD(fl, F_RH_PROTOCOL), r->protocol, sizeof(r->protocol));
	r->content_length = snap_ptr(rh, FIELD(fl, F_RH_CONTENT_LENGTH));
	bpf_probe_read_user(&r->tls, sizeof(r->tls), req + FIELD(fl, F_REQ_IS_TLS));
	/* The peer: ctx.conn is an interface (itab, data). */
	struct endpoint local = {}, remote = {};
	__u64 conn = read_ptr(rc, FIELD(fl, F_CTX_CONN) + 8);
	if (!conn_endpoints(fl, conn, 1, &local, &remote)) {
		__builtin_memcpy(r->peer_ip, remote.ip, sizeof(r->peer_ip));
		r->peer_ip_len = remote.ip_len;
		r->peer_port = remote.port;
	}
	lib_submit(r);
	return 0;
}

/* ServeHTTP has returned: the status and the route are final. */
SEC("uprobe")
int server_exit(struct pt_regs *ctx)
{
	struct frame_exit x;
	if (frame_find(ctx, bpf_get_attach_cookie(ctx), &x))
		return 0;
	struct lib_fields *fl = lib_fields();
	struct server_response *r = fl ? LIB_RECORD(struct server_response, P_SERVER_RESPONSE, x.call_id) : 0;
	if (r) {
		void *rc = (void *)x.arg;
		void *resp = rc + FIELD(fl, F_CTX_RESPONSE) + FIELD(fl, F_RESP_HEADER);
		r->status = read_ptr(resp, FIELD(fl, F_RSH_STATUS));
		r->route_len = read_gostring(rc, FIELD(fl, F_CTX_FULL_PATH), r->route, sizeof(r->route));
		lib_submit(r);
	}
	frame_pop(&x);
	return 0;
}

/*
 * func (c *HostClient) Do(ctx context.Context, req *protocol.Request, resp *protocol.Response) error
 * RAX = c, RBX/RCX = ctx, RDI = req, RSI = resp, kept in the frame for
 * the exit. Every request of a Hertz client passes here (Client.Do and
 * its variants, DoRedirects once per hop), on the caller's goroutine;
 * retries on another connection happen inside. Client.do has parsed
 * req's URI by then.
 */
SEC("uprobe")
int client_entry(struct pt_regs *ctx)
{
	void *req = (void *)GO_PARAM4(ctx);
	__u64 resp = GO_PARAM5(ctx);
	struct gstate *gs = 0;
	__u64 call_id = frame_push_chain(ctx, bpf_get_attach_cookie(ctx), resp, 0, &gs);
	struct lib_fields *fl = lib_fields();
	if (!call_id || !fl || !gs || !req)
		return 0;
	if (inject_enabled) {
		/* conn_acquired hands it to the connection the request takes. */
		struct gkey k = {.pid = bpf_get_current_pid_tgid() >> 32, .goid = gs->goid};
		struct trace_ctx tc = {.trace_hi = gs->trace_hi, .trace_lo = gs->trace_lo,
				       .span_id = span_id(k.pid, call_id), .flags = 1, .valid = 1};
		bpf_map_update_elem(&client_ctx, &k, &tc, BPF_ANY);
	} else {
		stat_inc(STAT_INJECT_OFF);
	}
	struct snap *u = snap_begin();
	struct client_request *r = u ? LIB_RECORD(struct client_request, P_CLIENT_REQUEST, call_id) : 0;
	if (!r)
		return 0;
	read_gostring(req + FIELD(fl, F_REQ_HEADER), FIELD(fl, F_RH_METHOD), r->method, sizeof(r->method));
	/* The URI's fields at once. */
	snap_want(u, FIELD(fl, F_URI_SCHEME), SNAP_STRING);
	snap_want(u, FIELD(fl, F_URI_HOST), SNAP_STRING);
	snap_want(u, FIELD(fl, F_URI_PATH), SNAP_STRING);
	snap_read(u, req + FIELD(fl, F_REQ_URI));
	snap_gostring(u, FIELD(fl, F_URI_SCHEME), r->scheme, sizeof(r->scheme));
	snap_gostring(u, FIELD(fl, F_URI_HOST), r->host, sizeof(r->host));
	r->path_len = snap_gostring(u, FIELD(fl, F_URI_PATH), r->path, sizeof(r->path));
	lib_submit(r);
	return 0;
}

/* Do's result: error (itab, data) in RAX, RBX. */
SEC("uprobe")
int client_exit(struct pt_regs *ctx)
{
	__u64 err = GO_RESULT1(ctx);
	struct frame_exit x;
	if (frame_find(ctx, bpf_get_attach_cookie(ctx), &x))
		return 0;
	struct lib_fields *fl = lib_fields();
	struct client_response *r = fl ? LIB_RECORD(struct client_response, P_CLIENT_RESPONSE, x.call_id) : 0;
	if (r) {
		void *resp = (void *)x.arg;
		r->status = resp ? read_ptr(resp + FIELD(fl, F_RESP_HEADER), FIELD(fl, F_RSH_STATUS)) : 0;
		r->err = err;
		lib_submit(r);
	}
	if (inject_enabled)
		bpf_map_delete_elem(&client_ctx, &x.key);
	frame_pop(&x);
	return 0;
}

/*
 * Where (*HostClient).doNonNilReqResp's call to
 * func (c *HostClient) acquireConn(dialTimeout time.Duration) (cc *clientConn, inPool bool, err error)
 * has just returned (a call-return site, emulated): RAX = cc, nil on an
 * error. Once per attempt, on the goroutine of HostClient.Do, which then
 * writes the request on cc's connection itself; the connection carries
 * nothing else until the response is read. The call's context waits for
 * the connection's next request head by its ports, as for net/http.
 */
SEC("uprobe")
int conn_acquired(struct pt_regs *ctx)
{
	count_hit(bpf_get_attach_cookie(ctx)); /* hooks' cookie: 0 */
	if (!inject_enabled)
		return 0; /* no context is ever kept: nothing to hand over or clear */
	void *cc = (void *)GO_RESULT1(ctx);
	struct lib_fields *fl = lib_fields();
	struct gkey g = {};
	if (!cc || !fl || current_gkey(ctx, &g))
		return 0;
	struct endpoint local = {}, remote = {};
	__u64 conn = read_ptr(cc, FIELD(fl, F_CLIENT_CONN) + 8);
	/* TLS (a *tls.Conn in standard.TLSConn) is not looked into: its bytes are encrypted. */
	int tcp = !conn_endpoints(fl, conn, 0, &local, &remote);
	struct connkey k = {.pid = g.pid, .local_port = local.port, .remote_port = remote.port};
	hand_over_ctx(&client_ctx, &g, &k, tcp);
	return 0;
}
