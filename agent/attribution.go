package agent

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/cilium/ebpf"

	"github.com/latscope/latscope/agent/callchain"
	"github.com/latscope/latscope/attribution"
	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/bpf/sched"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/symbolizer"
)

// Latency attribution (docs/attribution.md): the probe sites of
// bpf/sched in each image, the facts its programs need per process, and
// the collector that turns their records into each span's time split.
// Deep mode, which attaches the costly hooks for a bounded time, is in
// deep.go.

// Runtime functions latency attribution hooks.
const (
	fnStopTheWorld  = "runtime.stopTheWorldWithSema"
	fnStartTheWorld = "runtime.startTheWorldWithSema"
	fnGCAssistAlloc = "runtime.gcAssistAlloc"
	fnCasgstatus    = "runtime.casgstatus"
)

// imageAttribution is what an image holds for latency attribution.
type imageAttribution struct {
	proc    sched.Proc       // what the programs need per process (the same for every process of the image)
	reasons map[string]uint8 // runtime.traceBlockReason values of its Go release
	// deepSites are deep mode's probe sites; nil when deep mode cannot
	// run in this image, deepOff saying why.
	deepSites *probeSites
	deepOff   string
	deep      probeLinks // attached while deep mode is on (guarded by the image's mu)
	detached  *atomic.Uint64
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
// tracer's calls (span.Span.Time): the full split where deep mode
// covered them, else their stop-the-world and GC assist time.
func (t *Tracer) Attribute(spans []*span.Span) { t.attr.Apply(spans) }

// AttributionStats returns what the collector counted.
func (t *Tracer) AttributionStats() attribution.Stats { return t.attr.Stats() }

// planAttribution adds the always-on hooks of im to b and prepares deep
// mode's. A hook it cannot place (a function inlined or missing in this
// Go release) is said once and left out: attribution is then partial
// for this executable, tracing is not affected.
func (t *Tracer) planAttribution(im *image, b *probeSites, offs symbolizer.Offsets) {
	if t.sched == nil {
		return
	}
	bin := im.bin
	a := &imageAttribution{proc: sched.Proc{GoidOff: offs.GoID, GmOff: offs.M, CurgOff: offs.MCurG, ReasonOff: offs.MWaitReason}, detached: &t.deepDetached}
	if tls, err := bin.GTLS(); err != nil {
		t.log.Warn("latency attribution: threads' goroutines unreadable, the kernel's scheduling is not attributed (time preempted or asleep in the kernel counts as on CPU)", "exe", bin.Path, "err", err)
	} else {
		a.proc.TlsOff = tls.Offset
	}
	var err error
	if a.reasons, err = bin.BlockReasons(); err != nil {
		t.log.Warn("latency attribution: park reasons unknown for this Go release, blocked time counts as other", "exe", bin.Path, "err", err)
	}
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
	// Stop-the-world windows, from the stop request to the start of the
	// world: twice per GC cycle. startTheWorldWithSema's entry, not its
	// returns: it wakes the Ms of the Ps it hands out, and on a busy
	// machine the kernel may run a woken thread first, so its return can
	// come milliseconds after the world runs again (measured here: 1.5-5
	// ms late under load, against the runtime's own pause accounting,
	// which the entry matches within microseconds).
	_, stop, err1 := site(fnStopTheWorld)
	_, start, err2 := site(fnStartTheWorld)
	if err1 != nil || err2 != nil {
		t.log.Warn("latency attribution: stop-the-world pauses not seen", "exe", bin.Path, "err", firstErr(err1, err2))
	} else {
		b.add(t.sched.STWStart, stop.Entry, 0, fnStopTheWorld)
		b.add(t.sched.STWEnd, start.Entry, 0, fnStartTheWorld)
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
	// Deep mode: every goroutine status change (parks, with gopark's
	// reason read from the M).
	_, status, err := site(fnCasgstatus)
	if err != nil {
		a.deepOff = err.Error()
		return
	}
	a.deepSites = &probeSites{}
	a.deepSites.add(t.sched.GoStatus, status.Entry, 0, fnCasgstatus)
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
	t.attr.AddProcess(uint32(p.PID), a.reasons, callchain.MonoNow())
	return nil
}

// unregisterAttribution forgets p.
func (t *Tracer) unregisterAttribution(p *Process) error {
	if t.sched == nil {
		return nil
	}
	t.attr.RemoveProcess(uint32(p.PID), callchain.MonoNow())
	if err := t.sched.Procs.Delete(uint32(p.PID)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

// closeDeep detaches the image's deep-mode probes, if attached (the
// period ends, or the image closes during one); the image's mu is held.
func (a *imageAttribution) closeDeep() error {
	if a == nil || a.deep == nil {
		return nil
	}
	n := len(a.deep)
	err := a.deep.Close()
	a.deep = nil
	a.detached.Add(uint64(n))
	return err
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
	d := t.DeepState()
	return append(out,
		Counter{"attribution_spans_full", cs.SpansFull, false, "spans given the full time split (deep mode covered them)"},
		Counter{"attribution_spans_gc", cs.SpansGC, false, "spans given their stop-the-world and GC assist time (always on)"},
		Counter{"attribution_spans_incomplete", cs.SpansIncomplete, true, "spans deep mode covered whose goroutine's records were dropped before they arrived: GC time only"},
		Counter{"attribution_records_unknown_process", cs.UnknownProcess, false, "attribution records of processes no longer traced"},
		Counter{"attribution_deep_periods", d.Periods, false, "deep attribution periods started"},
		Counter{"attribution_deep_periods_ended", d.Ended, false, "deep attribution periods ended (time box over, or stopped)"},
		Counter{"attribution_deep_links_attached", d.LinksAttached, false, "deep-mode probe links attached"},
		Counter{"attribution_deep_links_detached", d.LinksDetached, false, "deep-mode probe links detached"},
	), nil
}
