package store

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/latscope/latscope/span"
)

var inventory = &span.Process{PID: 4303, ServiceName: "inventory", Executable: "inventory", GoVersion: "go1.26.0"}

// restock is a one-span trace of a third service, of unspecified kind.
func restock(n uint64, start time.Time) []*span.Span {
	return []*span.Span{{
		TraceID: traceID(n), SpanID: spanID(n, 1), Name: "main.restock", Function: "main.restock",
		Start: start, End: start.Add(10 * time.Millisecond), Process: inventory, GoID: 9, StartTID: 2, EndTID: 2,
	}}
}

// searchFixture holds five traces, one second apart:
//
//	1  checkout, 200, charge 5ms
//	2  checkout, 500, charge 50ms (errors)
//	3  checkout, 200, charge 200ms
//	4  checkout, 404, charge 1ms
//	5  inventory's main.restock, 10ms
func searchFixture(t *testing.T) *Store {
	t.Helper()
	s := New(1 << 20)
	s.Export(checkout(1, t0, 200, 5*time.Millisecond))
	s.Export(checkout(2, t0.Add(1*time.Second), 500, 50*time.Millisecond))
	s.Export(checkout(3, t0.Add(2*time.Second), 200, 200*time.Millisecond))
	s.Export(checkout(4, t0.Add(3*time.Second), 404, 1*time.Millisecond))
	s.Export(restock(5, t0.Add(4*time.Second)))
	return s
}

func TestSearch(t *testing.T) {
	s := searchFixture(t)
	ms := time.Millisecond
	tests := []struct {
		name string
		q    Query
		want []uint64
	}{
		{"all", Query{}, []uint64{5, 4, 3, 2, 1}},
		{"service", Query{Service: "frontend"}, []uint64{4, 3, 2, 1}},
		{"other service", Query{Service: "inventory"}, []uint64{5}},
		{"unknown service", Query{Service: "nope"}, nil},
		{"operation", Query{Operation: "main.charge"}, []uint64{4, 3, 2, 1}},
		{"service and operation on one span", Query{Service: "payments", Operation: "POST /charge"}, []uint64{4, 3, 2, 1}},
		{"service and operation on different spans", Query{Service: "frontend", Operation: "main.charge"}, nil},
		{"int tag", Query{Tags: map[string]string{"http.response.status_code": "500"}}, []uint64{2}},
		{"two tags on one span", Query{Tags: map[string]string{"http.response.status_code": "500", "http.route": "/charge"}}, []uint64{2}},
		{"two tags on different spans", Query{Tags: map[string]string{"http.response.status_code": "502", "http.route": "/charge"}}, nil},
		{"string tag", Query{Tags: map[string]string{"http.route": "/checkout/{id}"}}, []uint64{4, 3, 2, 1}},
		{"int attribute", Query{Tags: map[string]string{"server.port": "8080"}}, []uint64{4, 3, 2, 1}},
		{"int attribute mismatch", Query{Tags: map[string]string{"server.port": "80"}}, nil},
		{"error tag", Query{Tags: map[string]string{"error": "true"}}, []uint64{2}},
		{"error false tag", Query{Service: "inventory", Tags: map[string]string{"error": "false"}}, []uint64{5}},
		{"span.kind", Query{Service: "payments", Tags: map[string]string{"span.kind": "internal"}}, []uint64{4, 3, 2, 1}},
		{"span.kind of another service", Query{Service: "inventory", Tags: map[string]string{"span.kind": "server"}}, nil},
		{"otel.status_code", Query{Tags: map[string]string{"otel.status_code": "ERROR"}}, []uint64{2}},
		{"process service.name", Query{Tags: map[string]string{"service.name": "payments"}}, []uint64{4, 3, 2, 1}},
		{"process.pid with a span attribute", Query{Tags: map[string]string{"process.pid": "4202", "http.request.method": "POST"}}, []uint64{4, 3, 2, 1}},
		{"process.pid on another span", Query{Tags: map[string]string{"process.pid": "4202", "http.request.method": "GET"}}, nil},
		{"process.runtime.version", Query{Tags: map[string]string{"process.runtime.version": "go1.26.0"}}, []uint64{5, 4, 3, 2, 1}},
		{"derived attribute", Query{Tags: map[string]string{"code.function.name": "main.charge"}}, []uint64{4, 3, 2, 1}},
		{"derived int attribute", Query{Tags: map[string]string{"latscope.goroutine.parent_id": "40"}}, []uint64{4, 3, 2, 1}},
		{"min duration", Query{MinDuration: 100 * ms}, []uint64{3}},
		{"duration range on one span", Query{MinDuration: 40 * ms, MaxDuration: 60 * ms}, []uint64{2}},
		{"max duration", Query{MaxDuration: 2 * ms}, []uint64{4}},
		{"service and min duration", Query{Service: "inventory", MinDuration: 100 * ms}, nil},
		{"start", Query{Start: t0.Add(1500 * ms)}, []uint64{5, 4, 3}},
		{"end", Query{End: t0.Add(1500 * ms)}, []uint64{2, 1}},
		{"start and end inclusive", Query{Start: t0.Add(time.Second), End: t0.Add(time.Second)}, []uint64{2}},
		{"span start window and service", Query{Service: "payments", Start: t0.Add(time.Second + 1100*time.Microsecond), End: t0.Add(time.Second + 1250*time.Microsecond)}, []uint64{2}},
		{"span start window, other service", Query{Service: "frontend", Start: t0.Add(time.Second + 1100*time.Microsecond), End: t0.Add(time.Second + 1250*time.Microsecond)}, nil},
		{"error traces", Query{Error: true}, []uint64{2}},
		{"error-free traces", Query{NoError: true}, []uint64{5, 4, 3, 1}},
		{"error and a span filter elsewhere", Query{Error: true, Operation: "main.charge"}, []uint64{2}},
		{"error in another service", Query{Error: true, Service: "inventory"}, nil},
		{"limit", Query{Limit: 2}, []uint64{5, 4}},
		{"limit with filter", Query{Service: "frontend", Limit: 3}, []uint64{4, 3, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []span.TraceID
			for _, n := range tt.want {
				want = append(want, traceID(n))
			}
			if got := ids(s.Search(tt.q)); !slices.Equal(got, want) {
				t.Errorf("Search(%+v) = %v, want traces %v", tt.q, got, tt.want)
			}
		})
	}
}

func TestSearchTiesByID(t *testing.T) {
	s := New(1 << 20)
	for _, n := range []uint64{7, 3, 9} {
		s.Export(checkout(n, t0, 200, time.Millisecond))
	}
	want := []span.TraceID{traceID(3), traceID(7), traceID(9)}
	if got := ids(s.Search(Query{})); !slices.Equal(got, want) {
		t.Errorf("equal starts: got %v, want by id %v", got, want)
	}
}

func TestServicesAndOperations(t *testing.T) {
	s := searchFixture(t)
	if got, want := s.Services(), []string{"frontend", "inventory", "payments"}; !slices.Equal(got, want) {
		t.Errorf("Services() = %q, want %q", got, want)
	}
	tests := []struct {
		service, kind string
		want          []Operation
	}{
		{"frontend", "", []Operation{{"GET /checkout/{id}", "server"}, {"POST", "client"}}},
		{"frontend", "client", []Operation{{"POST", "client"}}},
		{"payments", "internal", []Operation{{"main.charge", "internal"}}},
		{"payments", "", []Operation{{"POST /charge", "server"}, {"main.charge", "internal"}}},
		{"inventory", "", []Operation{{"main.restock", ""}}},
		{"inventory", "server", []Operation{}},
		{"nope", "", []Operation{}},
	}
	for _, tt := range tests {
		got := s.Operations(tt.service, tt.kind)
		if got == nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Operations(%q, %q) = %#v, want %#v", tt.service, tt.kind, got, tt.want)
		}
	}
}

func TestServicesAndOperationsFollowEviction(t *testing.T) {
	cost := traceCost(checkout(1, t0, 200, time.Millisecond))
	s := New(cost) // one checkout trace at a time
	s.Export(checkout(1, t0, 200, time.Millisecond))
	s.Export(restock(2, t0.Add(time.Second)))
	if got := s.Services(); !slices.Equal(got, []string{"inventory"}) {
		t.Errorf("Services() = %q after checkout was evicted, want [inventory]", got)
	}
	if got := s.Operations("frontend", ""); len(got) != 0 {
		t.Errorf("Operations(frontend) = %v after eviction, want none", got)
	}
	if got := s.Search(Query{Service: "frontend"}); len(got) != 0 {
		t.Errorf("Search(frontend) = %v after eviction", ids(got))
	}
	// Spans of one service in two traces: the service stays while either
	// is held.
	s = New(1 << 20)
	s.Export(restock(1, t0))
	s.Export(restock(2, t0))
	s.mu.Lock()
	slot, _ := s.index.get(s.entries, traceID(1))
	s.evict(slot)
	s.mu.Unlock()
	if got := s.Operations("inventory", ""); len(got) != 1 {
		t.Errorf("Operations(inventory) = %v with one of two traces left", got)
	}
}

func TestEach(t *testing.T) {
	s := searchFixture(t)
	var got []span.TraceID
	s.Each(func(tr *Trace) bool { got = append(got, tr.ID); return true })
	want := []span.TraceID{traceID(5), traceID(4), traceID(3), traceID(2), traceID(1)}
	if !slices.Equal(got, want) {
		t.Errorf("Each order = %v, want newest first %v", got, want)
	}
	got = nil
	s.Each(func(tr *Trace) bool { got = append(got, tr.ID); return len(got) < 2 })
	if !slices.Equal(got, want[:2]) {
		t.Errorf("Each after false: walked %v, want %v", got, want[:2])
	}
}

func TestDerivedReaders(t *testing.T) {
	spans := append(checkout(1, t0, 500, time.Millisecond), restock(2, t0)...)
	full := &span.Span{
		Name: "main.work", Function: "main.work", File: "/src/work.go", Line: 7, Kind: span.KindInternal,
		GoID: 5, ParentGoID: 4, StartTID: 1, EndTID: 2, Unwound: true, Orphan: true, Process: frontend,
	}
	for _, sp := range append(spans, full) {
		derived := sp.Attributes()[:len(sp.Attributes())-len(sp.Attrs)]
		want := make(map[string]any)
		for _, a := range derived {
			if !derivedKeys[a.Key] {
				t.Errorf("span %q: attribute %q not in derivedKeys: tag search would not look for it", sp.Name, a.Key)
			}
			want[a.Key] = a.Value
		}
		for key, read := range derivedReaders {
			v, ok := read(sp)
			w, wok := want[key]
			if ok != wok || (ok && v != w) {
				t.Errorf("span %q: reader for %q = %v, %v; Attributes has %v, %v", sp.Name, key, v, ok, w, wok)
			}
		}
	}
	for key := range derivedKeys {
		if derivedReaders[key] == nil {
			t.Logf("derived key %q has no reader: its searches go through Attributes", key)
		}
	}
}

func TestOldest(t *testing.T) {
	s := New(1 << 20)
	if _, ok := s.Oldest(); ok {
		t.Fatal("an empty store has an oldest trace")
	}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	mk := func(trace byte, start time.Time) *span.Span {
		return &span.Span{TraceID: span.TraceID{trace}, SpanID: span.SpanID{trace}, Name: "op", Start: start, End: start.Add(time.Millisecond),
			Process: &span.Process{ServiceName: "a"}}
	}
	// Added out of start order: the oldest by start is the second.
	s.Export([]*span.Span{mk(1, t0.Add(time.Minute))})
	s.Export([]*span.Span{mk(2, t0)})
	s.Export([]*span.Span{mk(3, t0.Add(2*time.Minute))})
	if got, ok := s.Oldest(); !ok || !got.Equal(t0) {
		t.Errorf("Oldest() = %v, %v; want %v", got, ok, t0)
	}
}
