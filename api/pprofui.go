package api

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/pprof/driver"
	"github.com/google/pprof/profile"
)

// pprofUI serves pprof's own web UI (flame graph, top, graph, source,
// peek) for the profile of a flame query, under /pprof/: /pprof/?service=
// catalog&since=5m redirects to /pprof/flamegraph?…, as `go tool pprof
// -http` does at its root. pprof's driver builds the handlers
// (driver.Options.HTTPServer hands them over instead of listening); the
// profile's parameters ride in every page's query string next to pprof's
// own, so each query's handlers are kept a short while, keyed by the
// query, and the pages of one view read one snapshot.
//
// pprof's graph view runs Graphviz's dot: without it installed, that page
// answers 501 with pprof's message. Settings are not saved (the routes
// that would write pprof's settings file are not mounted).
type pprofUI struct {
	build func(FlameRequest) (*profile.Profile, error)
	now   func() time.Time
	log   *slog.Logger

	mu    sync.Mutex
	cache map[string]*uiEntry
}

type uiEntry struct {
	handlers map[string]http.Handler
	made     time.Time
}

// PprofPrefix is where pprof's web UI is mounted.
const PprofPrefix = "/pprof/"

const (
	uiTTL     = time.Minute // how long one query's snapshot serves its pages
	uiEntries = 16          // queries kept at most
)

// uiPages are the pprof pages mounted (none writes files).
var uiPages = []string{"/", "/flamegraph", "/top", "/graph", "/source", "/peek", "/disasm", "/download"}

func (u *pprofUI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	page := "/" + strings.TrimPrefix(r.URL.Path, PprofPrefix)
	if r.URL.Path == strings.TrimSuffix(PprofPrefix, "/") {
		http.Redirect(w, r, PprofPrefix+"?"+r.URL.RawQuery, http.StatusMovedPermanently)
		return
	}
	v, err := queryValues(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := ParseFlame(v, u.now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	handlers, err := u.handlers(v.Encode(), req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h, ok := handlers[page]
	if !ok {
		http.Error(w, fmt.Sprintf("no pprof page %s (pages: flamegraph, top, graph, source, peek)", page), http.StatusNotFound)
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = page
	h.ServeHTTP(w, r2)
}

// handlers returns the pprof handlers of the query, building them on a
// miss. key is the query string; pprof's own parameters in it make
// distinct keys for the same profile, which only costs a rebuild.
func (u *pprofUI) handlers(key string, req FlameRequest) (map[string]http.Handler, error) {
	key = flameKey(key)
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if e, ok := u.cache[key]; ok && now.Sub(e.made) < uiTTL {
		return e.handlers, nil
	}
	p, err := u.build(req)
	if err != nil {
		return nil, err
	}
	h, err := pprofHandlers(p, u.log)
	if err != nil {
		return nil, err
	}
	if u.cache == nil {
		u.cache = make(map[string]*uiEntry)
	}
	for k, e := range u.cache {
		if now.Sub(e.made) >= uiTTL || len(u.cache) >= uiEntries {
			delete(u.cache, k)
		}
	}
	u.cache[key] = &uiEntry{handlers: h, made: now}
	return h, nil
}

// flameKey keeps the flame parameters of an encoded query string.
func flameKey(encoded string) string {
	var keep []string
	for _, kv := range strings.Split(encoded, "&") {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "service", "operation", "since", "until", "start", "end", "minDuration", "slowest", "error",
			"baselineSince", "baselineUntil", "baselineStart", "baselineEnd", "normalize":
			keep = append(keep, kv)
		}
	}
	return strings.Join(keep, "&")
}

// pprofHandlers runs pprof's driver on p with -http and takes its handlers
// instead of letting it listen.
func pprofHandlers(p *profile.Profile, log *slog.Logger) (map[string]http.Handler, error) {
	var handlers map[string]http.Handler
	err := driver.PProf(&driver.Options{
		Flagset: newPprofFlags("-http=127.0.0.1:0", "-no_browser", "latscope"),
		Fetch:   profileFetcher{p},
		UI:      pprofLog{log},
		HTTPServer: func(args *driver.HTTPServerArgs) error {
			handlers = make(map[string]http.Handler)
			for _, page := range uiPages {
				if h := args.Handlers[page]; h != nil {
					handlers[page] = h
				}
			}
			return nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("pprof web UI: %w", err)
	}
	if handlers == nil {
		return nil, fmt.Errorf("pprof web UI: the driver returned no handlers")
	}
	return handlers, nil
}

// profileFetcher hands pprof's driver a profile already built. Its empty
// source URL tells the driver the profile is local: it saves no copy.
type profileFetcher struct{ p *profile.Profile }

func (f profileFetcher) Fetch(string, time.Duration, time.Duration) (*profile.Profile, string, error) {
	return f.p.Copy(), "", nil
}

// pprofFlags is the driver's command line: fixed arguments, parsed by a
// flag.FlagSet of its own (never the process's).
type pprofFlags struct {
	fs    *flag.FlagSet
	args  []string
	usage []string
}

func newPprofFlags(args ...string) *pprofFlags {
	fs := flag.NewFlagSet("pprof", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &pprofFlags{fs: fs, args: args}
}

func (f *pprofFlags) Bool(n string, d bool, u string) *bool          { return f.fs.Bool(n, d, u) }
func (f *pprofFlags) Int(n string, d int, u string) *int             { return f.fs.Int(n, d, u) }
func (f *pprofFlags) Float64(n string, d float64, u string) *float64 { return f.fs.Float64(n, d, u) }
func (f *pprofFlags) String(n, d, u string) *string                  { return f.fs.String(n, d, u) }
func (f *pprofFlags) StringList(n, d, u string) *[]*string {
	return &[]*string{f.fs.String(n, d, u)}
}
func (f *pprofFlags) ExtraUsage() string      { return strings.Join(f.usage, "\n") }
func (f *pprofFlags) AddExtraUsage(eu string) { f.usage = append(f.usage, eu) }
func (f *pprofFlags) Parse(usage func()) []string {
	if err := f.fs.Parse(f.args); err != nil {
		usage()
		return nil
	}
	return f.fs.Args()
}

// pprofLog is the driver's UI: what it prints goes to the agent's log at
// debug level, errors at warn; it never reads input or opens a browser.
type pprofLog struct{ log *slog.Logger }

func (pprofLog) ReadLine(string) (string, error) { return "", io.EOF }
func (u pprofLog) Print(args ...any) {
	u.log.Debug("pprof: " + strings.TrimSpace(fmt.Sprint(args...)))
}
func (u pprofLog) PrintErr(args ...any) {
	u.log.Warn("pprof: " + strings.TrimSpace(fmt.Sprint(args...)))
}
func (pprofLog) IsTerminal() bool                    { return false }
func (pprofLog) WantBrowser() bool                   { return false }
func (pprofLog) SetAutoComplete(func(string) string) {}
