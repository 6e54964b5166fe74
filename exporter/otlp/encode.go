package otlp

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/latscope/latscope/span"
)

// Spans are encoded straight into protobuf's wire format: building
// go.opentelemetry.io/proto/otlp messages and marshalling them cost ~3 µs
// of CPU per net/http span (protobuf-go sizes and encodes every
// attribute's oneof through its reflection tables, and each attribute is
// three or four allocations), more than the whole export may cost
// (BenchmarkMarshal compares the two). Resources and the scope, once per
// process, still go through the official types. TestEncodeMatchesProto
// checks the bytes against proto.Marshal of the messages for every span
// kind, status and attribute type.

// Field numbers of opentelemetry/proto/trace/v1/trace.proto and
// common/v1/common.proto.
const (
	fieldScopeSpansSpans = 2

	fieldSpanTraceID      = 1
	fieldSpanSpanID       = 2
	fieldSpanParentSpanID = 4
	fieldSpanName         = 5
	fieldSpanKind         = 6
	fieldSpanStart        = 7
	fieldSpanEnd          = 8
	fieldSpanAttributes   = 9
	fieldSpanStatus       = 15
	fieldSpanFlags        = 16

	fieldStatusMessage = 2
	fieldStatusCode    = 3

	fieldKeyValueKey   = 1
	fieldKeyValueValue = 2

	fieldAnyString = 1
	fieldAnyBool   = 2
	fieldAnyInt    = 3
	fieldAnyDouble = 4
)

// appendSpan appends s, with attributes attrs (s.AppendAttributes), as a
// ScopeSpans.spans field: the bytes proto.Marshal writes for the
// tracepb.Span protoSpan (encode_test.go) builds, fields in number order.
func appendSpan(b []byte, s *span.Span, attrs []span.Attr) []byte {
	b = protowire.AppendTag(b, fieldScopeSpansSpans, protowire.BytesType)
	// The length goes before the body: two bytes are reserved (bodies of
	// 128 B to 16 KiB, most spans) and the body moved if it needs another
	// size.
	at := len(b)
	b = append(b, 0, 0)
	b = appendSpanBody(b, s, attrs)
	n := len(b) - at - 2
	switch k := protowire.SizeVarint(uint64(n)); {
	case k < 2:
		copy(b[at+1:], b[at+2:])
		b = b[:len(b)-1]
	case k > 2:
		b = append(b, make([]byte, k-2)...)
		copy(b[at+k:], b[at+2:at+2+n])
	}
	protowire.AppendVarint(b[at:at], uint64(n))
	return b
}

func appendSpanBody(b []byte, s *span.Span, attrs []span.Attr) []byte {
	b = appendBytes(b, fieldSpanTraceID, s.TraceID[:])
	b = appendBytes(b, fieldSpanSpanID, s.SpanID[:])
	if !s.ParentID.IsZero() {
		b = appendBytes(b, fieldSpanParentSpanID, s.ParentID[:])
	}
	b = appendString(b, fieldSpanName, validUTF8(s.Name))
	// Kinds and status codes share OpenTelemetry's numbering; enums are
	// int32 varints.
	if k := int32(s.Kind); k != 0 {
		b = protowire.AppendTag(b, fieldSpanKind, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(k))
	}
	if t := uint64(max(0, s.Start.UnixNano())); t != 0 {
		b = protowire.AppendTag(b, fieldSpanStart, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, t)
	}
	if t := uint64(max(0, s.End.UnixNano())); t != 0 {
		b = protowire.AppendTag(b, fieldSpanEnd, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, t)
	}
	for _, a := range attrs {
		b = appendKeyValue(b, fieldSpanAttributes, a)
	}
	if s.Status == span.StatusError || s.Status == span.StatusOK {
		msg := ""
		code := tracepb.Status_STATUS_CODE_OK
		if s.Status == span.StatusError {
			msg, code = validUTF8(s.StatusMessage), tracepb.Status_STATUS_CODE_ERROR
		}
		n := 0
		if msg != "" {
			n += 1 + protowire.SizeBytes(len(msg))
		}
		n += 1 + protowire.SizeVarint(uint64(code))
		b = protowire.AppendTag(b, fieldSpanStatus, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = appendString(b, fieldStatusMessage, msg)
		b = protowire.AppendTag(b, fieldStatusCode, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(code))
	}
	// The W3C flags of the parent context (sampled) and whether it came
	// from another process, as the SDK's exporter sets them.
	flags := uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK)
	if s.RemoteParent {
		flags |= uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)
	}
	b = protowire.AppendTag(b, fieldSpanFlags, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, flags)
}

// appendKeyValue appends a as KeyValue field num. Values are encoded as
// keyValue converts them.
func appendKeyValue(b []byte, num protowire.Number, a span.Attr) []byte {
	key := validUTF8(a.Key)
	// The AnyValue's body: one field of its oneof, written even when zero.
	var (
		typ  protowire.Type
		vnum protowire.Number
		u    uint64
		str  string
		vlen int
	)
	switch x := a.Value.(type) {
	case string:
		str = validUTF8(x)
		vnum, typ, vlen = fieldAnyString, protowire.BytesType, protowire.SizeBytes(len(str))
	case int64:
		vnum, typ, u = fieldAnyInt, protowire.VarintType, uint64(x)
	case int:
		vnum, typ, u = fieldAnyInt, protowire.VarintType, uint64(int64(x))
	case float64:
		vnum, typ, u, vlen = fieldAnyDouble, protowire.Fixed64Type, math.Float64bits(x), 8
	case bool:
		vnum, typ, u = fieldAnyBool, protowire.VarintType, protowire.EncodeBool(x)
	default:
		str = validUTF8(fmt.Sprint(x))
		vnum, typ, vlen = fieldAnyString, protowire.BytesType, protowire.SizeBytes(len(str))
	}
	if typ == protowire.VarintType {
		vlen = protowire.SizeVarint(u)
	}
	vlen++ // the tag: field numbers below 16 take one byte
	n := 1 + protowire.SizeVarint(uint64(vlen)) + vlen
	if key != "" {
		n += 1 + protowire.SizeBytes(len(key))
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = appendString(b, fieldKeyValueKey, key)
	b = protowire.AppendTag(b, fieldKeyValueValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(vlen))
	b = protowire.AppendTag(b, vnum, typ)
	switch typ {
	case protowire.BytesType:
		b = protowire.AppendString(b, str)
	case protowire.Fixed64Type:
		b = protowire.AppendFixed64(b, u)
	default:
		b = protowire.AppendVarint(b, u)
	}
	return b
}

// appendString appends a proto3 string field, absent when empty.
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendBytes appends a proto3 bytes field, absent when empty.
func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// validUTF8 returns s with invalid UTF-8 replaced by U+FFFD: protobuf
// strings must be UTF-8, and a receiver built with protobuf-go rejects
// the whole request otherwise (so did proto.Marshal here, failing the
// whole batch). Label values and paths read from a process's memory may
// be cut in the middle of a character.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// resourceField returns the ResourceSpans.resource field of p's spans.
func resourceField(p *span.Process) ([]byte, error) {
	var attrs []span.Attr
	if p != nil {
		attrs = p.Attributes()
	}
	attrs = append(attrs, span.Attr{Key: "telemetry.distro.name", Value: "latscope"}, span.Attr{Key: "telemetry.distro.version", Value: span.Scope.Version})
	return proto.Marshal(&tracepb.ResourceSpans{Resource: &resourcepb.Resource{Attributes: keyValues(attrs)}})
}

// scopeField is the ScopeSpans.scope field of every batch.
var scopeField = func() []byte {
	b, err := proto.Marshal(&tracepb.ScopeSpans{Scope: &commonpb.InstrumentationScope{Name: validUTF8(span.Scope.Name), Version: validUTF8(span.Scope.Version)}})
	if err != nil {
		panic(fmt.Sprintf("OTLP scope: %v", err))
	}
	return b
}()

// keyValues converts attributes to OTLP's messages, values as
// appendKeyValue encodes them.
func keyValues(in []span.Attr) []*commonpb.KeyValue {
	out := make([]*commonpb.KeyValue, len(in))
	for i, a := range in {
		out[i] = &commonpb.KeyValue{Key: validUTF8(a.Key), Value: anyValue(a.Value)}
	}
	return out
}

func anyValue(v any) *commonpb.AnyValue {
	switch x := v.(type) {
	case string:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: validUTF8(x)}}
	case int64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: x}}
	case int:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(x)}}
	case float64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: x}}
	case bool:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: x}}
	default:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: validUTF8(fmt.Sprint(x))}}
	}
}
