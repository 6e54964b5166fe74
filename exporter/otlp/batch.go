package otlp

import (
	"google.golang.org/protobuf/encoding/protowire"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/latscope/latscope/span"
)

// batch is one export's spans, encoded, one ResourceSpans per process.
// A batch and its buffers are reused once sent.
type batch struct {
	n      int          // spans
	procs  []*procSpans // in the order their first span came
	byProc map[*span.Process]*procSpans
	free   []*procSpans // of earlier uses
	req    []*tracepb.ResourceSpans
}

// procSpans holds one process's spans of a batch in buf: head bytes
// reserved for the ResourceSpans's first fields, then each span as a
// ScopeSpans.spans field.
type procSpans struct {
	resource []byte // the ResourceSpans.resource field
	head     int
	buf      []byte
	msg      *tracepb.ResourceSpans
}

func newBatch() *batch { return &batch{byProc: map[*span.Process]*procSpans{}} }

// add encodes s, with its attributes attrs, into b; resource returns the
// resource field of a process.
func (b *batch) add(s *span.Span, attrs []span.Attr, resource func(*span.Process) ([]byte, error)) error {
	p := b.byProc[s.Process]
	if p == nil {
		r, err := resource(s.Process)
		if err != nil {
			return err
		}
		if k := len(b.free); k > 0 {
			p, b.free = b.free[k-1], b.free[:k-1]
		} else {
			p = &procSpans{msg: &tracepb.ResourceSpans{}}
		}
		// Room for the resource, the scope_spans field's tag and longest
		// length, and the scope.
		p.resource, p.head = r, len(r)+1+protowire.SizeVarint(1<<32-1)+len(scopeField)
		p.buf = append(p.buf[:0], make([]byte, p.head)...)
		b.byProc[s.Process] = p
		b.procs = append(b.procs, p)
	}
	p.buf = appendSpan(p.buf, s, attrs)
	b.n++
	return nil
}

// request returns the batch as the body of an ExportTraceServiceRequest.
// Each ResourceSpans holds its encoded fields as unknown fields, which
// protobuf writes out as they are: the exporters' clients marshal them
// like any message, and a receiver reads ordinary ResourceSpans.
func (b *batch) request() []*tracepb.ResourceSpans {
	b.req = b.req[:0]
	for _, p := range b.procs {
		// ResourceSpans: resource = 1, scope_spans = 2 (one ScopeSpans:
		// scope = 1, then the spans), written just before the spans.
		spans := p.buf[p.head:]
		n := len(scopeField) + len(spans)
		start := p.head - (len(p.resource) + 1 + protowire.SizeVarint(uint64(n)) + len(scopeField))
		w := append(p.buf[start:start], p.resource...)
		w = protowire.AppendTag(w, 2, protowire.BytesType)
		w = protowire.AppendVarint(w, uint64(n))
		_ = append(w, scopeField...)
		p.msg.ProtoReflect().SetUnknown(p.buf[start:])
		b.req = append(b.req, p.msg)
	}
	return b.req
}

// reset empties b for reuse, keeping its buffers.
func (b *batch) reset() {
	for _, p := range b.procs {
		p.msg.ProtoReflect().SetUnknown(nil)
		p.resource = nil
		b.free = append(b.free, p)
	}
	clear(b.procs)
	b.procs = b.procs[:0]
	clear(b.byProc)
	clear(b.req)
	b.n = 0
}
