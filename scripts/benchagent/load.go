package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/latscope/latscope/internal/benchproc"
)

// loadFuncs are the user functions the agent traces in section 4: with
// the net/http server span, 2 spans per request.
const loadFuncs = "main.greet"

// loadRun is one load of section 4 on one variant.
type loadRun struct {
	ok, bad  int64         // requests answered as expected, and not
	elapsed  time.Duration // of the load
	svcTicks int64         // the service's CPU during the load

	// With an agent:
	spans      uint64  // spans built during the load (and its drain)
	agentTicks int64   // the agent's CPU over the same window
	rss        int64   // the agent's VmRSS at the end
	allocated  float64 // bytes the agent's Go heap allocated over the window
	gcs        float64 // its garbage collections over the window
	store      status

	// With OTLP export:
	exported, received uint64 // spans the agent exported, the sink received

	ringRead uint64 // bytes read from the ring buffer over the window
}

func (r loadRun) rps() float64 { return float64(r.ok) / r.elapsed.Seconds() }

func (r loadRun) svcUSPerRequest() float64 {
	return float64(r.svcTicks) * tickUS / float64(r.ok+r.bad)
}

func (r loadRun) agentUSPerSpan() float64 {
	return float64(r.agentTicks) * tickUS / float64(r.spans)
}

// benchLoad is section 4: the agent's CPU per span under load, without
// and with OTLP export, and the traced service's CPU per request against
// an untraced run, in turn each round, on one service process.
func (b *bench) benchLoad() error {
	sink, err := startSink()
	if err != nil {
		return err
	}
	defer sink.srv.Stop()
	svc, addr, err := b.startService(b.svc)
	if err != nil {
		return err
	}
	defer svc.stop(syscall.SIGKILL, 5*time.Second)
	b.load(addr, time.Second) // warm the service up

	otlpEnv := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + sink.addr, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"}
	var untraced, traced, exported []loadRun
	lost := map[string]uint64{}
	for round := range b.opt.rounds {
		u, err := b.loadUntraced(svc, addr)
		if err != nil {
			return fmt.Errorf("round %d, untraced: %w", round+1, err)
		}
		t, err := b.loadTraced(svc, addr, nil, nil, lost)
		if err != nil {
			return fmt.Errorf("round %d, traced: %w", round+1, err)
		}
		e, err := b.loadTraced(svc, addr, otlpEnv, sink, lost)
		if err != nil {
			return fmt.Errorf("round %d, traced with OTLP export: %w", round+1, err)
		}
		untraced, traced, exported = append(untraced, u), append(traced, t), append(exported, e)
	}

	each := func(rs []loadRun, f func(loadRun) float64) []float64 {
		out := make([]float64, len(rs))
		for i, r := range rs {
			out[i] = f(r)
		}
		return out
	}
	// OTLP's share: the exporting agent's CPU beyond what the same
	// round's non-exporting agent spent per span, per exported span.
	otlpExtra := make([]float64, len(exported))
	svcExtra := make([]float64, len(traced))
	for i, e := range exported {
		otlpExtra[i] = (float64(e.agentTicks)*tickUS - traced[i].agentUSPerSpan()*float64(e.spans)) / float64(e.exported)
		svcExtra[i] = traced[i].svcUSPerRequest() - untraced[i].svcUSPerRequest()
	}
	budget := float64(traced[0].store.Store.Budget)
	rssGoal := mib(traced[0].store.Store.Budget) + 100
	spansPerReq := func(r loadRun) float64 { return float64(r.spans) / float64(r.ok+r.bad) }
	rps, spansPS := func(r loadRun) float64 { return r.rps() }, func(r loadRun) float64 { return float64(r.spans) / r.elapsed.Seconds() }
	rssMiB, storeMiB := func(r loadRun) float64 { return mib(r.rss) }, func(r loadRun) float64 { return mib(r.store.Store.Bytes) }
	// The CPU samples' store (profile.storeSize) is a store too: what it
	// holds is data kept, as the trace store's is; the agent's memory
	// limit follows it (agent/node.go memoryLimit).
	samplesMiB := func(r loadRun) float64 { return gauge(r.store, "cpu_samples_bytes") / (1 << 20) }
	beyondMiB := func(r loadRun) float64 { return rssMiB(r) - samplesMiB(r) }
	svcUS, agentUS := loadRun.svcUSPerRequest, loadRun.agentUSPerSpan
	allocPerSpan := func(r loadRun) float64 { return r.allocated / float64(r.spans) }
	gcPerS := func(r loadRun) float64 { return r.gcs / r.elapsed.Seconds() }
	ringPerSpan := func(r loadRun) float64 { return float64(r.ringRead) / float64(r.spans) }
	ringHighest := func(r loadRun) float64 { return gauge(r.store, "ringbuf_pending_bytes_highest") / 1024 }
	printTable(fmt.Sprintf("4. Agent CPU per span: service fixture, --funcs %s (2 spans per request), %d req/s aimed at over %d keep-alive connections, %d s per variant and round", loadFuncs, b.opt.rate, b.opt.conns, b.opt.seconds), []row{
		{name: "untraced: requests/s", vals: each(untraced, rps), prec: 0},
		{name: "traced: requests/s", vals: each(traced, rps), prec: 0},
		{name: "traced + OTLP: requests/s", vals: each(exported, rps), prec: 0},
		{name: "traced: spans/s built", vals: each(traced, spansPS), prec: 0, goal: "target ~20 000", met: func(v []float64) bool { return median(v) >= 18000 }},
		{name: "traced + OTLP: spans/s built", vals: each(exported, spansPS), prec: 0},
		{name: "traced: spans per request", vals: each(traced, spansPerReq), prec: 3, goal: "2", met: func(v []float64) bool { return median(v) > 1.99 && median(v) < 2.01 }},
		{name: "traced: agent CPU µs per span (ring → store → metrics)", vals: each(traced, agentUS), prec: 2, goal: "≤ 2 µs", met: atMost(2)},
		{name: "traced + OTLP: agent CPU µs per span", vals: each(exported, agentUS), prec: 2},
		{name: "OTLP export: extra agent CPU µs per exported span", vals: otlpExtra, prec: 2, goal: "reported separately"},
		{name: "traced: ring buffer bytes per span", vals: each(traced, ringPerSpan), prec: 0},
		{name: "traced: ring buffer most pending at a drain (fill included), KiB", vals: each(traced, ringHighest), prec: 0, goal: fmt.Sprintf("of %.0f KiB", gauge(traced[0].store, "ringbuf_size_bytes")/1024)},
		{name: "traced: agent heap allocated per span, bytes", vals: each(traced, allocPerSpan), prec: 0},
		{name: "traced + OTLP: agent heap allocated per span, bytes", vals: each(exported, allocPerSpan), prec: 0},
		{name: "traced: agent garbage collections per second", vals: each(traced, gcPerS), prec: 1},
		{name: "traced + OTLP: agent garbage collections per second", vals: each(exported, gcPerS), prec: 1},
		{name: "untraced: service CPU µs per request", vals: each(untraced, svcUS), prec: 1},
		{name: "traced: service CPU µs per request", vals: each(traced, svcUS), prec: 1},
		{name: "traced + OTLP: service CPU µs per request", vals: each(exported, svcUS), prec: 1},
		{name: "traced − untraced: service CPU µs per request (same round)", vals: svcExtra, prec: 1},
		{name: "traced: agent RSS at the end, MiB", vals: each(traced, rssMiB), prec: 1},
		{name: "traced: store at the end, MiB", vals: each(traced, storeMiB), prec: 1, goal: fmt.Sprintf("≤ budget %.0f MiB", mib(int64(budget))), met: atMost(mib(int64(budget)))},
		{name: "traced: CPU samples held at the end, MiB", vals: each(traced, samplesMiB), prec: 1},
		{name: "traced: agent RSS less the CPU samples held, MiB", vals: each(traced, beyondMiB), prec: 1, goal: fmt.Sprintf("≤ store budget + 100 MiB = %.0f MiB", rssGoal), met: atMost(rssGoal)},
		{name: "traced + OTLP: agent RSS at the end, MiB", vals: each(exported, rssMiB), prec: 1},
		{name: "traced + OTLP: store at the end, MiB", vals: each(exported, storeMiB), prec: 1},
		{name: "traced + OTLP: CPU samples held at the end, MiB", vals: each(exported, samplesMiB), prec: 1},
		{name: "traced + OTLP: agent RSS less the CPU samples held, MiB", vals: each(exported, beyondMiB), prec: 1, goal: fmt.Sprintf("≤ %.0f MiB", rssGoal), met: atMost(rssGoal)},
	})
	var bad, reqs int64
	var built, sent, received uint64
	for _, rs := range [][]loadRun{untraced, traced, exported} {
		for _, r := range rs {
			bad, reqs = bad+r.bad, reqs+r.ok+r.bad
		}
	}
	for _, r := range exported {
		built, sent, received = built+r.spans, sent+r.exported, received+r.received
	}
	fmt.Printf("Requests failed or answered wrongly: %d of %d. OTLP: %d spans built, %d exported, %d received by the sink.\n", bad, reqs, built, sent, received)
	fmt.Printf("Agent CPU: utime+stime of its process from just before the load until every span of it was built (and exported), over the spans built meanwhile; service CPU: over the load, per request sent. A fresh agent per traced run, started with the service already running, after a 1 s warm-up load.\n")
	keys := slices.Sorted(maps.Keys(lost))
	if len(keys) == 0 {
		fmt.Printf("Losses the agent counted: none.\n\n")
	} else {
		fmt.Printf("Losses the agent counted (all traced runs):")
		for _, k := range keys {
			fmt.Printf(" %s=%d", k, lost[k])
		}
		fmt.Printf("\n\n")
	}
	return nil
}

// loadUntraced loads the service with no agent running.
func (b *bench) loadUntraced(svc *proc, addr string) (loadRun, error) {
	s0, err := benchproc.CPUTicks(svc.pid())
	if err != nil {
		return loadRun{}, err
	}
	r := b.load(addr, time.Duration(b.opt.seconds)*time.Second)
	s1, err := benchproc.CPUTicks(svc.pid())
	if err != nil {
		return loadRun{}, err
	}
	r.svcTicks = s1 - s0
	return r, nil
}

// loadTraced starts an agent (with env: OTLP export to sink), waits
// until it traces the service, warms up, and loads the service. Loss
// counters it reports are added to lost.
func (b *bench) loadTraced(svc *proc, addr string, env []string, sink *sink, lost map[string]uint64) (loadRun, error) {
	a, err := b.startAgent(env, "--name", svcName, "--funcs", loadFuncs)
	if err != nil {
		return loadRun{}, err
	}
	defer a.stopAgent()
	if _, err := a.waitListed(svc.pid(), attachLimit); err != nil {
		return loadRun{}, err
	}
	// Measure the steady state of a long-running agent: its store full
	// and evicting (filling it, the agent also grows its tables).
	b.load(addr, time.Second)
	st0, err := a.drain(sink)
	if err != nil {
		return loadRun{}, err
	}
	if err := b.fill(a, addr, sink, &st0); err != nil {
		return loadRun{}, err
	}
	alloc0, errA := a.metric("go_memstats_alloc_bytes_total")
	gc0, errB := a.metric("go_gc_duration_seconds_count")
	a0, err1 := benchproc.CPUTicks(a.pid())
	s0, err2 := benchproc.CPUTicks(svc.pid())
	var recv0 uint64
	if sink != nil {
		recv0 = sink.spans.Load()
	}
	var profiled chan error
	if b.opt.profileDir != "" && sink == nil {
		profiled = make(chan error, 1)
		go func() {
			profiled <- a.saveProfile(fmt.Sprintf("profile?seconds=%d", max(1, b.opt.seconds-1)), filepath.Join(b.opt.profileDir, "agent-cpu.pprof"))
		}()
	}
	r := b.load(addr, time.Duration(b.opt.seconds)*time.Second)
	if profiled != nil {
		err := <-profiled
		if err == nil {
			err = a.saveProfile("allocs", filepath.Join(b.opt.profileDir, "agent-allocs.pprof"))
		}
		if err != nil {
			return loadRun{}, err
		}
		b.opt.profileDir = "" // the first round only
	}
	s1, err3 := benchproc.CPUTicks(svc.pid())
	st1, err4 := a.drain(sink)
	a1, err5 := benchproc.CPUTicks(a.pid())
	alloc1, errC := a.metric("go_memstats_alloc_bytes_total")
	gc1, errD := a.metric("go_gc_duration_seconds_count")
	var recv1 uint64
	if sink != nil {
		recv1 = sink.spans.Load()
	}
	rss, err6 := vmRSS(a.pid())
	for _, err := range []error{err1, err2, err3, err4, err5, err6, errA, errB, errC, errD} {
		if err != nil {
			return loadRun{}, err
		}
	}
	r.svcTicks, r.agentTicks, r.rss, r.store = s1-s0, a1-a0, rss, st1
	r.allocated, r.gcs = alloc1-alloc0, gc1-gc0
	r.spans = counter(st1, "spans_built") - counter(st0, "spans_built")
	r.ringRead = counter(st1, "ringbuf_read_bytes") - counter(st0, "ringbuf_read_bytes")
	if r.spans == 0 {
		return loadRun{}, fmt.Errorf("the agent built no span for %d requests; agent log:\n%s", r.ok, a.log())
	}
	if sink != nil {
		if st1.Export == nil {
			return loadRun{}, fmt.Errorf("the agent does not export over OTLP with %v; agent log:\n%s", env, a.log())
		}
		r.exported = st1.Export.Exported - st0.Export.Exported
		r.received = recv1 - recv0
		if st1.Export.Dropped+st1.Export.Failed > 0 {
			return loadRun{}, fmt.Errorf("OTLP export lost spans: %d dropped at the full queue, %d failed", st1.Export.Dropped, st1.Export.Failed)
		}
	}
	for k, v := range losses(st1) {
		lost[k] += v
	}
	return r, nil
}

// fill loads the agent until its store holds at least 97 % of its budget
// (evicting from then on), at most 3 minutes, and returns its status then
// in st.
func (b *bench) fill(a *agentProc, addr string, sink *sink, st *status) error {
	deadline := time.Now().Add(3 * time.Minute)
	for st.Store.Bytes < st.Store.Budget*97/100 {
		if time.Now().After(deadline) {
			return fmt.Errorf("the store held %d of %d bytes after 3 minutes of load", st.Store.Bytes, st.Store.Budget)
		}
		b.load(addr, 5*time.Second)
		s, err := a.drain(sink)
		if err != nil {
			return err
		}
		*st = s
	}
	return nil
}

// drain waits until the agent has built every span of the load (and,
// exporting, sent every one) and returns its status then.
func (a *agentProc) drain(sink *sink) (status, error) {
	deadline := time.Now().Add(20 * time.Second)
	var prev status
	for i := 0; ; i++ {
		st, err := a.status()
		if err != nil {
			return st, err
		}
		done := i > 0 && counter(st, "spans_built") == counter(prev, "spans_built") && gauge(st, "ringbuf_pending_bytes") == 0
		if e := st.Export; done && e != nil && sink != nil {
			// keep=all: every span built is exported, dropped or failed.
			done = e.Queued == 0 && e.Exported+e.Dropped+e.Failed+e.Sampling.SpansDropped >= counter(st, "spans_built") &&
				sink.spans.Load() >= e.Exported
		}
		if done {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("the agent did not finish building and exporting the load's spans within 20s (spans_built %d, export %+v)", counter(st, "spans_built"), st.Export)
		}
		prev = st
		time.Sleep(200 * time.Millisecond)
	}
}

// load sends GET /hello/bench to addr for d at -rate requests/s, spread
// over -c keep-alive connections, each paced on its own schedule (a
// connection behind by more than 100 ms forgets the backlog).
func (b *bench) load(addr string, d time.Duration) loadRun {
	conns := b.opt.conns
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	url := "http://" + addr + "/hello/bench"
	const want = "hello BENCH\n"
	interval := time.Duration(float64(time.Second) * float64(conns) / float64(b.opt.rate))
	var ok, bad atomic.Int64
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next := start.Add(interval * time.Duration(i) / time.Duration(conns)); next.Before(end); next = next.Add(interval) {
				if wait := time.Until(next); wait > 0 {
					time.Sleep(wait)
				} else if wait < -100*time.Millisecond {
					next = time.Now()
				}
				resp, err := client.Get(url)
				if err != nil {
					bad.Add(1)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || string(body) != want {
					bad.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return loadRun{ok: ok.Load(), bad: bad.Load(), elapsed: time.Since(start)}
}

// sink is an OTLP/gRPC trace receiver on loopback that counts the spans
// it is sent.
type sink struct {
	collectorpb.UnimplementedTraceServiceServer
	spans atomic.Uint64
	srv   *grpc.Server
	addr  string
}

// startSink listens on a free loopback port.
func startSink() (*sink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the OTLP sink: %w", err)
	}
	s := &sink{srv: grpc.NewServer(), addr: l.Addr().String()}
	collectorpb.RegisterTraceServiceServer(s.srv, s)
	go s.srv.Serve(l)
	return s, nil
}

// Export counts the request's spans.
func (s *sink) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	n := 0
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			n += len(ss.Spans)
		}
	}
	s.spans.Add(uint64(n))
	return &collectorpb.ExportTraceServiceResponse{}, nil
}
