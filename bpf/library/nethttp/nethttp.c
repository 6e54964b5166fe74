// SPDX-License-Identifier: GPL-2.0
//go:build ignore

/*
 * net/http: server requests (span kind server) and client round trips
 * (span kind client). Checked against Go 1.21 - 1.27.
 */

#include "propagation.h"

char __license[] SEC("license") = "GPL";

/* Struct fields read, in lib_offsets order (see nethttp.go). */
enum nethttp_field {
	F_REQUEST_METHOD,         /* net/http.Request.Method string */
	F_REQUEST_URL,            /* net/http.Request.URL *url.URL */
	F_REQUEST_PROTO_MAJOR,    /* net/http.Request.ProtoMajor int */
	F_REQUEST_HOST,           /* net/http.Request.Host string */
	F_REQUEST_REMOTE_ADDR,    /* net/http.Request.RemoteAddr string */
	F_REQUEST_CONTENT_LENGTH, /* net/http.Request.ContentLength int64 */
	F_URL_SCHEME,             /* net/url.URL.Scheme string */
	F_URL_HOST,               /* net/url.URL.Host string */
	F_URL_PATH,               /* net/url.URL.Path string */
	F_RESPONSE_STATUS,        /* net/http.response.status int (server side) */
	F_RESPONSE_WRITTEN,       /* net/http.response.written int64 */
	F_CLIENT_STATUS_CODE,     /* net/http.Response.StatusCode int */
	F_RESPONSE_REQUEST,       /* net/http.response.req *Request */
	F_REQUEST_PATTERN,        /* net/http.Request.Pattern string (Go >= 1.23; 0 = absent) */
	/*
	 * The HTTP/2 server's response writer: rw's data word points to a
	 * struct whose rws points to the state holding status and size. Go <=
	 * 1.26 bundles it in net/http (http2responseWriter), Go 1.27 moved it
	 * to net/http/internal/http2 (responseWriter): each version has one
	 * of the pairs, the other reads 0. rws is the first field in both.
	 */
	F_H2_RWS,                 /* net/http.http2responseWriter.rws (Go <= 1.26) */
	F_H2_STATUS,              /* net/http.http2responseWriterState.status int */
	F_H2_WROTE,               /* net/http.http2responseWriterState.wroteBytes int64 */
	F_H2I_RWS,                /* net/http/internal/http2.responseWriter.rws (Go >= 1.27) */
	F_H2I_STATUS,             /* net/http/internal/http2.responseWriterState.status */
	F_H2I_WROTE,              /* net/http/internal/http2.responseWriterState.wroteBytes */
	/* The client connection a request goes out on, and its ports. */
	F_PCONN_CONN,             /* net/http.persistConn.conn net.Conn */
	F_TCPCONN_CONN,           /* net.TCPConn.conn */
	F_CONN_FD,                /* net.conn.fd *netFD */
	F_NETFD_LADDR,            /* net.netFD.laddr net.Addr */
	F_NETFD_RADDR,            /* net.netFD.raddr net.Addr */
	F_TCPADDR_PORT,           /* net.TCPAddr.Port int */
	F_FIELD_MAX,
};

/* Records, by lib_header.probe. */
enum nethttp_probe {
	P_SERVER_REQUEST = 1,
	P_SERVER_RESPONSE,
	P_CLIENT_REQUEST,
	P_CLIENT_RESPONSE,
};

struct server_request {
	struct lib_header h;
	struct trace_ctx parent; /* from the request's traceparent header, if valid */
	__u8 method[16];
	__u8 path[128];
	__u8 host[64];
	__u8 remote[64];
	__u64 path_len; /* full length: path was truncated when larger */
	__s64 content_length;
	__u64 proto_major;
};

struct server_response {
	struct lib_header h;
	__s64 status; /* 0: not known (HTTP/2 response writer) */
	__s64 written;
	__u8 pattern[64]; /* the ServeMux pattern that matched, when known */
};

struct client_request {
	struct lib_header h;
	__u8 method[16];
	__u8 scheme[8];
	__u8 host[64];
	__u8 path[128];
	__u64 path_len;
};

struct client_response {
	struct lib_header h;
	__s64 status;
	__u64 err; /* non-zero: the round trip returned an error */
};

const struct server_request *unused_sreq __attribute__((unused));
const struct server_response *unused_sresp __attribute__((unused));
const struct client_request *unused_creq __attribute__((unused));
const struct client_response *unused_cresp __attribute__((unused));
const enum nethttp_field *unused_field __attribute__((unused));
const enum nethttp_probe *unused_probe __attribute__((unused));

/*
 * Client calls' own trace context, by goroutine, while the call runs.
 * Not by request: Transport.roundTrip sends a shallow copy of a request
 * with a body (setupRewindBody), and another on each retry; the
 * connection is taken on the calling goroutine.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct gkey);
	__type(value, struct trace_ctx);
} client_ctx SEC(".maps");

/* A traceparent header line read on a goroutine, until its request is served. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct gkey);
	__type(value, struct trace_ctx);
} incoming SEC(".maps");

/*
 * Where net/textproto.readMIMEHeader's call to
 * func (r *Reader) readContinuedLineSlice(lim int64, validateFirstLine func([]byte) error) ([]byte, error)
 * has just returned (a call-return site, emulated): RAX, RBX = the header
 * line's bytes and length. A "traceparent:" line is parsed and kept for
 * the goroutine, which serves the request next (HTTP/1: conn.serve reads
 * and serves on one goroutine).
 */
SEC("uprobe")
int header_line(struct pt_regs *ctx)
{
	__u64 len = GO_PARAM2(ctx);
	if (len < 12 + TRACEPARENT_LEN || len > 12 + 4 + TRACEPARENT_LEN)
		return 0;
	__u8 line[12 + 4 + TRACEPARENT_LEN];
	if (bpf_probe_read_user(line, sizeof(line), (void *)GO_PARAM1(ctx)))
		return 0;
	const char name[] = "traceparent:";
#pragma unroll
	for (int i = 0; i < 12; i++) {
		__u8 c = line[i];
		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (c != name[i])
			return 0;
	}
	int v = 12;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (line[v] == ' ' || line[v] == '\t')
			v++;
	}
	struct trace_ctx tc = {};
	if (v > 16 || parse_traceparent(line + v, &tc))
		return 0;
	struct gkey key = {};
	if (current_gkey(ctx, &key))
		return 0;
	bpf_map_update_elem(&incoming, &key, &tc, BPF_ANY);
	return 0;
}

/*
 * func (sh serverHandler) ServeHTTP(rw ResponseWriter, req *Request)
 * serverHandler{srv *Server} is passed in one register, rw (an interface)
 * in two: itab, data. rw's data is kept in the frame so the exit can read
 * the status the handler wrote: for HTTP/1 a *http.response, for HTTP/2
 * a pointer to the HTTP/2 writer (tagged ARG_H2 in the low bit: both are
 * pointers to word-aligned structs).
 */
#define ARG_H2 1ULL

SEC("uprobe")
int server_entry(struct pt_regs *ctx)
{
	void *rw = (void *)GO_PARAM3(ctx);
	void *req = (void *)GO_PARAM4(ctx);
	struct lib_fields *fl = lib_fields();
	__u64 proto = fl ? read_ptr(req, FIELD(fl, F_REQUEST_PROTO_MAJOR)) : 0;
	struct gstate *gs = 0;
	/* A request starts a chain of its own, whatever goroutine serves it. */
	__u64 arg = proto == 1 ? (__u64)rw : proto == 2 && rw ? (__u64)rw | ARG_H2 : 0;
	__u64 call_id = frame_push_chain(ctx, bpf_get_attach_cookie(ctx), arg, PUSH_NEW_CHAIN, &gs);
	if (!call_id || !fl || !gs)
		return 0;
	struct gkey key = {.pid = bpf_get_current_pid_tgid() >> 32, .goid = gs->goid};
	struct trace_ctx *in = bpf_map_lookup_elem(&incoming, &key);
	struct server_request *r = LIB_RECORD(struct server_request, P_SERVER_REQUEST, call_id);
	if (in && in->valid && gs->depth == 1) {
		/* Continue the caller's trace. */
		gs->trace_hi = in->trace_hi;
		gs->trace_lo = in->trace_lo;
		if (r)
			r->parent = *in;
	}
	if (in)
		bpf_map_delete_elem(&incoming, &key);
	if (!r)
		return 0;
	read_gostring(req, FIELD(fl, F_REQUEST_METHOD), r->method, sizeof(r->method));
	void *url = (void *)read_ptr(req, FIELD(fl, F_REQUEST_URL));
	r->path_len = read_gostring(url, FIELD(fl, F_URL_PATH), r->path, sizeof(r->path));
	read_gostring(req, FIELD(fl, F_REQUEST_HOST), r->host, sizeof(r->host));
	read_gostring(req, FIELD(fl, F_REQUEST_REMOTE_ADDR), r->remote, sizeof(r->remote));
	r->content_length = read_ptr(req, FIELD(fl, F_REQUEST_CONTENT_LENGTH));
	r->proto_major = proto;
	lib_submit(r);
	return 0;
}

SEC("uprobe")
int server_exit(struct pt_regs *ctx)
{
	struct frame_exit x;
	if (frame_find(ctx, bpf_get_attach_cookie(ctx), &x))
		return 0;
	struct lib_fields *fl = lib_fields();
	struct server_response *r = fl ? LIB_RECORD(struct server_response, P_SERVER_RESPONSE, x.call_id) : 0;
	if (r && (x.arg & ARG_H2)) {
		void *w = (void *)(x.arg & ~ARG_H2);
		__u64 status = FIELD(fl, F_H2_STATUS) | FIELD(fl, F_H2I_STATUS);
		__u64 wrote = FIELD(fl, F_H2_WROTE) | FIELD(fl, F_H2I_WROTE);
		void *rws = (void *)read_ptr(w, FIELD(fl, F_H2_RWS) | FIELD(fl, F_H2I_RWS));
		if (rws && status) {
			r->status = read_ptr(rws, status);
			r->written = read_ptr(rws, wrote);
		}
		lib_submit(r);
	} else if (r) {
		void *resp = (void *)x.arg;
		r->status = resp ? read_ptr(resp, FIELD(fl, F_RESPONSE_STATUS)) : 0;
		r->written = resp ? read_ptr(resp, FIELD(fl, F_RESPONSE_WRITTEN)) : 0;
		if (resp && FIELD(fl, F_REQUEST_PATTERN)) {
			void *req = (void *)read_ptr(resp, FIELD(fl, F_RESPONSE_REQUEST));
			read_gostring(req, FIELD(fl, F_REQUEST_PATTERN), r->pattern, sizeof(r->pattern));
		}
		lib_submit(r);
	}
	frame_pop(&x);
	return 0;
}

/* func (t *Transport) roundTrip(req *Request) (*Response, error) */
SEC("uprobe")
int client_entry(struct pt_regs *ctx)
{
	void *req = (void *)GO_PARAM2(ctx);
	struct gstate *gs = 0;
	__u64 call_id = frame_push_chain(ctx, bpf_get_attach_cookie(ctx), 0, 0, &gs);
	struct lib_fields *fl = lib_fields();
	if (!call_id || !fl || !gs)
		return 0;
	if (inject_enabled) {
		/* conn_round_trip hands it to the connection the request takes. */
		struct gkey k = {.pid = bpf_get_current_pid_tgid() >> 32, .goid = gs->goid};
		struct trace_ctx tc = {.trace_hi = gs->trace_hi, .trace_lo = gs->trace_lo,
				       .span_id = span_id(k.pid, call_id), .flags = 1, .valid = 1};
		bpf_map_update_elem(&client_ctx, &k, &tc, BPF_ANY);
	} else {
		stat_inc(STAT_INJECT_OFF);
	}
	struct client_request *r = LIB_RECORD(struct client_request, P_CLIENT_REQUEST, call_id);
	if (!r)
		return 0;
	read_gostring(req, FIELD(fl, F_REQUEST_METHOD), r->method, sizeof(r->method));
	void *url = (void *)read_ptr(req, FIELD(fl, F_REQUEST_URL));
	read_gostring(url, FIELD(fl, F_URL_SCHEME), r->scheme, sizeof(r->scheme));
	read_gostring(url, FIELD(fl, F_URL_HOST), r->host, sizeof(r->host));
	r->path_len = read_gostring(url, FIELD(fl, F_URL_PATH), r->path, sizeof(r->path));
	lib_submit(r);
	return 0;
}

/* Results: *Response in RAX, error (itab, data) in RBX, RCX. */
SEC("uprobe")
int client_exit(struct pt_regs *ctx)
{
	void *resp = (void *)GO_RESULT1(ctx);
	__u64 err = GO_PARAM2(ctx);
	struct frame_exit x;
	if (frame_find(ctx, bpf_get_attach_cookie(ctx), &x))
		return 0;
	struct lib_fields *fl = lib_fields();
	struct client_response *r = fl ? LIB_RECORD(struct client_response, P_CLIENT_RESPONSE, x.call_id) : 0;
	if (r) {
		r->status = resp ? read_ptr(resp, FIELD(fl, F_CLIENT_STATUS_CODE)) : 0;
		r->err = err;
		lib_submit(r);
	}
	if (inject_enabled)
		bpf_map_delete_elem(&client_ctx, &x.key);
	frame_pop(&x);
	return 0;
}

/*
 * func (pc *persistConn) roundTrip(req *transportRequest) (resp *Response, err error)
 * RAX = pc, on the goroutine of Transport.roundTrip. The request is about
 * to go out on pc's connection, which carries nothing else until it is
 * answered: its context waits for the connection's next request head
 * there, by the connection's ports (the writer goroutine may write it
 * from any thread). Called again on another connection when the
 * transport retries. Entry hook only.
 */
SEC("uprobe")
int conn_round_trip(struct pt_regs *ctx)
{
	if (!inject_enabled)
		return 0; /* no context is ever kept: nothing to hand over or clear */
	struct lib_fields *fl = lib_fields();
	struct gkey g = {};
	if (!fl || current_gkey(ctx, &g))
		return 0;
	/* pc.conn: a *net.TCPConn (TLS or another net.Conn: no injection). */
	__u64 conn = read_ptr((void *)GO_PARAM1(ctx), FIELD(fl, F_PCONN_CONN) + 8);
	struct tcp_offsets o = {.conn_fd = FIELD(fl, F_TCPCONN_CONN) + FIELD(fl, F_CONN_FD),
				.laddr = FIELD(fl, F_NETFD_LADDR), .raddr = FIELD(fl, F_NETFD_RADDR), .port = FIELD(fl, F_TCPADDR_PORT)};
	struct connkey k = {.pid = g.pid};
	int tcp = tcp_conn_ports(conn, &o, &k);
	hand_over_ctx(&client_ctx, &g, &k, tcp);
	return 0;
}
