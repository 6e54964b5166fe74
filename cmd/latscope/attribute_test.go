package main

import (
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latscope/latscope/api"
	"github.com/latscope/latscope/attribution"
)

// switchRecorder is an agent's deep-attribution switch that records what
// it was asked (the agent's own is tested in agent: TestDeepTimeBox).
type switchRecorder struct {
	mu    sync.Mutex
	state attribution.Deep
	asked []time.Duration
}

func (s *switchRecorder) StartDeep(d time.Duration, reason string) (attribution.Deep, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, d)
	now := time.Now()
	s.state = attribution.Deep{On: true, Since: now, Until: now.Add(d), Reason: reason, Periods: s.state.Periods + 1, LinksAttached: 3}
	return s.state, nil
}

func (s *switchRecorder) StopDeep() (attribution.Deep, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.On, s.state.Ended, s.state.LinksDetached = false, s.state.Periods, s.state.LinksAttached
	return s.state, nil
}

func (s *switchRecorder) DeepState() attribution.Deep {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// latscope attribute switches deep attribution through the agent's API
// and says what it did; a duration the agent refuses is an error that
// says what to give.
func TestAttributeCommand(t *testing.T) {
	sw := &switchRecorder{}
	srv := httptest.NewServer(api.New(api.Options{Attribution: sw}))
	defer srv.Close()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--status"}, 0, "deep attribution off: spans get their GC stop-the-world and assist time only\n"},
		{[]string{"--for", "90s"}, 0, "deep attribution on until "},
		{[]string{"--status"}, 0, "switched on by api): every span gets its full time split\n"},
		{[]string{"--off"}, 0, "deep attribution off: spans get their GC stop-the-world and assist time only (1 periods so far, the last switched on by api; 3 probe links attached, 3 detached)\n"},
		{[]string{"--for", "2h"}, 1, "attribute: 400 Bad Request: for=2h0m0s: give a duration from 1s to 1h0m0s, e.g. for=60s"},
		{[]string{"--off", "--status"}, 1, "give --off or --status, not both"},
	} {
		stdout, stderr, code := run(t, append([]string{"attribute", "--agent", srv.URL}, tc.args...)...)
		if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
			t.Errorf("latscope attribute %s: exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, stdout, stderr, tc.code, tc.want)
		}
	}
	if len(sw.asked) != 1 || sw.asked[0] != 90*time.Second {
		t.Errorf("the agent was asked for %v", sw.asked)
	}
	_, stderr, code := run(t, "attribute", "--agent", "http://127.0.0.1:1", "--status")
	if code == 0 || !strings.Contains(stderr, "is the agent running?") {
		t.Errorf("no agent: exit %d, %q", code, stderr)
	}
}
