package nethttp

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

// A server request's records become span fields without loading BPF:
// the status on the wire when the handler left it to net/http (200,
// unless it hijacked the connection), none when the writer could not be
// read, and the scheme the request came in with.
func TestDecodeServer(t *testing.T) {
	tests := []struct {
		name     string
		tls      uint8
		resp     NethttpServerResponse
		scheme   string
		status   any
		spanCode span.StatusCode
	}{
		{"written", 0, NethttpServerResponse{Status: 404, Written: 19}, "http", int64(404), span.StatusUnset},
		{"nothing written", 0, NethttpServerResponse{}, "http", int64(200), span.StatusUnset},
		{"hijacked", 0, NethttpServerResponse{Hijacked: 1}, "http", nil, span.StatusUnset},
		{"writer unreadable", 0, NethttpServerResponse{Status: -1}, "http", nil, span.StatusUnset},
		{"server error over TLS", 1, NethttpServerResponse{Status: 503}, "https", int64(503), span.StatusError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := NethttpServerRequest{Tls: tc.tls, ProtoMajor: 1}
			copy(req.Method[:], "GET")
			copy(req.Path[:], "/items/1")
			var s span.Span
			decode(uint16(NethttpNethttpProbeP_SERVER_REQUEST), raw(&req), &s)
			decode(uint16(NethttpNethttpProbeP_SERVER_RESPONSE), raw(&tc.resp), &s)
			if got := attr(&s, "url.scheme"); got != tc.scheme {
				t.Errorf("url.scheme %v, want %s", got, tc.scheme)
			}
			if got := attr(&s, "http.response.status_code"); got != tc.status || s.Status != tc.spanCode {
				t.Errorf("status code %v (%v), want %v (%v)", got, s.Status, tc.status, tc.spanCode)
			}
		})
	}
}

// An HTTP/1 request's incoming traceparent costs no probe of its own:
// server_entry reads it from the request's Header map. Nothing hooks
// net/textproto, whose header reading runs once per line, on every
// server request and every client's response.
func TestNoHeaderLineProbe(t *testing.T) {
	spec, err := LoadNethttp()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := spec.Programs["header_line"]; ok {
		t.Error("the object still has a header_line program")
	}
	for _, m := range []string{"incoming", "received_zero"} {
		if _, ok := spec.Maps[m]; ok {
			t.Errorf("the object still has map %s", m)
		}
	}
	for _, p := range Library.Probes {
		if strings.HasPrefix(p.Symbol, "net/textproto.") || strings.HasPrefix(p.Callee, "net/textproto.") {
			t.Errorf("probe %+v hooks net/textproto", p)
		}
		for _, prog := range []string{p.Entry, p.Exit, p.Calling, p.Returned} {
			if _, ok := spec.Programs[prog]; prog != "" && !ok {
				t.Errorf("probe %s: program %s not in the object", p.Symbol, prog)
			}
		}
	}
}
