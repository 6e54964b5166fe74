// Package tree prints traces as indented call trees for a terminal.
package tree

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/latscope/latscope/span"
)

// Printer is a span.Exporter that prints each trace once it has been
// quiet for Linger (a goroutine can outlive the call that started it, so
// a trace's spans may arrive in several batches), and everything left at
// Close.
type Printer struct {
	w      io.Writer
	linger time.Duration

	mu     sync.Mutex
	traces map[span.TraceID]*pending
	order  []span.TraceID
	stop   chan struct{}
	done   chan struct{}
}

type pending struct {
	spans []*span.Span
	last  time.Time
}

// New starts a Printer on w.
func New(w io.Writer, linger time.Duration) *Printer {
	p := &Printer{w: w, linger: linger, traces: make(map[span.TraceID]*pending), stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

// Export buffers spans until their trace is quiet.
func (p *Printer) Export(spans []*span.Span) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for _, s := range spans {
		t := p.traces[s.TraceID]
		if t == nil {
			t = &pending{}
			p.traces[s.TraceID] = t
			p.order = append(p.order, s.TraceID)
		}
		t.spans = append(t.spans, s)
		t.last = now
	}
	return nil
}

// Close prints every buffered trace.
func (p *Printer) Close() error {
	close(p.stop)
	<-p.done
	p.print(time.Time{})
	return nil
}

func (p *Printer) loop() {
	defer close(p.done)
	tick := time.NewTicker(p.linger / 2)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-tick.C:
			p.print(now.Add(-p.linger))
		}
	}
}

// print writes the traces quiet since before (all when before is zero).
func (p *Printer) print(before time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := p.order[:0]
	for _, id := range p.order {
		t := p.traces[id]
		if !before.IsZero() && t.last.After(before) {
			keep = append(keep, id)
			continue
		}
		delete(p.traces, id)
		Write(p.w, t.spans)
	}
	p.order = keep
}

// Write prints the spans of one trace as a tree, children in start order.
func Write(w io.Writer, spans []*span.Span) {
	byID := make(map[span.SpanID]bool, len(spans))
	children := make(map[span.SpanID][]*span.Span)
	for _, s := range spans {
		byID[s.SpanID] = true
	}
	var roots []*span.Span
	for _, s := range spans {
		if s.ParentID.IsZero() || !byID[s.ParentID] {
			roots = append(roots, s)
		} else {
			children[s.ParentID] = append(children[s.ParentID], s)
		}
	}
	byStart := func(l []*span.Span) {
		sort.SliceStable(l, func(i, j int) bool { return l[i].Start.Before(l[j].Start) })
	}
	byStart(roots)
	var sb strings.Builder
	for _, r := range roots {
		fmt.Fprintf(&sb, "trace %s  pid %d  %d spans\n", r.TraceID, pid(r), count(r, children))
		var walk func(s, parent *span.Span, depth int)
		walk = func(s, parent *span.Span, depth int) {
			sb.WriteString(strings.Repeat("  ", depth+1))
			// "go": the call ran on another goroutine of the same process
			// (a child in another process is a remote call).
			if parent != nil && s.GoID != parent.GoID && pid(s) == pid(parent) {
				sb.WriteString("go ")
			}
			fmt.Fprintf(&sb, "%s  %s  g%d", s.Name, fmtDur(s.Duration()), s.GoID)
			if s.File != "" {
				fmt.Fprintf(&sb, "  %s:%d", filepath.Base(s.File), s.Line)
			}
			if s.Unwound {
				sb.WriteString("  [unwound by panic]")
			}
			if s.Orphan {
				sb.WriteString("  [parent not traced]")
			}
			sb.WriteByte('\n')
			kids := children[s.SpanID]
			byStart(kids)
			for _, k := range kids {
				walk(k, s, depth+1)
			}
		}
		walk(r, nil, 0)
	}
	io.WriteString(w, sb.String())
}

func pid(s *span.Span) int {
	if s.Process == nil {
		return 0
	}
	return s.Process.PID
}

func count(s *span.Span, children map[span.SpanID][]*span.Span) int {
	n := 1
	for _, c := range children[s.SpanID] {
		n += count(c, children)
	}
	return n
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(d.Nanoseconds())/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d.Nanoseconds())/1e6)
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}
