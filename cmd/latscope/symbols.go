package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/symbolizer"
)

// runSymbols implements `latscope symbols (BINARY | --pid PID) [--match REGEX]`:
// it prints what latscope knows about a Go binary and, for each matching
// function, the probe sites it would use. Without --match only functions
// of the main module's packages are listed (a binary holds thousands of
// runtime and library functions).
func runSymbols(args []string) error {
	fs := flag.NewFlagSet("symbols", flag.ContinueOnError)
	pid := fs.Int("pid", 0, "inspect the executable of this running process")
	match := fs.String("match", "", "Go regexp selecting functions by name (default: the main module's functions)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: latscope symbols (BINARY | --pid PID) [--match REGEX]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	var path string
	// Allow the binary before the flags too: `symbols ./app --match X`.
	if fs.NArg() > 0 {
		path = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
	}
	if (path == "") == (*pid == 0) || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("symbols: give exactly one BINARY or --pid PID")
	}
	var re *regexp.Regexp
	if *match != "" {
		var err error
		if re, err = regexp.Compile(*match); err != nil {
			return fmt.Errorf("symbols: --match: %w", err)
		}
	}
	var b *symbolizer.Binary
	var err error
	if *pid != 0 {
		b, err = symbolizer.OpenPID(*pid)
	} else {
		b, err = symbolizer.Open(path)
	}
	if err != nil {
		return fmt.Errorf("symbols: %w", err)
	}
	defer b.Close()
	return printSymbols(os.Stdout, b, re)
}

func printSymbols(w io.Writer, b *symbolizer.Binary, re *regexp.Regexp) error {
	fmt.Fprintf(w, "path:       %s\n", b.Path)
	fmt.Fprintf(w, "go version: %s\n", b.GoVersion)
	fmt.Fprintf(w, "arch:       %s\n", b.Arch)
	fmt.Fprintf(w, "pie:        %v\nstripped:   %v\ndwarf:      %v\n", b.PIE, b.Stripped, b.HasDWARF)
	if o, err := b.Offsets(); err != nil {
		fmt.Fprintf(w, "offsets:    unavailable: %v\n", err)
	} else {
		fmt.Fprintf(w, "offsets:    g.goid=%d g.parentGoid=%d g.stack.hi=%d (%s)\n", o.GoID, o.ParentGoID, o.StackHi, o.Source)
	}
	if g, err := b.GTLS(); err != nil {
		fmt.Fprintf(w, "g in TLS:   unavailable: %v\n", err)
	} else {
		fmt.Fprintf(w, "g in TLS:   fs_base%+d (%s)\n", g.Offset, g.Source)
	}
	mainPath := ""
	if b.Build != nil {
		mainPath = b.Build.Main.Path
		fmt.Fprintf(w, "module:     %s %s\n", b.Build.Main.Path, b.Build.Main.Version)
		for _, d := range b.Build.Deps {
			v := d.Version
			if d.Replace != nil {
				v += " => " + d.Replace.Path + " " + d.Replace.Version
			}
			fmt.Fprintf(w, "  dep:      %s %s\n", d.Path, v)
		}
	}
	selected := func(name string) bool {
		if re != nil {
			return re.MatchString(name)
		}
		// Default: the main module's functions ("main." for commands).
		return strings.HasPrefix(name, "main.") || mainPath != "" && strings.HasPrefix(name, mainPath+"/") || strings.HasPrefix(name, mainPath+".")
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "\nFUNCTION\tADDRESS\tSIZE\tRETURNS\tENTRY SITE\tEXIT SITES\tINLINED")
	n := 0
	for i := range b.Funcs {
		f := &b.Funcs[i]
		if !selected(f.Name) {
			continue
		}
		n++
		entry, exits, returns := "-", "-", "-"
		if s, err := b.Sites(f); err != nil {
			entry = "error: " + err.Error()
		} else {
			entry = describeEntry(b, f, s)
			returns = fmt.Sprint(len(s.Exits))
			exits = describeExits(b, f, s)
		}
		fmt.Fprintf(tw, "%s\t%#x\t%d\t%s\t%s\t%s\t%s\n", f.Name, f.Entry, f.End-f.Entry, returns, entry, exits, describeInline(b, f))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("symbols: write: %w", err)
	}
	if n == 0 {
		fmt.Fprintln(w, "no function matched; try --match with a broader regexp, e.g. --match '^main\\.'")
	}
	return nil
}

func describeSite(s symbolizer.Site) string {
	cost := "single-step"
	if s.Emulated {
		cost = "emulated"
	}
	return fmt.Sprintf("%#x %s (%s)", s.Addr, s.Insn, cost)
}

// describeEntry says where a user function's calls are seen entering
// (call_entry reads no argument): its entry site, or its callers' CALLs
// where that would be single-stepped and every call is direct.
func describeEntry(b *symbolizer.Binary, f *symbolizer.Func, s *symbolizer.Sites) string {
	if !s.CallEntry.Emulated {
		if calls, err := b.CallEntries(f); err == nil {
			return fmt.Sprintf("in callers: %d CALL(s) (emulated), first %s", len(calls), describeSite(calls[0]))
		}
	}
	return describeSite(s.CallEntry)
}

// describeExits summarises the exit sites a user function gets (call_exit
// reads no results): in its callers when they can be found, else its
// return paths' chosen sites.
func describeExits(b *symbolizer.Binary, f *symbolizer.Func, s *symbolizer.Sites) string {
	if len(s.Exits) == 0 {
		return "none (never returns)"
	}
	exits, notResumed := b.Exits(f, s, 0)
	emulated := 0
	for _, e := range exits {
		if e.Emulated {
			emulated++
		}
	}
	where := "in callers"
	switch {
	case notResumed != nil && agent.Learnable(b, s, exits):
		where = "own RETs until its call sites are learned, then in callers"
	case notResumed != nil:
		where = "own RETs"
	}
	return fmt.Sprintf("%s: %d/%d emulated, first %s", where, emulated, len(exits), describeSite(exits[0].Site))
}

func describeInline(b *symbolizer.Binary, f *symbolizer.Func) string {
	in, err := b.Inlined(f)
	switch {
	case err != nil:
		return "unknown: " + err.Error()
	case !in.Known:
		return "unknown: " + in.Reason
	case len(in.Callers) == 0:
		return "no"
	}
	return "yes: " + strings.Join(in.Callers, ", ")
}
