// Package goredis instruments github.com/redis/go-redis/v9: each command
// and each pipeline a client sends becomes a span of kind client. The
// command's name is recorded, never its keys or values.
package goredis

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type command -type pipeline -type result -type server -type goredis_field -type goredis_probe Goredis goredis.c -- -I../../include

import (
	"net"
	"strconv"
	"strings"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/bpf/library"
	"github.com/latscope/latscope/span"
)

const pkg = "github.com/redis/go-redis/v9."

// Library is go-redis v9's registry entry.
var Library = &library.Library{
	Name:   "go-redis",
	Module: "github.com/redis/go-redis/v9",
	Probes: []library.Probe{
		// Through v9.22.
		{Symbol: pkg + "(*baseClient).process", Entry: "command_entry", Exit: "result_exit"},
		// From v9.23, where process is inlined into its method value wrapper.
		{Symbol: pkg + "(*baseClient).processStartingAt", Entry: "command_entry", Exit: "result_exit"},
		{Symbol: pkg + "(*baseClient).processPipeline", Entry: "pipeline_entry_plain", Exit: "result_exit"},
		{Symbol: pkg + "(*baseClient).processTxPipeline", Entry: "pipeline_entry_tx", Exit: "result_exit"},
	},
	Fields: fields(),
	Linker: linker,
	// The latest patch of every minor release since v9.7 (October 2024).
	Versions: []string{
		"v9.7.3", "v9.8.0", "v9.9.0", "v9.10.0", "v9.11.0", "v9.12.1", "v9.13.0", "v9.14.1",
		"v9.16.0", "v9.17.3", "v9.18.0", "v9.19.0", "v9.20.1", "v9.21.0", "v9.22.0", "v9.23.0",
	},
	Spec:   LoadGoredis,
	Decode: decode,
}

const linker = `package main

import (
	"context"
	"os"

	"github.com/redis/go-redis/v9"
)

func main() {
	if len(os.Args) > 99 { // never: only links the client, its commands and pipelines
		c := redis.NewClient(&redis.Options{Addr: os.Args[1]})
		c.Get(context.Background(), os.Args[2])
		c.Pipelined(context.Background(), func(redis.Pipeliner) error { return nil })
		c.TxPipelined(context.Background(), func(redis.Pipeliner) error { return nil })
	}
}
`

func fields() []string {
	byEnum := map[GoredisGoredisField]string{
		GoredisGoredisFieldF_CLIENT_OPT:      pkg + "baseClient.opt",
		GoredisGoredisFieldF_OPTIONS_NETWORK: pkg + "Options.Network",
		GoredisGoredisFieldF_OPTIONS_ADDR:    pkg + "Options.Addr",
		GoredisGoredisFieldF_OPTIONS_DB:      pkg + "Options.DB",
		GoredisGoredisFieldF_CMD_ARGS:        pkg + "baseCmd.args",
	}
	return library.FieldNames(byEnum, GoredisGoredisFieldF_FIELD_MAX)
}

// nilReply is redis.Nil's message: a key that does not exist, not an error.
const nilReply = "redis: nil"

func decode(probe uint16, p []byte, s *span.Span) {
	switch GoredisGoredisProbe(probe) {
	case GoredisGoredisProbeP_COMMAND:
		r := library.Record[GoredisCommand](p)
		if r == nil {
			return
		}
		s.Kind = span.KindClient
		s.Name = "redis"
		s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.DBSystemNameKey), Value: semconv.DBSystemNameRedis.Value.AsString()})
		if name, ok := commandName(library.CString(r.Name[:]), r.NameLen); ok {
			s.Name = name
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.DBOperationNameKey), Value: name})
		}
		s.Attrs = appendServer(s.Attrs, &r.Srv)
	case GoredisGoredisProbeP_PIPELINE:
		r := library.Record[GoredisPipeline](p)
		if r == nil {
			return
		}
		// go-redis's own names for the two: its OpenTelemetry hooks use them.
		op := "PIPELINE"
		if r.Tx != 0 {
			op = "MULTI"
		}
		s.Kind = span.KindClient
		s.Name = op
		s.Attrs = append(s.Attrs,
			span.Attr{Key: string(semconv.DBSystemNameKey), Value: semconv.DBSystemNameRedis.Value.AsString()},
			span.Attr{Key: string(semconv.DBOperationNameKey), Value: op},
		)
		n := r.Count
		if r.Tx != 0 && n >= 2 {
			n -= 2 // the MULTI and EXEC go-redis wraps a transaction in
		}
		if n >= 2 { // semconv: a batch has two or more operations
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.DBOperationBatchSizeKey), Value: int64(n)})
		}
		s.Attrs = appendServer(s.Attrs, &r.Srv)
	case GoredisGoredisProbeP_RESULT:
		if r := library.Record[GoredisResult](p); r != nil && r.NameLen > 0 && s.Name == "redis" {
			if name, ok := commandName(library.CString(r.Name[:]), r.NameLen); ok {
				s.Name = name
				s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.DBOperationNameKey), Value: name})
			}
		}
		r := library.Record[GoredisResult](p)
		if r == nil || r.Err == 0 {
			return
		}
		head := string(r.ErrHead[:min(r.ErrLen, uint64(len(r.ErrHead)))])
		if r.ErrLen == uint64(len(nilReply)) && head == nilReply {
			return // a miss: the command worked
		}
		s.Status = span.StatusError
		// A server error reply starts with an upper-case code ("ERR",
		// "WRONGTYPE"); the rest of the message may quote arguments, so
		// only the code is kept.
		if code, ok := errorCode(head, r.ErrLen); ok {
			s.StatusMessage = "redis error " + code
			s.Attrs = append(s.Attrs,
				span.Attr{Key: string(semconv.DBResponseStatusCodeKey), Value: code},
				span.Attr{Key: string(semconv.ErrorTypeKey), Value: code},
			)
			return
		}
		s.StatusMessage = "go-redis returned an error (no server reply)"
		s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.ErrorTypeKey), Value: semconv.ErrorTypeOther.Value.AsString()})
	}
}

// commandName upper-cases a command name read from args[0]; ok is false
// when it was truncated or is not a name (args[0] held no string).
func commandName(name string, full uint64) (string, bool) {
	if name == "" || uint64(len(name)) != full {
		return "", false
	}
	for _, c := range []byte(name) {
		// Module commands have dots: "JSON.SET", "FT.SEARCH".
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '|') {
			return "", false
		}
	}
	return strings.ToUpper(name), true
}

// errorCode returns the code an error reply starts with: upper-case
// letters up to a space or the end of the message.
func errorCode(head string, full uint64) (string, bool) {
	code, _, spaced := strings.Cut(head, " ")
	if code == "" || !spaced && uint64(len(head)) != full {
		return "", false
	}
	for _, c := range []byte(code) {
		if c < 'A' || c > 'Z' {
			return "", false
		}
	}
	return code, true
}

func appendServer(attrs []span.Attr, srv *GoredisServer) []span.Attr {
	addr := library.CString(srv.Addr[:])
	if addr == "" {
		return attrs
	}
	if library.CString(srv.Network[:]) == "unix" {
		attrs = append(attrs, span.Attr{Key: string(semconv.ServerAddressKey), Value: addr})
	} else if host, port, err := net.SplitHostPort(addr); err == nil {
		attrs = append(attrs, span.Attr{Key: string(semconv.ServerAddressKey), Value: host})
		if n, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, span.Attr{Key: string(semconv.ServerPortKey), Value: int64(n)})
		}
	}
	// Redis's database index is its namespace.
	return append(attrs, span.Attr{Key: string(semconv.DBNamespaceKey), Value: strconv.FormatInt(srv.Db, 10)})
}
