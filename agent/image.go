package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/symbolizer"
)

// Probes are shared per executable file.
//
// The kernel keeps uprobes per inode and offset: a probe attached with no
// pid filter fires in every process that maps the file, including ones
// started after the attach (the breakpoint goes in at mmap, with no agent
// work). So N replicas of one binary share one image: one parsed binary,
// one set of links; each process only adds its entries to the procs and
// lib_offsets maps, which the programs look up first (a hit in a process
// not there returns at once, counted as hits_untraced_process).
//
// Where the kernel offers it (≥ 6.6), each program's probe sites in a
// binary are one uprobe_multi link with per-site cookies: measured here
// (scripts/benchagent), 199 sites in 11 links detach in ~70 ms, where 199
// perf-event uprobes take ~16 s (each unregister waits for an RCU grace
// period, serially) and hold 400 file descriptors. Older kernels get one
// perf-event uprobe per site.

// fileID identifies an executable file: device and inode.
type fileID struct{ dev, ino uint64 }

func (f fileID) String() string { return fmt.Sprintf("%d:%d", f.dev, f.ino) }

// exeID stats /proc/PID/exe.
func exeID(pid int) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/exe", &st); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			return fileID{}, fmt.Errorf("pid %d: %w", pid, symbolizer.ErrProcessGone)
		}
		return fileID{}, fmt.Errorf("stat executable of pid %d: %w", pid, err)
	}
	return fileID{uint64(st.Dev), st.Ino}, nil
}

// image is one traced executable file and its probes, shared by every
// process running it.
type image struct {
	id       fileID
	bin      *symbolizer.Binary
	patterns string // the function patterns it was probed with
	// file holds the inode open: probes attached later (learned call
	// sites) name it as /proc/self/fd/N, valid after the process that
	// revealed it is gone.
	file *os.File
	exe  *link.Executable
	cfg  calltracer.TracerProcConfig

	// Set once at attach, read-only after.
	funcs  []TracedFunc
	traced map[string]bool  // functions traced, by name
	libs   map[int]libSlots // libraries used, by id: their lib_offsets slots

	attr *imageAttribution // latency attribution's sites and facts; nil without it

	mu     sync.Mutex // guards what changes after attach:
	links  []link.Link
	sites  int // probe sites the links hold
	learn  map[uint32]*learning
	procs  map[int]*Process
	closed bool
}

// libSlots is what a library's programs find in lib_offsets for the
// image: struct offsets, then function addresses at link time (addrs
// lists their slots: each process adds its load bias).
type libSlots struct {
	fields calltracer.LibFields
	addrs  []int
}

// close detaches the image's probes; its parsed binary goes back to
// keep (nil: it is closed).
func (im *image) close(keep *binaryCache) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	// Every link at once: each close waits for an RCU grace period in
	// the kernel (~50 ms here, uprobe_multi too), so serially 9 links
	// took 450 ms.
	all := probeLinks(im.links)
	for _, l := range im.learn {
		all = append(all, l.rets...)
		l.rets = nil
	}
	errs := []error{all.Close(), im.attr.closeDeep()}
	im.links, im.sites = nil, 0
	im.learn = nil
	im.closed = true
	if im.file != nil {
		errs = append(errs, im.file.Close())
	}
	if im.bin != nil {
		if keep != nil {
			keep.put(im.id, im.bin)
		} else {
			errs = append(errs, im.bin.Close())
		}
	}
	return errors.Join(errs...)
}

// binaryCache keeps the parsed binaries of executables whose last traced
// process exited, for a while: a restart (a deploy, a crash loop) of the
// same file then attaches without reading it again (what the symbolizer
// learned, resume sites included, is kept in the Binary).
type binaryCache struct {
	mu      sync.Mutex
	entries []cachedBinary // oldest first
}

type cachedBinary struct {
	id  fileID
	bin *symbolizer.Binary
	at  time.Time
}

// A parsed binary holds ~10–12 MiB for a 6 MB executable (measured,
// scripts/benchagent): a few restarts' worth, briefly.
const (
	binaryCacheSize = 2
	binaryCacheTTL  = time.Minute
)

func (c *binaryCache) put(id fileID, bin *symbolizer.Binary) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire()
	if len(c.entries) == binaryCacheSize {
		c.entries[0].bin.Close()
		c.entries = c.entries[1:]
	}
	c.entries = append(c.entries, cachedBinary{id, bin, time.Now()})
}

// take removes and returns the binary of id, if cached.
func (c *binaryCache) take(id fileID) *symbolizer.Binary {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire()
	for i, e := range c.entries {
		if e.id == id {
			c.entries = append(c.entries[:i], c.entries[i+1:]...)
			return e.bin
		}
	}
	return nil
}

func (c *binaryCache) expire() {
	for len(c.entries) > 0 && time.Since(c.entries[0].at) > binaryCacheTTL {
		c.entries[0].bin.Close()
		c.entries = c.entries[1:]
	}
}

// closeAll closes every cached binary.
func (c *binaryCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		e.bin.Close()
	}
	c.entries = nil
}

// probeSites is a batch of probe sites to attach together, grouped by
// program when the batch is attached.
type probeSites struct {
	progs []*ebpf.Program // in order of first use, leads first
	by    map[*ebpf.Program]*progSites
}

type progSites struct {
	offsets, cookies []uint64
	funcs            []string // what each site is for, for errors
}

func (b *probeSites) add(prog *ebpf.Program, s symbolizer.Site, cookie uint64, fn string) {
	if b.by == nil {
		b.by = make(map[*ebpf.Program]*progSites)
	}
	ps := b.by[prog]
	if ps == nil {
		ps = &progSites{}
		b.by[prog] = ps
		b.progs = append(b.progs, prog)
	}
	ps.offsets = append(ps.offsets, s.Offset)
	ps.cookies = append(ps.cookies, cookie)
	ps.funcs = append(ps.funcs, fmt.Sprintf("%s at %#x", fn, s.Addr))
}

// lead makes prog's probes the first attached of the batch. Where two
// programs probe one instruction, the kernel runs the newest consumer
// first (uprobe consumers are added at the head of the list, as in every
// release since uprobes have had several): a probe attached first runs
// last. The call tracer's entry at a caller's CALL can share its
// address with an exit seen where an earlier call returned (sq(a);
// sq(b)): that exit must pop its frame before the entry pushes the next.
// Exits attached later (learned call sites) run first too.
func (b *probeSites) lead(prog *ebpf.Program) {
	for i, p := range b.progs {
		if p == prog {
			copy(b.progs[1:i+1], b.progs[:i])
			b.progs[0] = prog
			return
		}
	}
}

func (b *probeSites) len() int {
	n := 0
	for _, ps := range b.by {
		n += len(ps.offsets)
	}
	return n
}

// probeLinks is what attaching a batch made: one link per program with
// uprobe_multi, one per site without.
type probeLinks []link.Link

// Close detaches every probe. Links are closed concurrently: each waits
// for an RCU grace period in the kernel, and uprobe_multi links' waits
// overlap (9 links: ~450 ms one by one, ~60 ms at once); perf-event
// uprobes' do not (the kernel serialises their unregistering: ~85 ms
// each however they are closed).
func (ls probeLinks) Close() error {
	if len(ls) == 1 {
		return ls[0].Close()
	}
	errs := make([]error, len(ls))
	var wg sync.WaitGroup
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.Close()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// attach puts the batch's probes into exe, in every process mapping it;
// on error none stays.
func (b *probeSites) attach(exe *link.Executable, multi bool) (probeLinks, error) {
	var out probeLinks
	fail := func(err error) (probeLinks, error) {
		out.Close()
		if errors.Is(err, syscall.ESRCH) || errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%w: %w", symbolizer.ErrProcessGone, err)
		}
		return nil, err
	}
	for _, prog := range b.progs {
		ps := b.by[prog]
		if multi {
			l, err := exe.UprobeMulti(nil, prog, &link.UprobeMultiOptions{Addresses: ps.offsets, Cookies: ps.cookies})
			if err != nil {
				return fail(fmt.Errorf("attach %s (%d sites: %s): %w", progName(prog), len(ps.offsets), summary(ps.funcs), err))
			}
			out = append(out, l)
			continue
		}
		for i, off := range ps.offsets {
			l, err := exe.Uprobe("", prog, &link.UprobeOptions{Address: off, Cookie: ps.cookies[i]})
			if err != nil {
				return fail(fmt.Errorf("attach %s at file offset %#x (%s): %w", progName(prog), off, ps.funcs[i], err))
			}
			out = append(out, l)
		}
	}
	return out, nil
}

func progName(p *ebpf.Program) string {
	if info, err := p.Info(); err == nil && info.Name != "" {
		return info.Name
	}
	return p.String()
}

// summary lists the first few entries of what a failed batch was for.
func summary(funcs []string) string {
	const show = 3
	if len(funcs) <= show {
		return strings.Join(funcs, ", ")
	}
	return strings.Join(funcs[:show], ", ") + fmt.Sprintf(" and %d more", len(funcs)-show)
}

// uprobeMultiSupported: uprobe_multi links exist from Linux 6.6.
func uprobeMultiSupported() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var major, minor int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 6 || major == 6 && minor >= 6
}
