// SPDX-License-Identifier: GPL-2.0
//go:build ignore

/*
 * google.golang.org/grpc: RPCs a grpc-go server handles (span kind server)
 * and the calls of a ClientConn, unary and streaming (span kind client),
 * with the incoming W3C traceparent of a server RPC continued and the
 * outgoing one put on a call's HEADERS frame. Checked against grpc
 * v1.67.3 - v1.85.0 built with Go 1.21 - 1.26 (amd64: go tool objdump of
 * every probed function's entry and call site; registers below).
 */

#include "propagation.h"

char __license[] SEC("license") = "GPL";

/* Struct fields read, in lib_offsets order (see grpc.go). */
enum grpc_field {
	F_STREAM_METHOD,        /* transport.Stream.method string */
	F_STREAM_ID,            /* transport.Stream.id uint32 */
	F_STREAM_ST,            /* transport.Stream.st ServerTransport (<= v1.68; 0 = absent) */
	F_SERVERSTREAM_STREAM,  /* transport.ServerStream.Stream: *Stream (v1.69 - v1.76) or Stream (>= v1.77) */
	F_SERVERSTREAM_ST,      /* transport.ServerStream.st (>= v1.69; 0 = absent) */
	F_SERVER_PEER,          /* transport.http2Server.peer peer.Peer */
	F_PEER_ADDR,            /* peer.Peer.Addr net.Addr */
	F_PEER_LOCAL_ADDR,      /* peer.Peer.LocalAddr net.Addr */
	F_TCPADDR_IP,           /* net.TCPAddr.IP []byte */
	F_TCPADDR_PORT,         /* net.TCPAddr.Port int */
	F_META_HEADERS_FRAME,   /* http2.MetaHeadersFrame.HeadersFrame *HeadersFrame */
	F_META_FIELDS,          /* http2.MetaHeadersFrame.Fields []hpack.HeaderField */
	F_HEADERS_FRAME_HEADER, /* http2.HeadersFrame.FrameHeader */
	F_FRAME_STREAM_ID,      /* http2.FrameHeader.StreamID uint32 */
	F_HEADER_FIELD_NAME,    /* hpack.HeaderField.Name string */
	F_HEADER_FIELD_VALUE,   /* hpack.HeaderField.Value string */
	F_STATUS_ERROR_S,       /* internal/status.Error.s *Status */
	F_STATUS_S,             /* internal/status.Status.s *spb.Status */
	F_SPB_STATUS_CODE,      /* genproto/googleapis/rpc/status.Status.Code int32 */
	F_CLIENTCONN_TARGET,    /* grpc.ClientConn.target string */
	F_HEADERFRAME_HF,       /* transport.headerFrame.hf []hpack.HeaderField (<= v1.81; 0 = absent) */
	F_CLIENTHEADERS_HF,     /* transport.clientHeaders.hf, its successor (>= v1.82; 0 = absent) */
	F_LOOPY_CONN,           /* transport.loopyWriter.conn net.Conn */
	F_TCPCONN_CONN,         /* net.TCPConn.conn (embedded net.conn) */
	F_CONN_FD,              /* net.conn.fd *netFD */
	F_NETFD_LADDR,          /* net.netFD.laddr net.Addr */
	F_NETFD_RADDR,          /* net.netFD.raddr net.Addr */
	F_CSATTEMPT_CS,         /* grpc.csAttempt.cs *clientStream */
	F_CLIENTSTREAM_DESC,    /* grpc.clientStream.desc *StreamDesc */
	F_STREAMDESC_SERVER,    /* grpc.StreamDesc.ServerStreams bool (ClientStreams follows) */
	F_FIELD_MAX,
};

/* Records, by lib_header.probe. */
enum grpc_probe {
	P_SERVER_REQUEST = 1,
	P_SERVER_STATUS,
	P_CLIENT_REQUEST,
	P_CLIENT_RESPONSE,
};

struct server_request {
	struct lib_header h;
	struct trace_ctx parent; /* from the RPC's traceparent metadata, if valid */
	__u8 method[128];        /* "/service/method" */
	__u64 method_len;        /* full length: method was truncated when larger */
	__u8 local_ip[16];
	__u8 remote_ip[16];
	__u64 local_ip_len; /* 4 or 16; 0: not a TCP address */
	__u64 remote_ip_len;
	__s64 local_port;
	__s64 remote_port;
};

struct server_status {
	struct lib_header h;
	__u32 code; /* the gRPC status code the server wrote */
	__u32 _pad;
};

struct client_request {
	struct lib_header h;
	__u8 method[128];
	__u64 method_len;
	__u8 target[64]; /* the ClientConn's dial target */
};

struct client_response {
	struct lib_header h;
	__u64 err;        /* non-zero: Invoke returned an error */
	__u32 code;       /* its gRPC status code, when code_known */
	__u8 code_known;  /* the error was a *status.Error with a valid code */
	__u8 _pad[3];
};

const struct server_request *unused_sreq __attribute__((unused));
const struct server_status *unused_sstatus __attribute__((unused));
const struct client_request *unused_creq __attribute__((unused));
const struct client_response *unused_cresp __attribute__((unused));
const enum grpc_field *unused_field __attribute__((unused));
const enum grpc_probe *unused_probe __attribute__((unused));

/*
 * A stream is named by its transport (*http2Server) and its HTTP/2 stream
 * id: operateHeaders, on the connection's reader goroutine, knows both
 * before the stream exists; handleStream, on the goroutine that runs the
 * handler, reads both from the stream. Stream ids never repeat on a
 * connection, so the key is unique while the transport lives.
 */
struct streamkey {
	__u32 pid;
	__u32 stream_id;
	__u64 transport;
};

/* A traceparent received with a stream's headers, until its handler starts. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct streamkey);
	__type(value, struct trace_ctx);
} incoming SEC(".maps");

#define HEADER_FIELD_SIZE 40 /* hpack.HeaderField{Name, Value string; Sensitive bool}, unchanged since 2015 */
#define MAX_HEADER_FIELDS 32 /* gRPC sends ~8 pseudo/reserved headers before metadata */

struct header_scan {
	__u64 fields; /* the []hpack.HeaderField's array */
	__u64 n;
	__u64 name_off;
	__u64 value_off;
	struct trace_ctx tc;
	__u8 found; /* a traceparent field is there (valid or not) */
};

/* One header field: is it "traceparent" with a valid value? */
static long scan_header(__u64 i, void *arg)
{
	struct header_scan *s = arg;
	if (i >= s->n)
		return 1;
	void *f = (void *)(s->fields + i * HEADER_FIELD_SIZE);
	struct {
		__u64 ptr;
		__u64 len;
	} name = {}, value = {};
	if (bpf_probe_read_user(&name, sizeof(name), f + s->name_off)) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 1;
	}
	if (name.len != 11)
		return 0;
	__u8 nb[11];
	if (bpf_probe_read_user(nb, sizeof(nb), (void *)name.ptr)) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 1;
	}
	/* HTTP/2 field names are lower case on the wire (RFC 9113 8.2.1). */
	const char want[] = "traceparent";
	for (int j = 0; j < 11; j++) {
		if (nb[j] != want[j])
			return 0;
	}
	s->found = 1;
	__u8 v[TRACEPARENT_LEN];
	if (bpf_probe_read_user(&value, sizeof(value), f + s->value_off) || value.len != TRACEPARENT_LEN ||
	    bpf_probe_read_user(v, sizeof(v), (void *)value.ptr))
		return 1;
	parse_traceparent(v, &s->tc);
	return 1;
}

/*
 * func (t *http2Server) operateHeaders(ctx context.Context,
 *         frame *http2.MetaHeadersFrame, handle func(*Stream|*ServerStream)) error
 * RAX = t, RBX/RCX = ctx, RDI = frame. Runs on the connection's reader
 * goroutine for each new stream's headers, before the stream's handler
 * goroutine is started (by handle): a traceparent found here is in the
 * map before handleStream can look for it. Entry hook only.
 */
SEC("uprobe")
int operate_headers(struct pt_regs *ctx)
{
	void *t = (void *)GO_PARAM1(ctx);
	void *frame = (void *)GO_PARAM4(ctx);
	struct lib_fields *fl = lib_fields();
	if (!fl || !frame)
		return 0;
	struct {
		__u64 ptr;
		__u64 len;
	} fields = {};
	if (bpf_probe_read_user(&fields, sizeof(fields), frame + FIELD(fl, F_META_FIELDS))) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 0;
	}
	struct header_scan s = {.fields = fields.ptr, .n = fields.len,
				.name_off = FIELD(fl, F_HEADER_FIELD_NAME), .value_off = FIELD(fl, F_HEADER_FIELD_VALUE)};
	bpf_loop(MAX_HEADER_FIELDS, scan_header, &s, 0);
	if (!s.tc.valid)
		return 0;
	void *hf = (void *)read_ptr(frame, FIELD(fl, F_META_HEADERS_FRAME));
	struct streamkey k = {.pid = bpf_get_current_pid_tgid() >> 32, .transport = (__u64)t};
	if (!hf || bpf_probe_read_user(&k.stream_id, sizeof(k.stream_id),
				       hf + FIELD(fl, F_HEADERS_FRAME_HEADER) + FIELD(fl, F_FRAME_STREAM_ID))) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 0;
	}
	bpf_map_update_elem(&incoming, &k, &s.tc, BPF_ANY);
	return 0;
}

/* Copies a *net.TCPAddr held in the interface at base+off; its IP length (0: none). */
static __always_inline __u64 read_tcp_addr(struct lib_fields *fl, void *base, __u64 off, __u8 ip[16], __s64 *port)
{
	__u64 addr = 0;
	struct {
		__u64 ptr;
		__u64 len;
	} b = {};
	/* An interface: (itab, data); data is *net.TCPAddr for TCP listeners. */
	if (bpf_probe_read_user(&addr, sizeof(addr), base + off + 8) || !addr)
		return 0;
	if (bpf_probe_read_user(&b, sizeof(b), (void *)addr + FIELD(fl, F_TCPADDR_IP)) ||
	    bpf_probe_read_user(port, sizeof(*port), (void *)addr + FIELD(fl, F_TCPADDR_PORT)))
		return 0;
	if (b.len != 4 && b.len != 16)
		return 0; /* not an IP: another net.Addr (a unix socket) */
	if (bpf_probe_read_user(ip, b.len & 16 ? 16 : 4, (void *)b.ptr))
		return 0;
	return b.len;
}

/*
 * func (s *Server) handleStream(t transport.ServerTransport, stream *transport.Stream)
 * (>= v1.69: stream *transport.ServerStream). RAX = s, RBX/RCX = t,
 * RDI = stream, kept in the frame: the status hook finds its RPC by it.
 * Runs once per RPC on the goroutine that calls the handler.
 */
SEC("uprobe")
int server_entry(struct pt_regs *ctx)
{
	void *ss = (void *)GO_PARAM4(ctx);
	struct gstate *gs = 0;
	/* An RPC starts a chain of its own, whatever goroutine serves it. */
	__u64 call_id = frame_push_chain(ctx, bpf_get_attach_cookie(ctx), (__u64)ss, PUSH_NEW_CHAIN, &gs);
	struct lib_fields *fl = lib_fields();
	if (!call_id || !fl || !gs || !ss)
		return 0;
	/*
	 * The method and id live in transport.Stream. Up to v1.68 the handler
	 * gets a *Stream, which holds the transport (st). From v1.69 it gets a
	 * *ServerStream holding st and embedding Stream: by pointer until
	 * v1.76 (st then follows an 8-byte field), by value from v1.77.
	 */
	void *stream = ss;
	__u64 st_off = FIELD(fl, F_STREAM_ST);
	__u64 sst = FIELD(fl, F_SERVERSTREAM_ST), emb = FIELD(fl, F_SERVERSTREAM_STREAM);
	if (sst) {
		st_off = sst;
		stream = sst - emb == 8 ? (void *)read_ptr(ss, emb) : ss + emb;
	}
	void *t = (void *)read_ptr(ss, st_off + 8); /* the interface's data: *http2Server */
	struct streamkey k = {.pid = bpf_get_current_pid_tgid() >> 32, .transport = (__u64)t};
	if (stream && bpf_probe_read_user(&k.stream_id, sizeof(k.stream_id), stream + FIELD(fl, F_STREAM_ID)))
		stat_inc(STAT_LIB_READ_FAILED);
	struct trace_ctx *in = bpf_map_lookup_elem(&incoming, &k);
	struct server_request *r = LIB_RECORD(struct server_request, P_SERVER_REQUEST, call_id);
	if (in && in->valid && gs->depth == 1) {
		/* Continue the caller's trace. */
		gs->trace_hi = in->trace_hi;
		gs->trace_lo = in->trace_lo;
		if (r)
			r->parent = *in;
	}
	if (in)
		bpf_map_delete_elem(&incoming, &k);
	if (!r)
		return 0;
	r->method_len = read_gostring(stream, FIELD(fl, F_STREAM_METHOD), r->method, sizeof(r->method));
	if (t) {
		void *peer = t + FIELD(fl, F_SERVER_PEER);
		r->local_ip_len = read_tcp_addr(fl, peer, FIELD(fl, F_PEER_LOCAL_ADDR), r->local_ip, &r->local_port);
		r->remote_ip_len = read_tcp_addr(fl, peer, FIELD(fl, F_PEER_ADDR), r->remote_ip, &r->remote_port);
	}
	lib_submit(r);
	return 0;
}

/*
 * func (t *http2Server) WriteStatus(s *Stream, st *status.Status) error (<= v1.68)
 * func (t *http2Server) writeStatus(s *ServerStream, st *status.Status) error (>= v1.69)
 * RAX = t, RBX = s, RCX = st. The handler's goroutine writes its RPC's
 * status (OK included) before handleStream returns: the RPC's frame is
 * the one holding s. Entry hook only.
 */
SEC("uprobe")
int write_status(struct pt_regs *ctx)
{
	__u64 s = GO_PARAM2(ctx);
	void *st = (void *)GO_PARAM3(ctx);
	struct gkey key = {};
	if (current_gkey(ctx, &key))
		return 0;
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &key);
	struct lib_fields *fl = lib_fields();
	if (!gs || !fl || !s)
		return 0;
	__u64 call_id = 0;
	__u32 depth = gs->depth;
	for (int i = 0; i < MAX_DEPTH; i++) {
		if (i >= depth)
			break;
		struct frame *f = &gs->frames[(depth - 1 - i) & (MAX_DEPTH - 1)];
		if (f->arg == s) {
			call_id = f->call_id;
			break;
		}
	}
	if (!call_id)
		return 0; /* a status written outside a traced handleStream */
	void *sp = (void *)read_ptr(st, FIELD(fl, F_STATUS_S));
	struct server_status *r = sp ? LIB_RECORD(struct server_status, P_SERVER_STATUS, call_id) : 0;
	if (!r)
		return 0;
	if (bpf_probe_read_user(&r->code, sizeof(r->code), sp + FIELD(fl, F_SPB_STATUS_CODE))) {
		stat_inc(STAT_LIB_READ_FAILED);
		bpf_ringbuf_discard(r, BPF_RB_NO_WAKEUP);
		return 0;
	}
	lib_submit(r);
	return 0;
}

/*
 * A client call's frame (Invoke, NewStream) keeps this as its arg: the
 * context that goes on a stream's headers is that of the innermost client
 * call open on the goroutine that queues them (queue_headers). A server
 * RPC's frame keeps its stream, a pointer, never this.
 */
#define CLIENT_CALL 1

struct client_find {
	struct gstate *gs;
	__u32 depth;
	int idx;
};

static long find_client_call(__u64 i, void *arg)
{
	struct client_find *c = arg;
	if (i >= c->depth)
		return 1;
	__u32 idx = c->depth - 1 - i;
	if (c->gs->frames[idx & (MAX_DEPTH - 1)].arg != CLIENT_CALL)
		return 0;
	c->idx = idx;
	return 1;
}

/*
 * A client call's context, from when its stream's headers are queued for
 * the transport's writer until the writer encodes them (by the headers'
 * []hpack.HeaderField array, which the writer gets).
 */
struct hfkey {
	__u32 pid;
	__u32 _pad;
	__u64 hf; /* the headers' array */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct hfkey);
	__type(value, struct trace_ctx);
} queued SEC(".maps");

/* A client call starts (its frame pushed): its method and target are sent. */
static __always_inline void client_call(void *cc, __u64 mptr, __u64 mlen, __u64 call_id)
{
	struct lib_fields *fl = lib_fields();
	if (!fl)
		return;
	if (!inject_enabled)
		stat_inc(STAT_INJECT_OFF);
	struct client_request *r = LIB_RECORD(struct client_request, P_CLIENT_REQUEST, call_id);
	if (!r)
		return;
	r->method_len = mlen;
	__u64 n = mlen;
	if (n > sizeof(r->method))
		n = sizeof(r->method);
	if (n && bpf_probe_read_user(r->method, n, (void *)mptr))
		stat_inc(STAT_LIB_READ_FAILED);
	read_gostring(cc, FIELD(fl, F_CLIENTCONN_TARGET), r->target, sizeof(r->target));
	lib_submit(r);
}

/*
 * func (cc *ClientConn) Invoke(ctx context.Context, method string, args, reply any,
 *                              opts ...CallOption) error
 * RAX = cc, RBX/RCX = ctx, RDI/RSI = method; opts on the stack.
 */
SEC("uprobe")
int client_entry(struct pt_regs *ctx)
{
	__u64 call_id = frame_push(ctx, bpf_get_attach_cookie(ctx), CLIENT_CALL);
	if (call_id)
		client_call((void *)GO_PARAM1(ctx), GO_PARAM4(ctx), GO_PARAM5(ctx), call_id);
	return 0;
}

/*
 * A client stream's span is the frame of the ClientConn.NewStream call
 * that opened it, kept past NewStream's return until the stream ends:
 * opening (NewStream runs; the stream registered by its *clientStream),
 * open (NewStream returned: the frame is off its goroutine's stack, kept
 * here), ended (it ended before NewStream returned: NewStream's exit
 * sends it). The stream's end may run on any goroutine (the caller's
 * RecvMsg or SendMsg, grpc's context watcher), concurrently with
 * NewStream's return: the two move the state by compare-and-swap, and
 * whichever comes second sends the span.
 */
enum stream_state {
	STREAM_OPENING = 0,
	STREAM_OPEN,
	STREAM_ENDED,
};

struct stream_key {
	__u32 pid;
	__u32 _pad;
	__u64 cs; /* the *clientStream */
};

struct client_stream {
	struct frame f;        /* NewStream's frame, once it returned */
	struct call_origin o;
	__u64 call_id;         /* NewStream's call */
	__u64 err;             /* ended: the error's itab (0: OK) */
	__u32 code;            /* ended: its gRPC status code, when code_known */
	__u8 code_known;
	__u8 _pad[3];
	__u64 state;           /* enum stream_state (64 bits: BPF's compare-and-swap) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct stream_key);
	__type(value, struct client_stream);
} client_streams SEC(".maps");

/* The NewStream call a goroutine is in, and the stream it created. */
struct opening {
	__u64 call_id;
	__u64 desc; /* its *StreamDesc */
	__u64 cs;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct gkey);
	__type(value, struct opening);
} openings SEC(".maps");

/*
 * func (cc *ClientConn) NewStream(ctx context.Context, desc *StreamDesc, method string,
 *                                 opts ...CallOption) (ClientStream, error)
 * RAX = cc, RBX/RCX = ctx, RDI = desc, RSI/R8 = method, R9/R10/R11 = opts.
 * Every streaming call of a ClientConn (generated clients call it through
 * ClientConnInterface; unary calls go through Invoke instead), also when
 * stream interceptors wrap the stream.
 */
SEC("uprobe")
int stream_entry(struct pt_regs *ctx)
{
	struct gstate *gs = 0;
	__u64 call_id = frame_push_chain(ctx, bpf_get_attach_cookie(ctx), CLIENT_CALL, 0, &gs);
	if (!call_id || !gs)
		return 0;
	struct gkey k = {.pid = bpf_get_current_pid_tgid() >> 32, .goid = gs->goid};
	struct opening o = {.call_id = call_id, .desc = GO_PARAM4(ctx)};
	bpf_map_update_elem(&openings, &k, &o, BPF_ANY);
	client_call((void *)GO_PARAM1(ctx), GO_PARAM5(ctx), GO_PARAM6(ctx), call_id);
	return 0;
}

/*
 * Where newClientStreamWithParams calls
 * func (cs *clientStream) withRetry(op func(*csAttempt) error, onSuccess func()) error
 * with RAX = cs: the stream exists, its first attempt (and its headers)
 * not yet. On the goroutine that called NewStream, which registers it.
 * Unary calls pass here too, from Invoke: mostly with no NewStream open,
 * but a stream interceptor may make one (fetching a token) around the
 * stream it opens: only a stream of NewStream's own StreamDesc is its
 * (the last one, should an interceptor retry). A call-site hook:
 * withRetry's entry would fire on every message.
 */
SEC("uprobe")
int stream_created(struct pt_regs *ctx)
{
	struct gkey k = {};
	if (current_gkey(ctx, &k))
		return 0;
	struct opening *o = bpf_map_lookup_elem(&openings, &k);
	if (!o)
		return 0;
	struct lib_fields *fl = lib_fields();
	if (!fl)
		return 0;
	__u64 cs = GO_PARAM1(ctx);
	if (read_ptr((void *)cs, FIELD(fl, F_CLIENTSTREAM_DESC)) != o->desc)
		return 0;
	struct stream_key sk = {.pid = k.pid, .cs = cs};
	struct client_stream st = {.call_id = o->call_id, .state = STREAM_OPENING};
	if (bpf_map_update_elem(&client_streams, &sk, &st, BPF_ANY))
		return 0;
	o->cs = cs;
	return 0;
}

/*
 * The gRPC status code of an error (itab, data): gRPC returns a
 * *status.Error (status.Error{s *Status}, Status{s *spb.Status}); another
 * error type (an interceptor's own) cannot be told apart from here: its
 * code is kept only when the chain reads and lands on a valid code
 * (1..16). Returns 1 when *code is known. These reads are guesses, not
 * failures: not counted.
 */
static __always_inline int status_code(struct lib_fields *fl, __u64 itab, __u64 data, __u32 *code)
{
	__u64 s = 0, sp = 0;
	__u32 c = 0;
	if (itab && data &&
	    !bpf_probe_read_user(&s, sizeof(s), (void *)data + FIELD(fl, F_STATUS_ERROR_S)) && s &&
	    !bpf_probe_read_user(&sp, sizeof(sp), (void *)s + FIELD(fl, F_STATUS_S)) && sp &&
	    !bpf_probe_read_user(&c, sizeof(c), (void *)sp + FIELD(fl, F_SPB_STATUS_CODE)) &&
	    c >= 1 && c <= 16) {
		*code = c;
		return 1;
	}
	return 0;
}

/*
 * A client call's outcome: err non-zero when it failed, with its code
 * when known. A global function: the verifier checks it once, on its
 * own, so its branches do not multiply the paths of its callers.
 */
__noinline int send_response(__u64 call_id, __u64 err, __u32 code, __u32 code_known)
{
	struct client_response *r = LIB_RECORD(struct client_response, P_CLIENT_RESPONSE, call_id);
	if (!r)
		return 0;
	r->err = err;
	r->code = code;
	r->code_known = code_known;
	lib_submit(r);
	return 0;
}

/* The outcome of a call that returned error (itab, data); itab 0: OK. */
__noinline int send_status(__u64 call_id, __u64 itab, __u64 data)
{
	struct lib_fields *fl = lib_fields();
	__u32 code = 0, known = 0;
	if (itab && fl)
		known = status_code(fl, itab, data, &code);
	return send_response(call_id, itab, code, known);
}

/*
 * Where clientStream.finish calls
 * func (a *csAttempt) finish(err error)
 * with RAX = the stream's last attempt, RBX/RCX = its final error (nil:
 * OK; io.EOF already made nil): the one place every stream with an
 * attempt ends, once (finish returns early when the stream has finished
 * already, before this call, under the stream's lock), whether RecvMsg
 * saw the trailers' status, SendMsg failed, or the context watcher saw
 * the call cancelled or the ClientConn closed. A stream whose creation
 * failed has no attempt: NewStream's exit sees its error. A call-site
 * hook: csAttempt.finish itself also runs for every retried attempt.
 */
SEC("uprobe")
int stream_end(struct pt_regs *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	void *a = (void *)GO_PARAM1(ctx);
	__u64 itab = GO_PARAM2(ctx), data = GO_PARAM3(ctx);
	struct lib_fields *fl = lib_fields();
	if (!fl || !a)
		return 0; /* not a traced process */
	struct stream_key sk = {.pid = bpf_get_current_pid_tgid() >> 32, .cs = read_ptr(a, FIELD(fl, F_CSATTEMPT_CS))};
	struct client_stream *st = bpf_map_lookup_elem(&client_streams, &sk);
	if (!st) {
		/* A unary call's stream, or a stream opened unseen (counted). */
		void *desc = (void *)read_ptr((void *)sk.cs, FIELD(fl, F_CLIENTSTREAM_DESC));
		__u8 kinds[2] = {};
		if (desc && !bpf_probe_read_user(kinds, sizeof(kinds), desc + FIELD(fl, F_STREAMDESC_SERVER)) &&
		    (kinds[0] || kinds[1]))
			stat_inc(STAT_STREAM_START_UNSEEN);
		return 0;
	}
	__u32 code = 0;
	st->code_known = status_code(fl, itab, data, &code);
	st->code = code;
	st->err = itab;
	__u64 was = __sync_val_compare_and_swap(&st->state, STREAM_OPENING, STREAM_ENDED);
	if (was != STREAM_OPEN)
		return 0; /* NewStream has not returned: its exit sends the span */
	send_response(st->call_id, st->err, st->code, st->code_known);
	send_call(&st->f, &st->o, now, 0);
	bpf_map_delete_elem(&client_streams, &sk);
	return 0;
}

/*
 * NewStream's exit: results (ClientStream, error), the error in RCX/RDI
 * (its exits stay where those four result registers survive). A stream
 * that was opened and has not ended yet keeps its frame, detached, for
 * stream_end; otherwise (NewStream failed, or the stream already ended)
 * the call is sent now, with the error's status or the stream's.
 */
SEC("uprobe")
int stream_exit(struct pt_regs *ctx)
{
	__u64 err = GO_PARAM3(ctx), data = GO_PARAM4(ctx);
	struct frame_exit x;
	if (frame_find(ctx, bpf_get_attach_cookie(ctx), &x))
		return 0;
	struct opening *o = bpf_map_lookup_elem(&openings, &x.key);
	struct stream_key sk = {.pid = x.key.pid};
	if (o && o->call_id == x.call_id)
		sk.cs = o->cs;
	if (o)
		bpf_map_delete_elem(&openings, &x.key);
	struct client_stream *st = sk.cs ? bpf_map_lookup_elem(&client_streams, &sk) : 0;
	if (st && !err) {
		frame_detach(&x, &st->f, &st->o);
		__u64 was = __sync_val_compare_and_swap(&st->state, STREAM_OPENING, STREAM_OPEN);
		if (was == STREAM_OPENING)
			return 0; /* stream_end sends it */
		/* It ended while NewStream returned: it ends now. */
		send_response(x.call_id, st->err, st->code, st->code_known);
		send_call(&st->f, &st->o, x.now, 0);
		bpf_map_delete_elem(&client_streams, &sk);
		return 0;
	}
	send_status(x.call_id, err, data);
	if (st)
		bpf_map_delete_elem(&client_streams, &sk);
	frame_pop(&x);
	return 0;
}

/*
 * Where http2Client.NewStream calls
 * func (c *controlBuffer) executeAndPut(f func() bool, it cbItem) (bool, error)
 * with RAX = c, RBX = f, RCX/RDI = it: the stream's headers (a
 * *headerFrame; a *clientHeaders since v1.82), queued for the transport's
 * writer, on the goroutine of the call that opens the stream (a retried
 * attempt's too, while the call is open). The context of the innermost
 * client call open there follows their []hpack.HeaderField. A call-site
 * hook (the CALL is emulated): executeAndPut itself is busy.
 */
SEC("uprobe")
int queue_headers(struct pt_regs *ctx)
{
	struct gkey k = {};
	if (!inject_enabled || current_gkey(ctx, &k))
		return 0;
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &k);
	if (!gs)
		return 0;
	struct client_find c = {.gs = gs, .depth = gs->depth, .idx = -1};
	if (c.depth > MAX_DEPTH)
		return 0;
	bpf_loop(MAX_DEPTH, find_client_call, &c, 0);
	if (c.idx < 0)
		return 0; /* not a traced call's stream (a health check's, say) */
	struct trace_ctx tc = {.trace_hi = gs->trace_hi, .trace_lo = gs->trace_lo,
			       .span_id = span_id(k.pid, gs->frames[c.idx & (MAX_DEPTH - 1)].call_id),
			       .flags = 1, .valid = 1};
	void *hdr = (void *)GO_PARAM4(ctx);
	struct lib_fields *fl = lib_fields();
	if (!hdr || !fl)
		return 0;
	struct {
		__u64 ptr;
		__u64 len;
	} hf = {};
	__u64 off = FIELD(fl, F_HEADERFRAME_HF) ?: FIELD(fl, F_CLIENTHEADERS_HF);
	if (bpf_probe_read_user(&hf, sizeof(hf), hdr + off) || !hf.ptr) {
		stat_inc(STAT_INJECT_FAILED);
		return 0;
	}
	struct hfkey q = {.pid = k.pid, .hf = hf.ptr};
	bpf_map_update_elem(&queued, &q, &tc, BPF_ANY);
	return 0;
}

/*
 * func (l *loopyWriter) writeHeader(streamID uint32, endStream bool,
 *                                   hf []hpack.HeaderField, onWrite func()) error
 * RAX = l, RBX = streamID, RCX = endStream, RDI/RSI/R8 = hf. The
 * transport's writer goroutine encodes a stream's headers and sends them
 * (with what else it has queued) soon after. The frame gets the call's
 * traceparent on the way out (bpf/propagation), found by the
 * connection's ports and the stream id, unless the application put one
 * in its metadata. Entry hook only.
 */
SEC("uprobe")
int write_headers(struct pt_regs *ctx)
{
	struct hfkey q = {.pid = bpf_get_current_pid_tgid() >> 32, .hf = GO_PARAM4(ctx)};
	struct trace_ctx *tcp = bpf_map_lookup_elem(&queued, &q);
	if (!tcp)
		return 0;
	struct pending_ctx p = {.tc = *tcp, .at_ns = bpf_ktime_get_ns()};
	bpf_map_delete_elem(&queued, &q);
	struct lib_fields *fl = lib_fields();
	if (!fl)
		return 0;
	struct header_scan s = {.fields = q.hf, .n = GO_PARAM5(ctx),
				.name_off = FIELD(fl, F_HEADER_FIELD_NAME), .value_off = FIELD(fl, F_HEADER_FIELD_VALUE)};
	bpf_loop(MAX_HEADER_FIELDS, scan_header, &s, 0);
	if (s.found) {
		stat_inc(STAT_INJECT_PRESENT);
		return 0;
	}
	/* l.conn: a *net.TCPConn (TLS or another net.Conn: no injection). */
	__u64 conn = read_ptr((void *)GO_PARAM1(ctx), FIELD(fl, F_LOOPY_CONN) + 8);
	struct tcp_offsets o = {.conn_fd = FIELD(fl, F_TCPCONN_CONN) + FIELD(fl, F_CONN_FD),
				.laddr = FIELD(fl, F_NETFD_LADDR), .raddr = FIELD(fl, F_NETFD_RADDR), .port = FIELD(fl, F_TCPADDR_PORT)};
	struct connkey k = {.pid = q.pid, .stream_id = GO_PARAM2(ctx)};
	if (!tcp_conn_ports(conn, &o, &k)) {
		stat_inc(STAT_INJECT_FAILED);
		return 0;
	}
	bpf_map_update_elem(&conn_pending, &k, &p, BPF_ANY);
	return 0;
}

/*
 * The exit of both traced calls: handleStream's (no results; its frame
 * keeps the stream) and Invoke's (its frame keeps CLIENT_CALL; result
 * error (itab, data) in RAX, RBX): one program serves both.
 */
SEC("uprobe")
int call_exit(struct pt_regs *ctx)
{
	__u64 itab = GO_RESULT1(ctx);
	__u64 data = GO_PARAM2(ctx);
	struct frame_exit x;
	if (frame_find(ctx, bpf_get_attach_cookie(ctx), &x))
		return 0;
	if (x.arg == CLIENT_CALL)
		send_status(x.call_id, itab, data);
	frame_pop(&x);
	return 0;
}
