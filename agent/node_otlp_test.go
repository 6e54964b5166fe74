package agent

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/latscope/latscope/agent/config"
	"github.com/latscope/latscope/agent/discovery"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/sampling"
)

// otlpCollector is an OTLP/gRPC trace receiver on loopback keeping the
// spans it is sent, decoded with the official types.
type otlpCollector struct {
	collectorpb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
	svc   []string // service.name of each span
}

func (c *otlpCollector) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		svc := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				svc = kv.Value.GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				c.spans = append(c.spans, s)
				c.svc = append(c.svc, svc)
			}
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func (c *otlpCollector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.spans)
}

// The node agent's builder reuses span memory once its sinks return; the
// OTLP exporter encodes spans in Export and the sampler copies those it
// holds. Every span a traced service yields arrives over OTLP as the
// store has it (ids, name, service, url.path), with the default policy
// (nothing held) and with one that holds every trace for its decision.
func TestNodeOTLPExport(t *testing.T) {
	fixture.RequireRoot(t)
	svc := copyBinary(t, fixture.Build(t, "service", "local", fixture.Default), t.TempDir(), "otlpsvc")
	for _, keep := range []string{"all", "duration>1ns"} {
		t.Run(keep, func(t *testing.T) {
			policy, err := sampling.ParsePolicy(keep)
			if err != nil {
				t.Fatal(err)
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			c := &otlpCollector{}
			srv := grpc.NewServer()
			collectorpb.RegisterTraceServiceServer(srv, c)
			go srv.Serve(l)
			t.Cleanup(srv.Stop)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+l.Addr().String())
			t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")

			n := testNode(t, func(cfg *config.Config) {
				cfg.Selectors = []discovery.Selector{{Name: "otlpsvc"}}
				cfg.Funcs = []string{"main.greet"}
				cfg.Keep = policy
			})
			s := startService(t, svc)
			waitFor(t, 10*time.Second, "the service to be traced", func() bool { return n.traced(s.pid()) != nil })
			// Enough requests for several drains of the ring, so the
			// builder reuses span memory between them.
			const requests = 300
			for i := range requests {
				if got, want := s.get(t, fmt.Sprintf("/hello/r%d", i)), fmt.Sprintf("hello R%d\n", i); got != want {
					t.Fatalf("request %d answered %q", i, got)
				}
			}
			// Two spans a request: the server span and main.greet.
			waitFor(t, 20*time.Second, "every span over OTLP", func() bool { return c.len() >= 2*requests })

			var tr jaegerTraces
			apiGet(t, n, "/api/traces?limit=0&service=otlpsvc", &tr)
			type stored struct{ name, path string }
			store := map[string]stored{} // trace id + span id
			for _, trace := range tr.Data {
				for _, sp := range trace.Spans {
					st := stored{name: sp.OperationName}
					for _, tag := range sp.Tags {
						if tag.Key == "url.path" {
							st.path, _ = tag.Value.(string)
						}
					}
					store[trace.TraceID+sp.SpanID] = st
				}
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if len(c.spans) != 2*requests {
				t.Errorf("%d spans over OTLP, want %d", len(c.spans), 2*requests)
			}
			paths := map[string]bool{}
			for i, sp := range c.spans {
				key := hex.EncodeToString(sp.TraceId) + hex.EncodeToString(sp.SpanId)
				want, ok := store[key]
				path := ""
				for _, kv := range sp.Attributes {
					if kv.Key == "url.path" {
						path = kv.Value.GetStringValue()
					}
				}
				if !ok || want.name != sp.Name || want.path != path || c.svc[i] != "otlpsvc" {
					t.Errorf("OTLP span %s %q path %q service %q; the store has %+v (found %v)", key, sp.Name, path, c.svc[i], want, ok)
					continue
				}
				if sp.Kind == tracepb.Span_SPAN_KIND_SERVER {
					paths[path] = true
				}
			}
			if len(paths) != requests {
				t.Errorf("%d distinct request paths among the OTLP server spans, want %d", len(paths), requests)
			}
			st := n.Status()
			if st.Export == nil || st.Export.Exported != 2*requests || st.Export.Dropped+st.Export.Failed != 0 {
				t.Errorf("export status %+v", st.Export)
			}
		})
	}
}
