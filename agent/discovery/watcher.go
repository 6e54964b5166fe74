package discovery

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	bpf "github.com/latscope/latscope/bpf/discovery"
)

// EventType says what happened to a process.
type EventType uint8

const (
	// Exec: the process started a new program (execve). A process that
	// execs again (a shell's `exec prog`) reports Exec again, same PID.
	Exec EventType = iota + 1
	// Exit: the process's last thread exited. Reported for every
	// process, also those whose Exec was not seen (started before Watch,
	// or forked without exec).
	Exit
)

func (t EventType) String() string {
	switch t {
	case Exec:
		return "exec"
	case Exit:
		return "exit"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is one exec or exit.
type Event struct {
	Type EventType
	// PID is the process id (thread-group id), also when a non-leader
	// thread exec'd or the leader thread exited before the others.
	PID int
	// Time is when it happened (wall clock, from the kernel's monotonic
	// timestamp).
	Time time.Time
	// StartTime is when the process started, in clock ticks since boot,
	// as Proc.StartTime: an Exit whose StartTime differs from the Proc the
	// agent holds for PID is another process's (pid reuse). 0 if the
	// kernel's value could not be read (counted: start_time_read_failed).
	StartTime uint64
}

// Options tunes a Watcher.
type Options struct {
	// RingBytes sizes the kernel's ring buffer: a power of two multiple of
	// the page size; 0 means 256 KiB (8192 events).
	RingBytes uint32
	// Buffer is the capacity of the Events channel; 0 means
	// DefaultBuffer. When it is full, events are dropped and counted
	// (lost_channel_full) rather than stalling the kernel's ring.
	Buffer int
	// Logger receives the reader's end; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultBuffer is the Events channel's capacity when Options.Buffer is 0.
const DefaultBuffer = 4096

// Counter is one of the watcher's counters, for metrics and `latscope
// status`.
type Counter struct {
	Name  string
	Value uint64
	Loss  bool // counts events that were lost
	Help  string
}

// Watcher reports processes' execs and exits as the kernel sees them,
// within a millisecond. Lost events (counted; see Counters) are repaired
// by the agent's periodic PIDs rescan.
type Watcher struct {
	objs   *bpf.DiscoveryObjects
	links  []link.Link
	reader *ringbuf.Reader
	events chan Event
	log    *slog.Logger
	done   chan struct{}

	channelFull atomic.Uint64
	duplicates  atomic.Uint64
	undecodable atomic.Uint64

	mu        sync.Mutex                                 // guards lastStats, closed and objs' closing
	lastStats [bpf.DiscoveryDiscoveryStatSTAT_MAX]uint64 // the kernel counters as last read
	closed    bool

	closeOnce sync.Once
	closeErr  error
}

// Watch loads and attaches the exec and exit programs and starts reading
// their events. It needs root or CAP_BPF+CAP_PERFMON and a kernel >= 5.8
// with BTF; the error says so when that is what failed.
func Watch(opts Options) (*Watcher, error) {
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultBuffer
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	objs, err := bpf.Load(bpf.Options{RingBytes: opts.RingBytes})
	if err != nil {
		return nil, fmt.Errorf("watch processes: %w", err)
	}
	links, err := objs.Attach()
	if err != nil {
		objs.Close()
		return nil, fmt.Errorf("watch processes: %w", err)
	}
	rd, err := ringbuf.NewReader(objs.Events)
	if err != nil {
		for _, l := range links {
			l.Close()
		}
		objs.Close()
		return nil, fmt.Errorf("watch processes: open ring buffer reader: %w", err)
	}
	w := &Watcher{
		objs:   objs,
		links:  links,
		reader: rd,
		events: make(chan Event, opts.Buffer),
		log:    opts.Logger,
		done:   make(chan struct{}),
	}
	go w.read()
	return w, nil
}

// Events delivers exec and exit events in the order they happened. It is
// closed by Close (or if reading the ring buffer fails, which is logged).
// Read it promptly: when it is full, new events are dropped and counted.
func (w *Watcher) Events() <-chan Event { return w.events }

// read moves records from the ring buffer to the channel until the
// reader is closed.
func (w *Watcher) read() {
	defer close(w.done)
	defer close(w.events)
	exits := newRecent(1024)
	var rec ringbuf.Record
	for {
		if err := w.reader.ReadInto(&rec); err != nil {
			if !errors.Is(err, ringbuf.ErrClosed) {
				w.log.Error("process discovery stopped: reading its ring buffer failed; processes are found by the /proc rescan only", "err", err)
			}
			return
		}
		e, ok := bpf.Decode(rec.RawSample)
		if !ok {
			w.undecodable.Add(1)
			continue
		}
		ev := Event{Type: Exec, PID: int(e.Pid), Time: wallTime(e.KtimeNs), StartTime: e.StartBoottime / nsPerTick}
		if e.Type == bpf.EventExit {
			ev.Type = Exit
			// Threads exiting together may each report the process's end.
			if !exits.add(procKey{e.Pid, e.StartBoottime}) {
				w.duplicates.Add(1)
				continue
			}
		}
		// Never block: a stalled consumer must not stall the reader, or
		// the ring would fill and the kernel drop every newer event.
		// Dropped here or there, the /proc rescan finds them.
		select {
		case w.events <- ev:
		default:
			w.channelFull.Add(1)
		}
	}
}

// nsPerTick converts ns to clock ticks: USER_HZ is 100 on every Linux
// architecture Go supports (/proc/PID/stat's unit).
const nsPerTick = 1e9 / 100

// wallTime converts a CLOCK_MONOTONIC timestamp (bpf_ktime_get_ns) to
// wall-clock time, against the clocks' offset now.
func wallTime(ktime uint64) time.Time {
	now := time.Now()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return now
	}
	mono := uint64(ts.Nano())
	if mono < ktime {
		return now
	}
	return now.Add(-time.Duration(mono - ktime))
}

// procKey identifies a process instance.
type procKey struct {
	pid   uint32
	start uint64
}

// recent remembers the last n keys added.
type recent struct {
	set  map[procKey]bool
	ring []procKey
	next int
}

func newRecent(n int) *recent {
	return &recent{set: make(map[procKey]bool, n), ring: make([]procKey, 0, n)}
}

// add records k and reports whether it was new.
func (r *recent) add(k procKey) bool {
	if r.set[k] {
		return false
	}
	if len(r.ring) < cap(r.ring) {
		r.ring = append(r.ring, k)
	} else {
		delete(r.set, r.ring[r.next])
		r.ring[r.next] = k
		r.next = (r.next + 1) % len(r.ring)
	}
	r.set[k] = true
	return true
}

// Counters returns the kernel program's counters and the watcher's own:
// every lost event is in one whose Loss is set.
func (w *Watcher) Counters() []Counter {
	stats := w.readStats()
	out := make([]Counter, 0, len(stats)+3)
	for i, s := range bpf.Stats {
		out = append(out, Counter{Name: s.Name, Value: stats[i], Loss: s.Loss, Help: s.Help})
	}
	return append(out,
		Counter{"lost_channel_full", w.channelFull.Load(), true, "events dropped because the agent did not read them fast enough (the /proc rescan repairs them)"},
		Counter{"exit_duplicates_dropped", w.duplicates.Load(), false, "second reports of one process's exit (its last threads exited together), dropped"},
		Counter{"lost_undecodable", w.undecodable.Load(), true, "ring buffer records of an unknown shape (please report)"},
	)
}

// readStats reads the kernel counters, or returns them as last read when
// they cannot be (after Close; a failed read is logged).
func (w *Watcher) readStats() [bpf.DiscoveryDiscoveryStatSTAT_MAX]uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.lastStats
	}
	stats, err := bpf.ReadStats(w.objs.Stats)
	if err != nil {
		w.log.Warn("read process discovery counters", "err", err)
		return w.lastStats
	}
	w.lastStats = stats
	return stats
}

// Close detaches the programs, stops the reader (closing Events) and
// frees the kernel objects; Counters keeps reporting the final values. It is safe to call more than once; later
// calls return the first's result.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		var errs []error
		for _, l := range w.links {
			if err := l.Close(); err != nil {
				errs = append(errs, fmt.Errorf("detach discovery program: %w", err))
			}
		}
		if err := w.reader.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close discovery ring buffer: %w", err))
		}
		<-w.done
		w.mu.Lock()
		if stats, err := bpf.ReadStats(w.objs.Stats); err == nil {
			w.lastStats = stats // Counters reports these from now on
		}
		w.closed = true
		if err := w.objs.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close discovery BPF objects: %w", err))
		}
		w.mu.Unlock()
		w.closeErr = errors.Join(errs...)
	})
	return w.closeErr
}
