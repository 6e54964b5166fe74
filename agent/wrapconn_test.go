package agent_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
)

// An http.Transport whose DialContext wraps the connection (a pool's
// handle around a metering wrapper, the conn a later field of each):
// every request still carries its client span's context, because it
// follows the goroutine that writes it to whatever socket lies beneath,
// not the connection's type. Under GOGC=1 goroutines are preempted all
// the time; half the requests have a body.
func TestWrappedConnPropagation(t *testing.T) {
	fixture.RequireRoot(t)
	t.Setenv("GOGC", "1")
	const calls, conc = 400, 8
	for _, tc := range []string{"go1.21.13", "local", "go1.27.3"} {
		t.Run(tc, func(t *testing.T) {
			bin := fixture.Build(t, "wrapconn", tc, fixture.Stripped)
			tr := traceCommand(t, agent.Config{Inject: true}, nil, fmt.Sprintf("wrapped %d ok\n", calls), bin, fmt.Sprint(calls), fmt.Sprint(conc))
			servers, clients := tr.ofKind(span.KindServer), tr.ofKind(span.KindClient)
			if len(servers) != calls || len(clients) != calls {
				t.Fatalf("%d server and %d client spans, want %d and %d", len(servers), len(clients), calls, calls)
			}
			wrong := 0
			for _, s := range servers {
				c := tr.byID[s.ParentID]
				if c == nil || c.Kind != span.KindClient || c.TraceID != s.TraceID || !s.RemoteParent ||
					!strings.HasSuffix(fmt.Sprint(attr(c, "url.full")), fmt.Sprint(attr(s, "url.path"))) {
					wrong++
				}
			}
			if wrong > 0 {
				t.Errorf("%d of %d server spans do not continue the client span of their request", wrong, calls)
			}
			checkCounters(t, tr.res, map[string]uint64{"propagation_injected": calls, "propagation_failed": 0, "propagation_unsent": 0,
				"propagation_conn_unknown": 0, "propagation_already_present": 0})
		})
	}
}
