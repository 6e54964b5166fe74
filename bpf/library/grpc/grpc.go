// Package grpclib instruments google.golang.org/grpc: each RPC a grpc-go
// server handles (span kind server, continuing a traceparent received in
// its metadata) and each call of a ClientConn, unary (Invoke) or
// streaming (NewStream; the span lasts until the stream ends), of span
// kind client, whose stream's HEADERS frame gets a traceparent naming the
// client span (bpf/propagation) unless the application's metadata has
// one.
package grpclib

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type server_request -type server_status -type client_request -type client_response -type grpc_field -type grpc_probe Grpc grpc.c -- -I../../include

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"strings"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/bpf/library"
	"github.com/latscope/latscope/span"
)

const transport = "google.golang.org/grpc/internal/transport"

// Library is grpc-go's registry entry.
var Library = &library.Library{
	Name:   "google.golang.org/grpc",
	Module: "google.golang.org/grpc",
	Probes: []library.Probe{
		// Every RPC the server handles, on the goroutine that runs its handler.
		{Symbol: "google.golang.org/grpc.(*Server).handleStream", Entry: "server_entry", Exit: "call_exit"},
		{Symbol: "google.golang.org/grpc.(*ClientConn).Invoke", Entry: "client_entry", Exit: "call_exit"},
		// A client stream: opened by NewStream (its error in the 3rd and
		// 4th result registers), registered where its *clientStream
		// exists, ended where clientStream.finish ends its last attempt.
		{Symbol: "google.golang.org/grpc.(*ClientConn).NewStream", Entry: "stream_entry", Exit: "stream_exit", Results: 4},
		{Symbol: "google.golang.org/grpc.newClientStreamWithParams", Callee: "google.golang.org/grpc.(*clientStream).withRetry", Calling: "stream_created"},
		{Symbol: "google.golang.org/grpc.(*clientStream).finish", Callee: "google.golang.org/grpc.(*csAttempt).finish", Calling: "stream_end"},
		// Incoming traceparent: a new stream's headers, on the reader goroutine.
		{Symbol: transport + ".(*http2Server).operateHeaders", Entry: "operate_headers"},
		// Outgoing traceparent: a call's stream headers, queued by the
		// call's goroutine, then encoded by the transport's writer.
		{Symbol: transport + ".(*http2Client).NewStream", Callee: transport + ".(*controlBuffer).executeAndPut", Calling: "queue_headers"},
		{Symbol: transport + ".(*loopyWriter).writeHeader", Entry: "write_headers"},
		// The status the server writes: WriteStatus up to v1.68, writeStatus since.
		{Symbol: transport + ".(*http2Server).WriteStatus", Entry: "write_status"},
		{Symbol: transport + ".(*http2Server).writeStatus", Entry: "write_status"},
	},
	Fields: fields(),
	Linker: linker,
	// The latest patch of each minor release from v1.67 (the last that
	// builds with Go 1.21) to the newest the module proxy serves.
	Versions: []string{
		"v1.67.3", "v1.68.2", "v1.69.4", "v1.70.0", "v1.71.1", "v1.72.2", "v1.73.0",
		"v1.74.3", "v1.75.1", "v1.76.0", "v1.77.0", "v1.78.0", "v1.79.3", "v1.80.0",
		"v1.81.1", "v1.82.1", "v1.83.2", "v1.84.0", "v1.85.0",
	},
	Spec:   LoadGrpc,
	Decode: decode,
}

const linker = `package main

import (
	"context"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func main() {
	if len(os.Args) > 99 { // never: only links the server, the client (unary, streams) and status errors
		ln, _ := net.Listen("tcp", os.Args[1])
		grpc.NewServer().Serve(ln)
		cc, _ := grpc.NewClient(os.Args[2], grpc.WithTransportCredentials(insecure.NewCredentials()))
		err := cc.Invoke(context.Background(), os.Args[3], nil, nil)
		println(status.Code(err))
		s, _ := cc.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true}, os.Args[3])
		println(s.RecvMsg(nil))
	}
}
`

func fields() []string {
	byEnum := map[GrpcGrpcField]string{
		GrpcGrpcFieldF_STREAM_METHOD:        transport + ".Stream.method",
		GrpcGrpcFieldF_STREAM_ID:            transport + ".Stream.id",
		GrpcGrpcFieldF_STREAM_ST:            "?" + transport + ".Stream.st",           // <= v1.68
		GrpcGrpcFieldF_SERVERSTREAM_STREAM:  "?" + transport + ".ServerStream.Stream", // >= v1.69
		GrpcGrpcFieldF_SERVERSTREAM_ST:      "?" + transport + ".ServerStream.st",     // >= v1.69
		GrpcGrpcFieldF_SERVER_PEER:          transport + ".http2Server.peer",
		GrpcGrpcFieldF_PEER_ADDR:            "google.golang.org/grpc/peer.Peer.Addr",
		GrpcGrpcFieldF_PEER_LOCAL_ADDR:      "google.golang.org/grpc/peer.Peer.LocalAddr",
		GrpcGrpcFieldF_TCPADDR_IP:           "net.TCPAddr.IP",
		GrpcGrpcFieldF_TCPADDR_PORT:         "net.TCPAddr.Port",
		GrpcGrpcFieldF_META_HEADERS_FRAME:   "golang.org/x/net/http2.MetaHeadersFrame.HeadersFrame",
		GrpcGrpcFieldF_META_FIELDS:          "golang.org/x/net/http2.MetaHeadersFrame.Fields",
		GrpcGrpcFieldF_HEADERS_FRAME_HEADER: "golang.org/x/net/http2.HeadersFrame.FrameHeader",
		GrpcGrpcFieldF_FRAME_STREAM_ID:      "golang.org/x/net/http2.FrameHeader.StreamID",
		GrpcGrpcFieldF_HEADER_FIELD_NAME:    "golang.org/x/net/http2/hpack.HeaderField.Name",
		GrpcGrpcFieldF_HEADER_FIELD_VALUE:   "golang.org/x/net/http2/hpack.HeaderField.Value",
		GrpcGrpcFieldF_STATUS_ERROR_S:       "google.golang.org/grpc/internal/status.Error.s",
		GrpcGrpcFieldF_STATUS_S:             "google.golang.org/grpc/internal/status.Status.s",
		GrpcGrpcFieldF_SPB_STATUS_CODE:      "google.golang.org/genproto/googleapis/rpc/status.Status.Code",
		GrpcGrpcFieldF_CLIENTCONN_TARGET:    "google.golang.org/grpc.ClientConn.target",
		GrpcGrpcFieldF_HEADERFRAME_HF:       "?" + transport + ".headerFrame.hf",   // <= v1.81
		GrpcGrpcFieldF_CLIENTHEADERS_HF:     "?" + transport + ".clientHeaders.hf", // >= v1.82
		GrpcGrpcFieldF_LOOPY_CONN:           transport + ".loopyWriter.conn",
		GrpcGrpcFieldF_TCPCONN_CONN:         "net.TCPConn.conn",
		GrpcGrpcFieldF_CONN_FD:              "net.conn.fd",
		GrpcGrpcFieldF_NETFD_LADDR:          "net.netFD.laddr",
		GrpcGrpcFieldF_NETFD_RADDR:          "net.netFD.raddr",
		GrpcGrpcFieldF_CSATTEMPT_CS:         "google.golang.org/grpc.csAttempt.cs",
		GrpcGrpcFieldF_CLIENTSTREAM_DESC:    "google.golang.org/grpc.clientStream.desc",
		GrpcGrpcFieldF_STREAMDESC_SERVER:    "google.golang.org/grpc.StreamDesc.ServerStreams",
	}
	return library.FieldNames(byEnum, GrpcGrpcFieldF_FIELD_MAX)
}

// codeUnknown is codes.Unknown: what grpc's status.Code reports for an
// error that carries no status.
const codeUnknown = 2

// codeNames are the names of codes.Code, by value.
var codeNames = [...]string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
	"AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
	"OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}

func codeName(c uint32) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "Code(" + strconv.FormatUint(uint64(c), 10) + ")"
}

// serverError says whether a server span with status code c is an error:
// OpenTelemetry's gRPC conventions count only codes that point at the
// server (Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable,
// DataLoss); the others are the client's doing.
func serverError(c uint32) bool {
	switch c {
	case 2, 4, 12, 13, 14, 15:
		return true
	}
	return false
}

func decode(probe uint16, p []byte, s *span.Span) {
	switch GrpcGrpcProbe(probe) {
	case GrpcGrpcProbeP_SERVER_REQUEST:
		r := library.Record[GrpcServerRequest](p)
		if r == nil {
			return
		}
		s.Kind = span.KindServer
		if r.Parent.Valid != 0 {
			// The RPC carried a traceparent: the caller's span is the parent
			// (the kernel already continued its trace id).
			binary.BigEndian.PutUint64(s.ParentID[:], r.Parent.SpanId)
			s.RemoteParent = true
		}
		nameRPC(s, library.CString(r.Method[:]), r.MethodLen)
		if ip, ok := ipOf(r.LocalIp[:], r.LocalIpLen); ok {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.ServerAddressKey), Value: ip}, span.Attr{Key: string(semconv.ServerPortKey), Value: r.LocalPort})
		}
		if ip, ok := ipOf(r.RemoteIp[:], r.RemoteIpLen); ok {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.ClientAddressKey), Value: ip}, span.Attr{Key: string(semconv.ClientPortKey), Value: r.RemotePort})
		}
	case GrpcGrpcProbeP_SERVER_STATUS:
		r := library.Record[GrpcServerStatus](p)
		if r == nil {
			return
		}
		s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.RPCGRPCStatusCodeKey), Value: int64(r.Code)})
		if serverError(r.Code) {
			s.Status, s.StatusMessage = span.StatusError, "gRPC "+codeName(r.Code)
		}
	case GrpcGrpcProbeP_CLIENT_REQUEST:
		r := library.Record[GrpcClientRequest](p)
		if r == nil {
			return
		}
		s.Kind = span.KindClient
		nameRPC(s, library.CString(r.Method[:]), r.MethodLen)
		if host, port := targetHostPort(library.CString(r.Target[:])); host != "" {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.ServerAddressKey), Value: host})
			if port != 0 {
				s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.ServerPortKey), Value: int64(port)})
			}
		}
	case GrpcGrpcProbeP_CLIENT_RESPONSE:
		r := library.Record[GrpcClientResponse](p)
		if r == nil {
			return
		}
		code := uint32(0)
		if r.Err != 0 {
			code = codeUnknown // an error that is not a readable *status.Error
			if r.CodeKnown != 0 {
				code = r.Code
			}
			s.Status, s.StatusMessage = span.StatusError, "gRPC "+codeName(code)
		}
		s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.RPCGRPCStatusCodeKey), Value: int64(code)})
	}
}

// nameRPC names s "service/method" and sets the rpc.* attributes from the
// full method name "/service/method".
func nameRPC(s *span.Span, full string, fullLen uint64) {
	name := strings.TrimPrefix(full, "/")
	if uint64(len(full)) < fullLen {
		name += "…"
	}
	s.Name = name
	s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.RPCSystemKey), Value: semconv.RPCSystemGRPC.Value.AsString()})
	if i := strings.LastIndexByte(name, '/'); i > 0 && uint64(len(full)) == fullLen {
		s.Attrs = append(s.Attrs,
			span.Attr{Key: string(semconv.RPCServiceKey), Value: name[:i]},
			span.Attr{Key: string(semconv.RPCMethodKey), Value: name[i+1:]},
		)
	}
}

func ipOf(b []byte, n uint64) (string, bool) {
	switch n {
	case 4:
		return netip.AddrFrom4([4]byte(b[:4])).String(), true
	case 16:
		return netip.AddrFrom16([16]byte(b[:16])).Unmap().String(), true
	}
	return "", false
}

// targetHostPort reads host and port from a dial target: "host:port",
// "dns:///host:port", "passthrough:///host:port" (not unix sockets).
func targetHostPort(target string) (string, int) {
	if scheme, rest, ok := strings.Cut(target, ":"); ok && strings.HasPrefix(rest, "//") {
		if scheme == "unix" || scheme == "unix-abstract" {
			return "", 0
		}
		rest = rest[2:]
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			rest = rest[i+1:] // drop the authority (a DNS server)
		}
		target = rest
	} else if scheme == "unix" {
		return "", 0
	}
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return target, 0
	}
	n, _ := strconv.Atoi(port)
	return host, n
}
