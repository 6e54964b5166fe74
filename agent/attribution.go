package agent

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/latscope/latscope/attribution"
	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/bpf/sched"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/symbolizer"
)

// Latency attribution (docs/attribution.md): the probe sites of
// bpf/sched in each image, the facts its programs need per process, and
// the collector that turns their records into each span's time split.

// Runtime functions latency attribution hooks.
const (
	fnStopTheWorld  = "runtime.stopTheWorldWithSema"
	fnStartTheWorld = "runtime.startTheWorldWithSema"
	fnGCAssistAlloc = "runtime.gcAssistAlloc"
)

// imageAttribution is what an image holds for latency attribution.
type imageAttribution struct {
	proc sched.Proc // what the programs need per process (the same for every process of the image)
}

// loadAttribution loads bpf/sched with the call tracer's maps. Without
// it spans are traced without their time split: said once, loudly.
func (t *Tracer) loadAttribution(opts calltracer.Options) {
	t.attr = attribution.New(t.wall)
	if t.cfg.NoAttribution {
		return
	}
	var err error
	if t.sched, err = sched.Load(opts, t.objs.SharedMaps()); err != nil {
		t.log.Warn("latency attribution unavailable: spans carry no time split", "err", err)
		t.sched = nil
	}
}

// MonoToWall is the offset from the kernel's CLOCK_MONOTONIC to Unix
// time the tracer's spans must be built with (callchain.New), so time
// splits line up with them.
func (t *Tracer) MonoToWall() int64 { return t.wall }

// Attribute sets the time split of spans the builder made from this
// tracer's calls (span.Span.Time): their stop-the-world and GC assist
// time.
func (t *Tracer) Attribute(spans []*span.Span) { t.attr.Apply(spans) }

// AttributionStats returns what the collector counted.
func (t *Tracer) AttributionStats() attribution.Stats { return t.attr.Stats() }

// planAttribution adds the hooks of im to b. A hook it cannot place (a function inlined or missing in this
// Go release) is said once and left out: attribution is then partial
// for this executable, tracing is not affected.
func (t *Tracer) planAttribution(im *image, b *probeSites, offs symbolizer.Offsets) {
	if t.sched == nil {
		return
	}
	bin := im.bin
	a := &imageAttribution{proc: sched.Proc{GoidOff: offs.GoID}}
	im.attr = a
	site := func(name string) (*symbolizer.Func, *symbolizer.Sites, error) {
		f, err := bin.Lookup(name)
		if err != nil {
			return nil, nil, err
		}
		if inl, err := bin.Inlined(f); err == nil && len(inl.Callers) > 0 {
			return nil, nil, fmt.Errorf("%s is inlined into %s", name, strings.Join(inl.Callers, ", "))
		}
		s, err := bin.Sites(f)
		if err != nil {
			return nil, nil, err
		}
		if !s.Entry.Emulated {
			return nil, nil, fmt.Errorf("%s's entry site %q would be single-stepped", name, s.Entry.Insn)
		}
		return f, s, nil
	}
	// Where a function has returned: in its callers when they allow,
	// else its own RETs (single-stepped: for rare hooks only).
	exits := func(f *symbolizer.Func, s *symbolizer.Sites) []symbolizer.Site {
		var out []symbolizer.Site
		if rs, why := bin.Exits(f, s, 0); why == nil {
			for _, r := range rs {
				out = append(out, r.Site)
			}
			return out
		}
		for _, e := range s.Exits {
			out = append(out, e.Chosen)
		}
		return out
	}
	// Stop-the-world windows, from the stop request to the world running
	// again (startTheWorldWithSema has woken the Ps when it returns), as
	// the runtime's own pause accounting: twice per GC cycle.
	_, stop, err1 := site(fnStopTheWorld)
	startF, start, err2 := site(fnStartTheWorld)
	if err1 != nil || err2 != nil {
		t.log.Warn("latency attribution: stop-the-world pauses not seen", "exe", bin.Path, "err", firstErr(err1, err2))
	} else {
		b.add(t.sched.STWStart, stop.Entry, 0, fnStopTheWorld)
		for _, s := range exits(startF, start) {
			b.add(t.sched.STWEnd, s, 0, fnStartTheWorld)
		}
	}
	// GC assists: the entry and the returns (in mallocgc, Go 1.21–1.23;
	// its RETs from 1.24, where deductAssistCredit tail-calls it: once
	// per assist, which itself scans ≥ 64 KiB).
	if f, s, err := site(fnGCAssistAlloc); err != nil {
		t.log.Warn("latency attribution: GC assists not seen", "exe", bin.Path, "err", err)
	} else {
		b.add(t.sched.AssistStart, s.Entry, 0, fnGCAssistAlloc)
		for _, s := range exits(f, s) {
			b.add(t.sched.AssistEnd, s, 0, fnGCAssistAlloc)
		}
	}
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// registerAttribution gives the programs and the collector process p.
func (t *Tracer) registerAttribution(p *Process) error {
	a := p.img.attr
	if a == nil {
		return nil
	}
	if err := t.sched.Procs.Put(uint32(p.PID), a.proc); err != nil {
		return fmt.Errorf("configure latency attribution for pid %d: %w", p.PID, err)
	}
	t.attr.AddProcess(uint32(p.PID))
	return nil
}

// unregisterAttribution forgets p.
func (t *Tracer) unregisterAttribution(p *Process) error {
	if t.sched == nil {
		return nil
	}
	t.attr.RemoveProcess(uint32(p.PID))
	if err := t.sched.Procs.Delete(uint32(p.PID)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

// attributionCounters are the programs' counters and the collector's.
func (t *Tracer) attributionCounters() ([]Counter, error) {
	if t.sched == nil {
		return nil, nil
	}
	vals, err := sched.ReadStats(t.sched.Stats)
	if err != nil {
		return nil, err
	}
	var out []Counter
	for i, v := range vals {
		st := sched.Stats[i]
		out = append(out, Counter{st.Name, v, st.Loss, st.Help})
	}
	cs := t.attr.Stats()
	return append(out,
		Counter{"attribution_spans_gc", cs.SpansGC, false, "spans given their stop-the-world and GC assist time"},
		Counter{"attribution_records_unknown_process", cs.UnknownProcess, false, "attribution records of processes no longer traced"},
	), nil
}
