package api

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/span"
)

// DecodeTraces reads a Jaeger query API answer (/api/traces or
// /api/traces/{id}: the agent's, or Jaeger's own) back into latscope's
// span model, one slice per trace: the client side of the same shapes,
// for the CLI (`latscope traces`) and, later, analyses that read a Jaeger
// deployment. Tags become Attrs; the Go facts latscope exports as tags
// (goroutine, code location, unwound, parent missing) fill their fields.
// An answer carrying errors is returned as an error.
func DecodeTraces(r io.Reader) ([][]*span.Span, error) {
	var resp struct {
		Data   []jaegerTrace `json:"data"`
		Errors []apiError    `json:"errors"`
	}
	if err := json.NewDecoder(r).Decode(&resp); err != nil {
		return nil, fmt.Errorf("decode Jaeger API answer: %w", err)
	}
	if len(resp.Errors) > 0 {
		return nil, fmt.Errorf("the API answered: %s", resp.Errors[0].Msg)
	}
	out := make([][]*span.Span, 0, len(resp.Data))
	for _, t := range resp.Data {
		procs := make(map[string]*span.Process, len(t.Processes))
		for id, p := range t.Processes {
			sp := &span.Process{ServiceName: p.ServiceName}
			for _, kv := range p.Tags {
				switch kv.Key {
				case string(semconv.ProcessPIDKey):
					sp.PID = int(asInt(kv.Value))
				case string(semconv.ProcessExecutableNameKey):
					sp.Executable, _ = kv.Value.(string)
				case string(semconv.ProcessRuntimeVersionKey):
					sp.GoVersion, _ = kv.Value.(string)
				case string(semconv.ProcessRuntimeNameKey):
				default:
					sp.Resource = append(sp.Resource, span.Attr{Key: kv.Key, Value: tagValue(kv)})
				}
			}
			procs[id] = sp
		}
		spans := make([]*span.Span, 0, len(t.Spans))
		for _, js := range t.Spans {
			s, err := decodeSpan(js, procs[js.ProcessID])
			if err != nil {
				return nil, fmt.Errorf("trace %s: %w", t.TraceID, err)
			}
			spans = append(spans, s)
		}
		out = append(out, spans)
	}
	return out, nil
}

func decodeSpan(js jaegerSpan, p *span.Process) (*span.Span, error) {
	s := &span.Span{Name: js.OperationName, Process: p}
	if err := decodeID(s.TraceID[:], js.TraceID); err != nil {
		return nil, fmt.Errorf("traceID: %w", err)
	}
	if err := decodeID(s.SpanID[:], js.SpanID); err != nil {
		return nil, fmt.Errorf("spanID: %w", err)
	}
	for _, ref := range js.References {
		if ref.RefType == "CHILD_OF" {
			if err := decodeID(s.ParentID[:], ref.SpanID); err != nil {
				return nil, fmt.Errorf("reference: %w", err)
			}
		}
	}
	s.Start = time.UnixMicro(js.StartTime)
	s.End = s.Start.Add(time.Duration(js.Duration) * time.Microsecond)
	for _, kv := range js.Tags {
		switch kv.Key {
		case "span.kind":
			s.Kind = kindOf(kv.Value)
		case "otel.status_code":
			if kv.Value == "ERROR" {
				s.Status = span.StatusError
			} else if kv.Value == "OK" {
				s.Status = span.StatusOK
			}
		case "otel.status_description":
			s.StatusMessage, _ = kv.Value.(string)
		case "error", "otel.scope.name", "otel.scope.version":
		case span.KeyGoroutineID:
			s.GoID = uint64(asInt(kv.Value))
		case span.KeyParentGoroutineID:
			s.ParentGoID = uint64(asInt(kv.Value))
		case span.KeyUnwound:
			s.Unwound = kv.Value == true
		case span.KeyParentMissing:
			s.Orphan = kv.Value == true
		case string(semconv.CodeFunctionNameKey):
			s.Function, _ = kv.Value.(string)
		case string(semconv.CodeFilePathKey):
			s.File, _ = kv.Value.(string)
		case string(semconv.CodeLineNumberKey):
			s.Line = int(asInt(kv.Value))
		default:
			if strings.HasPrefix(kv.Key, span.TimeKeyPrefix) && s.SetTimeAttr(kv.Key, asInt(kv.Value)) {
				continue
			}
			s.Attrs = append(s.Attrs, span.Attr{Key: kv.Key, Value: tagValue(kv)})
		}
	}
	return s, nil
}

// decodeID reads a hex id right-aligned into dst (Jaeger shortens trace
// ids whose high half is zero).
func decodeID(dst []byte, s string) error {
	if len(s) > 2*len(dst) {
		return fmt.Errorf("%q is longer than %d hex digits", s, 2*len(dst))
	}
	s = strings.Repeat("0", 2*len(dst)-len(s)) + s
	_, err := hex.Decode(dst, []byte(s))
	return err
}

func kindOf(v any) span.Kind {
	switch v {
	case "server":
		return span.KindServer
	case "client":
		return span.KindClient
	case "producer":
		return span.KindProducer
	case "consumer":
		return span.KindConsumer
	case "internal":
		return span.KindInternal
	}
	return span.KindUnspecified
}

// tagValue is the Go value of a typed tag: int64 tags may be JSON numbers
// or, past 2^53, strings.
func tagValue(kv jaegerKeyValue) any {
	switch kv.Type {
	case "int64":
		return asInt(kv.Value)
	case "float64":
		if f, ok := kv.Value.(float64); ok {
			return f
		}
	}
	return kv.Value
}

func asInt(v any) int64 {
	switch x := v.(type) {
	case float64:
		return int64(x)
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}
