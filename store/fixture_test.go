package store

import (
	"encoding/binary"
	"fmt"
	"time"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/span"
)

// Two traced processes: frontend calls payments over HTTP.
var (
	frontend = &span.Process{PID: 4101, ServiceName: "frontend", Executable: "frontend", GoVersion: "go1.26.0"}
	payments = &span.Process{PID: 4202, ServiceName: "payments", Executable: "payments", GoVersion: "go1.25.3"}
)

// t0 is the start of the first test trace.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func traceID(n uint64) span.TraceID {
	var id span.TraceID
	id[0] = 0xab
	binary.BigEndian.PutUint64(id[8:], n)
	return id
}

func spanID(trace uint64, n byte) span.SpanID {
	var id span.SpanID
	binary.BigEndian.PutUint32(id[:4], uint32(trace))
	id[7] = n
	return id
}

// checkout builds one request's spans, in the order they end (the order the
// agent exports them):
//
//	frontend  GET /checkout/{id}   server  [start, start+charge+3ms]
//	frontend  POST                 client  [start+1ms, start+charge+2ms]
//	payments  POST /charge         server  [start+1.2ms, start+charge+1.8ms] (remote parent: the client span)
//	payments  main.charge          internal [start+1.3ms, start+1.3ms+charge]
//
// status is what payments answers; ≥ 500 is an error on payments' server
// span and frontend's client span, and frontend answers 502.
func checkout(n uint64, start time.Time, status int64, charge time.Duration) []*span.Span {
	id := traceID(n)
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	frontendStatus := int64(200)
	if status >= 500 {
		frontendStatus = 502
	}
	server := &span.Span{
		TraceID: id, SpanID: spanID(n, 1), Name: "GET /checkout/{id}", Function: "net/http.serverHandler.ServeHTTP",
		Kind: span.KindServer, Start: start, End: start.Add(charge + ms(3)), Process: frontend, GoID: 21, StartTID: 7, EndTID: 7,
		Attrs: []span.Attr{
			{Key: string(semconv.HTTPRequestMethodKey), Value: "GET"},
			{Key: string(semconv.URLPathKey), Value: fmt.Sprintf("/checkout/%d", n)},
			{Key: string(semconv.HTTPRouteKey), Value: "/checkout/{id}"},
			{Key: string(semconv.HTTPResponseStatusCodeKey), Value: frontendStatus},
		},
	}
	client := &span.Span{
		TraceID: id, SpanID: spanID(n, 2), ParentID: server.SpanID, Name: "POST", Function: "net/http.(*Transport).roundTrip",
		Kind: span.KindClient, Start: start.Add(ms(1)), End: start.Add(charge + ms(2)), Process: frontend, GoID: 21, StartTID: 7, EndTID: 8,
		Attrs: []span.Attr{
			{Key: string(semconv.HTTPRequestMethodKey), Value: "POST"},
			{Key: string(semconv.URLFullKey), Value: "http://payments:8080/charge"},
			{Key: string(semconv.ServerAddressKey), Value: "payments"},
			{Key: string(semconv.ServerPortKey), Value: int64(8080)},
			{Key: string(semconv.HTTPResponseStatusCodeKey), Value: status},
		},
	}
	remote := &span.Span{
		TraceID: id, SpanID: spanID(n, 3), ParentID: client.SpanID, RemoteParent: true, Name: "POST /charge", Function: "net/http.serverHandler.ServeHTTP",
		Kind: span.KindServer, Start: start.Add(ms(1.2)), End: start.Add(charge + ms(1.8)), Process: payments, GoID: 40, StartTID: 3, EndTID: 3,
		Attrs: []span.Attr{
			{Key: string(semconv.HTTPRequestMethodKey), Value: "POST"},
			{Key: string(semconv.HTTPRouteKey), Value: "/charge"},
			{Key: string(semconv.HTTPResponseStatusCodeKey), Value: status},
		},
	}
	internal := &span.Span{
		TraceID: id, SpanID: spanID(n, 4), ParentID: remote.SpanID, Name: "main.charge", Function: "main.charge",
		Kind: span.KindInternal, Start: start.Add(ms(1.3)), End: start.Add(ms(1.3) + charge), Process: payments,
		GoID: 41, ParentGoID: 40, StartTID: 3, EndTID: 4, File: "/src/payments/charge.go", Line: 42,
	}
	if status >= 500 {
		msg := fmt.Sprintf("HTTP %d", status)
		remote.Status, remote.StatusMessage = span.StatusError, msg
		client.Status, client.StatusMessage = span.StatusError, msg
		server.Status, server.StatusMessage = span.StatusError, "HTTP 502"
	}
	return []*span.Span{internal, remote, client, server}
}

// ids lists the traces' ids in order, for comparisons.
func ids(traces []*Trace) []span.TraceID {
	out := make([]span.TraceID, len(traces))
	for i, t := range traces {
		out[i] = t.ID
	}
	return out
}

// traceCost is what a store with a small budget (a block per trace)
// charges for a trace of spans.
func traceCost(spans []*span.Span) int64 {
	n := traceOverhead
	for _, sp := range spans {
		n += SpanCost(sp)
	}
	return n
}
