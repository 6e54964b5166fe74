package ui

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/latscope/latscope/analysis/flame"
	"github.com/latscope/latscope/api"
)

// flameData is the flame page's.
type flameData struct {
	Form     url.Values
	Req      api.FlameRequest
	Describe string
	// Window and Base are the two windows' requests (Base nil without a
	// baseline).
	Window, Base *flameSide
	// Frames are the largest own times on the path per request (with a
	// baseline: the largest changes).
	Frames []frameRow
	// GraphURL is pprof's flame graph of the same query (embedded);
	// PprofURL its full UI, TopURL its top view, DownloadURL the profile.
	GraphURL, PprofURL, TopURL, DownloadURL string
	Timeline                                string
	Compare                                 []link
	Services, Operations                    []string
	Windows                                 []string
	Empty                                   *emptyState
}

type flameSide struct {
	Label    string
	From, To time.Time
	Requests int64
	Total    time.Duration
	Mean     time.Duration
}

// frameRow is one frame's own critical-path time per request.
type frameRow struct {
	Name          string
	Window, Base  time.Duration
	Delta         time.Duration
	Share         float64 // of the window's mean request
	Grew, HasBase bool
}

// flameWindows are the windows the form offers.
var flameWindows = []string{"5m", "15m", "1h", "2h"}

func (u *UI) flame(w http.ResponseWriter, r *http.Request) {
	v, err := queryValues(r)
	if err != nil {
		u.badRequest(w, r, err)
		return
	}
	// The page's default window: the last 15 minutes (the API's is
	// everything stored).
	if v.Get("since") == "" && v.Get("start") == "" {
		v.Set("since", "15m")
	}
	now := u.opts.Now()
	req, err := api.ParseFlame(v, now)
	if err != nil {
		u.badRequest(w, r, err)
		return
	}
	res, err := api.Flame(req, api.StoreSource(u.opts.Store), u.opts.Split)
	if err != nil {
		u.badRequest(w, r, err)
		return
	}
	d := &flameData{Form: v, Req: req, Services: u.opts.Store.Services(), Windows: flameWindows}
	if s := req.Query.Service; s != "" {
		for _, op := range u.opts.Store.Operations(s, "") {
			if len(d.Operations) == 0 || d.Operations[len(d.Operations)-1] != op.Name {
				d.Operations = append(d.Operations, op.Name)
			}
		}
	}
	end := req.Query.End
	if end.IsZero() {
		end = now
	}
	d.Window = side("window", req.Query.Start, end, res.Window)
	if res.Base != nil {
		d.Base = side("baseline", req.BaselineStart, req.BaselineEnd, res.Base)
	}
	d.Describe = describeFlame(req)
	d.Frames = frames(res, req.Normalize)

	keep := url.Values{}
	for k, vals := range v {
		switch k {
		case "service", "operation", "since", "until", "start", "end", "minDuration", "slowest", "error",
			"baselineSince", "baselineUntil", "baselineStart", "baselineEnd", "normalize":
			keep[k] = vals
		}
	}
	q := keep.Encode()
	d.GraphURL = api.PprofPrefix + "flamegraph?" + q + "&si=" + flame.SampleCriticalPath
	d.PprofURL = api.PprofPrefix + "?" + q
	d.TopURL = api.PprofPrefix + "top?" + q + "&si=" + flame.SampleCriticalPath
	d.DownloadURL = "/api/flame?" + q
	if s := req.Query.Service; s != "" {
		tq := url.Values{"service": {s}, "window": {"1h"}}
		if req.Query.Operation != "" {
			tq.Set("operation", req.Query.Operation)
		}
		d.Timeline = "/api/timeline?" + tq.Encode()
	}
	// Baseline choices, for a window given as since.
	if since := v.Get("since"); since != "" && v.Get("until") == "" {
		if sd, err := time.ParseDuration(since); err == nil {
			set := func(base string) string {
				c := url.Values{}
				for k, vals := range keep {
					c[k] = vals
				}
				c.Del("baselineSince")
				c.Del("baselineUntil")
				c.Del("baselineStart")
				c.Del("baselineEnd")
				if base != "" {
					c.Set("baselineSince", base)
					c.Set("normalize", "true")
				}
				return "/flame?" + c.Encode()
			}
			cur := v.Get("baselineSince")
			d.Compare = []link{
				{Label: "no baseline", URL: set(""), Current: !req.HasBaseline()},
				{Label: "the " + formatDuration(sd) + " before", URL: set(formatDuration(2 * sd)), Current: cur == formatDuration(2*sd)},
				{Label: "the hour before", URL: set(formatDuration(sd + time.Hour)), Current: cur == formatDuration(sd+time.Hour)},
			}
		}
	}
	p := page{Title: "Flame graph", Nav: "flame", Data: d}
	if res.Window.Requests == 0 {
		d.Empty = u.emptyState("No request matched", req.Query.Service, "")
		d.Empty.Lines = append([]string{"Nothing matched " + d.Describe + ". Widen the window or remove a filter."}, d.Empty.Lines...)
	} else if d.Base != nil && d.Base.Requests == 0 {
		p.Notes = append(p.Notes, "The baseline window holds no request (the agent's store may not reach back that far, or there was no traffic): the diff shows the window alone.")
	}
	u.render(w, "flame", http.StatusOK, p)
}

func side(label string, from, to time.Time, r *flame.Result) *flameSide {
	s := &flameSide{Label: label, From: from, To: to, Requests: r.Requests, Total: r.Total}
	if r.Requests > 0 {
		s.Mean = r.Total / time.Duration(r.Requests)
	}
	return s
}

// ownTimes sums each leaf frame's value (its own critical-path time),
// per request unless normalized already.
func ownTimes(p *profile.Profile, requests int64, normalized bool) map[string]time.Duration {
	out := map[string]time.Duration{}
	if p == nil {
		return out
	}
	for _, s := range p.Sample {
		if len(s.Location) == 0 || len(s.Location[0].Line) == 0 || s.Value[0] == 0 {
			continue
		}
		out[s.Location[0].Line[0].Function.Name] += time.Duration(s.Value[0])
	}
	if !normalized && requests > 0 {
		for k, v := range out {
			out[k] = v / time.Duration(requests)
		}
	}
	return out
}

// frames lists the frames with the most own time per request, or with a
// baseline the largest changes; at most 12.
func frames(res *api.FlameResult, normalized bool) []frameRow {
	win := ownTimes(res.Window.Profile, res.Window.Requests, normalized)
	var base map[string]time.Duration
	if res.Base != nil {
		base = ownTimes(res.Base.Profile, res.Base.Requests, normalized)
	}
	mean := time.Duration(0)
	if res.Window.Requests > 0 {
		mean = res.Window.Total / time.Duration(res.Window.Requests)
	}
	names := map[string]bool{}
	for k := range win {
		names[k] = true
	}
	for k := range base {
		names[k] = true
	}
	var out []frameRow
	for name := range names {
		f := frameRow{Name: name, Window: win[name], Base: base[name], HasBase: base != nil}
		f.Delta = f.Window - f.Base
		f.Grew = f.Delta > 0
		if mean > 0 {
			f.Share = float64(f.Window) / float64(mean)
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b frameRow) int {
		if base != nil {
			return cmp.Or(cmp.Compare(b.Delta, a.Delta), strings.Compare(a.Name, b.Name))
		}
		return cmp.Or(cmp.Compare(b.Window, a.Window), strings.Compare(a.Name, b.Name))
	})
	return out[:min(len(out), 12)]
}

func describeFlame(req api.FlameRequest) string {
	q := req.Query
	var b strings.Builder
	b.WriteString(describeSubject(q))
	if q.MinDuration > 0 {
		fmt.Fprintf(&b, " of at least %s", fmtDur(q.MinDuration))
	}
	if q.Slowest > 0 {
		fmt.Fprintf(&b, ", the slowest %s of each operation", fmtPct(q.Slowest))
	}
	if q.Errors {
		b.WriteString(", with an error")
	}
	return b.String()
}
