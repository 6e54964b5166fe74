package ui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/metrics"
)

// overviewData is the overview page's.
type overviewData struct {
	Req     api.OverviewRequest
	Ov      api.Overview
	Windows []link
	Kinds   []link
	Sorts   []link
	Rows    []overviewRow
	// Empty, when set, replaces the table: why there is nothing to show.
	Empty *emptyState
	// JSON is the same data from the API.
	JSON string
}

type overviewRow struct {
	api.OperationOverview
	// TracesURL lists its slowest requests of the window; FlameURL is the
	// flame graph of its slowest 1% against the hour before.
	TracesURL, FlameURL, ServiceURL string
	// Spark is the sparkline's data: p99 in ms per step, null where the
	// step had no span (JSON).
	Spark string
	// Causes is the stacked bar of where time goes (runtime attribution),
	// largest first; nil without attribution.
	Causes []causeShare
	// Trend: "worse" / "better" / "" (within ±10%, or not comparable).
	Trend string
}

// causeShare is one segment of a where-time-goes bar.
type causeShare struct {
	Name  string
	Ns    int64
	Share float64 // 0..1 of the bar
	Index int     // stable colour index of the category
}

// link is one choice of a segmented control.
type link struct {
	Label, URL string
	Current    bool
}

// overviewWindows are the windows the page offers (any from 20s to 1h
// works in the URL).
var overviewWindows = []string{"5m", "15m", "1h"}

func (u *UI) overview(w http.ResponseWriter, r *http.Request) {
	v, err := queryValues(r)
	if err != nil {
		u.badRequest(w, r, err)
		return
	}
	req, err := api.ParseOverview(v)
	if err != nil {
		u.badRequest(w, r, err)
		return
	}
	d := overviewData{Req: req}
	p := page{Title: "Overview", Nav: "overview", Data: &d}
	if u.opts.History == nil {
		d.Empty = &emptyState{Heading: "No RED history", Lines: []string{"This agent keeps no per-operation history (Options.History is unset): the overview has nothing to read."}}
		u.render(w, "overview", http.StatusOK, p)
		return
	}
	ov, err := api.OverviewOf(u.opts.History, req)
	if err != nil {
		u.badRequest(w, r, fmt.Errorf("parameter window: %w", err))
		return
	}
	d.Ov = ov
	d.JSON = "/api/overview?" + v.Encode()
	set := func(k, val string) string {
		c := url.Values{}
		for key, vals := range v {
			c[key] = slices.Clone(vals)
		}
		if val == "" {
			c.Del(k)
		} else {
			c.Set(k, val)
		}
		return "/?" + c.Encode()
	}
	for _, win := range overviewWindows {
		d.Windows = append(d.Windows, link{Label: win, URL: set("window", win), Current: ov.Window == win})
	}
	if !slices.Contains(overviewWindows, ov.Window) {
		d.Windows = append(d.Windows, link{Label: ov.Window, URL: set("window", ov.Window), Current: true})
	}
	for _, k := range []string{"", "server", "client", "internal"} {
		label := k
		if k == "" {
			label = "all kinds"
		}
		d.Kinds = append(d.Kinds, link{Label: label, URL: set("kind", k), Current: req.Kind == k})
	}
	for _, s := range api.OverviewSorts {
		d.Sorts = append(d.Sorts, link{Label: s, URL: set("sort", s), Current: req.Sort == s})
	}
	window := time.Duration(ov.WindowNs)
	for _, op := range ov.Operations {
		row := overviewRow{OperationOverview: op}
		q := url.Values{"service": {op.Service}, "operation": {op.Operation}, "since": {ov.Window}}
		row.TracesURL = "/traces?" + q.Encode()
		fq := url.Values{"service": {op.Service}, "operation": {op.Operation}, "since": {ov.Window}, "slowest": {"1%"},
			"baselineSince": {formatDuration(window + time.Hour)}, "normalize": {"true"}}
		row.FlameURL = "/flame?" + fq.Encode()
		row.ServiceURL = set("service", op.Service)
		spark := make([]*float64, len(op.Sparkline))
		for i, p := range op.Sparkline {
			if p != nil {
				ms := float64(*p) / 1e6
				spark[i] = &ms
			}
		}
		b, _ := json.Marshal(spark)
		row.Spark = string(b)
		row.Causes = causeShares(op.Current.Causes)
		if op.P99Change != nil {
			switch {
			case op.Worse > 0.1:
				row.Trend = "worse"
			case *op.P50Change < 0.9 && *op.P99Change < 0.9 && *op.ErrorRateChange <= 0:
				row.Trend = "better"
			}
		}
		d.Rows = append(d.Rows, row)
	}
	// A window is whole buckets, the last one filling: covered falls short
	// of the window by less than a step even long after the start.
	if ov.CoveredNs < ov.WindowNs-ov.StepNs {
		p.Notes = append(p.Notes, fmt.Sprintf("The agent has been counting for %s of this %s window: rates are over that time.", fmtDur(ov.CoveredNs), ov.Window))
	}
	if ov.PreviousCoveredNs == 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("No previous window to compare yet: changes appear once the agent has run for %s.", formatDuration(2*window)))
	}
	if len(d.Rows) == 0 {
		d.Empty = u.emptyState(fmt.Sprintf("No span ended in the last %s", ov.Window), req.Service, req.Kind)
	} else if !ov.Attributed {
		p.Notes = append(p.Notes, attributionMissing)
	}
	u.render(w, "overview", http.StatusOK, p)
}

// attributionMissing is said wherever a view would show runtime
// attribution and the spans carry none.
const attributionMissing = "Where time goes (on CPU, runnable, GC, blocked on network, locks, channels, sleep, syscalls, downstream) is not recorded: " +
	"no span here carries a full runtime-attribution split (latscope.time.*). Spans get one while deep attribution runs " +
	"(latscope attribute --for 60s, or attribution.auto in the agent's configuration: docs/attribution.md); " +
	"until then the dominant cause shown is the critical path's largest part. See docs/ui.md."

// causeShares turns a window's cause sums into bar segments, largest
// first; nil without any.
func causeShares(causes map[string]int64) []causeShare {
	var total int64
	for _, ns := range causes {
		total += ns
	}
	if total <= 0 {
		return nil
	}
	var out []causeShare
	for i := range metrics.NumCauses {
		name := metrics.CauseName(i)
		if ns := causes[name]; ns > 0 {
			out = append(out, causeShare{Name: name, Ns: ns, Share: float64(ns) / float64(total), Index: i})
		}
	}
	slices.SortStableFunc(out, func(a, b causeShare) int { return int(b.Ns - a.Ns) })
	return out
}

// causeIndex is the stable colour index of a cause name.
func causeIndex(name string) int {
	for i := range metrics.NumCauses {
		if metrics.CauseName(i) == name {
			return i
		}
	}
	return metrics.NumCauses
}

// formatDuration writes a duration as the URLs take it: 5m, 1h5m, 90s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// emptyState says why a page has nothing to show and what to do.
type emptyState struct {
	Heading string
	Lines   []string
	// Skipped are processes the selectors picked that cannot be traced.
	Skipped []skippedProcess
}

// emptyState explains an empty view from the agent's status: no process
// traced (and the selectors, and what was skipped), or processes traced
// that made no span matching the filters.
func (u *UI) emptyState(heading, service, kind string) *emptyState {
	e := &emptyState{Heading: heading}
	st, ok := u.agentStatus()
	if !ok {
		e.Lines = append(e.Lines, "Send the traced services some requests; spans appear when a traced call returns.")
		return e
	}
	for _, s := range st.Skipped {
		if s.Selected {
			e.Skipped = append(e.Skipped, s)
		}
	}
	if len(st.Processes) == 0 {
		e.Heading = "No Go process matched your selectors"
		e.Lines = append(e.Lines,
			"Selectors: "+st.Selectors.String()+".",
			"Start a Go process they match, or change them (--exe, --name, --port, --cgroup, or selectors in the config file; SIGHUP reloads it): see docs/agent.md.")
		if len(e.Skipped) > 0 {
			e.Lines = append(e.Lines, "These processes were selected but cannot be traced:")
		}
		return e
	}
	var names []string
	for _, p := range st.Processes {
		names = append(names, fmt.Sprintf("%s (pid %d)", p.Service, p.PID))
	}
	if len(names) > 6 {
		names = append(names[:6], fmt.Sprintf("and %d more", len(names)-6))
	}
	e.Lines = append(e.Lines, fmt.Sprintf("Tracing %d process(es): %s.", len(st.Processes), strings.Join(names, ", ")))
	if service != "" || kind != "" {
		e.Lines = append(e.Lines, "Nothing matched the filters: remove them, or widen the window.")
	}
	e.Lines = append(e.Lines, "Send them requests: a span appears when a traced call returns (servers, clients, database calls, and the functions --funcs names).")
	return e
}
