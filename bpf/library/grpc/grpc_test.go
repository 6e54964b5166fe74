package grpclib

import (
	"testing"
	"unsafe"

	"github.com/latscope/latscope/span"
)

func raw[T any](r *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(r)), unsafe.Sizeof(*r))
}

func attr(s *span.Span, key string) any {
	for _, a := range s.Attrs {
		if a.Key == key {
			return a.Value
		}
	}
	return nil
}

// Records become span fields without loading BPF.
func TestDecode(t *testing.T) {
	req := GrpcClientRequest{MethodLen: uint64(len("/demo.Pricing/GetPrice"))}
	copy(req.Method[:], "/demo.Pricing/GetPrice")
	copy(req.Target[:], "dns:///localhost:50051")
	tests := []struct {
		name       string
		resp       GrpcClientResponse
		code       int64
		statusCode span.StatusCode
	}{
		{"ok", GrpcClientResponse{}, 0, span.StatusUnset},
		{"status error", GrpcClientResponse{Err: 1, Code: 5, CodeKnown: 1}, 5, span.StatusError},
		{"other error", GrpcClientResponse{Err: 1, Code: 77}, 2, span.StatusError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s span.Span
			decode(uint16(GrpcGrpcProbeP_CLIENT_REQUEST), raw(&req), &s)
			decode(uint16(GrpcGrpcProbeP_CLIENT_RESPONSE), raw(&tc.resp), &s)
			want := map[string]any{"rpc.system": "grpc", "rpc.service": "demo.Pricing", "rpc.method": "GetPrice",
				"server.address": "localhost", "server.port": int64(50051), "rpc.grpc.status_code": tc.code}
			for k, v := range want {
				if attr(&s, k) != v {
					t.Errorf("%s = %v, want %v", k, attr(&s, k), v)
				}
			}
			if s.Name != "demo.Pricing/GetPrice" || s.Kind != span.KindClient || s.Status != tc.statusCode {
				t.Errorf("span %q kind %v status %v", s.Name, s.Kind, s.Status)
			}
		})
	}
}

func TestTargetHostPort(t *testing.T) {
	for target, want := range map[string]struct {
		host string
		port int
	}{
		"127.0.0.1:8080":              {"127.0.0.1", 8080},
		"dns:///svc.local:443":        {"svc.local", 443},
		"dns://8.8.8.8/svc.local:443": {"svc.local", 443},
		"passthrough:///[::1]:9000":   {"::1", 9000},
		"unix:///tmp/grpc.sock":       {"", 0},
		"unix:relative.sock":          {"", 0},
		"localhost":                   {"localhost", 0},
	} {
		if h, p := targetHostPort(target); h != want.host || p != want.port {
			t.Errorf("%q: %q %d, want %q %d", target, h, p, want.host, want.port)
		}
	}
}
