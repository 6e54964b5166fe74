package hertz

import (
	"strings"
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

// Server records become a server span without loading BPF: the route
// names it, a status of 0 is Hertz's implicit 200, the query is dropped.
func TestDecodeServer(t *testing.T) {
	req := HertzServerRequest{ContentLength: 12, PeerPort: 40000, PeerIpLen: 16}
	target := "/product/7?secret=1"
	req.TargetLen = uint64(len(target))
	copy(req.Method[:], "POST")
	copy(req.Target[:], target)
	copy(req.Host[:], "shop.local:8888")
	copy(req.Protocol[:], "HTTP/1.1")
	copy(req.PeerIp[:], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 9}) // v4-mapped
	req.Parent.Valid, req.Parent.SpanId = 1, 0xb7ad6b7169203331
	tests := []struct {
		name     string
		status   int64
		route    string
		wantName string
		want     int64
		err      bool
	}{
		{"implicit 200", 0, "/product/:id", "POST /product/:id", 200, false},
		{"404 without a route", 404, "", "POST", 404, false},
		{"500", 500, "/product/:id", "POST /product/:id", 500, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := HertzServerResponse{Status: tc.status, RouteLen: uint64(len(tc.route))}
			copy(resp.Route[:], tc.route)
			var s span.Span
			decode(uint16(HertzHertzProbeP_SERVER_REQUEST), raw(&req), &s)
			decode(uint16(HertzHertzProbeP_SERVER_RESPONSE), raw(&resp), &s)
			want := map[string]any{
				"http.request.method": "POST", "url.path": "/product/7", "url.scheme": "http", "network.protocol.version": "1",
				"server.address": "shop.local", "server.port": int64(8888), "client.address": "10.0.0.9", "client.port": int64(40000),
				"http.request.body.size": int64(12), "http.response.status_code": tc.want,
			}
			if tc.route != "" {
				want["http.route"] = tc.route
			}
			for k, v := range want {
				if attr(&s, k) != v {
					t.Errorf("%s = %v, want %v", k, attr(&s, k), v)
				}
			}
			if tc.route == "" && attr(&s, "http.route") != nil {
				t.Errorf("http.route %v without a matched route", attr(&s, "http.route"))
			}
			if s.Name != tc.wantName || s.Kind != span.KindServer || (s.Status == span.StatusError) != tc.err {
				t.Errorf("span %q kind %v status %v", s.Name, s.Kind, s.Status)
			}
			if !s.RemoteParent || s.ParentID.String() != "b7ad6b7169203331" {
				t.Errorf("parent %s remote %v", s.ParentID, s.RemoteParent)
			}
		})
	}
}

// Client records become a client span: Hertz's default method, the URL
// without its query, the server's default port by scheme.
func TestDecodeClient(t *testing.T) {
	tests := []struct {
		name, method, scheme, host string
		resp                       HertzClientResponse
		full, addr                 string
		port, status               int64
		err                        bool
	}{
		{"default method and port", "", "http", "inventory", HertzClientResponse{Status: 200}, "http://inventory/stock/7", "inventory", 80, 200, false},
		{"https", "PUT", "https", "[::1]", HertzClientResponse{Status: 404}, "https://[::1]/stock/7", "::1", 443, 404, true},
		{"error", "GET", "http", "127.0.0.1:9000", HertzClientResponse{Err: 1}, "http://127.0.0.1:9000/stock/7", "127.0.0.1", 9000, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := HertzClientRequest{PathLen: uint64(len("/stock/7"))}
			copy(req.Method[:], tc.method)
			copy(req.Scheme[:], tc.scheme)
			copy(req.Host[:], tc.host)
			copy(req.Path[:], "/stock/7")
			var s span.Span
			decode(uint16(HertzHertzProbeP_CLIENT_REQUEST), raw(&req), &s)
			decode(uint16(HertzHertzProbeP_CLIENT_RESPONSE), raw(&tc.resp), &s)
			method := tc.method
			if method == "" {
				method = "GET"
			}
			want := map[string]any{"http.request.method": method, "url.full": tc.full, "server.address": tc.addr, "server.port": tc.port}
			if tc.status != 0 {
				want["http.response.status_code"] = tc.status
			}
			for k, v := range want {
				if attr(&s, k) != v {
					t.Errorf("%s = %v, want %v", k, attr(&s, k), v)
				}
			}
			if s.Name != method || s.Kind != span.KindClient || (s.Status == span.StatusError) != tc.err {
				t.Errorf("span %q kind %v status %v", s.Name, s.Kind, s.Status)
			}
		})
	}
}

func TestTargetPath(t *testing.T) {
	long := "/" + strings.Repeat("a", 127)
	for _, tc := range []struct {
		target string
		full   uint64
		want   string
	}{
		{"/product/1", 10, "/product/1"},
		{"/product/1?secret=1", 19, "/product/1"},
		{"/product/1#frag", 15, "/product/1"},
		{"http://shop.local:8888/product/1?q", 34, "/product/1"},
		{"http://shop.local", 17, "/"},
		{long, 300, long + "…"},                         // truncated by the record
		{long[:100] + "?" + long[:27], 300, long[:100]}, // the query was cut, the path is whole
		{"*", 1, "*"}, // OPTIONS *
	} {
		if got := targetPath(tc.target, tc.full); got != tc.want {
			t.Errorf("targetPath(%q, %d) = %q, want %q", tc.target, tc.full, got, tc.want)
		}
	}
}

func TestProtocolVersion(t *testing.T) {
	for proto, want := range map[string]string{"HTTP/1.1": "1", "HTTP/1.0": "1", "HTTP/2.0": "2", "": "", "SPDY": ""} {
		if got := protocolVersion(proto); got != want {
			t.Errorf("protocolVersion(%q) = %q, want %q", proto, got, want)
		}
	}
}
