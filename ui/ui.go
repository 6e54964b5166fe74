// Package ui is the web UI the agent serves: server-rendered pages
// (html/template) over the trace store, the recent RED history and the
// critical-path analyses, with their assets embedded in the binary, so it
// works offline and needs no Node to build.
//
// Pages (GET; a bad parameter answers 400 with a page naming it):
//
//	/                 overview: every operation's rate, error %, p50/p90/p99 over a window
//	                  and the window before it, a p99 sparkline, where time goes; worst first
//	/traces?…         slow traces: the slowest requests of a query (api.ParseRequests)
//	/trace/{id}       one trace: the critical path explained, a waterfall across services
//	                  and goroutines with the path marked, each span's attributes
//	/flame?…          the critical-path flame graph of a query (api.ParseFlame), against a
//	                  baseline window; pprof's own flame graph (under /pprof/) embedded
//	/status           the agent: processes traced and skipped, counters, store, export
//	/static/…         CSS, JS and the vendored uPlot (charts)
//
// The JSON the pages' scripts read (/api/timeline) and their JSON twins
// (/api/overview, /api/requests) are the api package's. Data flows one
// way: the UI reads the store, metrics.History, the analyses and the
// agent's status; nothing reads the UI.
package ui

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/latscope/latscope/analysis/flame"
	"github.com/latscope/latscope/metrics"
	"github.com/latscope/latscope/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configures the UI. Store is required; the rest are optional.
type Options struct {
	Store *store.Store
	// History is the recent RED per operation the overview reads; without
	// it the overview says so.
	History *metrics.History
	// Status returns the agent's status, as /api/status answers it (it is
	// read through its JSON form): the status page, and the empty states
	// that say which processes are traced or why none is.
	Status func() any
	// Split splits flame graphs' segments by cause (flame.SelfSplit: the
	// agent's CPU samples put code under [on cpu]); nil: none.
	Split flame.SelfSplit
	// JaegerQueryURL, when set, is the base URL of a Jaeger UI holding the
	// exported traces: the trace page links to {JaegerQueryURL}/trace/{id}.
	JaegerQueryURL string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log receives what the handler cannot tell the browser.
	Log *slog.Logger
}

// UI serves the pages. Create it with New.
type UI struct {
	opts   Options
	log    *slog.Logger
	pages  map[string]*template.Template
	static http.Handler
	status statusRates
}

// New returns the UI's handler. It fails only if an embedded template
// does not parse (a build defect).
func New(opts Options) (*UI, error) {
	if opts.Store == nil {
		return nil, fmt.Errorf("ui: Options.Store is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	u := &UI{opts: opts, log: opts.Log, pages: map[string]*template.Template{}}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	for _, page := range []string{"overview", "traces", "trace", "flame", "status", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+page+".html")
		if err != nil {
			return nil, fmt.Errorf("ui: template %s: %w", page, err)
		}
		u.pages[page] = t
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	u.static = http.StripPrefix("/static/", http.FileServerFS(sub))
	return u, nil
}

// ServeHTTP routes the UI's paths.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	path := r.URL.Path
	switch {
	case path == "/":
		u.overview(w, r)
	case path == "/traces":
		u.traces(w, r)
	case strings.HasPrefix(path, "/trace/"):
		u.trace(w, r, strings.TrimPrefix(path, "/trace/"))
	case path == "/flame":
		u.flame(w, r)
	case path == "/status":
		u.statusPage(w, r)
	case strings.HasPrefix(path, "/static/"):
		// Assets change only with the binary: an hour of caching is safe
		// and spares a narrow link.
		w.Header().Set("Cache-Control", "public, max-age=3600")
		u.static.ServeHTTP(w, r)
	default:
		u.fail(w, r, http.StatusNotFound, "Page not found", fmt.Sprintf("There is no page at %s.", path), "")
	}
}

// page is what every template gets: the layout's fields and the page's
// own data.
type page struct {
	Title string
	Nav   string // the nav entry to mark current
	// Now is when the page was rendered.
	Now  time.Time
	Data any
	// Notes are shown above the page's content (window not yet covered,
	// attribution not recorded, …).
	Notes []string
}

func (u *UI) render(w http.ResponseWriter, name string, code int, p page) {
	p.Now = u.opts.Now()
	var buf bytes.Buffer
	if err := u.pages[name].Execute(&buf, p); err != nil {
		u.log.Error("render UI page", "page", name, "err", err)
		http.Error(w, "render "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// Everything the pages load is served here: no CDN, no inline
	// scripts but JSON data blocks.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-src 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// errorData is the error page's.
type errorData struct {
	Code    int
	Heading string
	Message string
	// Hint says what to do next; Back is a link to try instead.
	Hint string
}

func (u *UI) fail(w http.ResponseWriter, r *http.Request, code int, heading, msg, hint string) {
	u.render(w, "error", code, page{Title: heading, Data: errorData{Code: code, Heading: heading, Message: msg, Hint: hint}})
}

// badRequest answers a parameter error: the message names it.
func (u *UI) badRequest(w http.ResponseWriter, r *http.Request, err error) {
	u.fail(w, r, http.StatusBadRequest, "Bad parameter", err.Error(), "Fix it in the address bar, or use the page's form.")
}

// queryValues parses the query strictly, as the API does: an undecodable
// pair (an unescaped %) is an error, not silently dropped.
func queryValues(r *http.Request) (url.Values, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w (escape %% as %%25)", r.URL.RawQuery, err)
	}
	return v, nil
}

// agentStatus reads the agent's status through its JSON form; ok is
// false without Options.Status or if it does not decode.
func (u *UI) agentStatus() (agentStatus, bool) {
	var st agentStatus
	if u.opts.Status == nil {
		return st, false
	}
	b, err := json.Marshal(u.opts.Status())
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		u.log.Warn("read agent status for the UI", "err", err)
		return st, false
	}
	return st, true
}
