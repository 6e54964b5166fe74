package goredis

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/latscope/latscope/span"
)

// bytesOf is r's memory, as the ring buffer delivers it.
func bytesOf[T any](r *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(r)), unsafe.Sizeof(*r))
}

func server(network, addr string, db int64) GoredisServer {
	var s GoredisServer
	copy(s.Network[:], network)
	copy(s.Addr[:], addr)
	s.Db = db
	return s
}

func TestDecodeCommand(t *testing.T) {
	for _, tt := range []struct {
		name, network, addr string
		nameLen             uint64 // 0: len(name)
		want                string
	}{
		{name: "get", network: "tcp", addr: "127.0.0.1:6379", want: "GET [db.system.name=redis db.operation.name=GET server.address=127.0.0.1 server.port=6379 db.namespace=0]"},
		{name: "JSON.SET", network: "tcp", addr: "[::1]:7000", want: "JSON.SET [db.system.name=redis db.operation.name=JSON.SET server.address=::1 server.port=7000 db.namespace=0]"},
		{name: "hset", network: "unix", addr: "/run/redis.sock", want: "HSET [db.system.name=redis db.operation.name=HSET server.address=/run/redis.sock db.namespace=0]"},
		// args[0] held something else than a name: no operation.
		{name: "\x01\x02", network: "tcp", addr: "h:1", want: "redis [db.system.name=redis server.address=h server.port=1 db.namespace=0]"},
		{name: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", nameLen: 40, addr: "h:1", want: "redis [db.system.name=redis server.address=h server.port=1 db.namespace=0]"},
	} {
		var r GoredisCommand
		r.Srv = server(tt.network, tt.addr, 0)
		copy(r.Name[:], tt.name)
		r.NameLen = uint64(len(tt.name))
		if tt.nameLen != 0 {
			r.NameLen = tt.nameLen
		}
		var s span.Span
		decode(uint16(GoredisGoredisProbeP_COMMAND), bytesOf(&r), &s)
		if got := describe(&s); got != tt.want || s.Kind != span.KindClient {
			t.Errorf("%q: got %s (kind %v), want %s", tt.name, got, s.Kind, tt.want)
		}
	}
}

func TestDecodePipeline(t *testing.T) {
	for _, tt := range []struct {
		tx    uint8
		count uint64
		want  string
	}{
		{0, 3, "PIPELINE [db.system.name=redis db.operation.name=PIPELINE db.operation.batch.size=3 server.address=127.0.0.1 server.port=6379 db.namespace=2]"},
		{1, 4, "MULTI [db.system.name=redis db.operation.name=MULTI db.operation.batch.size=2 server.address=127.0.0.1 server.port=6379 db.namespace=2]"},
		{0, 1, "PIPELINE [db.system.name=redis db.operation.name=PIPELINE server.address=127.0.0.1 server.port=6379 db.namespace=2]"},
		{1, 3, "MULTI [db.system.name=redis db.operation.name=MULTI server.address=127.0.0.1 server.port=6379 db.namespace=2]"},
	} {
		r := GoredisPipeline{Srv: server("tcp", "127.0.0.1:6379", 2), Count: tt.count, Tx: tt.tx}
		var s span.Span
		decode(uint16(GoredisGoredisProbeP_PIPELINE), bytesOf(&r), &s)
		if got := describe(&s); got != tt.want {
			t.Errorf("got %s, want %s", got, tt.want)
		}
	}
}

// Results: redis.Nil is a miss, server replies give their code only.
func TestDecodeResult(t *testing.T) {
	for _, tt := range []struct {
		err     uint64
		message string
		full    uint64 // 0: len(message)
		want    string
	}{
		{0, "", 0, "ok []"},
		{1, "redis: nil", 0, "ok []"},
		{1, "ERR value is not an integer or out of range", 0, "error redis error ERR [db.response.status_code=ERR error.type=ERR]"},
		{1, "WRONGTYPE Operation against a key holding the wrong kind of value", 0, "error redis error WRONGTYPE [db.response.status_code=WRONGTYPE error.type=WRONGTYPE]"},
		{1, "NOSCRIPT", 0, "error redis error NOSCRIPT [db.response.status_code=NOSCRIPT error.type=NOSCRIPT]"},
		// A code cut by the 16-byte head is not a code.
		{1, "ABCDEFGHIJKLMNOP", 20, "error go-redis returned an error (no server reply) [error.type=_OTHER]"},
		// Network and context errors: not a reply (or no message read).
		{1, "dial tcp", 0, "error go-redis returned an error (no server reply) [error.type=_OTHER]"},
		{1, "", 0, "error go-redis returned an error (no server reply) [error.type=_OTHER]"},
		// Longer than "redis: nil" with the same start: not the miss.
		{1, "redis: nil", 12, "error go-redis returned an error (no server reply) [error.type=_OTHER]"},
	} {
		r := GoredisResult{Err: tt.err, ErrLen: uint64(len(tt.message))}
		if tt.full != 0 {
			r.ErrLen = tt.full
		}
		copy(r.ErrHead[:], tt.message)
		var s span.Span
		decode(uint16(GoredisGoredisProbeP_RESULT), bytesOf(&r), &s)
		got := "ok"
		if s.Status == span.StatusError {
			got = "error " + s.StatusMessage
		}
		got += fmt.Sprint(" ", attrs(&s))
		if got != tt.want {
			t.Errorf("%q: got %s, want %s", tt.message, got, tt.want)
		}
	}
}

func TestFieldsComplete(t *testing.T) {
	for i, f := range Library.Fields {
		if f == "" {
			t.Errorf("field %d has no name", i)
		}
	}
}

func describe(s *span.Span) string { return s.Name + " " + fmt.Sprint(attrs(s)) }

func attrs(s *span.Span) []string {
	out := []string{}
	for _, a := range s.Attrs {
		out = append(out, fmt.Sprintf("%s=%v", a.Key, a.Value))
	}
	return out
}
