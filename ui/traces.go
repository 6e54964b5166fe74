package ui

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/latscope/latscope/analysis/flame"
	"github.com/latscope/latscope/api"
)

// tracesData is the slow-traces page's.
type tracesData struct {
	// Form holds the parameters as given, for the form's fields.
	Form     url.Values
	Req      api.RequestsRequest
	Res      api.Requests
	Rows     []traceRow
	Services []string
	// Operations are the chosen service's operations (the form's list).
	Operations []string
	// Describe says what is listed, in words.
	Describe string
	// FlameURL is the flame graph of the same requests; JSON the API's
	// answer; Timeline the chart's data (with a service).
	FlameURL, JSON, Timeline string
	// Slowest is the slowest row's duration (bars are relative to it).
	Slowest int64
	Empty   *emptyState
}

type traceRow struct {
	api.RequestRow
	URL string
	// Bar is the row's duration relative to the slowest, 0..1.
	Bar float64
	// CauseIndex colours an attribution cause; -1 for a critical-path
	// frame.
	CauseIndex int
}

func (u *UI) traces(w http.ResponseWriter, r *http.Request) {
	v, err := queryValues(r)
	if err != nil {
		u.badRequest(w, r, err)
		return
	}
	req, err := api.ParseRequests(v, u.opts.Now())
	if err != nil {
		u.badRequest(w, r, err)
		return
	}
	d := &tracesData{Form: v, Req: req, Services: u.opts.Store.Services()}
	if req.Query.Service != "" {
		for _, op := range u.opts.Store.Operations(req.Query.Service, "") {
			if len(d.Operations) == 0 || d.Operations[len(d.Operations)-1] != op.Name {
				d.Operations = append(d.Operations, op.Name)
			}
		}
	}
	d.Res = api.RequestsOf(u.opts.Store, req)
	if len(d.Res.Rows) > 0 {
		d.Slowest = d.Res.Rows[0].DurationNs
	}
	for _, row := range d.Res.Rows {
		tr := traceRow{RequestRow: row, URL: "/trace/" + row.TraceID + "?span=" + row.SpanID, CauseIndex: -1}
		if d.Slowest > 0 {
			tr.Bar = float64(row.DurationNs) / float64(d.Slowest)
		}
		if row.Cause.Source == "attribution" {
			tr.CauseIndex = causeIndex(row.Cause.Name)
		}
		d.Rows = append(d.Rows, tr)
	}
	d.Describe = describeRequests(req)
	d.JSON = "/api/requests?" + v.Encode()
	fq := url.Values{"since": {formatDuration(req.Since)}}
	for _, k := range []string{"service", "operation", "slowest", "error"} {
		if val := v.Get(k); val != "" && !(k == "error" && val != "true") {
			fq.Set(k, val)
		}
	}
	if m := v.Get("min"); m != "" {
		fq.Set("minDuration", m)
	}
	d.FlameURL = "/flame?" + fq.Encode()
	if req.Query.Service != "" {
		tq := url.Values{"service": {req.Query.Service}, "window": {timelineWindow(req.Since)}}
		if req.Query.Operation != "" {
			tq.Set("operation", req.Query.Operation)
		}
		d.Timeline = "/api/timeline?" + tq.Encode()
	}
	p := page{Title: "Slow traces", Nav: "traces", Data: d}
	if len(d.Rows) == 0 {
		d.Empty = u.emptyState("No request matched", req.Query.Service, "")
		d.Empty.Lines = append([]string{"Nothing matched " + d.Describe + ". Widen the window (since), lower min or slowest, or pick another operation on the overview."}, d.Empty.Lines...)
	}
	if !d.Res.Oldest.IsZero() && d.Res.Oldest.After(req.Query.Start) && u.opts.Store.Stats().EvictedTraces > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("The store holds %s traces, the oldest from %s (%s): older requests of this window were evicted to stay within the store's budget (--store-size).",
			fmtCount(d.Res.Traces), d.Res.Oldest.Local().Format("15:04:05"), fmtAgo(d.Res.Oldest, u.opts.Now())))
	}
	u.render(w, "traces", http.StatusOK, p)
}

// timelineWindow picks the chart's window: the list's, within what the
// history answers.
func timelineWindow(since time.Duration) string {
	switch {
	case since <= 20*time.Second:
		return "20s"
	case since <= 5*time.Minute:
		return formatDuration(since.Round(10 * time.Second))
	case since <= time.Hour:
		return formatDuration(since.Round(time.Minute))
	}
	return "1h"
}

// describeSubject says whose requests a query selects, the opening of
// describeRequests and describeFlame.
func describeSubject(q flame.Query) string {
	switch {
	case q.Service != "" && q.Operation != "":
		return fmt.Sprintf("requests of %s %s", q.Service, q.Operation)
	case q.Service != "":
		return "requests of " + q.Service
	case q.Operation != "":
		return "requests named " + q.Operation
	}
	return "traces (from their root)"
}

// describeRequests says in words what a requests query selects.
func describeRequests(req api.RequestsRequest) string {
	q := req.Query
	var b strings.Builder
	b.WriteString(describeSubject(q))
	fmt.Fprintf(&b, " in the last %s", formatDuration(req.Since))
	if q.MinDuration > 0 {
		fmt.Fprintf(&b, ", at least %s", fmtDur(q.MinDuration))
	}
	if q.Slowest > 0 {
		fmt.Fprintf(&b, ", the slowest %s of each operation", fmtPct(q.Slowest))
	}
	if q.Errors {
		b.WriteString(", with an error")
	}
	if req.NoErrors {
		b.WriteString(", without errors")
	}
	return b.String()
}
