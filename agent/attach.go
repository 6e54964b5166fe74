package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/bpf/library"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/symbolizer"
)

// Process is a traced process: its executable's image (binary, traced
// functions and probes, shared with every other process running the same
// file) and what is its own (load bias, span resource).
type Process struct {
	PID    int
	Binary *symbolizer.Binary // the image's: shared, read-only
	Info   *span.Process
	// Funcs is indexed by function id (the id in calltracer events); the
	// image's, shared.
	Funcs []TracedFunc

	img  *image
	bias uint64 // run-time minus link-time addresses (PIE)
}

// TracedFunc is one probed function.
type TracedFunc struct {
	ID    uint32
	Func  *symbolizer.Func
	Sites *symbolizer.Sites
	// Entries are the probed entry sites: for a library's function
	// Sites.Entry (its program reads the arguments); for the call
	// tracer's, Sites.CallEntry, or where that would be single-stepped
	// and every call is direct, its callers' CALLs (CallEntries).
	Entries []symbolizer.Site
	// Exits are the probed return sites: in its callers (resume sites) or
	// its own exit paths' chosen sites.
	Exits  []symbolizer.ResumeSite
	Inline symbolizer.InlineInfo
	// Cookies of its probes: [0] the entry, then one per exit.
	Cookies []uint64
}

// Runtime functions the tracer hooks to follow goroutines.
const (
	fnNewproc1 = "runtime.newproc1" // returns the new g: links it to its creator's frame
	fnGoexit1  = "runtime.goexit1"  // a goroutine ends: its state is dropped
	fnRunqput  = "runtime.runqput"  // newproc queues the new g right after newproc1
)

// Attach traces process pid: the functions of its executable that match
// patterns, the instrumented libraries it uses, and the runtime functions
// that follow goroutines. The first process of an executable file parses
// it and attaches its probes (tens of milliseconds); every further
// process of the same file (replicas, restarts, by device and inode)
// shares them and costs a few map updates. One tracer probes one set of
// patterns per file: another set for a file already traced is an error.
// Functions inlined at some call sites are probed and reported with a
// warning: those inlined calls cannot be seen. Errors wrap
// symbolizer.ErrProcessGone when pid exits meanwhile, and the
// symbolizer's typed errors (ErrNotGo, ErrUnsupportedVersion, …) for an
// executable latscope cannot read.
func (t *Tracer) Attach(pid int, patterns []string) (*Process, error) {
	t.attachMu.Lock()
	defer t.attachMu.Unlock()
	id, err := exeID(pid)
	if err != nil {
		return nil, err
	}
	key := strings.Join(patterns, ",")
	t.mu.Lock()
	im := t.images[id]
	t.mu.Unlock()
	if im != nil && im.patterns != key {
		return nil, fmt.Errorf("pid %d runs %s, already traced with functions %q, not %q: one tracer probes one set of functions per executable", pid, im.bin.Path, im.patterns, key)
	}
	var batch *probeSites
	if im == nil {
		if im, batch, err = t.prepareImage(pid, id, patterns); err != nil {
			return nil, err
		}
	}
	p := &Process{PID: pid, Binary: im.bin, Funcs: im.funcs, img: im, Info: ProcessInfo(pid, im.bin)}
	ok := false
	defer func() {
		if !ok {
			im.mu.Lock()
			delete(im.procs, pid)
			im.mu.Unlock()
			t.unregister(p)
			if batch != nil {
				im.close(&t.binaries)
			}
		}
	}()
	if p.bias, err = loadBias(pid, im.bin); err != nil {
		return nil, err
	}
	// The process is known to the programs before its probes go in.
	if err := t.register(p); err != nil {
		return nil, err
	}
	if batch != nil {
		if err := t.attachImage(im, batch); err != nil {
			return nil, fmt.Errorf("pid %d (%s): %w", pid, im.bin.Path, err)
		}
		if t.deepOn() {
			if err := t.attachDeep(im); err != nil {
				t.log.Warn("deep attribution off in this executable", "pid", pid, "err", err)
			} else if err := t.registerAttribution(p); err != nil { // its spans are covered from now
				return nil, err
			}
		}
		t.mu.Lock()
		t.images[id] = im
		t.mu.Unlock()
	}
	if len(t.injectLinks) > 0 {
		n, err := t.adoptConnections(pid)
		if err != nil {
			t.log.Warn("some connections opened before attaching carry no trace context", "pid", pid, "err", err)
		}
		if n > 0 {
			t.log.Debug("connections opened before attaching now carry trace context", "pid", pid, "connections", n)
		}
	}
	t.mu.Lock()
	t.procs[pid] = p
	t.mu.Unlock()
	ok = true
	return p, nil
}

// prepareImage reads the executable of pid and works out every probe
// site of the functions, libraries and runtime hooks to trace, without
// attaching any.
func (t *Tracer) prepareImage(pid int, id fileID, patterns []string) (*image, *probeSites, error) {
	bin := t.binaries.take(id)
	if bin == nil {
		var err error
		if bin, err = symbolizer.OpenPID(pid); err != nil {
			return nil, nil, err
		}
	}
	im := &image{id: id, bin: bin, patterns: strings.Join(patterns, ","), libs: map[int]libSlots{}, learn: map[uint32]*learning{}, procs: map[int]*Process{}}
	ok := false
	defer func() {
		if !ok {
			im.close(nil)
		}
	}()
	offs, err := bin.Offsets()
	if err != nil {
		return nil, nil, err
	}
	funcs, err := bin.Match(patterns)
	if err != nil {
		return nil, nil, err
	}
	im.cfg = calltracer.TracerProcConfig{GoidOff: offs.GoID, ParentGoidOff: offs.ParentGoID, StackHiOff: offs.StackHi, GmOff: offs.M, CurgOff: offs.MCurG, TlsOff: t.tlsOffset(bin)}
	if im.file, err = os.Open(fmt.Sprintf("/proc/%d/exe", pid)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("pid %d exited before its probes were attached: %w", pid, symbolizer.ErrProcessGone)
		}
		return nil, nil, fmt.Errorf("open executable of pid %d: %w", pid, err)
	}
	if im.exe, err = link.OpenExecutable(fmt.Sprintf("/proc/self/fd/%d", im.file.Fd())); err != nil {
		return nil, nil, fmt.Errorf("open executable of pid %d: %w", pid, err)
	}
	im.traced = t.planExits(bin, funcs)
	batch := &probeSites{}
	if err := t.attachRuntime(im, batch); err != nil {
		return nil, nil, err
	}
	t.planAttribution(im, batch, offs)
	probed := make(map[string]bool)
	for id, lib := range Libraries {
		if err := t.attachLibrary(im, batch, id, lib, probed); err != nil {
			return nil, nil, err
		}
	}
	for _, f := range funcs {
		if probed[f.Name] {
			continue // a library probes it already, with more to say
		}
		if err := t.attachFunc(im, batch, f, t.objs.CallEntry, t.objs.CallExit, 0, nil); err != nil {
			return nil, nil, err
		}
	}
	// Entries at callers' CALLs run after any exit sharing the address.
	batch.lead(t.objs.CallEntry)
	if len(im.funcs) == 0 {
		return nil, nil, fmt.Errorf("pid %d (%s): nothing to probe: no instrumented library is used and none of %q can be probed (see warnings above)", pid, bin.Path, strings.Join(patterns, ","))
	}
	ok = true
	return im, batch, nil
}

// attachImage attaches a prepared image's probes: the own exits of
// functions whose returns are learned first, then the rest, so no call
// enters between an entry probe and its exits.
func (t *Tracer) attachImage(im *image, batch *probeSites) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	for _, l := range im.learn {
		if err := t.attachOwnExits(im, l); err != nil {
			return err
		}
	}
	links, err := batch.attach(im.exe, t.multi)
	if err != nil {
		return err
	}
	im.links = append(im.links, links...)
	im.sites += batch.len()
	return nil
}

// register gives the programs what they need to trace p: its runtime
// offsets, its libraries' struct offsets, and the answers about learned
// call sites its image already has (at p's own run-time addresses).
func (t *Tracer) register(p *Process) error {
	im := p.img
	if err := t.objs.Procs.Put(uint32(p.PID), im.cfg); err != nil {
		return fmt.Errorf("configure pid %d: %w", p.PID, err)
	}
	for id, slots := range im.libs {
		fields := slots.fields
		for _, i := range slots.addrs {
			fields.Off[i] += p.bias
		}
		if err := t.objs.LibOffsets.Put(calltracer.LibKey{Pid: uint32(p.PID), Lib: uint32(id)}, fields); err != nil {
			return fmt.Errorf("configure %s for pid %d: %w", Libraries[id].Name, p.PID, err)
		}
	}
	if err := t.registerAttribution(p); err != nil {
		return err
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	im.procs[p.PID] = p
	for _, l := range im.learn {
		for ret, state := range l.answers {
			if err := t.objs.RetSites.Put(calltracer.RetKey{Pid: uint32(p.PID), FuncId: l.id, Ret: ret + p.bias}, state); err != nil {
				return fmt.Errorf("configure pid %d: learned call sites of %s: %w", p.PID, l.name, err)
			}
		}
		if l.gone {
			if err := t.objs.RetSites.Put(ownExitsGone(p, l), calltracer.RetSiteRefused); err != nil {
				return fmt.Errorf("configure pid %d: %w", p.PID, err)
			}
		}
	}
	return nil
}

// listedCallers resolves a library probe's Callers in p's binary (those
// not linked in are left out); nil when there are none, or when one is
// traced itself: its own exit would run first where it returns.
func (t *Tracer) listedCallers(im *image, pr library.Probe) []*symbolizer.Func {
	var out []*symbolizer.Func
	for _, name := range pr.Callers {
		f, err := im.bin.Lookup(name)
		if err != nil {
			continue
		}
		if im.traced[name] {
			t.log.Debug("returns probed in the function itself: a listed caller is traced", "func", pr.Symbol, "caller", name)
			return nil
		}
		out = append(out, f)
	}
	return out
}

// planExits works out, before the first probe goes in, where the returns
// of every function about to be traced are seen (symbolizer.ResumeSites
// scans the binary for milliseconds per function). A call that starts
// while probes are still going in is traced only in part, so the attach
// window should hold nothing but attaching.
// It returns the names of the functions about to be traced.
func (t *Tracer) planExits(bin *symbolizer.Binary, funcs []*symbolizer.Func) map[string]bool {
	traced := make(map[string]bool)
	for _, f := range funcs {
		traced[f.Name] = true
		if !t.cfg.NaiveSites {
			bin.ResumeSites(f, 0)
		}
	}
	for _, lib := range Libraries {
		for _, pr := range lib.Probes {
			if pr.Exit == "" {
				continue
			}
			if f, err := bin.Lookup(pr.Symbol); err == nil {
				traced[f.Name] = true
				if !t.cfg.NaiveSites {
					bin.ResumeSites(f, exitResults(pr))
				}
			}
		}
	}
	return traced
}

// attachLibrary probes lib in p when the binary uses it. A library whose
// struct offsets are unknown for this binary's version is turned off with
// one log line; everything else still attaches.
func (t *Tracer) attachLibrary(im *image, b *probeSites, id int, lib *library.Library, probed map[string]bool) error {
	var funcs []*symbolizer.Func
	for _, pr := range lib.Probes {
		f, err := im.bin.Lookup(pr.Symbol)
		if err != nil {
			funcs = append(funcs, nil) // not linked into this binary
			continue
		}
		funcs = append(funcs, f)
	}
	used := false
	for i, pr := range lib.Probes {
		used = used || pr.Callee == "" && funcs[i] != nil
	}
	if !used {
		return nil // the program does not use the library
	}
	slots, source, err := t.librarySlots(im, lib)
	if err != nil {
		t.log.Warn("library probes off: struct offsets unknown for this version", "library", lib.Name, "err", err)
		return nil
	}
	im.libs[id] = slots
	t.log.Debug("library probes on", "library", lib.Name, "offsets", source)
	for i, pr := range lib.Probes {
		if funcs[i] == nil {
			continue
		}
		coll := t.libs[id]
		if pr.Callee != "" {
			if err := t.attachCallHook(im, b, lib, funcs[i], pr, coll); err != nil {
				return err
			}
			continue
		}
		entry, exit := coll.Programs[pr.Entry], coll.Programs[pr.Exit]
		if pr.Exit == "" {
			if err := t.attachEntryHook(im, b, lib, funcs[i], entry); err != nil {
				return err
			}
			continue
		}
		if entry == nil || exit == nil {
			return fmt.Errorf("%s: programs %s/%s not in its object", lib.Name, pr.Entry, pr.Exit)
		}
		if err := t.attachFunc(im, b, funcs[i], entry, exit, exitResults(pr), t.listedCallers(im, pr)); err != nil {
			return err
		}
		probed[pr.Symbol] = true
	}
	return nil
}

// librarySlots works out lib's lib_offsets slots in im's binary: the
// offsets of its Fields, each from the version the binary links of the
// module it belongs to, then the link-time addresses of its Funcs. The
// library's own module must have offsets (an error otherwise); a dep
// without them is off alone, said once: its fields and funcs stay 0.
// source says where the offsets came from, per module.
func (t *Tracer) librarySlots(im *image, lib *library.Library) (libSlots, string, error) {
	var s libSlots
	if n := len(lib.Fields) + len(lib.Funcs); n > len(s.fields.Off) {
		return s, "", fmt.Errorf("%s reads %d fields and funcs, at most %d fit", lib.Name, n, len(s.fields.Off))
	}
	modules := []string{lib.Module}
	for _, d := range lib.Deps {
		modules = append(modules, d.Module)
	}
	off := make(map[string]bool) // deps the binary does not link, or without offsets
	var sources []string
	for _, mod := range modules {
		var idx []int
		var names []string
		for i, f := range lib.Fields {
			if lib.ModuleOf(f) == mod {
				idx, names = append(idx, i), append(names, f)
			}
		}
		if mod != lib.Module {
			version, ok := im.bin.ModuleVersion(mod)
			if !ok {
				off[mod] = true
				continue
			}
			if len(names) == 0 {
				continue
			}
			offs, source, err := im.bin.FieldOffsets(mod, names)
			if err != nil {
				t.log.Warn("library part off: struct offsets unknown for this version", "library", lib.Name, "module", mod, "version", version, "err", err)
				off[mod] = true
				continue
			}
			for j, i := range idx {
				s.fields.Off[i] = offs[j]
			}
			sources = append(sources, source)
			continue
		}
		if len(names) == 0 {
			continue
		}
		offs, source, err := im.bin.FieldOffsets(mod, names)
		if err != nil {
			return s, "", err
		}
		for j, i := range idx {
			s.fields.Off[i] = offs[j]
		}
		sources = append(sources, source)
	}
	for i, name := range lib.Funcs {
		if off[lib.ModuleOf(name)] {
			continue
		}
		f, err := im.bin.Lookup(name)
		if err != nil {
			continue // not linked into this binary
		}
		slot := len(lib.Fields) + i
		s.fields.Off[slot] = f.Entry
		s.addrs = append(s.addrs, slot)
	}
	if len(sources) == 0 {
		sources = []string{"none needed"}
	}
	return s, strings.Join(sources, ","), nil
}

// attachEntryHook runs prog at f's entry site, outside the frame stacks.
func (t *Tracer) attachEntryHook(im *image, b *probeSites, lib *library.Library, f *symbolizer.Func, prog *ebpf.Program) error {
	if prog == nil {
		return fmt.Errorf("%s: entry hook for %s not in its object", lib.Name, f.Name)
	}
	sites, err := im.bin.Sites(f)
	if err != nil {
		return err
	}
	b.add(prog, sites.Entry, 0, f.Name)
	return nil
}

// attachCallHook attaches pr's hook at caller's direct calls to
// pr.Callee: at the call instructions (pr.Calling) or where they have
// returned (pr.Returned). Without such a call (a version that inlined it
// or changed it) the hook is off, said once.
func (t *Tracer) attachCallHook(im *image, b *probeSites, lib *library.Library, caller *symbolizer.Func, pr library.Probe, coll *ebpf.Collection) error {
	name, sitesOf := pr.Returned, im.bin.CallReturnSites
	if pr.Calling != "" {
		name, sitesOf = pr.Calling, im.bin.CallSites
	}
	prog := coll.Programs[name]
	if prog == nil {
		return fmt.Errorf("%s: program %s not in its object", lib.Name, name)
	}
	callee, err := im.bin.Lookup(pr.Callee)
	if err != nil {
		t.log.Warn("library hook off: function not found", "library", lib.Name, "hook", name, "func", pr.Callee)
		return nil
	}
	sites, err := sitesOf(caller, callee)
	if err != nil {
		t.log.Warn("library hook off", "library", lib.Name, "hook", name, "err", err)
		return nil
	}
	for _, s := range sites {
		b.add(prog, s, 0, pr.Callee)
	}
	return nil
}

// libraryExitResults is how many result registers (RAX, RBX) library exit
// programs may read unless their probe says (library.Probe.Results):
// their exits are moved into callers only where these survive.
const libraryExitResults = 2

func exitResults(pr library.Probe) int {
	if pr.Results > 0 {
		return pr.Results
	}
	return libraryExitResults
}

// attachFunc traces f's calls: entryProg at its entry site pushes a
// frame, exitProg pops it where f has returned: in its callers when they
// allow (resume sites, which keep the first results result registers:
// symbolizer.ResumeSites), else at its own RETs.
func (t *Tracer) attachFunc(im *image, b *probeSites, f *symbolizer.Func, entryProg, exitProg *ebpf.Program, results int, callers []*symbolizer.Func) error {
	sites, err := im.bin.Sites(f)
	if err != nil {
		return err
	}
	inl, err := im.bin.Inlined(f)
	if err != nil {
		return err
	}
	switch {
	case !inl.Known:
		t.log.Warn("cannot tell whether function is inlined; inlined calls would not be seen", "func", f.Name, "reason", inl.Reason)
	case len(inl.Callers) > 0:
		t.log.Warn("function is inlined at some call sites; those calls cannot be traced", "func", f.Name, "inlined_into", strings.Join(inl.Callers, ","))
	}
	if len(sites.Exits) == 0 {
		t.log.Warn("function never returns (no return instruction); not traced", "func", f.Name)
		return nil
	}
	var exits []symbolizer.ResumeSite
	own := false // exits are the function's own
	if t.cfg.NaiveSites {
		sites = naive(sites)
		for _, e := range sites.Exits {
			exits = append(exits, symbolizer.ResumeSite{Site: e.Chosen})
		}
	} else {
		var why error
		if len(callers) > 0 {
			if exits, why = im.bin.CallerExits(f, callers); why != nil {
				t.log.Debug("returns not probed in the listed callers", "func", f.Name, "reason", why)
			}
		}
		if len(callers) == 0 || why != nil {
			if exits, why = im.bin.Exits(f, sites, results); why != nil {
				t.log.Debug("returns probed in the function itself", "func", f.Name, "reason", why)
				own = true
			}
		}
	}
	entries := []symbolizer.Site{sites.Entry}
	if entryProg == t.objs.CallEntry { // it reads no argument register
		entries[0] = sites.CallEntry
		if !sites.CallEntry.Emulated && !own && len(callers) == 0 && !t.cfg.NaiveSites {
			if calls, err := im.bin.CallEntries(f); err == nil {
				entries = calls
			} else {
				t.log.Debug("entry single-stepped", "func", f.Name, "reason", err)
			}
		}
	}
	tf := TracedFunc{ID: uint32(len(im.funcs)), Func: f, Sites: sites, Entries: entries, Exits: exits, Inline: inl}
	cookie, err := calltracer.Cookie(tf.ID, entries[0].SPDelta, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	var l *learning
	if own && t.learnable(im.bin, sites, exits) {
		l = &learning{id: tf.ID, name: f.Name, results: results, exitProg: exitProg, probed: map[uint64]bool{}, answers: map[uint64]uint8{}, last: time.Now()}
		cookie = calltracer.Learn(cookie)
	}
	for _, e := range entries {
		b.add(entryProg, e, cookie, f.Name)
	}
	tf.Cookies = append(tf.Cookies, cookie)
	for i, exit := range exits {
		cookie, err := calltracer.Cookie(tf.ID, exit.SPDelta, uint16(i+1))
		if err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
		// A learned call site through a tail caller pops the frame one
		// frame up, at another SP: its own exit finds no frame.
		if exit.Shared || l != nil {
			cookie = calltracer.Shared(cookie)
			exits[i].Shared = true
		}
		tf.Cookies = append(tf.Cookies, cookie)
	}
	for i, exit := range exits {
		if l != nil {
			l.own.add(exitProg, exit.Site, tf.Cookies[i+1], f.Name)
		} else {
			b.add(exitProg, exit.Site, tf.Cookies[i+1], f.Name)
		}
	}
	if l != nil {
		l.ownExits = len(exits)
		im.learn[tf.ID] = l
	}
	im.funcs = append(im.funcs, tf)
	return nil
}

// naive returns the sites a straightforward tracer would use: the first
// byte and every RET, both single-stepped by the kernel.
func naive(s *symbolizer.Sites) *symbolizer.Sites {
	n := &symbolizer.Sites{Entry: s.NaiveEntry, NaiveEntry: s.NaiveEntry, CallEntry: s.NaiveEntry}
	for _, e := range s.Exits {
		e.Chosen = e.Ret
		n.Exits = append(n.Exits, e)
	}
	return n
}

// attachRuntime hooks goroutine creation and exit. Without them calls are
// still traced, but chains stop at go statements and the goroutine map
// relies on Detach to be cleaned: that is said once, loudly.
func (t *Tracer) attachRuntime(im *image, b *probeSites) error {
	hook := func(name string, prog *ebpf.Program, exits bool) error {
		f, err := im.bin.Lookup(name)
		if err != nil {
			return err
		}
		if inl, err := im.bin.Inlined(f); err == nil && len(inl.Callers) > 0 {
			t.log.Warn("runtime function is inlined in this binary; goroutine tracking is partial", "func", name, "inlined_into", strings.Join(inl.Callers, ","))
		}
		sites, err := im.bin.Sites(f)
		if err != nil {
			return err
		}
		if !exits {
			b.add(prog, sites.Entry, 0, name)
			return nil
		}
		for _, e := range sites.Exits {
			b.add(prog, e.Chosen, 0, name)
		}
		return nil
	}
	if err := t.hookNewproc1(im, b, hook); err != nil {
		return fmt.Errorf("hook goroutine creation: %w", err)
	}
	if err := hook(fnGoexit1, t.objs.GoroutineExit, false); err != nil {
		return fmt.Errorf("hook goroutine exit: %w", err)
	}
	return nil
}

// hookNewproc1 sees each new goroutine right after runtime.newproc1 made
// it, at cheap (emulated) sites: newproc1 is only called directly, from
// inside the runtime. Where the caller then queues the goroutine
// (newproc: runqput(pp, newg, true)) the probe is that CALL, with newg an
// argument; elsewhere (newcoro, debugCallWrap: rare) it is where newproc1
// has returned. Its own RET, single-stepped (~10 µs on this kind of VM,
// once per goroutine), is the fallback when no caller is found.
func (t *Tracer) hookNewproc1(im *image, b *probeSites, hook func(string, *ebpf.Program, bool) error) error {
	f, err := im.bin.Lookup(fnNewproc1)
	if err != nil {
		return err
	}
	callers, err := im.bin.DirectCallers(f, "runtime.")
	if err != nil || len(callers) == 0 {
		return hook(fnNewproc1, t.objs.GoroutineCreated, true)
	}
	runqput, _ := im.bin.Lookup(fnRunqput)
	for _, c := range callers {
		var queued []symbolizer.Site
		if runqput != nil {
			if queued, err = im.bin.CallSites(c, runqput); err != nil {
				return err
			}
		}
		prog, sites := t.objs.GoroutineQueued, queued
		if len(queued) != 1 {
			prog = t.objs.GoroutineCreated
			if sites, err = im.bin.CallReturnSites(c, f); err != nil {
				return err
			}
		}
		for _, s := range sites {
			b.add(prog, s, 0, fnNewproc1)
		}
	}
	return nil
}

// Detach stops tracing p: the programs forget it and its kernel state is
// deleted; the probes of its executable go when no other traced process
// runs it (one uprobe_multi link per program: milliseconds).
func (t *Tracer) Detach(p *Process) error {
	t.mu.Lock()
	if t.procs[p.PID] == p {
		delete(t.procs, p.PID)
	}
	t.mu.Unlock()
	// Out of its image first: the learner then answers call sites for
	// p no more, and nothing is put back after unregister.
	im := p.img
	t.attachMu.Lock()
	im.mu.Lock()
	delete(im.procs, p.PID)
	last := len(im.procs) == 0
	im.mu.Unlock()
	if last {
		t.mu.Lock()
		if t.images[im.id] == im {
			delete(t.images, im.id)
		}
		t.mu.Unlock()
	}
	t.attachMu.Unlock()
	err := t.unregister(p)
	if last {
		if !t.multi {
			// Perf-event uprobes detach serially in the kernel, ~95 ms
			// each: do not hold the caller (the node's discovery loop)
			// for seconds. The process is out of the programs already.
			go func() {
				if err := im.close(&t.binaries); err != nil {
					t.log.Warn("detach probes", "exe", im.bin.Path, "err", err)
				}
			}()
			return err
		}
		err = errors.Join(err, im.close(&t.binaries))
	}
	return err
}

// unregister deletes what the kernel keeps for p.
func (t *Tracer) unregister(p *Process) error {
	var errs []error
	if err := t.objs.Procs.Delete(uint32(p.PID)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, err)
	}
	for id := range Libraries {
		key := calltracer.LibKey{Pid: uint32(p.PID), Lib: uint32(id)}
		if err := t.objs.LibOffsets.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(append(errs, t.forgetGoroutines(uint32(p.PID)), t.forgetRetSites(uint32(p.PID)), t.unregisterAttribution(p))...)
}

// Probes is the number of probe sites attached in p's executable, which
// every traced process running it shares.
func (p *Process) Probes() int {
	im := p.img
	im.mu.Lock()
	defer im.mu.Unlock()
	n := im.sites
	for _, l := range im.learn {
		if l.rets != nil {
			n += l.ownExits
		}
	}
	return n
}

// Links is the number of kernel links holding p's executable's probes:
// one per program with uprobe_multi, one per site without.
func (p *Process) Links() int {
	im := p.img
	im.mu.Lock()
	defer im.mu.Unlock()
	n := len(im.links)
	for _, l := range im.learn {
		n += len(l.rets)
	}
	return n
}

// ProcessInfo describes pid for span resources: service.name is the
// process's OTEL_SERVICE_NAME when set, else the executable's name.
func ProcessInfo(pid int, bin *symbolizer.Binary) *span.Process {
	exe := filepath.Base(bin.Path)
	if target, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
		exe = filepath.Base(strings.TrimSuffix(target, " (deleted)"))
	}
	name := exe
	if v, ok := environ(pid)["OTEL_SERVICE_NAME"]; ok && v != "" {
		name = v
	}
	mods := make(map[string]string)
	if bin.Build != nil {
		for _, d := range bin.Build.Deps {
			mods[d.Path] = d.Version
		}
	}
	return &span.Process{PID: pid, ServiceName: name, Executable: exe, GoVersion: bin.GoVersion, Modules: mods}
}

// Libraries names the instrumented libraries probed in p's executable.
func (p *Process) Libraries() []string {
	out := make([]string, 0, len(p.img.libs))
	for id := range p.img.libs {
		out = append(out, Libraries[id].Name)
	}
	sort.Strings(out)
	return out
}
