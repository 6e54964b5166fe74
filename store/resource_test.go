package store

import (
	"slices"
	"testing"
	"time"

	"github.com/latscope/latscope/span"
)

// A tag search matches a process's resource attributes (its pod's
// namespace, workload, …) like the process's other values.
func TestSearchResource(t *testing.T) {
	inPod := func(ns, deployment string) *span.Process {
		return &span.Process{PID: 10, ServiceName: "catalog", Executable: "catalog", Resource: []span.Attr{
			{Key: "k8s.namespace.name", Value: ns},
			{Key: "k8s.deployment.name", Value: deployment},
			{Key: "k8s.pod.name", Value: deployment + "-5d8f9c7b6-x7k2p"},
			{Key: "host.cpu.count", Value: int64(8)}, // a number, matched as one
		}}
	}
	procs := []*span.Process{inPod("shop", "catalog"), inPod("staging", "catalog"), inPod("shop", "cart"), {PID: 11, ServiceName: "catalog"}}
	s := New(1 << 20)
	for i, p := range procs {
		n := uint64(i + 1)
		start := t0.Add(time.Duration(i) * time.Second)
		s.Export([]*span.Span{{TraceID: traceID(n), SpanID: spanID(n, 1), Name: "GET /", Start: start, End: start.Add(time.Millisecond), Process: p}})
	}
	for _, tc := range []struct {
		name string
		tags map[string]string
		want []uint64
	}{
		{"namespace", map[string]string{"k8s.namespace.name": "shop"}, []uint64{3, 1}},
		{"namespace and workload", map[string]string{"k8s.namespace.name": "shop", "k8s.deployment.name": "catalog"}, []uint64{1}},
		{"workload across namespaces", map[string]string{"k8s.deployment.name": "catalog"}, []uint64{2, 1}},
		{"pod", map[string]string{"k8s.pod.name": "cart-5d8f9c7b6-x7k2p"}, []uint64{3}},
		{"number", map[string]string{"host.cpu.count": "8"}, []uint64{3, 2, 1}},
		{"number mismatch", map[string]string{"host.cpu.count": "9"}, nil},
		{"resource and process value", map[string]string{"k8s.namespace.name": "staging", "service.name": "catalog"}, []uint64{2}},
		{"unknown namespace", map[string]string{"k8s.namespace.name": "prod"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint64
			for _, tr := range s.Search(Query{Tags: tc.tags}) {
				got = append(got, uint64(tr.Spans[0].TraceID[15]))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("traces %v, want %v", got, tc.want)
			}
		})
	}
}
