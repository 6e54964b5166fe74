package agent

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/latscope/latscope/agent/callchain"
	"github.com/latscope/latscope/attribution"
)

// Deep mode attaches the hooks that give the full time split — every
// goroutine status change (runtime.casgstatus) in each traced
// executable, and the kernel's sched_switch — for a bounded time, then detaches them by itself
// (docs/attribution.md has what it costs). Tracer implements
// attribution.Switch.

// deepMode is the state of deep mode; its mu is taken after the
// tracer's attachMu.
type deepMode struct {
	mu     sync.Mutex
	on     bool
	since  time.Time
	until  time.Time
	reason string
	timer  *time.Timer
	gen    uint64    // the period's number: a stale timer stops nothing
	sw     link.Link // sched_switch, node-wide
	// counters (linksDetached also counts images closed during a period)
	periods, ended, linksAttached uint64
}

// StartDeep turns deep mode on for d in every traced executable and in
// those attached meanwhile, or extends the period in progress to end no
// earlier than d from now. Errors: d out of (0, attribution.MaxDeep];
// latency attribution unavailable; a probe that does not attach (then
// none stays).
func (t *Tracer) StartDeep(d time.Duration, reason string) (attribution.Deep, error) {
	if d <= 0 || d > attribution.MaxDeep {
		return t.DeepState(), fmt.Errorf("deep attribution for %s: give a duration above 0 and at most %s", d, attribution.MaxDeep)
	}
	if t.sched == nil {
		return t.DeepState(), errors.New("latency attribution is unavailable in this agent (its BPF programs did not load, or it was turned off: see the agent's log)")
	}
	t.attachMu.Lock()
	defer t.attachMu.Unlock()
	dm := &t.deep
	dm.mu.Lock()
	if dm.on {
		if until := time.Now().Add(d); until.After(dm.until) {
			dm.until = until
			dm.timer.Reset(time.Until(until))
		}
		dm.mu.Unlock()
		return t.DeepState(), nil
	}
	dm.mu.Unlock()
	if err := t.sched.ClearDeep(); err != nil {
		return t.DeepState(), fmt.Errorf("deep attribution: %w", err)
	}
	var sw link.Link
	if t.sched.SchedSwitch != nil {
		var err error
		if sw, err = link.AttachTracing(link.TracingOptions{Program: t.sched.SchedSwitch}); err != nil {
			return t.DeepState(), fmt.Errorf("deep attribution: attach to tracepoint sched_switch (needs Linux ≥ 5.18 with BTF): %w", err)
		}
	}
	t.mu.Lock()
	images := make([]*image, 0, len(t.images))
	for _, im := range t.images {
		images = append(images, im)
	}
	t.mu.Unlock()
	var attached []*image
	for _, im := range images {
		if err := t.attachDeep(im); err != nil {
			for _, a := range attached {
				a.mu.Lock()
				a.attr.closeDeep()
				a.mu.Unlock()
			}
			if sw != nil {
				sw.Close()
			}
			return t.DeepState(), fmt.Errorf("deep attribution: %w", err)
		}
		attached = append(attached, im)
	}
	t.attr.DeepStart(callchain.MonoNow())
	dm.mu.Lock()
	dm.on, dm.sw, dm.reason = true, sw, reason
	now := time.Now()
	dm.since, dm.until = now, now.Add(d)
	dm.periods++
	dm.gen++
	gen := dm.gen
	if sw != nil {
		dm.linksAttached++
	}
	dm.timer = time.AfterFunc(d, func() { t.stopDeep(gen) })
	dm.mu.Unlock()
	t.log.Info("deep attribution on", "until", dm.until.Format(time.RFC3339), "reason", reason, "executables", len(images))
	return t.DeepState(), nil
}

// attachDeep attaches deep mode's probes in im; the tracer's attachMu is
// held. An image where deep mode cannot run is skipped (said at attach).
func (t *Tracer) attachDeep(im *image) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	a := im.attr
	if im.closed || a == nil || a.deepSites == nil || a.deep != nil {
		if a != nil && a.deepSites == nil {
			t.log.Warn("deep attribution off in this executable", "exe", im.bin.Path, "reason", a.deepOff)
		}
		return nil
	}
	links, err := a.deepSites.attach(im.exe, t.multi)
	if err != nil {
		return fmt.Errorf("%s: %w", im.bin.Path, err)
	}
	a.deep = links
	t.deep.mu.Lock()
	t.deep.linksAttached += uint64(len(links))
	t.deep.mu.Unlock()
	return nil
}

// deepOn reports whether deep mode is on (for an image being attached).
func (t *Tracer) deepOn() bool {
	t.deep.mu.Lock()
	defer t.deep.mu.Unlock()
	return t.deep.on
}

// StopDeep ends the deep period in progress, if any.
func (t *Tracer) StopDeep() (attribution.Deep, error) {
	t.deep.mu.Lock()
	gen := t.deep.gen
	t.deep.mu.Unlock()
	return t.DeepState(), t.stopDeep(gen)
}

// stopDeep ends period gen if it is still on: the collector first (spans
// ending later get no full split), then every probe goes.
func (t *Tracer) stopDeep(gen uint64) error {
	t.attachMu.Lock()
	defer t.attachMu.Unlock()
	dm := &t.deep
	dm.mu.Lock()
	if !dm.on || dm.gen != gen {
		dm.mu.Unlock()
		return nil
	}
	dm.timer.Stop()
	sw := dm.sw
	dm.sw = nil
	dm.mu.Unlock()
	// On until every probe is gone (attachMu keeps StartDeep and Attach
	// out meanwhile): off then means off.
	defer func() {
		dm.mu.Lock()
		dm.on = false
		dm.ended++
		dm.mu.Unlock()
	}()
	t.attr.DeepStop(callchain.MonoNow())
	t.mu.Lock()
	images := make([]*image, 0, len(t.images))
	for _, im := range t.images {
		images = append(images, im)
	}
	t.mu.Unlock()
	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, im := range images {
		wg.Add(1)
		go func() { // each close waits for an RCU grace period: in parallel
			defer wg.Done()
			im.mu.Lock()
			err := im.attr.closeDeep()
			im.mu.Unlock()
			emu.Lock()
			errs = append(errs, err)
			emu.Unlock()
		}()
	}
	wg.Wait()
	if sw != nil {
		errs = append(errs, sw.Close())
		t.deepDetached.Add(1)
	}
	err := errors.Join(errs...)
	if err != nil {
		t.log.Warn("deep attribution: detach", "err", err)
	}
	t.log.Info("deep attribution off", "executables", len(images))
	return err
}

// DeepState reports deep mode's state.
func (t *Tracer) DeepState() attribution.Deep {
	dm := &t.deep
	dm.mu.Lock()
	defer dm.mu.Unlock()
	d := attribution.Deep{On: dm.on, Reason: dm.reason, Periods: dm.periods, Ended: dm.ended, LinksAttached: dm.linksAttached, LinksDetached: t.deepDetached.Load()}
	if dm.on {
		d.Since, d.Until = dm.since, dm.until
	}
	return d
}
