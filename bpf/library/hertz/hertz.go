// Package hertz instruments CloudWeGo Hertz (github.com/cloudwego/hertz),
// which has its own HTTP/1 implementation on its own network layers
// (netpoll, or Go's net package with standard.NewTransporter): each
// request a Hertz server handles (span kind server, named by its route,
// continuing a traceparent received with it) and each request of a
// Hertz client (span kind client), whose request head gets a traceparent
// naming the client span (bpf/propagation) unless it has one.
package hertz

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type server_request -type server_response -type client_request -type client_response -type hertz_field -type hertz_probe Hertz hertz.c -- -I../../include

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/bpf/library"
	"github.com/latscope/latscope/span"
)

const (
	pkg   = "github.com/cloudwego/hertz/pkg/"
	http1 = pkg + "protocol/http1."
)

// Library is Hertz's registry entry.
var Library = &library.Library{
	Name:   "hertz",
	Module: "github.com/cloudwego/hertz",
	Probes: []library.Probe{
		// A request, from routing to the end of its handler chain; the
		// response is written once it returns. Called through
		// suite.Core by http1.Server.Serve: the agent learns that call
		// site (its own RETs until then).
		{Symbol: pkg + "route.(*Engine).ServeHTTP", Entry: "server_entry", Exit: "server_exit"},
		// Every client request (through client.HostClient: learned too).
		{Symbol: http1 + "(*HostClient).Do", Entry: "client_entry", Exit: "client_exit"},
		// Outgoing traceparent: the connection each attempt takes.
		{Symbol: http1 + "(*HostClient).doNonNilReqResp", Callee: http1 + "(*HostClient).acquireConn", Returned: "conn_acquired"},
	},
	Fields: fields(),
	Linker: linker,
	// Every release the module proxy serves from the last two years
	// (July 2024 - January 2026).
	Versions: []string{"v0.9.2", "v0.9.6", "v0.9.7", "v0.10.3", "v0.10.4"},
	Spec:     LoadHertz,
	Decode:   decode,
}

const linker = `package main

import (
	"context"
	"os"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/network/standard"
)

func main() {
	if len(os.Args) > 99 { // never: only links the server and the client, on both network layers
		h := server.New(server.WithHostPorts(os.Args[1]))
		h.GET("/:id", func(context.Context, *app.RequestContext) {})
		go h.Spin()
		server.New(server.WithTransport(standard.NewTransporter)).Spin()
		c, _ := client.NewClient()
		c.Get(context.Background(), nil, os.Args[2])
		c, _ = client.NewClient(client.WithDialer(standard.NewDialer()))
		c.Get(context.Background(), nil, os.Args[2])
	}
}
`

func fields() []string {
	byEnum := map[HertzHertzField]string{
		HertzHertzFieldF_CTX_CONN:          pkg + "app.RequestContext.conn",
		HertzHertzFieldF_CTX_REQUEST:       pkg + "app.RequestContext.Request",
		HertzHertzFieldF_CTX_RESPONSE:      pkg + "app.RequestContext.Response",
		HertzHertzFieldF_CTX_FULL_PATH:     pkg + "app.RequestContext.fullPath",
		HertzHertzFieldF_REQ_HEADER:        pkg + "protocol.Request.Header",
		HertzHertzFieldF_REQ_URI:           pkg + "protocol.Request.uri",
		HertzHertzFieldF_REQ_IS_TLS:        pkg + "protocol.Request.isTLS",
		HertzHertzFieldF_RH_CONTENT_LENGTH: pkg + "protocol.RequestHeader.contentLength",
		HertzHertzFieldF_RH_METHOD:         pkg + "protocol.RequestHeader.method",
		HertzHertzFieldF_RH_REQUEST_URI:    pkg + "protocol.RequestHeader.requestURI",
		HertzHertzFieldF_RH_HOST:           pkg + "protocol.RequestHeader.host",
		HertzHertzFieldF_RH_PROTOCOL:       pkg + "protocol.RequestHeader.protocol",
		HertzHertzFieldF_RH_H:              pkg + "protocol.RequestHeader.h",
		HertzHertzFieldF_KV_KEY:            pkg + "protocol.argsKV.key",
		HertzHertzFieldF_KV_VALUE:          pkg + "protocol.argsKV.value",
		HertzHertzFieldF_URI_SCHEME:        pkg + "protocol.URI.scheme",
		HertzHertzFieldF_URI_PATH:          pkg + "protocol.URI.path",
		HertzHertzFieldF_URI_HOST:          pkg + "protocol.URI.host",
		HertzHertzFieldF_RESP_HEADER:       pkg + "protocol.Response.Header",
		HertzHertzFieldF_RSH_STATUS:        pkg + "protocol.ResponseHeader.statusCode",
		HertzHertzFieldF_CLIENT_CONN:       http1 + "clientConn.c",
		// The connections of Hertz's two network layers. netpoll's
		// offsets are tabled with the netpoll release each Hertz
		// release requires.
		HertzHertzFieldF_HNETPOLL_CONN:  pkg + "network/netpoll.Conn.Conn",
		HertzHertzFieldF_HSTANDARD_CONN: pkg + "network/standard.Conn.c",
		HertzHertzFieldF_NP_NETFD:       "github.com/cloudwego/netpoll.connection.netFD",
		HertzHertzFieldF_NP_LADDR:       "github.com/cloudwego/netpoll.netFD.localAddr",
		HertzHertzFieldF_NP_RADDR:       "github.com/cloudwego/netpoll.netFD.remoteAddr",
		HertzHertzFieldF_TCPCONN_CONN:   "net.TCPConn.conn",
		HertzHertzFieldF_CONN_FD:        "net.conn.fd",
		HertzHertzFieldF_NETFD_LADDR:    "net.netFD.laddr",
		HertzHertzFieldF_NETFD_RADDR:    "net.netFD.raddr",
		HertzHertzFieldF_TCPADDR_IP:     "net.TCPAddr.IP",
		HertzHertzFieldF_TCPADDR_PORT:   "net.TCPAddr.Port",
	}
	return library.FieldNames(byEnum, HertzHertzFieldF_FIELD_MAX)
}

func decode(probe uint16, p []byte, s *span.Span) {
	switch HertzHertzProbe(probe) {
	case HertzHertzProbeP_SERVER_REQUEST:
		if r := library.Record[HertzServerRequest](p); r != nil {
			decodeServerRequest(r, s)
		}
	case HertzHertzProbeP_SERVER_RESPONSE:
		r := library.Record[HertzServerResponse](p)
		if r == nil {
			return
		}
		if route := library.CString(r.Route[:]); route != "" && uint64(len(route)) == r.RouteLen {
			s.Name += " " + route
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.HTTPRouteKey), Value: route})
		}
		status := r.Status
		if status == 0 {
			status = 200 // Hertz sends 200 when the handlers set none
		}
		s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.HTTPResponseStatusCodeKey), Value: status})
		if status >= 500 {
			s.Status, s.StatusMessage = span.StatusError, fmt.Sprintf("HTTP %d", status)
		}
	case HertzHertzProbeP_CLIENT_REQUEST:
		if r := library.Record[HertzClientRequest](p); r != nil {
			decodeClientRequest(r, s)
		}
	case HertzHertzProbeP_CLIENT_RESPONSE:
		r := library.Record[HertzClientResponse](p)
		if r == nil {
			return
		}
		if r.Status != 0 {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.HTTPResponseStatusCodeKey), Value: r.Status})
			if r.Status >= 400 {
				s.Status, s.StatusMessage = span.StatusError, fmt.Sprintf("HTTP %d", r.Status)
			}
		}
		if r.Err != 0 {
			s.Status, s.StatusMessage = span.StatusError, "request returned an error"
		}
	}
}

// decodeServerRequest sets what net/http's server spans have: the
// route and status follow with the response.
func decodeServerRequest(r *HertzServerRequest, s *span.Span) {
	method := library.CString(r.Method[:])
	s.Kind = span.KindServer
	if r.Parent.Valid != 0 {
		// The request carried a traceparent: the caller's span is the
		// parent (the kernel already continued its trace id).
		binary.BigEndian.PutUint64(s.ParentID[:], r.Parent.SpanId)
		s.RemoteParent = true
	}
	s.Name = method
	scheme := "http"
	if r.Tls != 0 {
		scheme = "https"
	}
	s.Attrs = append(s.Attrs,
		span.Attr{Key: string(semconv.HTTPRequestMethodKey), Value: method},
		span.Attr{Key: string(semconv.URLPathKey), Value: targetPath(library.CString(r.Target[:]), r.TargetLen)},
		span.Attr{Key: string(semconv.URLSchemeKey), Value: scheme},
	)
	if v := protocolVersion(library.CString(r.Protocol[:])); v != "" {
		s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.NetworkProtocolVersionKey), Value: v})
	}
	if host, port := splitHostPort(library.CString(r.Host[:])); host != "" {
		s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.ServerAddressKey), Value: host})
		if port != 0 {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.ServerPortKey), Value: int64(port)})
		}
	}
	if ip, ok := peerIP(r.PeerIp[:], r.PeerIpLen); ok {
		s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.ClientAddressKey), Value: ip}, span.Attr{Key: string(semconv.ClientPortKey), Value: r.PeerPort})
	}
	if r.ContentLength > 0 {
		s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.HTTPRequestBodySizeKey), Value: r.ContentLength})
	}
}

func decodeClientRequest(r *HertzClientRequest, s *span.Span) {
	method, scheme, host := library.CString(r.Method[:]), library.CString(r.Scheme[:]), library.CString(r.Host[:])
	if method == "" {
		method = "GET" // Hertz's default
	}
	if scheme == "" {
		scheme = "http"
	}
	s.Kind = span.KindClient
	s.Name = method
	s.Attrs = append(s.Attrs,
		span.Attr{Key: string(semconv.HTTPRequestMethodKey), Value: method},
		// url.full without the query string: queries carry data.
		span.Attr{Key: string(semconv.URLFullKey), Value: scheme + "://" + host + truncated(library.CString(r.Path[:]), r.PathLen)},
	)
	if h, port := splitHostPort(host); h != "" {
		if port == 0 && scheme == "https" {
			port = 443
		} else if port == 0 {
			port = 80
		}
		s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.ServerAddressKey), Value: h}, span.Attr{Key: string(semconv.ServerPortKey), Value: int64(port)})
	}
}

// targetPath is the path of a request target as received (origin form
// "/p?q" or absolute form "http://h/p?q"), without its query; full is
// the target's length before the record truncated it.
func targetPath(target string, full uint64) string {
	if i := strings.IndexAny(target, "?#"); i >= 0 {
		target, full = target[:i], uint64(i) // the path is whole
	}
	if _, rest, ok := strings.Cut(target, "://"); ok && !strings.HasPrefix(target, "/") {
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			return "/"
		}
		cut := uint64(len(target) - len(rest[j:]))
		target, full = rest[j:], full-cut
	}
	return truncated(target, full)
}

// protocolVersion is network.protocol.version as net/http's spans give
// it (the major version: "1", "2") for "HTTP/1.1", "HTTP/2.0".
func protocolVersion(proto string) string {
	v, ok := strings.CutPrefix(proto, "HTTP/")
	if !ok || v == "" {
		return ""
	}
	major, _, _ := strings.Cut(v, ".")
	return major
}

func peerIP(b []byte, n uint8) (string, bool) {
	switch n {
	case 4:
		return netip.AddrFrom4([4]byte(b[:4])).String(), true
	case 16:
		return netip.AddrFrom16([16]byte(b[:16])).Unmap().String(), true
	}
	return "", false
}

func truncated(s string, full uint64) string {
	if uint64(len(s)) < full {
		return s + "…"
	}
	return s
}

func splitHostPort(hp string) (string, int) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]"), 0 // no port: "[::1]"
	}
	n, _ := strconv.Atoi(port)
	return host, n
}
