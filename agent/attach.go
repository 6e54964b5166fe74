package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/bpf/library"
	"github.com/latscope/latscope/symbolizer"
)

// Process is a traced process: its binary, the functions probed in it and
// the links that hold the probes.
type Process struct {
	PID    int
	Binary *symbolizer.Binary
	Info   *span.Process
	// Funcs is indexed by function id (the id in calltracer events).
	Funcs []TracedFunc

	traced map[string]bool // functions being traced, by name
	bias   uint64          // run-time minus link-time addresses (PIE)

	mu    sync.Mutex // guards what the learner changes after attach:
	links []link.Link
	learn map[uint32]*learning // functions whose returns are learned, by id
}

// TracedFunc is one probed function.
type TracedFunc struct {
	ID    uint32
	Func  *symbolizer.Func
	Sites *symbolizer.Sites
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

// Attach probes the functions of bin (the executable of pid) that match
// patterns, and the runtime functions that follow goroutines. Functions
// inlined at some call sites are probed and reported with a warning: those
// inlined calls cannot be seen.
func (t *Tracer) Attach(pid int, bin *symbolizer.Binary, patterns []string) (*Process, error) {
	offs, err := bin.Offsets()
	if err != nil {
		return nil, err
	}
	funcs, err := bin.Match(patterns)
	if err != nil {
		return nil, err
	}
	p := &Process{PID: pid, Binary: bin, Info: ProcessInfo(pid, bin), learn: map[uint32]*learning{}}
	ok := false
	defer func() {
		if !ok {
			p.close()
		}
	}()

	cfg := calltracer.TracerProcConfig{GoidOff: offs.GoID, ParentGoidOff: offs.ParentGoID, StackHiOff: offs.StackHi}
	if err := t.objs.Procs.Put(uint32(pid), cfg); err != nil {
		return nil, fmt.Errorf("configure pid %d: %w", pid, err)
	}
	exe, err := link.OpenExecutable(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("pid %d exited before its probes were attached: %w", pid, symbolizer.ErrProcessGone)
		}
		return nil, fmt.Errorf("open executable of pid %d: %w", pid, err)
	}
	p.traced = t.planExits(bin, funcs)
	if p.bias, err = loadBias(pid, bin); err != nil {
		return nil, err
	}
	if err := t.attachRuntime(p, exe); err != nil {
		return nil, err
	}
	probed := make(map[string]bool)
	for id, lib := range Libraries {
		if err := t.attachLibrary(p, exe, id, lib, probed); err != nil {
			return nil, err
		}
	}
	for _, f := range funcs {
		if probed[f.Name] {
			continue // a library probes it already, with more to say
		}
		if err := t.attachFunc(p, exe, f, t.objs.CallEntry, t.objs.CallExit, 0, nil); err != nil {
			return nil, err
		}
	}
	if len(p.Funcs) == 0 {
		return nil, fmt.Errorf("pid %d: nothing to probe: no instrumented library is used and none of %q can be probed (see warnings above)", pid, strings.Join(patterns, ","))
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

// listedCallers resolves a library probe's Callers in p's binary (those
// not linked in are left out); nil when there are none, or when one is
// traced itself: its own exit would run first where it returns.
func (t *Tracer) listedCallers(p *Process, pr library.Probe) []*symbolizer.Func {
	var out []*symbolizer.Func
	for _, name := range pr.Callers {
		f, err := p.Binary.Lookup(name)
		if err != nil {
			continue
		}
		if p.traced[name] {
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
					bin.ResumeSites(f, libraryExitResults)
				}
			}
		}
	}
	return traced
}

// attachLibrary probes lib in p when the binary uses it. A library whose
// struct offsets are unknown for this binary's version is turned off with
// one log line; everything else still attaches.
func (t *Tracer) attachLibrary(p *Process, exe *link.Executable, id int, lib *library.Library, probed map[string]bool) error {
	var funcs []*symbolizer.Func
	for _, pr := range lib.Probes {
		f, err := p.Binary.Lookup(pr.Symbol)
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
	offs, source, err := []uint64(nil), "none needed", error(nil)
	if len(lib.Fields) > 0 {
		offs, source, err = p.Binary.FieldOffsets(lib.Module, lib.Fields)
	}
	if err != nil {
		t.log.Warn("library probes off: struct offsets unknown for this version", "library", lib.Name, "err", err)
		return nil
	}
	var fields calltracer.LibFields
	if len(offs) > len(fields.Off) {
		return fmt.Errorf("%s reads %d fields, at most %d fit", lib.Name, len(offs), len(fields.Off))
	}
	copy(fields.Off[:], offs)
	key := calltracer.LibKey{Pid: uint32(p.PID), Lib: uint32(id)}
	if err := t.objs.LibOffsets.Put(key, fields); err != nil {
		return fmt.Errorf("configure %s for pid %d: %w", lib.Name, p.PID, err)
	}
	t.log.Debug("library probes on", "library", lib.Name, "offsets", source)
	for i, pr := range lib.Probes {
		if funcs[i] == nil {
			continue
		}
		coll := t.libs[id]
		if pr.Callee != "" {
			if err := t.attachCallHook(p, exe, lib, funcs[i], pr, coll); err != nil {
				return err
			}
			continue
		}
		entry, exit := coll.Programs[pr.Entry], coll.Programs[pr.Exit]
		if pr.Exit == "" {
			if err := t.attachEntryHook(p, exe, lib, funcs[i], entry); err != nil {
				return err
			}
			continue
		}
		if entry == nil || exit == nil {
			return fmt.Errorf("%s: programs %s/%s not in its object", lib.Name, pr.Entry, pr.Exit)
		}
		if err := t.attachFunc(p, exe, funcs[i], entry, exit, libraryExitResults, t.listedCallers(p, pr)); err != nil {
			return err
		}
		probed[pr.Symbol] = true
	}
	return nil
}

// attachEntryHook runs prog at f's entry site, outside the frame stacks.
func (t *Tracer) attachEntryHook(p *Process, exe *link.Executable, lib *library.Library, f *symbolizer.Func, prog *ebpf.Program) error {
	if prog == nil {
		return fmt.Errorf("%s: entry hook for %s not in its object", lib.Name, f.Name)
	}
	sites, err := p.Binary.Sites(f)
	if err != nil {
		return err
	}
	return t.probe(p, exe, prog, sites.Entry, 0, f.Name)
}

// attachCallHook attaches pr's hook at caller's direct calls to
// pr.Callee: at the call instructions (pr.Calling) or where they have
// returned (pr.Returned). Without such a call (a version that inlined it
// or changed it) the hook is off, said once.
func (t *Tracer) attachCallHook(p *Process, exe *link.Executable, lib *library.Library, caller *symbolizer.Func, pr library.Probe, coll *ebpf.Collection) error {
	name, sitesOf := pr.Returned, p.Binary.CallReturnSites
	if pr.Calling != "" {
		name, sitesOf = pr.Calling, p.Binary.CallSites
	}
	prog := coll.Programs[name]
	if prog == nil {
		return fmt.Errorf("%s: program %s not in its object", lib.Name, name)
	}
	callee, err := p.Binary.Lookup(pr.Callee)
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
		if err := t.probe(p, exe, prog, s, 0, pr.Callee); err != nil {
			return err
		}
	}
	return nil
}

// libraryExitResults is how many result registers (RAX, RBX) library exit
// programs may read: their exits are moved into callers only where both
// survive. call_exit reads none.
const libraryExitResults = 2

// attachFunc traces f's calls: entryProg at its entry site pushes a
// frame, exitProg pops it where f has returned: in its callers when they
// allow (resume sites, which keep the first results result registers:
// symbolizer.ResumeSites), else at its own RETs.
func (t *Tracer) attachFunc(p *Process, exe *link.Executable, f *symbolizer.Func, entryProg, exitProg *ebpf.Program, results int, callers []*symbolizer.Func) error {
	sites, err := p.Binary.Sites(f)
	if err != nil {
		return err
	}
	inl, err := p.Binary.Inlined(f)
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
			if exits, why = p.Binary.CallerExits(f, callers); why != nil {
				t.log.Debug("returns not probed in the listed callers", "func", f.Name, "reason", why)
			}
		}
		if len(callers) == 0 || why != nil {
			if exits, why = p.Binary.Exits(f, sites, results); why != nil {
				t.log.Debug("returns probed in the function itself", "func", f.Name, "reason", why)
				own = true
			}
		}
	}
	tf := TracedFunc{ID: uint32(len(p.Funcs)), Func: f, Sites: sites, Exits: exits, Inline: inl}
	cookie, err := calltracer.Cookie(tf.ID, sites.Entry.SPDelta, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	var l *learning
	if own && t.learnable(p.Binary, sites, exits) {
		l = &learning{id: tf.ID, name: f.Name, results: results, exitProg: exitProg, exe: exe, probed: map[uint64]bool{}, last: time.Now()}
		cookie = calltracer.Learn(cookie)
	}
	if err := t.probe(p, exe, entryProg, sites.Entry, cookie, f.Name); err != nil {
		return err
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
	if l != nil {
		l.ownExits, l.ownCookies = exits, tf.Cookies[1:]
		if err := t.attachOwnExits(p, l); err != nil {
			return err
		}
		p.learn[tf.ID] = l
	} else {
		for i, exit := range exits {
			if err := t.probe(p, exe, exitProg, exit.Site, tf.Cookies[i+1], f.Name); err != nil {
				return err
			}
		}
	}
	p.Funcs = append(p.Funcs, tf)
	return nil
}

// naive returns the sites a straightforward tracer would use: the first
// byte and every RET, both single-stepped by the kernel.
func naive(s *symbolizer.Sites) *symbolizer.Sites {
	n := &symbolizer.Sites{Entry: s.NaiveEntry, NaiveEntry: s.NaiveEntry}
	for _, e := range s.Exits {
		e.Chosen = e.Ret
		n.Exits = append(n.Exits, e)
	}
	return n
}

// attachRuntime hooks goroutine creation and exit. Without them calls are
// still traced, but chains stop at go statements and the goroutine map
// relies on Detach to be cleaned: that is said once, loudly.
func (t *Tracer) attachRuntime(p *Process, exe *link.Executable) error {
	hook := func(name string, prog *ebpf.Program, exits bool) error {
		f, err := p.Binary.Lookup(name)
		if err != nil {
			return err
		}
		if inl, err := p.Binary.Inlined(f); err == nil && len(inl.Callers) > 0 {
			t.log.Warn("runtime function is inlined in this binary; goroutine tracking is partial", "func", name, "inlined_into", strings.Join(inl.Callers, ","))
		}
		sites, err := p.Binary.Sites(f)
		if err != nil {
			return err
		}
		if !exits {
			return t.probe(p, exe, prog, sites.Entry, 0, name)
		}
		for _, e := range sites.Exits {
			if err := t.probe(p, exe, prog, e.Chosen, 0, name); err != nil {
				return err
			}
		}
		return nil
	}
	if err := t.hookNewproc1(p, exe, hook); err != nil {
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
func (t *Tracer) hookNewproc1(p *Process, exe *link.Executable, hook func(string, *ebpf.Program, bool) error) error {
	f, err := p.Binary.Lookup(fnNewproc1)
	if err != nil {
		return err
	}
	callers, err := p.Binary.DirectCallers(f, "runtime.")
	if err != nil || len(callers) == 0 {
		return hook(fnNewproc1, t.objs.GoroutineCreated, true)
	}
	runqput, _ := p.Binary.Lookup(fnRunqput)
	for _, c := range callers {
		var queued []symbolizer.Site
		if runqput != nil {
			if queued, err = p.Binary.CallSites(c, runqput); err != nil {
				return err
			}
		}
		prog, sites := t.objs.GoroutineQueued, queued
		if len(queued) != 1 {
			prog = t.objs.GoroutineCreated
			if sites, err = p.Binary.CallReturnSites(c, f); err != nil {
				return err
			}
		}
		for _, s := range sites {
			if err := t.probe(p, exe, prog, s, 0, fnNewproc1); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *Tracer) probe(p *Process, exe *link.Executable, prog *ebpf.Program, s symbolizer.Site, cookie uint64, fn string) error {
	l, err := uprobe(p, exe, prog, s, cookie, fn)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.links = append(p.links, l)
	p.mu.Unlock()
	return nil
}

// uprobe attaches prog at s in p.
func uprobe(p *Process, exe *link.Executable, prog *ebpf.Program, s symbolizer.Site, cookie uint64, fn string) (link.Link, error) {
	l, err := exe.Uprobe("", prog, &link.UprobeOptions{Address: s.Offset, PID: p.PID, Cookie: cookie})
	if err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil, fmt.Errorf("attach %s in pid %d: %w", fn, p.PID, symbolizer.ErrProcessGone)
		}
		return nil, fmt.Errorf("attach %s at %#x (file offset %#x) in pid %d: %w", fn, s.Addr, s.Offset, p.PID, err)
	}
	return l, nil
}

// Detach removes p's probes and its kernel state.
func (t *Tracer) Detach(p *Process) error {
	t.mu.Lock()
	delete(t.procs, p.PID)
	t.mu.Unlock()
	err := p.close()
	if derr := t.objs.Procs.Delete(uint32(p.PID)); derr != nil && !errors.Is(derr, ebpf.ErrKeyNotExist) {
		err = errors.Join(err, derr)
	}
	for id := range Libraries {
		key := calltracer.LibKey{Pid: uint32(p.PID), Lib: uint32(id)}
		if derr := t.objs.LibOffsets.Delete(key); derr != nil && !errors.Is(derr, ebpf.ErrKeyNotExist) {
			err = errors.Join(err, derr)
		}
	}
	return errors.Join(err, t.forgetGoroutines(uint32(p.PID)), t.forgetRetSites(uint32(p.PID)))
}

func (p *Process) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	p.links = nil
	for _, l := range p.learn {
		for _, lk := range l.rets {
			errs = append(errs, lk.Close())
		}
		l.rets = nil
	}
	p.learn = nil
	return errors.Join(errs...)
}

// Probes is the number of uprobes attached in p.
func (p *Process) Probes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.links)
	for _, l := range p.learn {
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
