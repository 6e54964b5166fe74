package otlp

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	"github.com/latscope/latscope/span"
)

// protoRequest builds the request body for batch with the official
// message types, as this exporter did before it encoded spans itself
// (resources cached by process, a batch's spans and a span's attributes
// allocated together): the reference for appendSpan and batch.request,
// and BenchmarkMarshal's "proto".
func protoRequest(batch []*span.Span, resources map[*span.Process]*resourcepb.Resource) []*tracepb.ResourceSpans {
	var out []*tracepb.ResourceSpans
	byProc := map[*span.Process]*tracepb.ScopeSpans{}
	spans := make([]tracepb.Span, len(batch))
	for i, s := range batch {
		ss, ok := byProc[s.Process]
		if !ok {
			ss = &tracepb.ScopeSpans{Scope: &commonpb.InstrumentationScope{Name: span.Scope.Name, Version: span.Scope.Version}}
			byProc[s.Process] = ss
			r := resources[s.Process]
			if r == nil {
				var attrs []span.Attr
				if s.Process != nil {
					attrs = s.Process.Attributes()
				}
				attrs = append(attrs, span.Attr{Key: "telemetry.distro.name", Value: "latscope"}, span.Attr{Key: "telemetry.distro.version", Value: span.Scope.Version})
				r = &resourcepb.Resource{Attributes: protoKeyValues(attrs)}
				resources[s.Process] = r
			}
			out = append(out, &tracepb.ResourceSpans{Resource: r, ScopeSpans: []*tracepb.ScopeSpans{ss}})
		}
		protoSpan(&spans[i], s)
		ss.Spans = append(ss.Spans, &spans[i])
	}
	return out
}

// protoSpan fills p with s.
func protoSpan(p *tracepb.Span, s *span.Span) {
	traceID, spanID := s.TraceID, s.SpanID
	p.TraceId = traceID[:]
	p.SpanId = spanID[:]
	if !s.ParentID.IsZero() {
		parentID := s.ParentID
		p.ParentSpanId = parentID[:]
	}
	p.Flags = uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK)
	if s.RemoteParent {
		p.Flags |= uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)
	}
	p.Name = s.Name
	p.Kind = tracepb.Span_SpanKind(s.Kind)
	p.StartTimeUnixNano = uint64(max(0, s.Start.UnixNano()))
	p.EndTimeUnixNano = uint64(max(0, s.End.UnixNano()))
	p.Attributes = protoKeyValues(s.Attributes())
	switch s.Status {
	case span.StatusError:
		p.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: s.StatusMessage}
	case span.StatusOK:
		p.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_OK}
	}
}

// protoKeyValues converts attributes, allocating the values of one span
// together.
func protoKeyValues(in []span.Attr) []*commonpb.KeyValue {
	kvs := make([]commonpb.KeyValue, len(in))
	vals := make([]commonpb.AnyValue, len(in))
	out := make([]*commonpb.KeyValue, len(in))
	for i, a := range in {
		v := &vals[i]
		switch x := a.Value.(type) {
		case string:
			v.Value = &commonpb.AnyValue_StringValue{StringValue: x}
		case int64:
			v.Value = &commonpb.AnyValue_IntValue{IntValue: x}
		case int:
			v.Value = &commonpb.AnyValue_IntValue{IntValue: int64(x)}
		case float64:
			v.Value = &commonpb.AnyValue_DoubleValue{DoubleValue: x}
		case bool:
			v.Value = &commonpb.AnyValue_BoolValue{BoolValue: x}
		default:
			v.Value = &commonpb.AnyValue_StringValue{StringValue: fmt.Sprint(x)}
		}
		kvs[i] = commonpb.KeyValue{Key: a.Key, Value: v}
		out[i] = &kvs[i]
	}
	return out
}

// encodeCases are spans of every kind, status and attribute type, and of
// every size class of the span's length prefix.
func encodeCases() []*span.Span {
	proc := &span.Process{PID: 7, ServiceName: "catalog", Executable: "catalog", GoVersion: "go1.26.8",
		Resource: []span.Attr{{Key: "k8s.pod.name", Value: "catalog-0"}, {Key: "k8s.pod.uid.n", Value: int64(3)}}}
	start := time.Unix(1764500000, 123)
	base := func(i int) *span.Span {
		return &span.Span{
			TraceID: span.TraceID{1, byte(i), 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
			SpanID:  span.SpanID{0xaa, byte(i), 3}, ParentID: span.SpanID{0xbb, byte(i)},
			Name: fmt.Sprintf("op %d", i), Start: start, End: start.Add(time.Duration(i+1) * time.Microsecond),
			Process: proc, GoID: uint64(100 + i), StartTID: 9, EndTID: 9, CPU: 1,
		}
	}
	var out []*span.Span
	for k := span.KindUnspecified; k <= span.KindConsumer+1; k++ { // +1: outside OpenTelemetry's kinds
		s := base(len(out))
		s.Kind = k
		out = append(out, s)
	}
	for _, st := range []span.StatusCode{span.StatusUnset, span.StatusOK, span.StatusError} {
		for _, msg := range []string{"", "HTTP 503"} {
			s := base(len(out))
			s.Kind, s.Status, s.StatusMessage = span.KindServer, st, msg
			out = append(out, s)
		}
	}
	values := []any{
		"", "GET", "/ü/ñ", strings.Repeat("x", 300), int64(0), int64(-1), int64(math.MinInt64), int64(math.MaxInt64),
		0, -42, 1 << 40, 0.0, -2.5, math.Inf(1), math.NaN(), math.SmallestNonzeroFloat64, true, false,
		uint32(7), []string{"a", "b"}, time.Second, nil, struct{ A int }{1},
	}
	for i, v := range values {
		s := base(len(out))
		s.Attrs = []span.Attr{{Key: fmt.Sprintf("attr.%d", i), Value: v}, {Key: "", Value: v}}
		out = append(out, s)
	}
	// Every Go fact the span model exports.
	s := base(len(out))
	s.Kind, s.Function, s.File, s.Line = span.KindInternal, "main.work", "/src/main.go", 42
	s.StartTID, s.ParentGoID, s.Unwound, s.Orphan = 10, 3, true, true
	s.Time = &span.TimeSplit{Full: true, NS: [span.NumTimeCategories]int64{5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 10}}
	out = append(out, s)
	s = base(len(out))
	s.Time = &span.TimeSplit{NS: [span.NumTimeCategories]int64{span.TimeGCSTW: 1500, span.TimeGCAssist: 0}}
	out = append(out, s)
	// A root without a remote parent, and one with; no name; times at
	// and before the epoch.
	s = base(len(out))
	s.ParentID, s.Name, s.Start, s.End = span.SpanID{}, "", time.Unix(0, 0), time.Unix(-5, 0)
	out = append(out, s)
	s = base(len(out))
	s.RemoteParent = true
	out = append(out, s)
	// Bodies past 16 KiB (a three-byte length) and below 128 B (one).
	s = base(len(out))
	s.Attrs = []span.Attr{{Key: "db.query.text", Value: strings.Repeat("SELECT 1; ", 2000)}}
	out = append(out, s)
	s = base(len(out))
	s.ParentID, s.Name, s.TraceID, s.SpanID, s.GoID, s.EndTID = span.SpanID{}, "", span.TraceID{1}, span.SpanID{1}, 1, 1
	out = append(out, s)
	// Spans of another process and of none.
	s = base(len(out))
	s.Process = &span.Process{PID: 8, ServiceName: "pricing"}
	out = append(out, s)
	s = base(len(out))
	s.Process = nil
	out = append(out, s)
	return out
}

// TestEncodeMatchesProto: each span encodes to the bytes proto.Marshal
// writes for the official messages, and decodes back with the official
// types to an equal message.
func TestEncodeMatchesProto(t *testing.T) {
	sizes := map[int]bool{}
	for i, s := range encodeCases() {
		want := &tracepb.ScopeSpans{Spans: []*tracepb.Span{{}}}
		protoSpan(want.Spans[0], s)
		wantBytes, err := proto.Marshal(want)
		if err != nil {
			t.Fatalf("span %d: proto.Marshal: %v", i, err)
		}
		got := appendSpan([]byte("prefix"), s, s.Attributes())
		if !bytes.HasPrefix(got, []byte("prefix")) {
			t.Fatalf("span %d: bytes before it changed", i)
		}
		got = got[len("prefix"):]
		var decoded tracepb.ScopeSpans
		if err := proto.Unmarshal(got, &decoded); err != nil {
			t.Fatalf("span %d: decode: %v", i, err)
		}
		if !proto.Equal(&decoded, want) {
			t.Errorf("span %d decodes to\n%v\nwant\n%v", i, &decoded, want)
		}
		if !bytes.Equal(got, wantBytes) {
			t.Errorf("span %d: %d bytes differ from proto.Marshal's %d", i, len(got), len(wantBytes))
		}
		// The length prefix's size: what the field holds less its tag
		// and body.
		sizes[len(got)-1-proto.Size(decoded.Spans[0])] = true
	}
	if !sizes[1] || !sizes[2] || !sizes[3] {
		t.Errorf("length prefixes of %v bytes encoded, want 1, 2 and 3", sizes)
	}
}

// TestBatchRequestMatchesProto: a batch of spans of several processes,
// sent as the clients send it, is the request the official messages make.
func TestBatchRequestMatchesProto(t *testing.T) {
	spans := encodeCases()
	e := &Exporter{resources: map[*span.Process][]byte{}}
	b := newBatch()
	for round := 0; round < 3; round++ { // reused batches hold nothing of the last
		for _, s := range spans[round:] {
			if err := b.add(s, s.Attributes(), e.resource); err != nil {
				t.Fatal(err)
			}
		}
		if b.n != len(spans)-round {
			t.Fatalf("batch counts %d spans, want %d", b.n, len(spans)-round)
		}
		got, err := proto.Marshal(&collectorpb.ExportTraceServiceRequest{ResourceSpans: b.request()})
		if err != nil {
			t.Fatal(err)
		}
		want := &collectorpb.ExportTraceServiceRequest{ResourceSpans: protoRequest(spans[round:], map[*span.Process]*resourcepb.Resource{})}
		var decoded collectorpb.ExportTraceServiceRequest
		if err := proto.Unmarshal(got, &decoded); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if len(decoded.ResourceSpans) != 3 {
			t.Errorf("%d ResourceSpans, want one per process (3)", len(decoded.ResourceSpans))
		}
		if !proto.Equal(&decoded, want) {
			t.Errorf("round %d: request decodes to\n%v\nwant\n%v", round, &decoded, want)
		}
		wantBytes, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, wantBytes) {
			t.Errorf("round %d: request bytes differ from proto.Marshal's", round)
		}
		b.reset()
	}
}

// TestEncodeInvalidUTF8: strings that are not UTF-8 (read from a
// process's memory, cut mid-character) are sent with U+FFFD in place of
// the bad bytes; proto.Marshal refused them, failing the whole batch.
func TestEncodeInvalidUTF8(t *testing.T) {
	bad := "caf\xc3"
	s := &span.Span{TraceID: span.TraceID{1}, SpanID: span.SpanID{2}, Name: "GET " + bad, Status: span.StatusError, StatusMessage: bad,
		Attrs: []span.Attr{{Key: "url.path" + bad, Value: "/" + bad}}}
	var decoded tracepb.ScopeSpans
	if err := proto.Unmarshal(appendSpan(nil, s, s.Attributes()), &decoded); err != nil {
		t.Fatalf("decode: %v", err)
	}
	p := decoded.Spans[0]
	kv := p.Attributes[len(p.Attributes)-1]
	if p.Name != "GET caf\uFFFD" || p.Status.Message != "caf\uFFFD" || kv.Key != "url.pathcaf\uFFFD" || kv.Value.GetStringValue() != "/caf\uFFFD" {
		t.Errorf("decoded %v", p)
	}
	r, err := resourceField(&span.Process{ServiceName: bad})
	if err != nil {
		t.Fatalf("resource with a bad service name: %v", err)
	}
	var rs tracepb.ResourceSpans
	if err := proto.Unmarshal(r, &rs); err != nil || attr(rs.Resource.Attributes, "service.name").GetStringValue() != "caf\uFFFD" {
		t.Errorf("resource %v: %v", &rs, err)
	}
}

// BenchmarkMarshal compares, per span, the request body built from the
// official messages and marshalled (the exporter's way before), only
// marshalled (messages built once), and the spans encoded directly
// (batch, as Export does) and marshalled the way the clients do, for 512
// net/http spans.
func BenchmarkMarshal(b *testing.B) {
	spans := benchSpans(512)
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		resources := map[*span.Process]*resourcepb.Resource{}
		for i := 0; i < b.N; i += len(spans) {
			req := &collectorpb.ExportTraceServiceRequest{ResourceSpans: protoRequest(spans, resources)}
			if _, err := proto.Marshal(req); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The floor of any way through the messages, however well they are
	// reused: the request built once, then only sized and marshalled, as
	// the gRPC client does (proto.Size, then MarshalAppend with the
	// cached sizes).
	b.Run("proto-marshal-only", func(b *testing.B) {
		b.ReportAllocs()
		req := &collectorpb.ExportTraceServiceRequest{ResourceSpans: protoRequest(spans, map[*span.Process]*resourcepb.Resource{})}
		var out []byte
		for i := 0; i < b.N; i += len(spans) {
			out = make([]byte, 0, proto.Size(req))
			var err error
			if out, err = (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend(out[:0], req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		e := &Exporter{resources: map[*span.Process][]byte{}}
		bt := newBatch()
		var attrs []span.Attr
		var out []byte
		for i := 0; i < b.N; i += len(spans) {
			for _, s := range spans {
				attrs = s.AppendAttributes(attrs[:0])
				if err := bt.add(s, attrs, e.resource); err != nil {
					b.Fatal(err)
				}
			}
			var err error
			out, err = proto.MarshalOptions{}.MarshalAppend(out[:0], &collectorpb.ExportTraceServiceRequest{ResourceSpans: bt.request()})
			if err != nil {
				b.Fatal(err)
			}
			bt.reset()
		}
	})
}
