package flame

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/span"
)

// Time splits become leaf frames under each span's own: a full split in
// proportion (less downstream), the always-on one its GC time only; the
// total stays exact.
func TestTimeCauses(t *testing.T) {
	tr := demoTrace(1, 0, 10) // redis GET: 10 ms, all its own
	redis, srv := tr[6], tr[5]
	redis.Time = &span.TimeSplit{Full: true}
	redis.Time.NS[span.TimeOnCPU] = int64(2 * time.Millisecond)
	redis.Time.NS[span.TimeBlockedNet] = int64(6 * time.Millisecond)
	redis.Time.NS[span.TimeDownstream] = int64(2 * time.Millisecond) // not a leaf: scaled away
	srv.Time = &span.TimeSplit{}
	srv.Time.NS[span.TimeGCSTW] = int64(time.Millisecond) // pricing's server span: 2 ms of own time
	res, err := Build([][]*span.Span{tr}, Query{}, TimeCauses)
	if err != nil {
		t.Fatal(err)
	}
	ms := int64(time.Millisecond)
	srvStack := "gateway GET;gateway GET;catalog GET /product/{id};catalog demo.Pricing/GetPrice;pricing demo.Pricing/GetPrice"
	got := stacks(res.Profile)
	for _, want := range []string{
		fmt.Sprintf("%s;pricing redis GET;[on cpu] %d/0", srvStack, ms*10/4),
		fmt.Sprintf("%s;pricing redis GET;[blocked: net] %d/0", srvStack, ms*10*3/4),
		fmt.Sprintf("%s;[gc stw] %d/0", srvStack, ms),
		fmt.Sprintf("%s %d/0", srvStack, 4*ms), // its time the GC did not take (5 ms own)
	} {
		if !slices.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, strings.Join(got, "\n"))
		}
	}
	if total(res.Profile, 0) != 26*ms {
		t.Errorf("total %d, want %d", total(res.Profile, 0), 26*ms)
	}
}
