// Package nethttp instruments net/http: each request a server handles
// (span kind server) and each round trip of an http.Client / Transport
// (span kind client).
package nethttp

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type server_request -type server_response -type client_request -type client_response -type nethttp_field -type nethttp_probe Nethttp nethttp.c -- -I../../include

import (
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/bpf/library"
	"github.com/latscope/latscope/span"
)

// Library is net/http's registry entry.
var Library = &library.Library{
	Name:   "net/http",
	Module: "std",
	Probes: []library.Probe{
		// A request ends where conn.serve resumes (HTTP/1: an emulated
		// site, past w.cancelCtx()) or where the HTTP/2 adapters, which
		// tail-call it, return. From Go 1.27 an itab holds it: RET exits.
		{Symbol: "net/http.serverHandler.ServeHTTP", Entry: "server_entry", Exit: "server_exit", Callers: []string{
			"net/http.(*conn).serve",
			"net/http.initALPNRequest.ServeHTTP",
			"net/http.unencryptedHTTP2Request.ServeHTTP", // Go >= 1.24
			"net/http.(*serverHandler).ServeHTTP",        // the pointer-receiver wrapper
		}},
		{Symbol: "net/http.(*Transport).roundTrip", Entry: "client_entry", Exit: "client_exit"},
		// Outgoing traceparent, HTTP/1: the connection a request goes out
		// on, then its writer goroutine, whose next message is the head.
		{Symbol: "net/http.(*persistConn).roundTrip", Entry: "conn_round_trip"},
		{Symbol: "net/http.(*Request).write", Entry: "request_write"},
		// HTTP/2: the goroutine that writes a request's HEADERS frame.
		{Symbol: "net/http.(*http2clientStream).encodeAndWriteHeaders", Callee: "net/http.(*http2ClientConn).writeHeaders", Calling: "h2_client_headers"},
		{Symbol: "net/http/internal/http2.(*clientStream).encodeAndWriteHeaders", Callee: "net/http/internal/http2.(*ClientConn).writeHeaders", Calling: "h2_client_headers"}, // Go >= 1.27
		// Incoming traceparent, HTTP/2: a stream's decoded header fields,
		// until its response writer exists (the handler's rw).
		{Symbol: "net/http.(*http2serverConn).processHeaders", Callee: "net/http.(*http2serverConn).newWriterAndRequest", Calling: "h2_request_fields"},
		{Symbol: "net/http.(*http2serverConn).processHeaders", Callee: "net/http.(*http2serverConn).newWriterAndRequest", Returned: "h2_request_writer"},
		{Symbol: "net/http/internal/http2.(*serverConn).processHeaders", Callee: "net/http/internal/http2.(*serverConn).newWriterAndRequest", Calling: "h2_request_fields"},
		{Symbol: "net/http/internal/http2.(*serverConn).processHeaders", Callee: "net/http/internal/http2.(*serverConn).newWriterAndRequest", Returned: "h2_request_writer"},
		// Incoming traceparent, HTTP/1: server_entry reads the request's
		// Header map, no probe of its own.
	},
	Fields: fields(),
	Linker: linker,
	Spec:   LoadNethttp,
	Decode: decode,
}

const linker = `package main

import (
	"net/http"
	"os"
)

func main() {
	if len(os.Args) > 99 { // never: only links the server and client
		http.ListenAndServe(os.Args[1], nil)
		http.Get(os.Args[2])
	}
}
`

func fields() []string {
	byEnum := map[NethttpNethttpField]string{
		NethttpNethttpFieldF_REQUEST_METHOD:         "net/http.Request.Method",
		NethttpNethttpFieldF_REQUEST_URL:            "net/http.Request.URL",
		NethttpNethttpFieldF_REQUEST_PROTO_MAJOR:    "net/http.Request.ProtoMajor",
		NethttpNethttpFieldF_REQUEST_HOST:           "net/http.Request.Host",
		NethttpNethttpFieldF_REQUEST_REMOTE_ADDR:    "net/http.Request.RemoteAddr",
		NethttpNethttpFieldF_REQUEST_CONTENT_LENGTH: "net/http.Request.ContentLength",
		NethttpNethttpFieldF_URL_SCHEME:             "net/url.URL.Scheme",
		NethttpNethttpFieldF_URL_HOST:               "net/url.URL.Host",
		NethttpNethttpFieldF_URL_PATH:               "net/url.URL.Path",
		NethttpNethttpFieldF_RESPONSE_STATUS:        "net/http.response.status",
		NethttpNethttpFieldF_RESPONSE_WRITTEN:       "net/http.response.written",
		NethttpNethttpFieldF_CLIENT_STATUS_CODE:     "net/http.Response.StatusCode",
		NethttpNethttpFieldF_RESPONSE_REQUEST:       "net/http.response.req",
		NethttpNethttpFieldF_REQUEST_PATTERN:        "?net/http.Request.Pattern", // optional: Go >= 1.23
		// The HTTP/2 server's writer: bundled until Go 1.26, internal since 1.27.
		NethttpNethttpFieldF_H2RWS:      "?net/http.http2responseWriter.rws",
		NethttpNethttpFieldF_H2STATUS:   "?net/http.http2responseWriterState.status",
		NethttpNethttpFieldF_H2WROTE:    "?net/http.http2responseWriterState.wroteBytes",
		NethttpNethttpFieldF_H2I_RWS:    "?net/http/internal/http2.responseWriter.rws",
		NethttpNethttpFieldF_H2I_STATUS: "?net/http/internal/http2.responseWriterState.status",
		NethttpNethttpFieldF_H2I_WROTE:  "?net/http/internal/http2.responseWriterState.wroteBytes",
		// The client connection a request goes out on.
		NethttpNethttpFieldF_PCONN_CONN:   "net/http.persistConn.conn",
		NethttpNethttpFieldF_TCPCONN_CONN: "net.TCPConn.conn",
		NethttpNethttpFieldF_CONN_FD:      "net.conn.fd",
		NethttpNethttpFieldF_NETFD_LADDR:  "net.netFD.laddr",
		NethttpNethttpFieldF_NETFD_RADDR:  "net.netFD.raddr",
		NethttpNethttpFieldF_TCPADDR_PORT: "net.TCPAddr.Port",
		// TLS, and who took a connection over.
		NethttpNethttpFieldF_REQUEST_TLS:     "net/http.Request.TLS",
		NethttpNethttpFieldF_RESPONSE_CONN:   "net/http.response.conn",
		NethttpNethttpFieldF_CONN_HIJACKED:   "net/http.conn.hijackedv",
		NethttpNethttpFieldF_PCONN_TLS_STATE: "net/http.persistConn.tlsState",
		NethttpNethttpFieldF_TREQ_REQUEST:    "net/http.transportRequest.Request",
		// The HTTP/2 client's connection: bundled until Go 1.26, internal since 1.27.
		NethttpNethttpFieldF_H2CC_TLS_STATE:    "?net/http.http2ClientConn.tlsState",
		NethttpNethttpFieldF_H2CC_HENC:         "?net/http.http2ClientConn.henc",
		NethttpNethttpFieldF_H2ICC_TLS_STATE:   "?net/http/internal/http2.ClientConn.tlsState",
		NethttpNethttpFieldF_H2ICC_HENC:        "?net/http/internal/http2.ClientConn.henc",
		NethttpNethttpFieldF_HPACK_DYNTAB:      "vendor/golang.org/x/net/http2/hpack.Encoder.dynTab",
		NethttpNethttpFieldF_HPACK_TABLE:       "vendor/golang.org/x/net/http2/hpack.dynamicTable.table",
		NethttpNethttpFieldF_HPACK_ENTS:        "vendor/golang.org/x/net/http2/hpack.headerFieldTable.ents",
		NethttpNethttpFieldF_HPACK_EVICT_COUNT: "vendor/golang.org/x/net/http2/hpack.headerFieldTable.evictCount",
		// The HTTP/2 server's decoded request headers.
		NethttpNethttpFieldF_H2META_FIELDS:     "?net/http.http2MetaHeadersFrame.Fields",
		NethttpNethttpFieldF_H2I_META_FIELDS:   "?net/http/internal/http2.MetaHeadersFrame.Fields",
		NethttpNethttpFieldF_HPACK_FIELD_NAME:  "vendor/golang.org/x/net/http2/hpack.HeaderField.Name",
		NethttpNethttpFieldF_HPACK_FIELD_VALUE: "vendor/golang.org/x/net/http2/hpack.HeaderField.Value",
		// An HTTP/1 request's Header, and the runtime's maps: classic
		// (Go <= 1.23, GOEXPERIMENT=noswissmap) or Swiss tables (Go >= 1.24).
		NethttpNethttpFieldF_REQUEST_HEADER:     "net/http.Request.Header",
		NethttpNethttpFieldF_HMAP_COUNT:         "?runtime.hmap.count",
		NethttpNethttpFieldF_HMAP_FLAGS:         "?runtime.hmap.flags",
		NethttpNethttpFieldF_HMAP_B:             "?runtime.hmap.B",
		NethttpNethttpFieldF_HMAP_BUCKETS:       "?runtime.hmap.buckets",
		NethttpNethttpFieldF_HMAP_OLDBUCKETS:    "?runtime.hmap.oldbuckets",
		NethttpNethttpFieldF_HMAP_NEVACUATE:     "?runtime.hmap.nevacuate",
		NethttpNethttpFieldF_MAP_USED:           "?internal/runtime/maps.Map.used",
		NethttpNethttpFieldF_MAP_DIR_PTR:        "?internal/runtime/maps.Map.dirPtr",
		NethttpNethttpFieldF_MAP_DIR_LEN:        "?internal/runtime/maps.Map.dirLen",
		NethttpNethttpFieldF_TABLE_GROUPS:       "?internal/runtime/maps.table.groups",
		NethttpNethttpFieldF_GROUPS_DATA:        "?internal/runtime/maps.groupsReference.data",
		NethttpNethttpFieldF_GROUPS_LENGTH_MASK: "?internal/runtime/maps.groupsReference.lengthMask",
		NethttpNethttpFieldF_GROUP_ELEMS:        "?" + HeaderGroupType + ".elems",
	}
	return library.FieldNames(byEnum, NethttpNethttpFieldF_FIELD_MAX)
}

// HeaderGroupType is the DWARF name of a Swiss table group of an
// http.Header (map[string][]string): its fields are ctrl and slots, or,
// with GOEXPERIMENT=mapsplitgroup (Go 1.27), ctrl, keys and elems.
const HeaderGroupType = "noalg.map.group[string][]string"

func decode(probe uint16, p []byte, s *span.Span) {
	switch NethttpNethttpProbe(probe) {
	case NethttpNethttpProbeP_SERVER_REQUEST:
		r := library.Record[NethttpServerRequest](p)
		if r == nil {
			return
		}
		method := methods.Of(r.Method[:])
		s.Kind = span.KindServer
		if r.Parent.Valid != 0 {
			// The request carried a traceparent: the caller's span is the
			// parent (the kernel already continued its trace id).
			binary.BigEndian.PutUint64(s.ParentID[:], r.Parent.SpanId)
			s.RemoteParent = true
		}
		s.Name = method.(string)
		scheme := schemeHTTP
		if r.Tls != 0 {
			scheme = schemeHTTPS
		}
		s.Attrs = append(s.Attrs,
			span.Attr{Key: string(semconv.HTTPRequestMethodKey), Value: method},
			span.Attr{Key: string(semconv.URLPathKey), Value: truncated(library.CString(r.Path[:]), r.PathLen)},
			span.Attr{Key: string(semconv.URLSchemeKey), Value: scheme},
			span.Attr{Key: string(semconv.NetworkProtocolVersionKey), Value: protoVersion(r.ProtoMajor)},
		)
		if hp := hostPorts.Of(r.Host[:]); hp.host != "" {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.ServerAddressKey), Value: hp.hostValue})
			if hp.port != 0 {
				s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.ServerPortKey), Value: hp.portValue})
			}
		}
		if hp := peers.Of(r.Remote[:]); hp.host != "" {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.ClientAddressKey), Value: hp.hostValue}, span.Attr{Key: string(semconv.ClientPortKey), Value: hp.portValue})
		}
		if r.ContentLength > 0 {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.HTTPRequestBodySizeKey), Value: r.ContentLength})
		}
	case NethttpNethttpProbeP_SERVER_RESPONSE:
		r := library.Record[NethttpServerResponse](p)
		if r == nil {
			return
		}
		if r.Pattern[0] != 0 {
			// The span's name so far (the method) and the pattern, as one
			// key: "GET\nGET /product/{id}".
			var buf [len(r.Pattern) + 64]byte
			key := append(append(append(buf[:0], s.Name...), '\n'), r.Pattern[:]...)
			rt := routes.Of(key)
			s.Name = rt.name
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.HTTPRouteKey), Value: rt.route})
		}
		status := r.Status
		if status < 0 {
			status = 0 // the response writer could not be read
		} else if status == 0 && r.Hijacked == 0 {
			// Nothing written when the handler returned: net/http writes
			// 200 then (HTTP/1 finishRequest, HTTP/2 handlerDone). A
			// hijacked connection gets nothing from net/http.
			status = 200
		}
		if status != 0 {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.HTTPResponseStatusCodeKey), Value: statusValue(status)})
			if status >= 500 {
				s.Status, s.StatusMessage = span.StatusError, fmt.Sprintf("HTTP %d", status)
			}
		}
		if r.Written > 0 {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.HTTPResponseBodySizeKey), Value: r.Written})
		}
	case NethttpNethttpProbeP_CLIENT_REQUEST:
		r := library.Record[NethttpClientRequest](p)
		if r == nil {
			return
		}
		method, scheme := methods.Of(r.Method[:]), library.CString(r.Scheme[:])
		hp := hostPorts.Of(r.Host[:])
		s.Kind = span.KindClient
		s.Name = method.(string)
		s.Attrs = append(s.Attrs,
			span.Attr{Key: string(semconv.HTTPRequestMethodKey), Value: method},
			// url.full without the query string: queries carry data.
			span.Attr{Key: string(semconv.URLFullKey), Value: scheme + "://" + hp.hostPort + truncated(library.CString(r.Path[:]), r.PathLen)},
		)
		if hp.host != "" {
			port := hp.portValue
			if hp.port == 0 && scheme == "https" {
				port = int64(443)
			} else if hp.port == 0 {
				port = int64(80)
			}
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.ServerAddressKey), Value: hp.hostValue}, span.Attr{Key: string(semconv.ServerPortKey), Value: port})
		}
	case NethttpNethttpProbeP_CLIENT_RESPONSE:
		r := library.Record[NethttpClientResponse](p)
		if r == nil {
			return
		}
		if r.Status != 0 {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.HTTPResponseStatusCodeKey), Value: statusValue(r.Status)})
			if r.Status >= 400 {
				s.Status, s.StatusMessage = span.StatusError, fmt.Sprintf("HTTP %d", r.Status)
			}
		}
		if r.Err != 0 {
			s.Status, s.StatusMessage = span.StatusError, "round trip returned an error"
		}
	}
}

func truncated(s string, full uint64) string {
	if uint64(len(s)) < full {
		return s + "…"
	}
	return s
}

// Attribute values decode reuses (library.Values): a value seen before
// costs a lookup, not allocations.
var (
	methods   library.Values[any]
	hostPorts = library.Values[hostPort]{New: splitHostPort}
	// Clients' addresses: an ephemeral port per connection, many more
	// values than hosts (a table of their own, so they do not push the
	// hosts out); a keep-alive connection's requests still hit.
	peers  = library.Values[hostPort]{New: splitHostPort}
	routes = library.Values[route]{New: newRoute}

	schemeHTTP, schemeHTTPS any = "http", "https"
	protoVersions               = [...]any{"0", "1", "2", "3"}
	statusValues                = func() (v [600]any) {
		for i := range v {
			v[i] = int64(i)
		}
		return v
	}()
)

// hostPort is a "host[:port]" split, with the attribute values of each.
type hostPort struct {
	hostPort, host       string
	port                 int
	hostValue, portValue any // host; port as int64
}

func splitHostPort(hp string) hostPort {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return hostPort{hostPort: hp, host: hp, hostValue: hp, portValue: int64(0)}
	}
	n, _ := strconv.Atoi(port)
	return hostPort{hostPort: hp, host: host, port: n, hostValue: host, portValue: int64(n)}
}

// route is what a ServeMux pattern makes of a server span: its name (the
// method, then the route) and its http.route.
type route struct {
	name  string
	route any
}

// newRoute makes the route of key: the span's name so far, a newline, the
// pattern ("GET /product/{id}" or "/product/{id}").
func newRoute(key string) route {
	name, pattern, _ := strings.Cut(key, "\n")
	r := pattern
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		r = pattern[i+1:]
	}
	return route{name: name + " " + r, route: r}
}

func protoVersion(major uint64) any {
	if major < uint64(len(protoVersions)) {
		return protoVersions[major]
	}
	return strconv.FormatUint(major, 10)
}

func statusValue(code int64) any {
	if code >= 0 && code < int64(len(statusValues)) {
		return statusValues[code]
	}
	return code
}
