package api

import (
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/latscope/latscope/store"
)

// query serves Jaeger's HTTP query API from the store.
type query struct {
	store *store.Store
	log   *slog.Logger
	now   func() time.Time
}

// spanKinds are the spanKind values /api/operations accepts ("" for all).
var spanKinds = []string{"", "server", "client", "producer", "consumer", "internal"}

// services answers GET /api/services: ["frontend", …], sorted.
func (q *query) services(w http.ResponseWriter, r *http.Request) {
	svcs := q.store.Services()
	writeData(w, q.log, svcs, len(svcs))
}

// serviceOperations answers GET /api/services/{service}/operations: the
// service's distinct operation names, sorted.
func (q *query) serviceOperations(w http.ResponseWriter, r *http.Request) {
	names := []string{}
	for _, op := range q.store.Operations(r.PathValue("service"), "") {
		if len(names) == 0 || names[len(names)-1] != op.Name { // sorted by name
			names = append(names, op.Name)
		}
	}
	writeData(w, q.log, names, len(names))
}

// operations answers GET /api/operations?service=S&spanKind=K:
// [{"name", "spanKind"}, …].
func (q *query) operations(w http.ResponseWriter, r *http.Request) {
	v, err := queryValues(r)
	if err != nil {
		writeError(w, q.log, http.StatusBadRequest, err.Error())
		return
	}
	service, kind := v.Get("service"), v.Get("spanKind")
	if service == "" {
		writeError(w, q.log, http.StatusBadRequest, "parameter service is required: the service whose operations to list")
		return
	}
	if !slices.Contains(spanKinds, kind) {
		writeError(w, q.log, http.StatusBadRequest, "parameter spanKind: "+strconv.Quote(kind)+" is not one of "+strings.Join(spanKinds[1:], ", "))
		return
	}
	ops := q.store.Operations(service, kind)
	out := make([]jaegerOperation, len(ops))
	for i, op := range ops {
		out[i] = jaegerOperation{Name: op.Name, SpanKind: op.SpanKind}
	}
	writeData(w, q.log, out, len(out))
}

// search answers GET /api/traces: the traces the parameters select (see
// parseSearch), newest first. With traceID parameters (Jaeger's UI uses
// them to compare traces) it returns those traces instead and ignores the
// rest.
func (q *query) search(w http.ResponseWriter, r *http.Request) {
	v, err := queryValues(r)
	if err != nil {
		writeError(w, q.log, http.StatusBadRequest, err.Error())
		return
	}
	if ids := v["traceID"]; len(ids) > 0 {
		q.tracesByID(w, ids)
		return
	}
	sq, err := parseSearch(v, q.now())
	if err != nil {
		writeError(w, q.log, http.StatusBadRequest, err.Error())
		return
	}
	found := q.store.Search(sq)
	out := make([]jaegerTrace, len(found))
	for i, t := range found {
		out[i] = jaegerTraceOf(t)
	}
	writeData(w, q.log, out, len(out))
}

func (q *query) tracesByID(w http.ResponseWriter, ids []string) {
	out := []jaegerTrace{}
	for _, s := range ids {
		id, err := parseTraceID(s)
		if err != nil {
			writeError(w, q.log, http.StatusBadRequest, "parameter traceID: "+err.Error())
			return
		}
		if t, ok := q.store.Trace(id); ok {
			out = append(out, jaegerTraceOf(t))
		}
	}
	writeData(w, q.log, out, len(out))
}

// trace answers GET /api/traces/{traceID}: [trace], or 404 "trace not
// found". Grafana's start and end (ms) are accepted and ignored.
func (q *query) trace(w http.ResponseWriter, r *http.Request) {
	id, err := parseTraceID(r.PathValue("traceID"))
	if err != nil {
		writeError(w, q.log, http.StatusBadRequest, err.Error())
		return
	}
	v, err := queryValues(r)
	if err != nil {
		writeError(w, q.log, http.StatusBadRequest, err.Error())
		return
	}
	for _, name := range []string{"start", "end"} {
		if err := checkMillis(v, name); err != nil {
			writeError(w, q.log, http.StatusBadRequest, err.Error())
			return
		}
	}
	t, ok := q.store.Trace(id)
	if !ok {
		writeError(w, q.log, http.StatusNotFound, "trace not found")
		return
	}
	writeData(w, q.log, []jaegerTrace{jaegerTraceOf(t)}, 1)
}
