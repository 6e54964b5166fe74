// SPDX-License-Identifier: GPL-2.0
//go:build ignore

/*
 * Trace context on the wire, without writing into any process's memory
 * (kernel lockdown refuses bpf_probe_write_user). A sock_ops program puts
 * every outgoing TCP connection of a traced process in a sockhash; the sk_msg program below
 * runs on each sendmsg on them and inserts a W3C traceparent where a
 * library's probes have left a client call's context (propagation.h):
 *
 *   HTTP/1  a header line after the request line of the next request
 *           head on the connection (nethttp: persistConn.roundTrip);
 *   HTTP/2  an HPACK field at the end of the header block of the HEADERS
 *           frame sent for a stream (grpc: loopyWriter).
 *
 * One sk_msg program serves both: a socket has one.
 */

#include "propagation.h"

char __license[] SEC("license") = "GPL";

/* A connection, as the sockets map names it (keys only need be unique). */
struct sockkey {
	__u32 family;
	__u32 local_ip[4]; /* IPv4: local_ip[0] */
	__u32 remote_ip[4];
	__u32 local_port;
	__u32 remote_port;
};

/* Outgoing TCP connections of traced processes, so the sk_msg program sees what they send. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct sockkey);
	__type(value, __u64);
} sockets SEC(".maps");

/* Connections a traced process is opening, marked at connect(). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u8);
} connecting SEC(".maps");

/*
 * Adds the outgoing TCP connections (IPv4, IPv6) of traced processes to
 * the sockets map. Only theirs: a socket in a sockhash with an sk_msg
 * program sends through the kernel's slower sk_msg path, which every
 * other process on the node (load generators, databases, the agent's own
 * exporter) should not pay for. The process is known only at connect(),
 * which runs in its context; the socket can join the map only once
 * established, which may run in softirq context.
 */
SEC("sockops")
int track_sockets(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 1;
	if (skops->op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		__u32 pid = bpf_get_current_pid_tgid() >> 32;
		if (bpf_map_lookup_elem(&procs, &pid))
			bpf_sk_storage_get(&connecting, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		return 1;
	}
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	if (!bpf_sk_storage_get(&connecting, sk, 0, 0))
		return 1;
	bpf_sk_storage_delete(&connecting, sk);
	struct sockkey k = {.family = skops->family, .local_port = skops->local_port, .remote_port = skops->remote_port};
	if (k.family == AF_INET) {
		k.local_ip[0] = skops->local_ip4;
		k.remote_ip[0] = skops->remote_ip4;
	} else if (k.family == AF_INET6) {
#pragma unroll
		for (int i = 0; i < 4; i++) {
			k.local_ip[i] = skops->local_ip6[i];
			k.remote_ip[i] = skops->remote_ip6[i];
		}
	} else {
		return 1;
	}
	/* Fails when the socket is in another program's sockmap already
	 * (e.g. a second latscope with injection on this node). */
	if (bpf_sock_hash_update(skops, &sockets, &k, BPF_NOEXIST))
		stat_inc(STAT_INJECT_SOCKET_BUSY);
	return 1;
}

/*
 * The message's remote port in host order. remote_port is the
 * network-order port, shifted to the upper half on little-endian hosts
 * (the UAPI's historical layout; tolerate both).
 */
static __always_inline __u16 msg_remote_port(struct sk_msg_md *msg)
{
	__u32 rp = msg->remote_port;
	return __builtin_bswap16((__u16)(rp > 0xffff ? rp >> 16 : rp));
}

#define BYTES8(b) (0x0101010101010101ULL * (b))

/*
 * The 8 hex digits of x, highest first, as the bytes of a little-endian
 * word: its nibbles spread one to a byte (lowest first), byte-swapped,
 * then made digits ('a'-'f' where a nibble plus 6 carries into bit 4).
 * A few instructions per 8 digits, where a digit at a time took five.
 */
static __always_inline __u64 hex8(__u32 x)
{
	__u64 v = x;
	v = ((v & 0xffff0000ULL) << 16) | (v & 0xffffULL);
	v = ((v & 0x0000ff000000ff00ULL) << 8) | (v & 0x000000ff000000ffULL);
	v = ((v & 0x00f000f000f000f0ULL) << 4) | (v & 0x000f000f000f000fULL);
	v = __builtin_bswap64(v);
	__u64 letters = ((v + BYTES8(0x06)) >> 4) & BYTES8(0x01);
	return v + BYTES8('0') + letters * ('a' - '0' - 10);
}

static __always_inline void put_hex16(__u8 *out, __u64 v)
{
	*(__u64 *)out = hex8(v >> 32);
	*(__u64 *)(out + 8) = hex8(v);
}

/* "00-<trace id>-<span id>-<flags>" */
static __always_inline void put_traceparent(__u8 *out, struct trace_ctx *tc)
{
	out[0] = '0';
	out[1] = '0';
	out[2] = '-';
	put_hex16(out + 3, tc->trace_hi);
	put_hex16(out + 19, tc->trace_lo);
	out[35] = '-';
	put_hex16(out + 36, tc->span_id);
	out[52] = '-';
	*(__u16 *)(out + 53) = hex8(tc->flags) >> 48;
}

/*
 * Whether a client call's context waited longer than PENDING_MAX_AGE_NS
 * (libraries stamp it with bpf_ktime_get_ns). Read against the coarse
 * clock, the same monotonic clock as of the last tick: the fine one
 * reads the TSC, 5% of this program's time on a VM. The coarse clock
 * may lag the stamp by up to a tick: compared signed.
 */
static __always_inline int pending_stale(__u64 now, __u64 at_ns)
{
	return (__s64)(now - at_ns) > (__s64)PENDING_MAX_AGE_NS;
}

/*
 * tcp_bpf sends each scatterlist element of a message with a send of its
 * own, none flagged MSG_MORE: on a TCP_NODELAY socket (Go's default)
 * each leaves as a segment of its own, which the peer receives, acks and
 * is woken for. A push or pop inside an element splits it (a push in
 * three), so a changed message of up to JOIN_MAX bytes is copied back
 * into one element: a page and a copy, far cheaper than two more
 * segments. A larger one (a pull copies whole elements, up to tens of
 * KiB) goes out as it is, as does one whose join fails: split, but
 * whole and correct.
 */
#define JOIN_MAX 16384

static __always_inline void msg_join(struct sk_msg_md *msg)
{
	__u32 n = msg->size;
	if (n <= JOIN_MAX)
		bpf_msg_pull_data(msg, 0, n, 0);
}

/* ---- HTTP/1 ---- */

/*
 * Room to look at a request's head (net/http's default write buffer: a
 * head that fits is in the first message whole).
 */
#define HEAD_MAX 4096
#define TP_MAX 4 /* traceparent lines of one head looked at */

/*
 * What a scan of a head found. In the scratch map, not on the stack: the
 * verifier follows values on the stack into every bpf_loop step and
 * would explore the scan once per combination of them.
 */
struct scan {
	__u32 n;
	__u32 pos;      /* where the next step looks for a line's LF */
	__u32 line_end; /* offset after the request line's LF, 0 if not found */
	__u32 head_end; /* offset after the blank line ending the head, 0 if not in [0, n) */
	__u32 ntp;      /* traceparent lines (the first TP_MAX kept) */
	__u32 tp_at[TP_MAX];  /* where each starts */
	__u32 tp_end[TP_MAX]; /* after its LF */
	__u8 open;      /* the last kept traceparent line's LF is still to come */
	__u8 copies;    /* kept lines that are copies of a received value */
	__u8 _pad[2];
};

struct scratch {
	__u8 head[HEAD_MAX];
	__u8 over[16]; /* room for a word read at the head's last bytes */
	struct pending_ctx p; /* the request's, off the stack */
	struct scan scan;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} inject_scratch SEC(".maps");

/* The bpf_loop steps' context. */
struct scan_ctx {
	struct scratch *sc;
	struct received *in; /* what the request chain received, if anything */
};

/*
 * The head is scanned a line at a time, not a byte at a time: each
 * bpf_loop step is a call (and, with the return-thunk mitigations many
 * x86 hosts run, a costly return), and a Go client's head is ~100-300
 * bytes in 4-10 lines. A step looks for the line's LF eight bytes at a
 * time (SWAR: a word with no LF costs a few instructions), then looks
 * at the next line's start only: the head's end, or a traceparent name.
 * Words may run past n into bytes of an earlier message (the scratch is
 * reused): nothing at or past n counts.
 */
#define SCAN_WORDS 16 /* words one step looks through for a line's LF; a longer line takes more steps */

/*
 * The index of the lowest byte of z with its high bit set (z != 0),
 * without branches (each would multiply the verifier's paths through
 * the search). The lowest bit isolated is 1 << (8k + 7); the constant's
 * bytes, lowest first, are 7, 6, .. 0, and multiplying by 1 << 8k moves
 * them up k bytes, leaving k in the top one.
 */
static __always_inline __u32 lowest_byte(__u64 z)
{
	return (((z & -z) >> 7) * 0x0001020304050607ULL) >> 56;
}

/*
 * Whether the 12 bytes at h are "traceparent:" in any case: the letters
 * compared with their case bit (0x20) set, which only the letter's two
 * cases share; the colon exactly. Little-endian words (bpfel).
 */
#define TP_NAME_LO 0x7261706563617274ULL /* "tracepar" */
#define TP_NAME_HI 0x3a746e65            /* "ent:" */
static __always_inline int traceparent_name(__u8 *h)
{
	return (*(__u64 *)h | BYTES8(0x20)) == TP_NAME_LO && (*(__u32 *)(h + 8) | 0x00202020) == TP_NAME_HI;
}

/* "traceparent: 00-<trace id>-<span id>-01\r\n" */
#define LINE_LEN 70
static __always_inline void put_line(__u8 *d, struct trace_ctx *tc)
{
	*(__u64 *)d = TP_NAME_LO;
	*(__u32 *)(d + 8) = TP_NAME_HI;
	d[12] = ' ';
	put_traceparent(d + 13, tc);
	d[68] = '\r';
	d[69] = '\n';
}

/*
 * One line of the head from c->pos: find its LF, then what starts after
 * it. Finds the request line's end, the head's end and every
 * traceparent line.
 */
static long scan_line(__u64 i, void *arg)
{
	struct scratch *sc = ((struct scan_ctx *)arg)->sc;
	struct scan *c = &sc->scan;
	__u8 *h = sc->head;
	__u32 p = c->pos, n = c->n, lf = 0;
	int found = 0;
	for (int j = 0; j < SCAN_WORDS; j++) {
		__u32 at = p + 8 * j;
		if (at >= n)
			return 1;
		/* A byte of t is zero where x has an LF; the lowest flagged is exact. */
		__u64 t = *(__u64 *)(h + (at & (HEAD_MAX - 1))) ^ BYTES8('\n');
		__u64 z = (t - BYTES8(0x01)) & ~t & BYTES8(0x80);
		if (z) {
			lf = at + lowest_byte(z);
			found = 1;
			break;
		}
	}
	if (!found) {
		c->pos = p + 8 * SCAN_WORDS;
		return 0;
	}
	if (lf >= n)
		return 1;
	if (c->open) {
		c->tp_end[(c->ntp - 1) & (TP_MAX - 1)] = lf + 1;
		c->open = 0;
	}
	if (!c->line_end)
		c->line_end = lf + 1;
	__u32 s = lf + 1;
	if (s >= n)
		return 1;
	__u8 first = h[s & (HEAD_MAX - 1)];
	if (first == '\r' || first == '\n') {
		c->head_end = s + (first == '\r' ? 2 : 1);
		return 1;
	}
	c->pos = s;
	if (s + 12 > n || !traceparent_name(h + (s & (HEAD_MAX - 1))))
		return 0;
	if (c->ntp < TP_MAX) {
		c->tp_at[c->ntp & (TP_MAX - 1)] = s;
		c->open = 1;
	}
	c->ntp++;
	c->pos = s + 12;
	return 0;
}

/* Where the k-th traceparent line's value starts; 0 unless it is one valid value and whitespace. */
static __always_inline __u32 tp_value(struct scratch *sc, __u32 k)
{
	struct scan *c = &sc->scan;
	__u8 *h = sc->head;
	__u32 v = c->tp_at[k & (TP_MAX - 1)] + 12;
	__u32 end = c->tp_end[k & (TP_MAX - 1)];
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u8 ch = h[v & (HEAD_MAX - 1)];
		if (ch == ' ' || ch == '\t')
			v++;
	}
	/* The value, optional whitespace, CRLF (or LF). */
	if (end < v + TRACEPARENT_LEN + 1)
		return 0;
#pragma unroll
	for (int i = 0; i < 6; i++) {
		__u32 at = v + TRACEPARENT_LEN + i;
		if (at >= end - 1)
			break;
		__u8 ch = h[at & (HEAD_MAX - 1)];
		if (ch != ' ' && ch != '\t' && !(ch == '\r' && at == end - 2))
			return 0;
		if (i == 5)
			return 0;
	}
	return v;
}

/* Is the k-th kept traceparent line a copy of a value the request chain received? */
static long tp_copy(__u64 k, void *arg)
{
	struct scan_ctx *a = arg;
	struct scratch *sc = a->sc;
	struct scan *c = &sc->scan;
	if (k >= c->ntp || k >= TP_MAX)
		return 1;
	__u32 v = tp_value(sc, k);
	struct trace_ctx tc = {};
	if (!v || parse_traceparent(sc->head + (v & (HEAD_MAX - 1)), &tc))
		return 1;
	struct received *in = a->in;
	if (!in)
		return 1;
	for (int i = 0; i < RECV_MAX; i++) {
		if (i >= in->n)
			break;
		if (in->v[i].trace_hi == tc.trace_hi && in->v[i].trace_lo == tc.trace_lo && in->v[i].span_id == tc.span_id) {
			c->copies++;
			return 0;
		}
	}
	return 1;
}

/*
 * Writes the client span's traceparent over the value of the first
 * traceparent line (same length) and removes the others: what a proxy
 * instrumented with an SDK sends (it sets the header, one value).
 */
static __always_inline int replace_copies(struct sk_msg_md *msg, struct scratch *sc, struct trace_ctx *tc)
{
	struct scan *c = &sc->scan;
	__u32 v = tp_value(sc, 0);
	if (!v || bpf_msg_pull_data(msg, v, v + TRACEPARENT_LEN, 0))
		return -1;
	__u8 *d = (void *)(long)msg->data;
	if ((void *)(d + TRACEPARENT_LEN) > (void *)(long)msg->data_end)
		return -1;
	put_traceparent(d, tc);
	/* Last first: a removal moves only what follows it. */
#pragma unroll
	for (int k = TP_MAX - 1; k > 0; k--) {
		if ((__u32)k >= c->ntp)
			continue;
		__u32 at = c->tp_at[k & (TP_MAX - 1)], end = c->tp_end[k & (TP_MAX - 1)];
		if (end <= at || bpf_msg_pop_data(msg, at, end - at, 0))
			return -1;
	}
	return 0;
}

/*
 * The thread writes an HTTP/1 request of a traced client call (its
 * context in sc->p): insert a "traceparent" line naming the client span
 * after the request line. A request that carries traceparent lines
 * already is left alone, unless every one is a copy of a value its
 * request chain received (a proxy forwarding the incoming headers): then
 * the copy names the client span instead.
 */
static __always_inline void inject_http1(struct sk_msg_md *msg, struct scratch *sc)
{
	__u32 n = msg->size;
	if (n > HEAD_MAX)
		n = HEAD_MAX;
	if (n < 2 || bpf_msg_pull_data(msg, 0, n, 0)) {
		stat_inc(STAT_INJECT_FAILED);
		return;
	}
	void *data = (void *)(long)msg->data;
	void *end = (void *)(long)msg->data_end;
	/* The pull made [0, n) linear: data + n is the end. */
	if (data + n > end || bpf_probe_read_kernel(sc->head, n, data)) {
		stat_inc(STAT_INJECT_FAILED);
		return;
	}
	/* An HTTP/1 request starts with its method: upper-case letters, a space. */
	if (sc->head[0] < 'A' || sc->head[0] > 'Z') {
		/* TLS (a connection latscope could not tell was one: tls_record) or another protocol */
		stat_inc(n >= 5 && sc->head[0] >= 20 && sc->head[0] <= 23 && sc->head[1] == 3 ? STAT_INJECT_TLS : STAT_INJECT_FAILED);
		return;
	}
	if (n < 16) {
		stat_inc(STAT_INJECT_FAILED);
		return;
	}
	struct scan *c = &sc->scan;
	__builtin_memset(c, 0, sizeof(*c));
	c->n = n;
	struct scan_ctx a = {.sc = sc};
	bpf_loop(HEAD_MAX, scan_line, &a, 0);
	if (!c->line_end || !c->head_end) {
		stat_inc(STAT_INJECT_FAILED); /* the head is not whole in the message's first HEAD_MAX bytes */
		return;
	}
	if (c->ntp > 0) {
		a.in = chain_received(bpf_get_current_pid_tgid() >> 32, sc->p.root_call_id);
		if (c->ntp <= TP_MAX && a.in)
			bpf_loop(TP_MAX, tp_copy, &a, 0);
		if (c->copies != c->ntp) {
			stat_inc(STAT_INJECT_PRESENT); /* the application's own */
			return;
		}
		int err = replace_copies(msg, sc, &sc->p.tc);
		msg_join(msg);
		stat_inc(err ? STAT_INJECT_FAILED : STAT_INJECT_REPLACED);
		return;
	}

	__u32 at = c->line_end;
	if (at >= HEAD_MAX || bpf_msg_push_data(msg, at, LINE_LEN, 0)) {
		stat_inc(STAT_INJECT_FAILED);
		return;
	}
	/* One element from the start (msg_join), else at least the line's. */
	msg_join(msg);
	data = (void *)(long)msg->data;
	end = (void *)(long)msg->data_end;
	if (data + at + LINE_LEN > end) {
		if (bpf_msg_pull_data(msg, at, at + LINE_LEN, 0)) {
			stat_inc(STAT_INJECT_FAILED);
			return;
		}
		data = (void *)(long)msg->data;
		end = (void *)(long)msg->data_end;
		at = 0;
	}
	__u8 *d = data + (at & (HEAD_MAX - 1));
	if ((void *)(d + LINE_LEN) > end) {
		stat_inc(STAT_INJECT_FAILED);
		return;
	}
	put_line(d, &sc->p.tc);
	stat_inc(STAT_INJECTED);
}

/* ---- HTTP/2 ---- */

/*
 * To find HEADERS frames the program follows every frame a traced
 * process sends on an HTTP/2 connection, from the connection preface on:
 * a message can end inside a frame, even inside a frame header.
 */
struct h2_conn {
	__u32 skip;  /* bytes of the current frame still to come */
	__u8 have;   /* bytes of a frame header cut by the message's end (0..8) */
	__u8 len[3]; /* that header's length bytes, as far as seen */
	__u8 lost;   /* gave up following this connection's frames */
	__u8 adopted; /* recognized mid-stream (no preface seen): a guess */
	__u8 _pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct h2_conn);
} h2_conns SEC(".maps");

#define H2_PREFACE_LEN 24 /* "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" */
#define H2_FRAME_HEADER 9
#define H2_HEADERS 0x1
#define H2_END_HEADERS 0x4
#define H2_PADDED 0x8
#define H2_MAX_FRAME 16384 /* SETTINGS_MAX_FRAME_SIZE's initial value; grpc-go writes no larger */
#define H2_MAX_TYPE 0x9    /* CONTINUATION: the last frame type RFC 9113 defines */
#define H2_MAX_INJECT 64   /* HEADERS frames given context per message */
#define H2_MAX_FRAMES 1024 /* frames followed per message */

/*
 * The HPACK field inserted: a literal without indexing, new name, no
 * Huffman (RFC 7541 6.2.2), so neither side's dynamic table changes.
 */
#define H2_FIELD_LEN (2 + 11 + 1 + TRACEPARENT_LEN)

/*
 * The HEADERS frames of one message to inject into. A writer batches
 * frames: with many calls in flight one message holds dozens of them
 * (a header block of indexed fields is a few bytes).
 */
struct h2_hits {
	__u32 at[H2_MAX_INJECT];     /* their header offsets */
	__u32 len[H2_MAX_INJECT];    /* their payload lengths */
	__u32 stream[H2_MAX_INJECT]; /* their stream ids: conn_pending entries go when injected */
	struct trace_ctx tc[H2_MAX_INJECT];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct h2_hits);
} h2_scratch SEC(".maps");

struct h2_walk {
	struct sk_msg_md *msg;
	struct h2_hits *hits; /* 0: only check that the message is whole frames */
	struct connkey key; /* the connection's; stream id per frame */
	__u64 now;
	__u32 off;  /* the next frame header's offset */
	__u32 size; /* the message's size */
	__u32 n;    /* frames to inject into */
	__u32 cork; /* a HEADERS frame to inject into ends here, past the message */
	__u8 failed;
};

/* One frame header at w->off: is it a HEADERS frame a client call awaits? */
static long walk_frame(__u64 i, void *arg)
{
	struct h2_walk *w = arg;
	__u32 off = w->off;
	if (off + H2_FRAME_HEADER > w->size)
		return 1;
	if (bpf_msg_pull_data(w->msg, off, off + H2_FRAME_HEADER, 0)) {
		w->failed = 1;
		return 1;
	}
	__u8 *d = (void *)(long)w->msg->data;
	if ((void *)(d + H2_FRAME_HEADER) > (void *)(long)w->msg->data_end) {
		w->failed = 1;
		return 1;
	}
	__u32 len = (__u32)d[0] << 16 | (__u32)d[1] << 8 | d[2];
	__u8 type = d[3], flags = d[4];
	struct connkey k = w->key;
	k.stream_id = ((__u32)d[5] & 0x7f) << 24 | (__u32)d[6] << 16 | (__u32)d[7] << 8 | d[8];
	/*
	 * Not a frame header a client sends (RFC 9113 6: stream frames name
	 * a stream, connection frames stream 0, no PUSH_PROMISE): the frames
	 * are not where they were thought to be.
	 */
	int conn_frame = type == 0x4 || type == 0x6 || type == 0x7; /* SETTINGS, PING, GOAWAY */
	int any_stream = type == 0x8;                                /* WINDOW_UPDATE */
	if (len > H2_MAX_FRAME || type > H2_MAX_TYPE || type == 0x5 || (d[5] & 0x80) ||
	    (!any_stream && (conn_frame != (k.stream_id == 0)))) {
		w->failed = 1;
		return 1;
	}
	w->off = off + H2_FRAME_HEADER + len;
	if (type != H2_HEADERS || !w->hits)
		return 0;
	struct pending_ctx *p = bpf_map_lookup_elem(&conn_pending, &k);
	if (!p)
		return 0;
	struct pending_ctx pending = *p;
	if (pending_stale(w->now, pending.at_ns)) {
		bpf_map_delete_elem(&conn_pending, &k);
		stat_inc(STAT_INJECT_UNSENT); /* a frame of an earlier connection on these ports */
		return 0;
	}
	/*
	 * The writer's buffer filled inside this frame: the rest comes with
	 * the next write. Hold the message until the frame is whole (the
	 * kernel runs the program again on the joined bytes), leaving the
	 * contexts where they are.
	 */
	if (w->off > w->size && (flags & H2_END_HEADERS) && !(flags & H2_PADDED) && len > 0 &&
	    len + H2_FIELD_LEN <= H2_MAX_FRAME && w->n < H2_MAX_INJECT) {
		w->cork = w->off;
		return 1;
	}
	/* The header block must be whole, unpadded and in this message. */
	if (!(flags & H2_END_HEADERS) || (flags & H2_PADDED) || len == 0 ||
	    len + H2_FIELD_LEN > H2_MAX_FRAME || w->off > w->size || w->n >= H2_MAX_INJECT) {
		bpf_map_delete_elem(&conn_pending, &k);
		stat_inc(STAT_INJECT_FAILED);
		return 0;
	}
	/* Its context stays in conn_pending until injected: a corked message
	 * is walked again. */
	__u32 j = w->n & (H2_MAX_INJECT - 1);
	w->hits->at[j] = off;
	w->hits->len[j] = len;
	w->hits->stream[j] = k.stream_id;
	w->hits->tc[j] = pending.tc;
	w->n++;
	return 0;
}

/*
 * Appends the traceparent field to the header block of the HEADERS frame
 * at `at` (payload `len` bytes) and fixes the frame's length. The bytes
 * go in before the block's last byte, which is then moved after them:
 * bpf_msg_push_data cannot append at the very end of a message.
 */
static __always_inline int inject_h2_field(struct sk_msg_md *msg, __u32 at, __u32 len, struct trace_ctx *tc)
{
	__u32 last = at + H2_FRAME_HEADER + len - 1;
	if (bpf_msg_pull_data(msg, last, last + 1, 0))
		return -1;
	__u8 *d = (void *)(long)msg->data;
	if ((void *)(d + 1) > (void *)(long)msg->data_end)
		return -1;
	__u8 last_byte = d[0];
	if (bpf_msg_push_data(msg, last, H2_FIELD_LEN, 0) ||
	    bpf_msg_pull_data(msg, last, last + 1 + H2_FIELD_LEN, 0))
		return -1;
	d = (void *)(long)msg->data;
	if ((void *)(d + 1 + H2_FIELD_LEN) > (void *)(long)msg->data_end)
		return -1;
	const char name[] = "traceparent";
	d[0] = last_byte;
	d[1] = 0x00; /* literal, not indexed, new name */
	d[2] = 11;
#pragma unroll
	for (int i = 0; i < 11; i++)
		d[3 + i] = name[i];
	d[14] = TRACEPARENT_LEN;
	put_traceparent(d + 15, tc);

	len += H2_FIELD_LEN;
	if (bpf_msg_pull_data(msg, at, at + 3, 0))
		return -1;
	d = (void *)(long)msg->data;
	if ((void *)(d + 3) > (void *)(long)msg->data_end)
		return -1;
	d[0] = len >> 16;
	d[1] = len >> 8;
	d[2] = len;
	return 0;
}

/* The i-th frame to inject into, counting from the message's end. */
static long inject_one(__u64 i, void *arg)
{
	struct h2_walk *w = arg;
	if (i >= w->n)
		return 1;
	__u32 j = (w->n - 1 - i) & (H2_MAX_INJECT - 1);
	struct trace_ctx tc = w->hits->tc[j];
	struct connkey k = w->key;
	k.stream_id = w->hits->stream[j];
	bpf_map_delete_elem(&conn_pending, &k);
	if (inject_h2_field(w->msg, w->hits->at[j], w->hits->len[j], &tc))
		stat_inc(STAT_INJECT_FAILED);
	else
		stat_inc(STAT_INJECTED);
	return 0;
}

/*
 * Follows the frames of one message on an HTTP/2 connection from `off`
 * (past the preface or the rest of a cut frame), then injects into the
 * HEADERS frames whose streams' client calls are traced. -1: the frames
 * could not be followed; 1: the message is corked until a cut frame is
 * whole (the caller restores c: the program runs again on the joined
 * message from the same place).
 */
static __always_inline int walk_h2(struct sk_msg_md *msg, struct h2_conn *c, __u32 off)
{
	__u32 zero = 0;
	struct h2_hits *hits = bpf_map_lookup_elem(&h2_scratch, &zero);
	if (!hits)
		return 0;
	struct h2_walk w = {.msg = msg, .hits = hits, .now = bpf_ktime_get_coarse_ns(), .off = off, .size = msg->size};
	w.key.pid = bpf_get_current_pid_tgid() >> 32;
	w.key.local_port = msg->local_port;
	w.key.remote_port = msg_remote_port(msg);
	bpf_loop(H2_MAX_FRAMES, walk_frame, &w, 0);
	if (w.cork)
		return bpf_msg_cork_bytes(msg, w.cork) ? -1 : 1;
	if (w.failed || w.off + H2_FRAME_HEADER <= w.size)
		return -1;
	/*
	 * A frame header cut by the message's end: hold the message until
	 * the header is whole, so a HEADERS frame's type is seen where it
	 * starts. (Should corking fail, the header's length bytes are kept
	 * and the frame is skipped in the next message.)
	 */
	if (w.off < w.size && !bpf_msg_cork_bytes(msg, w.off + H2_FRAME_HEADER))
		return 1;
	c->skip = 0;
	c->have = 0;
	if (w.off >= w.size) {
		c->skip = w.off - w.size;
	} else {
		/* A frame header is cut by the message's end: keep its length bytes. */
		__u32 have = w.size - w.off;
		if (bpf_msg_pull_data(msg, w.off, w.size, 0))
			return -1;
		__u8 *d = (void *)(long)msg->data;
		if ((void *)(d + 1) > (void *)(long)msg->data_end)
			return -1;
		c->len[0] = d[0];
		if (have > 1 && (void *)(d + 2) <= (void *)(long)msg->data_end)
			c->len[1] = d[1];
		if (have > 2 && (void *)(d + 3) <= (void *)(long)msg->data_end)
			c->len[2] = d[2];
		c->have = have;
	}
	/* Last frame first: an insert moves only what follows it. */
	bpf_loop(w.n, inject_one, &w, 0);
	if (w.n)
		msg_join(msg);
	return 0;
}

/*
 * The frames of c's connection could not be followed. Its calls' pending
 * contexts are swept and counted as unsent. A connection adopted
 * mid-stream was a wrong guess (a binary HTTP/1 body that looked like
 * frames, say): forget it, so it is unknown again rather than lost.
 */
static __always_inline void h2_lost(struct bpf_sock *sk, struct h2_conn *c)
{
	if (c->adopted)
		bpf_sk_storage_delete(&h2_conns, sk);
	else
		c->lost = 1;
}

/*
 * Where the message's first frame header starts: after the rest of the
 * frame the last message cut, or after the rest of its cut header.
 * Returns the message's size or more when no header starts in it.
 */
static __always_inline __u32 h2_resume(struct sk_msg_md *msg, struct h2_conn *c)
{
	__u32 size = msg->size;
	if (!c->have) {
		__u32 skip = c->skip;
		if (skip >= size) {
			c->skip = skip - size;
			return size;
		}
		return skip;
	}
	/* The cut header's remaining bytes open this message. */
	__u32 need = H2_FRAME_HEADER - c->have;
	__u32 n = need < size ? need : size;
	if (c->have < 3) {
		if (bpf_msg_pull_data(msg, 0, n < 3 ? n : 3, 0))
			return ~0U;
		__u8 *d = (void *)(long)msg->data;
#pragma unroll
		for (int i = 0; i < 3; i++) {
			__u32 at = c->have + i;
			if (at >= 3 || (__u32)i >= n)
				break;
			if ((void *)(d + i + 1) > (void *)(long)msg->data_end)
				return ~0U;
			c->len[at & 3] = d[i];
		}
	}
	if (n < need) {
		c->have += n;
		return size;
	}
	__u32 len = (__u32)c->len[0] << 16 | (__u32)c->len[1] << 8 | c->len[2];
	c->have = 0;
	c->skip = 0;
	if (need + len >= size) {
		c->skip = need + len - size;
		return size;
	}
	return need + len;
}

static __always_inline int is_h2_preface(struct sk_msg_md *msg)
{
	const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	if (msg->size < H2_PREFACE_LEN || bpf_msg_pull_data(msg, 0, H2_PREFACE_LEN, 0))
		return 0;
	__u8 *d = (void *)(long)msg->data;
	if ((void *)(d + H2_PREFACE_LEN) > (void *)(long)msg->data_end)
		return 0;
#pragma unroll
	for (int i = 0; i < H2_PREFACE_LEN; i++) {
		if (d[i] != preface[i])
			return 0;
	}
	return 1;
}

/*
 * Whether the message is a sequence of well-formed HTTP/2 frame headers
 * and payloads ending exactly at its end: how an HTTP/2 connection that
 * was open before latscope attached is recognized (a writer sends whole
 * frames unless its buffer fills). HTTP/1 text, TLS records and other
 * protocols fail at the first header (a length above 16 KiB).
 */
static __always_inline int whole_frames(struct sk_msg_md *msg)
{
	struct h2_walk w = {.msg = msg, .size = msg->size};
	if (w.size < H2_FRAME_HEADER)
		return 0;
	bpf_loop(H2_MAX_FRAMES, walk_frame, &w, 0);
	return !w.failed && w.off == w.size;
}

/* Whether the message starts as a TLS record (RFC 8446 5.1: content type 20-23, version 3.x). */
static __always_inline int tls_record(struct sk_msg_md *msg)
{
	if (msg->size < 5 || bpf_msg_pull_data(msg, 0, 2, 0))
		return 0;
	__u8 *d = (void *)(long)msg->data;
	if ((void *)(d + 2) > (void *)(long)msg->data_end)
		return 0;
	return d[0] >= 20 && d[0] <= 23 && d[1] == 3;
}

/*
 * A request handed on to the goroutine this thread runs (propagation.h's
 * handoffs: net/http's writer goroutines, its HTTP/2 client): this
 * message is that goroutine's next, so it goes out on this socket. An
 * HTTP/1 request's head is this message: 1, its context in sc->p. An
 * HTTP/2 request's HEADERS frame is in it or a later one: it waits by the
 * socket's ports and its stream, as one a library keyed so itself. TLS
 * bytes cannot carry it: counted.
 */
static __always_inline int take_handoff(struct sk_msg_md *msg, __u32 pid, struct proc_config *pc, struct scratch *sc)
{
	__u64 g = tls_g(pc);
	struct handkey hk = {.pid = pid, .kind = HAND_GOROUTINE};
	if (!g || bpf_probe_read_user(&hk.id, sizeof(hk.id), (void *)(g + pc->goid_off)) || !hk.id)
		return 0;
	struct pending_ctx *pp = bpf_map_lookup_elem(&handoffs, &hk);
	if (!pp)
		return 0;
	sc->p = *pp;
	bpf_map_delete_elem(&handoffs, &hk);
	struct connkey k = {.pid = pid, .local_port = msg->local_port, .remote_port = msg_remote_port(msg),
			    .stream_id = sc->p.stream_id};
	if (pending_stale(bpf_ktime_get_coarse_ns(), sc->p.at_ns)) {
		stat_inc(STAT_INJECT_UNSENT); /* left by an earlier goroutine with this id */
	} else if (!k.stream_id) {
		return 1; /* inject_http1 tells TLS bytes itself, from the head it reads anyway */
	} else if (tls_record(msg)) {
		stat_inc(STAT_INJECT_TLS);
	} else if (bpf_map_update_elem(&conn_pending, &k, &sc->p, BPF_NOEXIST)) {
		stat_inc(STAT_INJECT_UNSENT); /* one left for this stream before, never sent */
		bpf_map_update_elem(&conn_pending, &k, &sc->p, BPF_ANY);
	}
	return 0;
}

SEC("sk_msg")
int inject_traceparent(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	if (!sk)
		return SK_PASS;
	__u64 tid = bpf_get_current_pid_tgid();
	__u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&inject_scratch, &zero);
	if (!sc)
		return SK_PASS;
	__u32 pid = tid >> 32;
	struct proc_config *pc = bpf_map_lookup_elem(&procs, &pid); /* 0: no longer traced */
	if (pc && take_handoff(msg, pid, pc, sc)) {
		inject_http1(msg, sc);
		return SK_PASS;
	}
	struct h2_conn *c = bpf_sk_storage_get(&h2_conns, sk, 0, 0);
	if (c) {
		/*
		 * A corked message keeps its cork_bytes after it is sent, and the
		 * kernel would hold every later write on the socket below that
		 * size: clear it, walk_h2 sets it again when needed.
		 */
		bpf_msg_cork_bytes(msg, 0);
		if (c->lost)
			return SK_PASS;
		struct h2_conn before = *c;
		__u32 off = h2_resume(msg, c);
		int r = off == ~0U ? -1 : off < msg->size ? walk_h2(msg, c, off) : 0;
		if (r < 0)
			h2_lost(sk, c);
		else if (r > 0)
			*c = before; /* corked: the joined message starts where this one did */
		return SK_PASS;
	}

	struct connkey k = {.pid = pid, .local_port = msg->local_port, .remote_port = msg_remote_port(msg)};
	struct pending_ctx *pp = bpf_map_lookup_elem(&conn_pending, &k);
	if (pp) {
		sc->p = *pp;
		bpf_map_delete_elem(&conn_pending, &k);
		if (pending_stale(bpf_ktime_get_coarse_ns(), sc->p.at_ns))
			stat_inc(STAT_INJECT_UNSENT); /* an earlier request that left unseen */
		else
			inject_http1(msg, sc);
		return SK_PASS;
	}

	/*
	 * A traced process opens an HTTP/2 connection: follow its frames. Or
	 * it sends on one it opened before latscope attached (the agent added
	 * it to the sockets map): adopt it once a message is whole frames.
	 */
	if (!pc)
		return SK_PASS;
	/*
	 * The cheap test first, since every other message of a traced process
	 * comes here (redis commands, SQL, HTTP/1 bodies): an HTTP/2 client's
	 * bytes start with the preface's 'P' or a frame length's high byte,
	 * 0 (frames are at most 16 KiB).
	 */
	if (bpf_msg_pull_data(msg, 0, 1, 0))
		return SK_PASS;
	__u8 *d = (void *)(long)msg->data;
	if ((void *)(d + 1) > (void *)(long)msg->data_end || (d[0] != 'P' && d[0] != 0))
		return SK_PASS;
	__u32 start = 0;
	if (is_h2_preface(msg))
		start = H2_PREFACE_LEN;
	else if (!whole_frames(msg))
		return SK_PASS;
	c = bpf_sk_storage_get(&h2_conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!c)
		return SK_PASS;
	c->adopted = start == 0;
	int r = msg->size > start ? walk_h2(msg, c, start) : 0;
	if (r < 0) {
		h2_lost(sk, c);
	} else if (r > 0) {
		/* Corked: the joined message is followed from past the preface. */
		c->skip = start;
		c->have = 0;
	}
	return SK_PASS;
}
