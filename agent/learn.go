package agent

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/symbolizer"
)

// Returns learned per call site.
//
// A function reached through an interface, a func value or a tail-calling
// caller cannot have its returns probed where its callers resume from the
// binary alone (symbolizer.ResumeSites): who calls it is known only at run
// time. Its own RET is single-stepped by the kernel, ~10 µs a call on a
// VM. So its entry probe reads each call's return address (the kernel side
// is learned_return in frames.h) and reports call sites it has not seen;
// the agent probes the first emulated instruction where that caller
// resumes (symbolizer.ResumeAt), or, when the caller returns right after
// (a tail call), marks it so the kernel looks one frame up. The function's
// own RET probes stay until no new call site has shown up for
// Config.SettleReturns; from then on its returns cost an emulated trap.
//
// A call site that shows up after that is seen late the first time (the
// call is closed by a later one, counted as exit_missed) and probed from
// then on; one with no resume site puts the RET probes back for good.

// learning is what the agent knows about one learned function's call
// sites, in one executable (shared by the processes running it).
type learning struct {
	id       uint32
	name     string
	results  int // result registers its exit program reads
	exitProg *ebpf.Program

	// Its own exit probes: attached while rets is set.
	own      probeSites
	ownExits int
	rets     probeLinks
	gone     bool // detached once the call sites settled: marked per process

	sites   []symbolizer.ResumeSite // probed where callers resume
	cookies []uint64                // their probes' cookies, as sites
	probed  map[uint64]bool         // site addresses probed
	// answers by link-time return address: every process of the
	// executable gets them at its own run-time addresses.
	answers  map[uint64]uint8
	reported int       // call sites reported
	refused  int       // call sites with no resume site
	last     time.Time // when the last new call site showed up
}

// LearnedReturns tells where a learned function's returns are seen
// (Process.Learned).
type LearnedReturns struct {
	// Sites probed where its callers resume, and their probes' cookies.
	Sites   []symbolizer.ResumeSite
	Cookies []uint64
	// OwnRETs: its own exit probes are attached (until the call sites
	// settle, or for good once one had no resume site).
	OwnRETs  bool
	Reported int // call sites met so far
	Refused  int // call sites that have no resume site
}

// Learned reports, for each function whose returns are learned per call
// site, what is known so far.
func (p *Process) Learned() map[string]LearnedReturns {
	im := p.img
	im.mu.Lock()
	defer im.mu.Unlock()
	out := make(map[string]LearnedReturns, len(im.learn))
	for _, l := range im.learn {
		out[l.name] = LearnedReturns{
			Sites:    append([]symbolizer.ResumeSite(nil), l.sites...),
			Cookies:  append([]uint64(nil), l.cookies...),
			OwnRETs:  l.rets != nil,
			Reported: l.reported,
			Refused:  l.refused,
		}
	}
	return out
}

// Settled: no change is pending. The own RET probes are gone, or stay
// for good (a refused call site), or until a first call (none yet).
func (r LearnedReturns) Settled() bool { return !r.OwnRETs || r.Refused > 0 || r.Reported == 0 }

// learnable reports whether f's returns are learned per call site.
func (t *Tracer) learnable(bin *symbolizer.Binary, sites *symbolizer.Sites, ownExits []symbolizer.ResumeSite) bool {
	return t.cfg.SettleReturns >= 0 && !t.cfg.NaiveSites && Learnable(bin, sites, ownExits)
}

// Learnable reports whether the returns of a function whose exits are its
// own (ownExits, from symbolizer.Binary.Exits) can be learned per call
// site: some of them are single-stepped, the binary is amd64, and the
// entry probe runs before the function pushes BP (BP is then its caller's
// frame pointer, which the kernel follows through tail callers).
func Learnable(bin *symbolizer.Binary, sites *symbolizer.Sites, ownExits []symbolizer.ResumeSite) bool {
	if bin.Arch != "amd64" || sites.Entry.SPDelta != 0 {
		return false
	}
	for _, e := range ownExits {
		if !e.Emulated {
			return true
		}
	}
	return false
}

// retSiteQueue hands the kernel's call-site reports from the ring reader
// to the learner, unbounded: a report not answered stays PENDING in the
// kernel, and that call site would never be probed.
type retSiteQueue struct {
	mu     sync.Mutex
	events []calltracer.RetSiteEvent
	wake   chan struct{}
}

func (q *retSiteQueue) push(e calltracer.RetSiteEvent) {
	q.mu.Lock()
	q.events = append(q.events, e)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *retSiteQueue) take() []calltracer.RetSiteEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.events
	q.events = nil
	return e
}

// learnReturns answers call-site reports and detaches settled functions'
// own exit probes, until stop is closed.
func (t *Tracer) learnReturns(stop <-chan struct{}) {
	if t.cfg.SettleReturns < 0 {
		return // nothing learns: no entry probe reports call sites
	}
	tick := time.NewTicker(min(max(t.cfg.SettleReturns/4, 10*time.Millisecond), time.Second))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.retSites.wake:
			for _, e := range t.retSites.take() {
				t.learnSite(e)
			}
		case <-tick.C:
			// Reports already read count as new call sites first.
			for _, e := range t.retSites.take() {
				t.learnSite(e)
			}
			t.settleReturns()
		}
	}
}

// learnSite answers a call-site report: from what the executable's
// image already knows (another process of it met the site), or by
// probing where that caller resumes. Every process of the image gets the
// answer.
func (t *Tracer) learnSite(e calltracer.RetSiteEvent) {
	key := calltracer.RetKey{Pid: e.Pid, FuncId: e.FuncId, Ret: e.Ret}
	t.mu.Lock()
	p := t.procs[int(e.Pid)]
	t.mu.Unlock()
	var l *learning
	if p != nil {
		p.img.mu.Lock()
		defer p.img.mu.Unlock()
		l = p.img.learn[e.FuncId]
	}
	if l == nil {
		// Reported while the process was still being attached (or after
		// it was detached): forget the report, the next call makes another.
		t.objs.RetSites.Delete(key)
		return
	}
	im := p.img
	ret := e.Ret - p.bias
	state, known := l.answers[ret]
	if !known {
		l.last = time.Now()
		l.reported++
		var err error
		state, err = t.resolveSite(im, l, ret, e.Level)
		if errors.Is(err, symbolizer.ErrProcessGone) {
			return
		}
		if err != nil {
			state = calltracer.RetSiteRefused
			l.refused++
			t.log.Info("a call site's return is seen at the function's own RET, single-stepped", "exe", im.bin.Path, "func", l.name, "return_address", fmt.Sprintf("%#x", ret), "reason", err)
			if l.rets == nil {
				if err := t.attachOwnExits(im, l); err != nil {
					t.log.Warn("returns of a function are no longer seen from some call sites (counted as exit_missed)", "exe", im.bin.Path, "func", l.name, "err", err)
				}
			}
		}
		l.answers[ret] = state
		for _, q := range im.procs {
			if q != p {
				t.objs.RetSites.Put(calltracer.RetKey{Pid: uint32(q.PID), FuncId: l.id, Ret: ret + q.bias}, state)
			}
		}
	}
	if err := t.objs.RetSites.Update(key, state, ebpf.UpdateExist); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.log.Warn("answer a call-site report", "pid", p.PID, "func", l.name, "err", err)
	}
}

// resolveSite works out a reported call site (ret, a link-time return
// address): probed where its caller resumes, or a tail caller the kernel
// looks through.
func (t *Tracer) resolveSite(im *image, l *learning, ret uint64, level uint8) (uint8, error) {
	site, caller, tail, err := im.bin.ResumeAt(ret, l.results)
	if err != nil {
		return 0, err
	}
	if tail {
		// A traced tail caller's own exit would run first where they both
		// return, and take this frame for one a panic skipped.
		if im.traced[caller.Name] {
			return 0, fmt.Errorf("its caller %s returns right after and is traced", caller.Name)
		}
		if int(level)+1 >= learnLevels {
			return 0, fmt.Errorf("%d tail-calling callers in a row", level+1)
		}
		return calltracer.RetSiteTail, nil
	}
	if l.probed[site.Addr] {
		return calltracer.RetSiteProbed, nil
	}
	cookie, err := calltracer.Cookie(l.id, site.SPDelta, uint16(l.ownExits+len(l.cookies)+1))
	if err != nil {
		return 0, err
	}
	cookie = calltracer.Shared(cookie) // other calls through the same instruction return there too
	var b probeSites
	b.add(l.exitProg, site.Site, cookie, l.name+" (returned, in "+caller.Name+")")
	links, err := b.attach(im.exe, t.multi)
	if err != nil {
		return 0, err
	}
	im.links = append(im.links, links...)
	im.sites++
	l.probed[site.Addr] = true
	l.sites = append(l.sites, site)
	l.cookies = append(l.cookies, cookie)
	return calltracer.RetSiteProbed, nil
}

// learnLevels is LEARN_LEVELS of frames.h: how many tail-calling callers
// the kernel looks through.
const learnLevels = 3

// settleReturns detaches the own exit probes of learned functions whose
// call sites have settled.
func (t *Tracer) settleReturns() {
	t.mu.Lock()
	images := make([]*image, 0, len(t.images))
	for _, im := range t.images {
		images = append(images, im)
	}
	t.mu.Unlock()
	for _, im := range images {
		im.mu.Lock()
		for _, l := range im.learn {
			if l.rets == nil || l.refused > 0 || len(l.sites) == 0 || time.Since(l.last) < t.cfg.SettleReturns {
				continue
			}
			// Marked first: a call from a new site that enters meanwhile is
			// flagged and counted, even if its own RET still sees it.
			var errs []error
			for _, p := range im.procs {
				errs = append(errs, t.objs.RetSites.Put(ownExitsGone(p, l), calltracer.RetSiteRefused))
			}
			errs = append(errs, l.rets.Close())
			l.rets, l.gone = nil, true
			if err := errors.Join(errs...); err != nil {
				t.log.Warn("detach a function's own exit probes", "exe", im.bin.Path, "func", l.name, "err", err)
			}
			t.log.Info("returns now seen only where callers resume", "exe", im.bin.Path, "func", l.name, "sites", len(l.sites))
		}
		im.mu.Unlock()
	}
}

// ownExitsGone keys the kernel's mark that l's own exit probes are
// detached (own_exits_gone in frames.h), for p.
func ownExitsGone(p *Process, l *learning) calltracer.RetKey {
	return calltracer.RetKey{Pid: uint32(p.PID), FuncId: l.id}
}

// attachOwnExits (re)attaches l's own exit probes; im.mu is held.
func (t *Tracer) attachOwnExits(im *image, l *learning) error {
	links, err := l.own.attach(im.exe, t.multi)
	if err != nil {
		return err
	}
	l.rets = links
	if l.gone {
		l.gone = false
		for _, p := range im.procs {
			t.objs.RetSites.Delete(ownExitsGone(p, l))
		}
	}
	return nil
}

// loadBias is how far pid's executable is mapped from its link-time
// addresses: 0 unless it is a PIE. The kernel reports call sites by
// run-time return address; the binary is read at link-time ones.
func loadBias(pid int, bin *symbolizer.Binary) (uint64, error) {
	if !bin.PIE {
		return 0, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/exe", pid), &st); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			err = symbolizer.ErrProcessGone
		}
		return 0, fmt.Errorf("stat executable of pid %d: %w", pid, err)
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, fmt.Errorf("read mappings of pid %d: %w", pid, err)
	}
	// start-end perms offset dev inode path
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.Contains(f[1], "x") || f[4] != strconv.FormatUint(st.Ino, 10) {
			continue
		}
		start, err1 := strconv.ParseUint(strings.Split(f[0], "-")[0], 16, 64)
		off, err2 := strconv.ParseUint(f[2], 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		vaddr, err := bin.Vaddr(off)
		if err != nil {
			return 0, err
		}
		return start - vaddr, nil
	}
	return 0, fmt.Errorf("pid %d: no executable mapping of its binary in /proc/%d/maps", pid, pid)
}

// forgetRetSites deletes the kernel's call-site answers for pid.
func (t *Tracer) forgetRetSites(pid uint32) error {
	var key calltracer.RetKey
	var state uint8
	var keys []calltracer.RetKey
	it := t.objs.RetSites.Iterate()
	for it.Next(&key, &state) {
		if key.Pid == pid {
			keys = append(keys, key)
		}
	}
	errs := []error{it.Err()}
	for _, k := range keys {
		if err := t.objs.RetSites.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
