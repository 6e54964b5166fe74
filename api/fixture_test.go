package api_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/http/httptest"
	"testing"
	"time"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/store"
)

// Three traced processes: frontend calls payments over HTTP; inventory
// works alone.
var (
	frontend  = &span.Process{PID: 4101, ServiceName: "frontend", Executable: "frontend", GoVersion: "go1.26.0"}
	payments  = &span.Process{PID: 4202, ServiceName: "payments", Executable: "payments", GoVersion: "go1.25.3"}
	inventory = &span.Process{PID: 4303, ServiceName: "inventory", Executable: "inventory", GoVersion: "go1.26.0"}
)

// traceID(n) has non-zero high bits (written as 32 hex digits);
// shortTraceID(n) has zero high bits (written as 16).
func traceID(n uint64) span.TraceID {
	id := shortTraceID(n)
	id[0] = 0xab
	return id
}

func shortTraceID(n uint64) span.TraceID {
	var id span.TraceID
	binary.BigEndian.PutUint64(id[8:], n)
	return id
}

func spanID(trace uint64, n byte) span.SpanID {
	var id span.SpanID
	binary.BigEndian.PutUint32(id[:4], uint32(trace))
	id[7] = n
	return id
}

func ms(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

// checkout builds one request's spans, in the order the agent exports them:
//
//	frontend  GET /checkout/{id}  server   [start, start+charge+3ms]
//	frontend  POST                client   [start+1ms, start+charge+2ms]
//	payments  POST /charge        server   [start+1.2ms, start+charge+1.8ms] (remote parent: the client span)
//	payments  main.charge         internal [start+1.3ms, start+1.3ms+charge]
//
// status is what payments answers; ≥ 500 is an error on payments' server
// span and frontend's client span, and frontend answers 502 (an error too).
func checkout(n uint64, start time.Time, status int64, charge time.Duration) []*span.Span {
	id := traceID(n)
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

// restock is a one-span trace of inventory (unspecified kind, status OK)
// whose id has zero high bits, with attribute values at JSON's edges.
func restock(n uint64, start time.Time) []*span.Span {
	return []*span.Span{{
		TraceID: shortTraceID(n), SpanID: spanID(n, 1), Name: "main.restock", Function: "main.restock",
		Start: start, End: start.Add(10 * time.Millisecond), Status: span.StatusOK, Process: inventory, GoID: 9, StartTID: 2, EndTID: 2,
		Attrs: []span.Attr{
			{Key: "app.items", Value: int64(12)},
			{Key: "app.big", Value: int64(1 << 60)},
			{Key: "app.ratio", Value: 0.25},
			{Key: "app.nan", Value: math.NaN()},
			{Key: "app.partial", Value: true},
		},
	}}
}

// fixture is the store every query test reads, its traces relative to
// when it was built:
//
//	1  checkout   now−3h    200, charge 5ms
//	2  checkout   now−2h    500, charge 50ms (errors)
//	3  checkout   now−30m   200, charge 200ms
//	4  checkout   now−10m   404, charge 1ms
//	5  restock    now−5m    (16-hex-digit trace id)
type fixture struct {
	now   time.Time
	start map[uint64]time.Time
	store *store.Store
	url   string
}

var fixtureIDs = map[uint64]span.TraceID{1: traceID(1), 2: traceID(2), 3: traceID(3), 4: traceID(4), 5: shortTraceID(5)}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	now := time.Now().Truncate(time.Millisecond)
	f := &fixture{now: now, store: store.New(64 << 20), start: map[uint64]time.Time{
		1: now.Add(-3 * time.Hour), 2: now.Add(-2 * time.Hour), 3: now.Add(-30 * time.Minute), 4: now.Add(-10 * time.Minute), 5: now.Add(-5 * time.Minute),
	}}
	f.store.Export(checkout(1, f.start[1], 200, ms(5)))
	f.store.Export(checkout(2, f.start[2], 500, ms(50)))
	f.store.Export(checkout(3, f.start[3], 200, ms(200)))
	f.store.Export(checkout(4, f.start[4], 404, ms(1)))
	f.store.Export(restock(5, f.start[5]))
	srv := httptest.NewServer(api.New(api.Options{Store: f.store}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}
