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
	F_REQUEST_TLS,            /* net/http.Request.TLS *tls.ConnectionState */
	F_RESPONSE_CONN,          /* net/http.response.conn *conn */
	F_CONN_HIJACKED,          /* net/http.conn.hijackedv bool */
	F_PCONN_TLS_STATE,        /* net/http.persistConn.tlsState *tls.ConnectionState */
	F_TREQ_REQUEST,           /* net/http.transportRequest.Request (embedded *Request) */
	/* The HTTP/2 client's connection: bundled until Go 1.26, internal since 1.27. */
	F_H2CC_TLS_STATE,         /* net/http.http2ClientConn.tlsState *tls.ConnectionState */
	F_H2CC_HENC,              /* net/http.http2ClientConn.henc *hpack.Encoder */
	F_H2ICC_TLS_STATE,        /* net/http/internal/http2.ClientConn.tlsState */
	F_H2ICC_HENC,             /* net/http/internal/http2.ClientConn.henc */
	/* Where an HPACK encoder's dynamic table entries are: henc + these. */
	F_HPACK_DYNTAB,           /* hpack.Encoder.dynTab dynamicTable */
	F_HPACK_TABLE,            /* hpack.dynamicTable.table headerFieldTable */
	F_HPACK_ENTS,             /* hpack.headerFieldTable.ents []HeaderField */
	F_HPACK_EVICT_COUNT,      /* hpack.headerFieldTable.evictCount uint64 */
	/* The HTTP/2 server's decoded request headers. */
	F_H2_META_FIELDS,         /* net/http.http2MetaHeadersFrame.Fields []hpack.HeaderField (Go <= 1.26) */
	F_H2I_META_FIELDS,        /* net/http/internal/http2.MetaHeadersFrame.Fields (Go >= 1.27) */
	F_HPACK_FIELD_NAME,       /* hpack.HeaderField.Name string */
	F_HPACK_FIELD_VALUE,      /* hpack.HeaderField.Value string */
	/*
	 * An HTTP/1 request's header map and the runtime's map layout: a
	 * binary has one layout's offsets, the other's read 0 (see
	 * header_traceparents).
	 */
	F_REQUEST_HEADER,         /* net/http.Request.Header Header (map[string][]string) */
	F_HMAP_COUNT,             /* runtime.hmap.count int (classic maps) */
	F_HMAP_FLAGS,             /* runtime.hmap.flags uint8 */
	F_HMAP_B,                 /* runtime.hmap.B uint8 */
	F_HMAP_BUCKETS,           /* runtime.hmap.buckets unsafe.Pointer */
	F_HMAP_OLDBUCKETS,        /* runtime.hmap.oldbuckets unsafe.Pointer */
	F_HMAP_NEVACUATE,         /* runtime.hmap.nevacuate uintptr */
	F_MAP_USED,               /* internal/runtime/maps.Map.used uint64 (Swiss tables) */
	F_MAP_DIR_PTR,            /* internal/runtime/maps.Map.dirPtr unsafe.Pointer */
	F_MAP_DIR_LEN,            /* internal/runtime/maps.Map.dirLen int */
	F_TABLE_GROUPS,           /* internal/runtime/maps.table.groups groupsReference */
	F_GROUPS_DATA,            /* internal/runtime/maps.groupsReference.data unsafe.Pointer */
	F_GROUPS_LENGTH_MASK,     /* internal/runtime/maps.groupsReference.lengthMask uint64 */
	F_GROUP_ELEMS,            /* a map[string][]string group's elems: GOEXPERIMENT=mapsplitgroup only */
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
	__u8 tls; /* the request came over TLS (Request.TLS set) */
	__u8 _pad[7];
};

struct server_response {
	struct lib_header h;
	/*
	 * 0: the handler has not written a status (nor a byte). net/http then
	 * sends 200 once it returns, unless the connection was hijacked.
	 * -1: not known (the response writer could not be read).
	 */
	__s64 status;
	__s64 written;
	__u8 pattern[64]; /* the ServeMux pattern that matched, when known */
	__u8 hijacked;    /* HTTP/1: the handler took the connection over (Hijack) */
	__u8 _pad[7];
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
 * A client call while it runs, by its goroutine: its own trace context,
 * its request chain's root (what that received) and whether its request
 * reached a connection. Not by request: Transport.roundTrip sends a
 * shallow copy of a request with a body (setupRewindBody), and another on
 * each retry; the connection is taken on the calling goroutine.
 */
struct client_call {
	struct trace_ctx tc;
	__u64 root_call_id;
	__u8 handed; /* handed on toward a socket, or counted under the reason it could not be */
	__u8 _pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct gkey);
	__type(value, struct client_call);
} client_ctx SEC(".maps");

/*
 * The traceparent fields of an HTTP/2 request, read on the connection's
 * serving goroutine (by its goid) until the request's response writer
 * exists, then by that writer (incoming_h2), which the request's handler
 * goroutine gets: server_entry finds them there.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct gkey);
	__type(value, struct received);
} h2_reading SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct handkey);
	__type(value, struct received);
} incoming_h2 SEC(".maps");

/* Where an HTTP/2 request's fields are gathered. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct received);
} received_scratch SEC(".maps");

/* ---- HTTP/1 server: incoming traceparent, from the request's Header ---- */

/*
 * An HTTP/1 request's header lines are in req.Header by the time it is
 * served: a map[string][]string net/textproto.readMIMEHeader filled, keys
 * canonical (a "traceparent" line of any case is a value of
 * "Traceparent"), each key's values in the order of their lines, trimmed
 * of the whitespace around them. server_entry reads the map where it
 * lies, as the runtime laid it out: a key cannot be hashed here (the
 * seed is random per map), so its buckets or groups are read through,
 * one bpf_probe_read_user each, until "Traceparent" shows up or every
 * entry has been looked at (the map's count), at most HDR_SCAN_MAX of
 * them. readMIMEHeader sizes the map for the header lines it finds
 * buffered: 8 buckets hold up to 48 headers (classic maps: 6 entries a
 * bucket on average, 6.5 from Go 1.22), 8 groups 56 (Swiss tables: 7 of
 * 8 slots), 16 twice as many, so ~100 headers are read through (a head
 * longer than its 4 KiB buffer, or split across reads, makes the map
 * grow: a classic map's old buckets are read too). A map holding more
 * entries than were looked at, none of them "Traceparent", is counted
 * (STAT_INCOMING_UNREAD), as is one that could not be read.
 *
 * The element type is []string, the key a string: 16 bytes (data, len)
 * and 24 bytes (data, len, cap) on 64-bit targets, 8-aligned, so neither
 * layout has padding (checked against each release's DWARF by
 * TestHeaderMapLayout):
 * - classic maps (Go <= 1.23; 1.24 and 1.25 built with
 *   GOEXPERIMENT=noswissmap), runtime.hmap: 2^B buckets of tophash[8]
 *   (a slot is full when its tophash is at least minTopHash, 5), keys[8],
 *   elems[8], then the overflow bucket's pointer. While the map grows,
 *   oldbuckets holds the entries not moved yet: the buckets from
 *   nevacuate on are read after the new ones (a moved entry's tophash
 *   says evacuated, < 5: nothing is seen twice).
 * - Swiss tables (Go >= 1.24), internal/runtime/maps.Map: a map of at
 *   most 8 entries is one group at dirPtr (dirLen 0); a larger one has
 *   a directory of dirLen tables, each an array of lengthMask + 1 groups.
 *   A group is a control word, byte i for slot i (full when its high bit
 *   is clear; 0x80 empty, 0xfe deleted), then 8 slots of key, element; or
 *   keys[8] then elems[8] (GOEXPERIMENT=mapsplitgroup, Go 1.27), the same
 *   offsets as a classic bucket's. A table holds up to 1024 slots, so a
 *   second table means a size hint of ~900 header lines: only the first
 *   is read (and only 32 of its groups). net/http sizes the map by the
 *   header lines it has buffered, duplicates counted.
 */
#define HDR_SLOTS 8
#define HDR_KEY_SIZE 16  /* string */
#define HDR_ELEM_SIZE 24 /* []string */
#define BUCKET_KEYS 8
#define BUCKET_ELEMS (BUCKET_KEYS + HDR_SLOTS * HDR_KEY_SIZE)       /* 136 */
#define BUCKET_OVERFLOW (BUCKET_ELEMS + HDR_SLOTS * HDR_ELEM_SIZE)  /* 328 */
#define BUCKET_SIZE (BUCKET_OVERFLOW + 8)                           /* 336 */
#define GROUP_SLOT (HDR_KEY_SIZE + HDR_ELEM_SIZE)                   /* 40 */
#define GROUP_SIZE (8 + HDR_SLOTS * GROUP_SLOT)                     /* 328 */
#define MIN_TOPHASH 5
#define SAME_SIZE_GROW 8 /* hmap.flags: growing into as many buckets (too many overflows) */
#define CTRL_FREE 0x80   /* a Swiss control byte's high bit: empty or deleted */
#define HDR_SCAN_MAX 32  /* buckets or groups read per request */
#define MAP_HEADER 48    /* bytes of hmap / maps.Map read: the smaller's size */

enum hdr_layout {
	HDR_CLASSIC = 1,
	HDR_SWISS,       /* slots of key, element */
	HDR_SWISS_SPLIT, /* keys, then elements */
};

struct hdr_scan {
	__u8 block[BUCKET_SIZE]; /* the bucket or group read */
	__u64 next;  /* the bucket to read next (an overflow), 0: the array's next */
	__u64 arr;   /* buckets or groups */
	__u64 n;     /* in arr */
	__u64 i;     /* arr's next */
	__u64 old;   /* classic, while growing: the old buckets, after arr */
	__u64 old_i; /* the first old bucket that may not be evacuated */
	__u64 old_n;
	__u64 count; /* entries in the map */
	__u64 seen;  /* full slots looked at */
	struct {
		__u64 data;
		__u64 len;
	} values;    /* the Traceparent key's []string */
	__u8 layout;
	__u8 found;
	__u8 failed; /* something could not be read */
	__u8 _pad[5];
	struct received in;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hdr_scan);
} hdr_scratch SEC(".maps");

struct hdr_walk {
	struct hdr_scan *s;
};

/* A canonical key "Traceparent" at data (its length, 11, checked). */
static __always_inline int is_traceparent_key(__u64 data)
{
	const char want[] = "Traceparent";
	__u8 b[11];
	if (bpf_probe_read_user(b, sizeof(b), (void *)data))
		return -1;
#pragma unroll
	for (int i = 0; i < 11; i++)
		if (b[i] != want[i])
			return 0;
	return 1;
}

/* Reads the next bucket or group and looks at its full slots; 1 stops. */
static long hdr_block(__u64 it, void *arg)
{
	struct hdr_scan *s = ((struct hdr_walk *)arg)->s;
	__u64 at = s->next;
	if (!at && s->i >= s->n && s->old) {
		s->arr = s->old;
		s->n = s->old_n;
		s->i = s->old_i;
		s->old = 0;
	}
	if (!at && s->i < s->n) {
		at = s->arr + s->i * (s->layout == HDR_CLASSIC ? BUCKET_SIZE : GROUP_SIZE);
		s->i++;
	}
	if (!at)
		return 1;
	int classic = s->layout == HDR_CLASSIC, interleaved = s->layout == HDR_SWISS;
	if (bpf_probe_read_user(s->block, classic ? BUCKET_SIZE : GROUP_SIZE, (void *)at)) {
		s->failed = 1;
		return 1;
	}
#pragma unroll
	for (int j = 0; j < HDR_SLOTS; j++) {
		__u8 c = s->block[j];
		if (classic ? c < MIN_TOPHASH : (c & CTRL_FREE))
			continue;
		s->seen++;
		__u32 k = interleaved ? 8 + j * GROUP_SLOT : BUCKET_KEYS + j * HDR_KEY_SIZE;
		__u32 e = interleaved ? 8 + j * GROUP_SLOT + HDR_KEY_SIZE : BUCKET_ELEMS + j * HDR_ELEM_SIZE;
		__u64 key_data, key_len;
		__builtin_memcpy(&key_data, &s->block[k], 8);
		__builtin_memcpy(&key_len, &s->block[k + 8], 8);
		if (key_len != 11)
			continue;
		int tp = is_traceparent_key(key_data);
		if (tp < 0)
			s->failed = 1;
		if (tp > 0) {
			__builtin_memcpy(&s->values, &s->block[e], sizeof(s->values));
			s->found = 1;
			return 1;
		}
	}
	s->next = 0;
	if (classic)
		__builtin_memcpy(&s->next, &s->block[BUCKET_OVERFLOW], 8);
	return s->seen >= s->count;
}

/* A word of the map header in s->block at off (a field offset); 0 if out of it. */
static __always_inline __u64 header_word(struct hdr_scan *s, __u64 off)
{
	__u64 v = 0;
	if (off <= MAP_HEADER - 8)
		__builtin_memcpy(&v, &s->block[off & 63], 8);
	return v;
}

/* Traceparent values looked at per request (each one or two reads). */
#define TP_VALUES_MAX 16

struct tp_values {
	__u64 data, len;
	struct received *in;
};

/* The i-th Traceparent value: kept when valid, until RECV_MAX are. */
static long tp_value(__u64 i, void *arg)
{
	struct tp_values *t = arg;
	struct received *in = t->in;
	if (i >= t->len || in->n >= RECV_MAX)
		return 1;
	struct {
		__u64 data;
		__u64 len;
	} v = {};
	if (bpf_probe_read_user(&v, sizeof(v), (void *)(t->data + i * 16))) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 1;
	}
	__u8 b[TRACEPARENT_LEN];
	struct trace_ctx tc = {};
	if (v.len != TRACEPARENT_LEN)
		return 0;
	if (bpf_probe_read_user(b, sizeof(b), (void *)v.data)) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 0;
	}
	if (parse_traceparent(b, &tc))
		return 0;
	__u32 k = in->n & (RECV_MAX - 1);
	in->v[k].trace_hi = tc.trace_hi;
	in->v[k].trace_lo = tc.trace_lo;
	in->v[k].span_id = tc.span_id;
	in->n++;
	return 0;
}

/*
 * The traceparent values of HTTP/1 request req (its snapshot), as the
 * lines carried them (received: every line counted in lines, the valid
 * values kept); 0 when it has none, or its headers could not be looked
 * through (counted).
 */
static __always_inline struct received *header_traceparents(struct lib_fields *fl, struct snap *req)
{
	__u32 zero = 0;
	struct hdr_scan *s = bpf_map_lookup_elem(&hdr_scratch, &zero);
	void *m = (void *)snap_ptr(req, FIELD(fl, F_REQUEST_HEADER));
	if (!s || !m)
		return 0;
	if (FIELD(fl, F_HMAP_BUCKETS))
		s->layout = HDR_CLASSIC;
	else if (FIELD(fl, F_MAP_DIR_PTR))
		s->layout = FIELD(fl, F_GROUP_ELEMS) ? HDR_SWISS_SPLIT : HDR_SWISS;
	else
		goto unread; /* neither layout's offsets: not a release latscope knows */
	if (bpf_probe_read_user(s->block, MAP_HEADER, m))
		goto unread;
	s->next = s->old = s->old_i = s->old_n = s->seen = 0;
	s->i = 0;
	s->found = s->failed = 0;
	if (s->layout == HDR_CLASSIC) {
		__u8 b = s->block[FIELD(fl, F_HMAP_B) & 63], flags = s->block[FIELD(fl, F_HMAP_FLAGS) & 63];
		s->count = header_word(s, FIELD(fl, F_HMAP_COUNT));
		s->arr = header_word(s, FIELD(fl, F_HMAP_BUCKETS));
		s->n = s->arr ? 1ULL << (b & 31) : 0;
		s->old = header_word(s, FIELD(fl, F_HMAP_OLDBUCKETS));
		s->old_n = flags & SAME_SIZE_GROW ? s->n : s->n >> 1;
		s->old_i = header_word(s, FIELD(fl, F_HMAP_NEVACUATE));
	} else {
		s->count = header_word(s, FIELD(fl, F_MAP_USED));
		s->arr = header_word(s, FIELD(fl, F_MAP_DIR_PTR));
		s->n = s->arr ? 1 : 0;
		if (s->arr && header_word(s, FIELD(fl, F_MAP_DIR_LEN))) {
			/* A directory: its first table's groups{data, lengthMask}. */
			__u64 tab = read_ptr((void *)s->arr, 0);
			__u64 g[2] = {};
			__u64 d = FIELD(fl, F_GROUPS_DATA), mask = FIELD(fl, F_GROUPS_LENGTH_MASK);
			if (!tab || d > 8 || mask > 8 ||
			    bpf_probe_read_user(g, sizeof(g), (void *)(tab + FIELD(fl, F_TABLE_GROUPS))))
				goto unread;
			s->arr = g[d / 8];
			s->n = g[mask / 8] + 1;
		}
	}
	if (!s->count)
		return 0; /* no header at all */
	struct hdr_walk w = {.s = s};
	bpf_loop(HDR_SCAN_MAX, hdr_block, &w, 0);
	if (!s->found) {
		if (s->failed || s->seen < s->count)
			stat_inc(STAT_INCOMING_UNREAD);
		return 0;
	}
	__builtin_memset(&s->in, 0, sizeof(s->in));
	s->in.lines = s->values.len < 255 ? s->values.len : 255;
	struct tp_values t = {.data = s->values.data, .len = s->values.len, .in = &s->in};
	/* Two values or more already start a new trace: the first few are
	 * enough to keep RECV_MAX valid ones (proxies' forwarded copies). */
	bpf_loop(TP_VALUES_MAX, tp_value, &t, 0);
	return &s->in;
unread:
	stat_inc(STAT_INCOMING_UNREAD);
	return 0;
}

/*
 * func (sh serverHandler) ServeHTTP(rw ResponseWriter, req *Request)
 * serverHandler{srv *Server} is passed in one register, rw (an interface)
 * in two: itab, data. rw's data is kept in the frame so the exit can read
 * the status the handler wrote: for HTTP/1 a *http.response, for HTTP/2
 * a pointer to the HTTP/2 writer (tagged ARG_H2 in the low bit: both are
 * pointers to word-aligned structs). ARG_RECEIVED: the request carried a
 * traceparent, kept in received_by_root until it ends.
 */
#define ARG_H2 1ULL
#define ARG_RECEIVED 2ULL
#define ARG_TAGS 3ULL

SEC("uprobe")
int server_entry(struct pt_regs *ctx)
{
	void *rw = (void *)GO_PARAM3(ctx);
	void *req = (void *)GO_PARAM4(ctx);
	struct gstate *gs = 0;
	/* A request starts a chain of its own, whatever goroutine serves it. */
	__u64 call_id = frame_push_chain(ctx, bpf_get_attach_cookie(ctx), 0, PUSH_NEW_CHAIN, &gs);
	struct lib_fields *fl = lib_fields();
	if (!call_id || !fl || !gs)
		return 0;
	/* Every field of *http.Request read below, at once. */
	struct snap *rq = snap_begin();
	if (!rq)
		return 0;
	snap_want(rq, FIELD(fl, F_REQUEST_METHOD), SNAP_STRING);
	snap_want(rq, FIELD(fl, F_REQUEST_URL), SNAP_WORD);
	snap_want(rq, FIELD(fl, F_REQUEST_PROTO_MAJOR), SNAP_WORD);
	snap_want(rq, FIELD(fl, F_REQUEST_HEADER), SNAP_WORD);
	snap_want(rq, FIELD(fl, F_REQUEST_CONTENT_LENGTH), SNAP_WORD);
	snap_want(rq, FIELD(fl, F_REQUEST_HOST), SNAP_STRING);
	snap_want(rq, FIELD(fl, F_REQUEST_REMOTE_ADDR), SNAP_STRING);
	snap_want(rq, FIELD(fl, F_REQUEST_TLS), SNAP_WORD);
	snap_read(rq, req);
	__u64 proto = snap_ptr(rq, FIELD(fl, F_REQUEST_PROTO_MAJOR));
	/* What the exit reads the response from, by the protocol (see ARG_H2). */
	gs->frames[(gs->depth - 1) & (MAX_DEPTH - 1)].arg =
		proto == 1 ? (__u64)rw : proto == 2 && rw ? (__u64)rw | ARG_H2 : 0;
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	/* HTTP/1: in the request's Header; HTTP/2: read on the connection's goroutine, kept by rw. */
	struct handkey rk2 = {.pid = pid, .kind = HAND_OBJECT, .id = (__u64)rw};
	struct received *in = 0;
	if (proto == 2)
		in = bpf_map_lookup_elem(&incoming_h2, &rk2);
	else if (proto == 1 && gs->depth == 1)
		in = header_traceparents(fl, rq);
	struct server_request *r = LIB_RECORD(struct server_request, P_SERVER_REQUEST, call_id);
	if (in && gs->depth == 1) {
		/* One valid traceparent: continue the caller's trace. Two or more: W3C says start anew. */
		if (in->lines == 1 && in->n == 1) {
			gs->trace_hi = in->v[0].trace_hi;
			gs->trace_lo = in->v[0].trace_lo;
			if (r) {
				r->parent.trace_hi = in->v[0].trace_hi;
				r->parent.trace_lo = in->v[0].trace_lo;
				r->parent.span_id = in->v[0].span_id;
				r->parent.valid = 1;
			}
		}
		/* Its client calls tell a forwarded copy of these by them. */
		struct rootkey rk = {.pid = pid, .call_id = call_id};
		if (inject_enabled && gs->root_call_id == call_id &&
		    bpf_map_update_elem(&received_by_root, &rk, in, BPF_ANY) == 0)
			gs->frames[(gs->depth - 1) & (MAX_DEPTH - 1)].arg |= ARG_RECEIVED;
	}
	if (in && proto == 2)
		bpf_map_delete_elem(&incoming_h2, &rk2);
	if (!r)
		return 0;
	snap_gostring(rq, FIELD(fl, F_REQUEST_METHOD), r->method, sizeof(r->method));
	void *url = (void *)snap_ptr(rq, FIELD(fl, F_REQUEST_URL));
	r->path_len = read_gostring(url, FIELD(fl, F_URL_PATH), r->path, sizeof(r->path));
	snap_gostring(rq, FIELD(fl, F_REQUEST_HOST), r->host, sizeof(r->host));
	snap_gostring(rq, FIELD(fl, F_REQUEST_REMOTE_ADDR), r->remote, sizeof(r->remote));
	r->content_length = snap_ptr(rq, FIELD(fl, F_REQUEST_CONTENT_LENGTH));
	r->proto_major = proto;
	r->tls = snap_ptr(rq, FIELD(fl, F_REQUEST_TLS)) != 0;
	lib_submit(r);
	return 0;
}

SEC("uprobe")
int server_exit(struct pt_regs *ctx)
{
	struct frame_exit x;
	if (frame_find(ctx, bpf_get_attach_cookie(ctx), &x))
		return 0;
	if (x.arg & ARG_RECEIVED) {
		struct rootkey rk = {.pid = x.key.pid, .call_id = x.call_id};
		bpf_map_delete_elem(&received_by_root, &rk);
	}
	struct lib_fields *fl = lib_fields();
	struct snap *s = fl ? snap_begin() : 0;
	struct server_response *r = s ? LIB_RECORD(struct server_response, P_SERVER_RESPONSE, x.call_id) : 0;
	if (r)
		r->status = -1;
	if (r && (x.arg & ARG_H2)) {
		void *w = (void *)(x.arg & ~ARG_TAGS);
		__u64 status = FIELD(fl, F_H2_STATUS) | FIELD(fl, F_H2I_STATUS);
		__u64 wrote = FIELD(fl, F_H2_WROTE) | FIELD(fl, F_H2I_WROTE);
		void *rws = (void *)read_ptr(w, FIELD(fl, F_H2_RWS) | FIELD(fl, F_H2I_RWS));
		if (rws && status) {
			snap_want(s, status, SNAP_WORD);
			snap_want(s, wrote, SNAP_WORD);
			snap_read(s, rws);
			if (snap_words(s, status, (__u64 *)&r->status, 1))
				r->status = -1;
			r->written = snap_ptr(s, wrote);
		}
	} else if (r) {
		void *resp = (void *)(x.arg & ~ARG_TAGS);
		/* The fields of *http.response read below, at once. */
		snap_want(s, FIELD(fl, F_RESPONSE_STATUS), SNAP_WORD);
		snap_want(s, FIELD(fl, F_RESPONSE_WRITTEN), SNAP_WORD);
		snap_want(s, FIELD(fl, F_RESPONSE_REQUEST), SNAP_WORD);
		snap_want(s, FIELD(fl, F_RESPONSE_CONN), SNAP_WORD);
		snap_read(s, resp);
		if (resp && snap_words(s, FIELD(fl, F_RESPONSE_STATUS), (__u64 *)&r->status, 1))
			r->status = -1;
		r->written = resp ? snap_ptr(s, FIELD(fl, F_RESPONSE_WRITTEN)) : 0;
		if (resp && FIELD(fl, F_REQUEST_PATTERN)) {
			void *req = (void *)snap_ptr(s, FIELD(fl, F_RESPONSE_REQUEST));
			read_gostring(req, FIELD(fl, F_REQUEST_PATTERN), r->pattern, sizeof(r->pattern));
		}
		if (resp && r->status == 0) {
			/* Nothing written: 200 goes out after the return, unless hijacked. */
			void *c = (void *)snap_ptr(s, FIELD(fl, F_RESPONSE_CONN));
			__u8 hijacked = 0;
			if (c && bpf_probe_read_user(&hijacked, 1, c + FIELD(fl, F_CONN_HIJACKED)) == 0)
				r->hijacked = hijacked;
		}
	}
	if (r)
		lib_submit(r);
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
		/* conn_round_trip or h2_client_headers hand it on to the request's socket. */
		struct gkey k = {.pid = bpf_get_current_pid_tgid() >> 32, .goid = gs->goid};
		struct client_call c = {.tc = {.trace_hi = gs->trace_hi, .trace_lo = gs->trace_lo,
					       .span_id = span_id(k.pid, call_id), .flags = 1, .valid = 1},
					.root_call_id = gs->root_call_id};
		bpf_map_update_elem(&client_ctx, &k, &c, BPF_ANY);
	} else {
		stat_inc(STAT_INJECT_OFF);
	}
	struct snap *s = snap_begin();
	struct client_request *r = s ? LIB_RECORD(struct client_request, P_CLIENT_REQUEST, call_id) : 0;
	if (!r)
		return 0;
	/* *http.Request's fields at once, then *url.URL's. */
	snap_want(s, FIELD(fl, F_REQUEST_METHOD), SNAP_STRING);
	snap_want(s, FIELD(fl, F_REQUEST_URL), SNAP_WORD);
	snap_read(s, req);
	snap_gostring(s, FIELD(fl, F_REQUEST_METHOD), r->method, sizeof(r->method));
	void *url = (void *)snap_ptr(s, FIELD(fl, F_REQUEST_URL));
	snap_reset(s);
	snap_want(s, FIELD(fl, F_URL_SCHEME), SNAP_STRING);
	snap_want(s, FIELD(fl, F_URL_HOST), SNAP_STRING);
	snap_want(s, FIELD(fl, F_URL_PATH), SNAP_STRING);
	snap_read(s, url);
	snap_gostring(s, FIELD(fl, F_URL_SCHEME), r->scheme, sizeof(r->scheme));
	snap_gostring(s, FIELD(fl, F_URL_HOST), r->host, sizeof(r->host));
	r->path_len = snap_gostring(s, FIELD(fl, F_URL_PATH), r->path, sizeof(r->path));
	lib_submit(r);
	return 0;
}

/*
 * Results: *Response in RAX, error (itab, data) in RBX, RCX. A call whose
 * request never reached a connection (the dial failed, it was cancelled
 * first, or another HTTP/2 implementation than net/http's own sent it)
 * is counted here: its context was never carried.
 */
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
	if (inject_enabled) {
		struct client_call *c = bpf_map_lookup_elem(&client_ctx, &x.key);
		if (c && !c->handed)
			stat_inc(STAT_INJECT_NO_CONN);
		bpf_map_delete_elem(&client_ctx, &x.key);
	}
	frame_pop(&x);
	return 0;
}

/*
 * func (pc *persistConn) roundTrip(req *transportRequest) (resp *Response, err error)
 * RAX = pc, RBX = req, on the goroutine of Transport.roundTrip (again on
 * each retry, on whichever connection). The request is about to go out
 * on pc's connection: over TLS nothing can be put in it (counted);
 * otherwise its context follows the *Request the connection's writer
 * goroutine takes next (request_write), whatever net.Conn pc holds. When
 * the socket programs cannot tell goroutines apart in this process
 * (tls_g_ok), by the connection's ports instead, if pc holds a
 * *net.TCPConn. Entry hook only.
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
	void *pc = (void *)GO_PARAM1(ctx);
	struct handkey hk = {.pid = g.pid, .kind = HAND_OBJECT,
			     .id = read_ptr((void *)GO_PARAM2(ctx), FIELD(fl, F_TREQ_REQUEST))};
	struct client_call *c = bpf_map_lookup_elem(&client_ctx, &g);
	if (!c) {
		/* Not traced: nothing left for this request may name it. */
		bpf_map_delete_elem(&handoffs, &hk);
		return 0;
	}
	c->handed = 1;
	if (read_ptr(pc, FIELD(fl, F_PCONN_TLS_STATE))) {
		stat_inc(STAT_INJECT_TLS);
		return 0;
	}
	struct pending_ctx p = {.tc = c->tc, .at_ns = bpf_ktime_get_ns(), .root_call_id = c->root_call_id};
	if (hk.id && tls_g_ok(ctx)) {
		hand_on(&hk, &p);
		return 0;
	}
	/* pc.conn: a *net.TCPConn, or the socket cannot be found. */
	__u64 conn = read_ptr(pc, FIELD(fl, F_PCONN_CONN) + 8);
	struct tcp_offsets o = {.conn_fd = FIELD(fl, F_TCPCONN_CONN) + FIELD(fl, F_CONN_FD),
				.laddr = FIELD(fl, F_NETFD_LADDR), .raddr = FIELD(fl, F_NETFD_RADDR), .port = FIELD(fl, F_TCPADDR_PORT)};
	struct connkey k = {.pid = g.pid};
	if (!tcp_conn_ports(conn, &o, &k)) {
		stat_inc(STAT_INJECT_CONN_UNKNOWN);
		return 0;
	}
	if (bpf_map_update_elem(&conn_pending, &k, &p, BPF_NOEXIST)) {
		stat_inc(STAT_INJECT_UNSENT);
		bpf_map_update_elem(&conn_pending, &k, &p, BPF_ANY);
	}
	return 0;
}

/*
 * func (r *Request) write(w io.Writer, usingProxy bool, extraHeaders Header, waitForContinue func() bool) (err error)
 * RAX = r, on the connection's writer goroutine (persistConn.writeLoop),
 * which writes the request head next, to the connection's socket through
 * whatever net.Conn wraps it: the context conn_round_trip left for r now
 * waits for the next message this goroutine sends (the socket program
 * reads which goroutine a sending thread runs). Entry hook only.
 */
SEC("uprobe")
int request_write(struct pt_regs *ctx)
{
	if (!inject_enabled)
		return 0;
	struct handkey hk = {.pid = bpf_get_current_pid_tgid() >> 32, .kind = HAND_OBJECT, .id = GO_PARAM1(ctx)};
	struct pending_ctx *pp = bpf_map_lookup_elem(&handoffs, &hk);
	if (!pp)
		return 0; /* not a traced call's request (or Request.Write) */
	struct pending_ctx p = *pp;
	bpf_map_delete_elem(&handoffs, &hk);
	struct gkey g = {};
	if (current_gkey(ctx, &g))
		return 0;
	if (bpf_ktime_get_ns() - p.at_ns > PENDING_MAX_AGE_NS) {
		stat_inc(STAT_INJECT_UNSENT); /* left by an earlier request at this address */
		return 0;
	}
	hk.kind = HAND_GOROUTINE;
	hk.id = g.goid;
	hand_on(&hk, &p);
	return 0;
}

/* ---- HTTP/2 client ---- */

/*
 * Whether an HTTP/2 request's header block (HPACK, RFC 7541) carries a
 * traceparent field. Go's encoder writes every field either as a
 * reference to a table entry (an exact repeat) or as a literal it inserts
 * into its dynamic table, whose entries are in the process's memory
 * (headerFieldTable: ents oldest first, evictCount entries gone before
 * them). The block is walked field by field, then, as the table stands
 * after it: the entries it inserted (the newest) are read for their
 * names. The entries it referred to are judged by their absolute ids:
 * every entry this encoder inserted while latscope watched it is known
 * (hpack_encoders keeps the ids of its traceparent entries), so only an
 * entry older than that is read, and one of those that this block's own
 * insertions evicted cannot be judged.
 */
#define HPACK_BLOCK_MAX 1024 /* bytes of a header block looked at */
#define HPACK_MAX_FIELDS 64
#define HPACK_MAX_REFS 16
#define HPACK_TP_IDS 8       /* traceparent entries remembered per encoder */
#define HEADER_FIELD_SIZE 40 /* hpack.HeaderField{Name, Value string; Sensitive bool}, unchanged since 2015 */

/* "traceparent", Huffman-coded (RFC 7541 appendix B), as Go's encoder writes it. */
static const __u8 tp_huffman[8] = {0x4d, 0x83, 0x21, 0x6b, 0x1d, 0x85, 0xa9, 0x3f};

struct hpack_scan {
	__u8 block[HPACK_BLOCK_MAX];
	__u32 len;
	__u32 off;
	__u32 inserts;                 /* insertions into the dynamic table so far */
	__u32 nrefs;
	__u32 ref[HPACK_MAX_REFS];     /* dynamic references: 0 = the newest entry then */
	__u32 ref_ins[HPACK_MAX_REFS]; /* insertions before each */
	__u8 found;   /* a traceparent field is there */
	__u8 unknown; /* the block could not be read through */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hpack_scan);
} hpack_scratch SEC(".maps");

/* An encoder latscope has seen blocks of, by (process, *hpack.Encoder). */
struct enckey {
	__u32 pid;
	__u32 _pad;
	__u64 henc;
};

struct encoder_state {
	__u64 watched_from;      /* absolute id of the first entry inserted while watched */
	__u64 forgot;            /* the newest traceparent id dropped from tp (0: none) */
	__u64 tp[HPACK_TP_IDS];  /* absolute ids of the traceparent entries it inserted, a ring */
	__u32 next;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct enckey);
	__type(value, struct encoder_state);
} hpack_encoders SEC(".maps");

static __always_inline __u8 hb(struct hpack_scan *s, __u32 at)
{
	return s->block[at & (HPACK_BLOCK_MAX - 1)];
}

/* An HPACK integer with an n-bit prefix at s->off (RFC 7541 5.1); ~0 if malformed. */
static __always_inline __u32 hpack_int(struct hpack_scan *s, int n)
{
	__u32 max = (1U << n) - 1;
	__u32 v = hb(s, s->off) & max;
	s->off++;
	if (v < max)
		return v;
#pragma unroll
	for (int i = 0; i < 3; i++) {
		if (s->off >= s->len)
			return ~0U;
		__u8 b = hb(s, s->off);
		s->off++;
		v += (__u32)(b & 0x7f) << (7 * i);
		if (!(b & 0x80))
			return v;
	}
	return ~0U;
}

/* A string literal at s->off; is_tp: it reads "traceparent". Skips it. */
static __always_inline int hpack_string(struct hpack_scan *s, int *is_tp)
{
	int huff = hb(s, s->off) & 0x80;
	__u32 n = hpack_int(s, 7);
	if (n == ~0U || s->off + n > s->len)
		return -1;
	if (is_tp) {
		*is_tp = 0;
		if (huff && n == sizeof(tp_huffman)) {
			*is_tp = 1;
			for (int i = 0; i < (int)sizeof(tp_huffman); i++)
				if (hb(s, s->off + i) != tp_huffman[i])
					*is_tp = 0;
		} else if (!huff && n == 11) {
			const char name[] = "traceparent";
			*is_tp = 1;
			for (int i = 0; i < 11; i++)
				if (hb(s, s->off + i) != name[i])
					*is_tp = 0;
		}
	}
	s->off += n;
	return 0;
}

static __always_inline void hpack_ref(struct hpack_scan *s, __u32 idx)
{
	if (idx < 62)
		return; /* the static table has no traceparent */
	if (s->nrefs >= HPACK_MAX_REFS) {
		s->unknown = 1;
		return;
	}
	__u32 j = s->nrefs & (HPACK_MAX_REFS - 1);
	s->ref[j] = idx - 62;
	s->ref_ins[j] = s->inserts;
	s->nrefs++;
}

/* The table after the block, for the callbacks below (arg of each). */
struct table_check {
	struct hpack_scan *s;
	struct encoder_state *es; /* 0: a new encoder */
	__u64 ents;  /* its []HeaderField, oldest first */
	__u64 n;
	__u64 total; /* entries ever inserted: evictCount + n */
	__u64 tp[8]; /* traceparent ids this block inserted */
	__u32 ntp;
};

/* One field representation of the block. */
static long hpack_field(__u64 i, void *arg)
{
	struct hpack_scan *s = ((struct table_check *)arg)->s;
	if (s->off >= s->len)
		return 1;
	__u8 b = hb(s, s->off);
	int prefix, insert = 0, tp = 0;
	if (b & 0x80) { /* indexed field */
		__u32 idx = hpack_int(s, 7);
		if (idx == ~0U)
			goto bad;
		hpack_ref(s, idx);
		return 0;
	}
	if ((b & 0xe0) == 0x20) { /* dynamic table size update */
		if (hpack_int(s, 5) == ~0U)
			goto bad;
		return 0;
	}
	if ((b & 0xc0) == 0x40) {
		prefix = 6; /* literal with incremental indexing: its entry tells its name */
		insert = 1;
	} else {
		prefix = 4; /* literal without, or never, indexed */
	}
	__u32 idx = hpack_int(s, prefix);
	if (idx == ~0U)
		goto bad;
	if (idx == 0) {
		if (hpack_string(s, &tp))
			goto bad;
		if (tp && !insert) {
			s->found = 1;
			return 1;
		}
	} else if (!insert) {
		hpack_ref(s, idx);
	}
	if (hpack_string(s, 0))
		goto bad;
	s->inserts += insert;
	return 0;
bad:
	s->unknown = 1;
	return 1;
}

/* Whether table entry k (0 = oldest) is named traceparent: 1, 0, -1 unreadable. */
static __always_inline int entry_is_tp(struct table_check *c, __u64 k)
{
	struct {
		__u64 ptr;
		__u64 len;
	} name = {};
	__u8 nb[11];
	if (bpf_probe_read_user(&name, sizeof(name), (void *)(c->ents + k * HEADER_FIELD_SIZE)))
		return -1;
	if (name.len != 11)
		return 0;
	if (bpf_probe_read_user(nb, sizeof(nb), (void *)name.ptr))
		return -1;
	const char want[] = "traceparent";
	for (int i = 0; i < 11; i++)
		if (nb[i] != want[i])
			return 0;
	return 1;
}

/* The i-th entry this block inserted: a traceparent? */
static long hpack_inserted(__u64 i, void *arg)
{
	struct table_check *c = arg;
	struct hpack_scan *s = c->s;
	if (i >= s->inserts)
		return 1;
	if (s->inserts > c->n) {
		s->unknown = 1; /* the block inserted more than the table holds */
		return 1;
	}
	__u64 k = c->n - s->inserts + i;
	int tp = entry_is_tp(c, k);
	if (tp < 0) {
		s->unknown = 1;
		return 1;
	}
	if (tp) {
		s->found = 1;
		if (c->ntp < 8)
			c->tp[c->ntp++ & 7] = c->total - c->n + k + 1; /* its absolute id */
	}
	return 0;
}

/* Whether absolute id is one of this encoder's traceparent entries: 1, 0, -1 not known. */
static __always_inline int known_tp(struct encoder_state *es, __u64 id)
{
	if (!es)
		return -1;
	for (int i = 0; i < HPACK_TP_IDS; i++)
		if (es->tp[i] == id)
			return 1;
	return id >= es->watched_from && id > es->forgot ? 0 : -1;
}

/* The entry the i-th dynamic reference named. */
static long hpack_resolve(__u64 i, void *arg)
{
	struct table_check *c = arg;
	struct hpack_scan *s = c->s;
	if (i >= s->nrefs || i >= HPACK_MAX_REFS)
		return 1;
	__u32 j = i & (HPACK_MAX_REFS - 1);
	__u64 from_newest = (__u64)s->ref[j] + (s->inserts - s->ref_ins[j]);
	/* Known by its id (no read) unless inserted before latscope watched. */
	int tp = known_tp(c->es, c->total - from_newest);
	if (tp < 0 && from_newest < c->n)
		tp = entry_is_tp(c, c->n - 1 - from_newest);
	if (tp < 0)
		s->unknown = 1;
	if (tp > 0)
		s->found = 1;
	return tp != 0;
}

/*
 * 1: the block carries a traceparent; 0: it does not; -1: could not tell
 * (longer than HPACK_BLOCK_MAX, malformed, a reference to an entry gone
 * before latscope watched the encoder).
 */
static __always_inline int h2_has_traceparent(struct lib_fields *fl, void *henc, __u64 block, __u64 len)
{
	__u32 zero = 0;
	struct hpack_scan *s = bpf_map_lookup_elem(&hpack_scratch, &zero);
	if (!s || !henc || len > HPACK_BLOCK_MAX || len == 0)
		return -1;
	s->len = len;
	s->off = 0;
	s->inserts = 0;
	s->nrefs = 0;
	s->found = 0;
	s->unknown = 0;
	if (bpf_probe_read_user(s->block, len, (void *)block))
		return -1;
	struct table_check c = {.s = s};
	bpf_loop(HPACK_MAX_FIELDS, hpack_field, &c, 0);
	if (s->found)
		return 1;
	if (s->unknown || s->off < s->len)
		return -1;
	/* headerFieldTable{ents []HeaderField; evictCount uint64; ...} */
	struct {
		__u64 ptr;
		__u64 len;
		__u64 cap;
		__u64 evicted;
	} t = {};
	void *table = henc + FIELD(fl, F_HPACK_DYNTAB) + FIELD(fl, F_HPACK_TABLE);
	if (bpf_probe_read_user(&t, sizeof(t.ptr) + sizeof(t.len) + sizeof(t.cap), table + FIELD(fl, F_HPACK_ENTS)) ||
	    bpf_probe_read_user(&t.evicted, sizeof(t.evicted), table + FIELD(fl, F_HPACK_EVICT_COUNT)))
		return -1;
	struct enckey ek = {.pid = bpf_get_current_pid_tgid() >> 32, .henc = (__u64)henc};
	c.es = bpf_map_lookup_elem(&hpack_encoders, &ek);
	c.ents = t.ptr;
	c.n = t.len;
	c.total = t.evicted + t.len;
	bpf_loop(HPACK_MAX_FIELDS, hpack_inserted, &c, 0);
	bpf_loop(HPACK_MAX_REFS, hpack_resolve, &c, 0);
	/* Remember what it inserted, to judge later references to them once evicted. */
	if (!c.es) {
		struct encoder_state fresh = {.watched_from = c.total - s->inserts + 1};
		bpf_map_update_elem(&hpack_encoders, &ek, &fresh, BPF_NOEXIST);
		c.es = bpf_map_lookup_elem(&hpack_encoders, &ek);
	}
	if (c.es) {
		for (int i = 0; i < 8; i++) {
			if (i >= c.ntp)
				break;
			__u32 at = c.es->next++ & (HPACK_TP_IDS - 1);
			if (c.es->tp[at] > c.es->forgot)
				c.es->forgot = c.es->tp[at];
			c.es->tp[at] = c.tp[i];
		}
	}
	if (s->found)
		return 1;
	return s->unknown ? -1 : 0;
}

/*
 * Where the HTTP/2 client's clientStream.encodeAndWriteHeaders calls
 * func (cc *ClientConn) writeHeaders(streamID uint32, endStream bool, maxFrameSize int, hdrs []byte) error
 * (net/http's bundled http2ClientConn until Go 1.26, net/http/internal/http2
 * since 1.27; an emulated call site; trailers are written from elsewhere):
 * RAX = cc, RBX = streamID, RSI, R8 = the encoded header block. It runs
 * on the goroutine the request's round trip started (cs.doRequest), which
 * writes the HEADERS frame to the connection's socket before returning:
 * the client call is its creator's. Over TLS nothing can be put in the
 * frame (counted); otherwise, unless the block has a traceparent, the
 * context waits for this goroutine's next message, where the socket
 * program appends the field to this stream's HEADERS frame.
 */
SEC("uprobe")
int h2_client_headers(struct pt_regs *ctx)
{
	if (!inject_enabled)
		return 0;
	struct lib_fields *fl = lib_fields();
	struct gkey g = {};
	if (!fl || current_gkey(ctx, &g))
		return 0;
	struct gkey caller = {.pid = g.pid};
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &g);
	if (gs) {
		caller.goid = gs->parent_goid;
	} else {
		struct glink *l = bpf_map_lookup_elem(&links, &g);
		if (l)
			caller.goid = l->parent_goid;
	}
	struct client_call *c = caller.goid ? bpf_map_lookup_elem(&client_ctx, &caller) : 0;
	void *cc = (void *)GO_PARAM1(ctx);
	if (read_ptr(cc, FIELD(fl, F_H2CC_TLS_STATE) | FIELD(fl, F_H2ICC_TLS_STATE))) {
		if (c) {
			c->handed = 1;
			stat_inc(STAT_INJECT_TLS);
		}
		return 0;
	}
	/* Read through even for a request not traced: what it inserts is known then. */
	void *henc = (void *)read_ptr(cc, FIELD(fl, F_H2CC_HENC) | FIELD(fl, F_H2ICC_HENC));
	int has = h2_has_traceparent(fl, henc, GO_PARAM5(ctx), GO_PARAM6(ctx));
	if (!c)
		return 0; /* not started by a traced round trip */
	c->handed = 1;
	if (has != 0) {
		stat_inc(has > 0 ? STAT_INJECT_PRESENT : STAT_INJECT_FAILED);
		return 0;
	}
	if (!tls_g_ok(ctx)) {
		stat_inc(STAT_INJECT_CONN_UNKNOWN);
		return 0;
	}
	struct pending_ctx p = {.tc = c->tc, .at_ns = bpf_ktime_get_ns(), .stream_id = GO_PARAM2(ctx),
				.root_call_id = c->root_call_id};
	struct handkey hk = {.pid = g.pid, .kind = HAND_GOROUTINE, .id = g.goid};
	hand_on(&hk, &p);
	return 0;
}

/* ---- HTTP/2 server: incoming traceparent ---- */

#define MAX_H2_FIELDS 64 /* request header fields looked at */
#define H2_FIELDS_BYTES (MAX_H2_FIELDS * HEADER_FIELD_SIZE)

/* A request's []hpack.HeaderField, copied in one read. */
struct h2_fields_scan {
	__u8 f[H2_FIELDS_BYTES];
	__u64 n;
	__u64 name_off, value_off;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct h2_fields_scan);
} h2_fields_scratch SEC(".maps");

struct h2_fields_walk {
	struct h2_fields_scan *s;
	struct received *in;
};

/* One decoded header field: a "traceparent" (lower case on the wire, RFC 9113 8.2.1)? */
static long h2_field(__u64 i, void *arg)
{
	struct h2_fields_walk *w = arg;
	struct h2_fields_scan *s = w->s;
	if (i >= s->n || i >= MAX_H2_FIELDS)
		return 1;
	__u64 at = i * HEADER_FIELD_SIZE;
	struct {
		__u64 ptr;
		__u64 len;
	} name, value;
	__u64 na = at + s->name_off, va = at + s->value_off;
	if (na > H2_FIELDS_BYTES - 16 || va > H2_FIELDS_BYTES - 16)
		return 1;
	__builtin_memcpy(&name, &s->f[na], sizeof(name));
	if (name.len != 11)
		return 0;
	__u8 nb[11];
	if (bpf_probe_read_user(nb, sizeof(nb), (void *)name.ptr))
		return 1;
	const char want[] = "traceparent";
	for (int j = 0; j < 11; j++)
		if (nb[j] != want[j])
			return 0;
	struct received *in = w->in;
	if (in->lines < 255)
		in->lines++;
	__builtin_memcpy(&value, &s->f[va], sizeof(value));
	__u8 v[TRACEPARENT_LEN];
	struct trace_ctx tc = {};
	if (value.len != TRACEPARENT_LEN || bpf_probe_read_user(v, sizeof(v), (void *)value.ptr) ||
	    parse_traceparent(v, &tc) || in->n >= RECV_MAX)
		return 0;
	__u32 k = in->n & (RECV_MAX - 1);
	in->v[k].trace_hi = tc.trace_hi;
	in->v[k].trace_lo = tc.trace_lo;
	in->v[k].span_id = tc.span_id;
	in->n++;
	return 0;
}

/*
 * Where the HTTP/2 server's serverConn.processHeaders calls
 * func (sc *serverConn) newWriterAndRequest(st *stream, f *MetaHeadersFrame) (*responseWriter, *Request, error)
 * (bundled in net/http until Go 1.26, net/http/internal/http2 since 1.27;
 * an emulated call site): RAX = sc, RBX = st, RCX = f, on the
 * connection's serving goroutine. The stream's traceparent fields are
 * kept for the goroutine until the call returns.
 */
SEC("uprobe")
int h2_request_fields(struct pt_regs *ctx)
{
	struct lib_fields *fl = lib_fields();
	void *f = (void *)GO_PARAM3(ctx);
	struct gkey g = {};
	if (!fl || !f || current_gkey(ctx, &g))
		return 0;
	__u32 zero = 0;
	struct received *in = bpf_map_lookup_elem(&received_scratch, &zero);
	if (!in)
		return 0;
	__builtin_memset(in, 0, sizeof(*in));
	struct {
		__u64 ptr;
		__u64 len;
	} fields = {};
	if (bpf_probe_read_user(&fields, sizeof(fields), f + (FIELD(fl, F_H2_META_FIELDS) | FIELD(fl, F_H2I_META_FIELDS)))) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 0;
	}
	struct h2_fields_scan *fs = bpf_map_lookup_elem(&h2_fields_scratch, &zero);
	if (!fs)
		return 0;
	__u64 n = fields.len < MAX_H2_FIELDS ? fields.len : MAX_H2_FIELDS;
	if (n && bpf_probe_read_user(fs->f, n * HEADER_FIELD_SIZE, (void *)fields.ptr)) {
		stat_inc(STAT_LIB_READ_FAILED);
		return 0;
	}
	fs->n = n;
	fs->name_off = FIELD(fl, F_HPACK_FIELD_NAME);
	fs->value_off = FIELD(fl, F_HPACK_FIELD_VALUE);
	struct h2_fields_walk w = {.s = fs, .in = in};
	bpf_loop(MAX_H2_FIELDS, h2_field, &w, 0);
	if (in->lines)
		bpf_map_update_elem(&h2_reading, &g, in, BPF_ANY);
	else
		bpf_map_delete_elem(&h2_reading, &g);
	return 0;
}

/* Where newWriterAndRequest has returned: RAX = the stream's response writer. */
SEC("uprobe")
int h2_request_writer(struct pt_regs *ctx)
{
	struct gkey g = {};
	if (current_gkey(ctx, &g))
		return 0;
	struct received *in = bpf_map_lookup_elem(&h2_reading, &g);
	if (!in)
		return 0;
	struct handkey k = {.pid = g.pid, .kind = HAND_OBJECT, .id = GO_RESULT1(ctx)};
	if (k.id)
		bpf_map_update_elem(&incoming_h2, &k, in, BPF_ANY);
	bpf_map_delete_elem(&h2_reading, &g);
	return 0;
}
