package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/latscope/latscope/attribution"
)

// AttributionState is the answer of the /api/attribution routes.
type AttributionState struct {
	Deep attribution.Deep `json:"deep"`
}

// attributionAPI serves deep attribution's switch.
type attributionAPI struct {
	sw  attribution.Switch
	log *slog.Logger
}

func (a *attributionAPI) state(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, a.log, http.StatusOK, AttributionState{Deep: a.sw.DeepState()})
}

// start turns deep mode on for ?for= (a Go duration, 1s to 1h; default
// 1m). A bad duration is a 400 naming it; attribution unavailable in the
// agent (or a probe that does not attach) is a 503 with the reason.
func (a *attributionAPI) start(w http.ResponseWriter, r *http.Request) {
	d := attribution.DefaultTriggerFor
	if v := r.URL.Query().Get("for"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d < time.Second || d > attribution.MaxDeep {
			writeError(w, a.log, http.StatusBadRequest, fmt.Sprintf("for=%s: give a duration from 1s to %s, e.g. for=60s", v, attribution.MaxDeep))
			return
		}
	}
	st, err := a.sw.StartDeep(d, "api")
	if err != nil {
		writeError(w, a.log, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, a.log, http.StatusOK, AttributionState{Deep: st})
}

func (a *attributionAPI) stop(w http.ResponseWriter, r *http.Request) {
	st, err := a.sw.StopDeep()
	if err != nil {
		writeError(w, a.log, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, a.log, http.StatusOK, AttributionState{Deep: st})
}
