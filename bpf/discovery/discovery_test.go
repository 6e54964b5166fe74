package discovery

import (
	"os/exec"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/latscope/latscope/internal/fixture"
)

// Tier 2: the programs pass this kernel's verifier, attach, and an exec
// and an exit of a real process reach the ring buffer with its pid.
func TestLoadAttach(t *testing.T) {
	fixture.RequireRoot(t)
	for _, opts := range []Options{{}, {RingBytes: 1 << 16}} {
		objs, err := Load(opts)
		if err != nil {
			t.Fatalf("load %+v: %v", opts, err)
		}
		want := opts.RingBytes
		if want == 0 {
			want = DefaultRingBytes
		}
		if got := objs.Events.MaxEntries(); got != want {
			t.Errorf("ring size %d, want %d", got, want)
		}
		stats, err := ReadStats(objs.Stats)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range stats {
			if v != 0 {
				t.Errorf("fresh counter %s = %d", Stats[i].Name, v)
			}
		}
		objs.Close()
	}

	if _, err := Load(Options{RingBytes: 3 << 12}); err == nil {
		t.Error("a ring size that is not a power of two was accepted")
	}

	objs, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	links, err := objs.Attach()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, l := range links {
			l.Close()
		}
	}()
	rd, err := ringbuf.NewReader(objs.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	seen := map[uint8]*Event{}
	rd.SetDeadline(time.Now().Add(5 * time.Second))
	for seen[EventExec] == nil || seen[EventExit] == nil {
		rec, err := rd.Read()
		if err != nil {
			t.Fatalf("read ring buffer (events so far %v): %v", seen, err)
		}
		e, ok := Decode(rec.RawSample)
		if !ok {
			t.Fatalf("undecodable record %x", rec.RawSample)
		}
		if e.Pid == pid {
			c := *e
			seen[e.Type] = &c
		}
	}
	exe, exit := seen[EventExec], seen[EventExit]
	if exe.StartBoottime == 0 || exe.StartBoottime != exit.StartBoottime {
		t.Errorf("start times: exec %d, exit %d: want equal and set", exe.StartBoottime, exit.StartBoottime)
	}
	if exe.KtimeNs == 0 || exit.KtimeNs < exe.KtimeNs {
		t.Errorf("ktime: exec %d, exit %d", exe.KtimeNs, exit.KtimeNs)
	}
	stats, err := ReadStats(objs.Stats)
	if err != nil {
		t.Fatal(err)
	}
	if stats[DiscoveryDiscoveryStatSTAT_EXEC_SENT] == 0 || stats[DiscoveryDiscoveryStatSTAT_EXIT_SENT] == 0 {
		t.Errorf("counters %v: exec and exit sent must count", stats)
	}
	for i, s := range Stats {
		if s.Loss && stats[i] != 0 {
			t.Errorf("%s = %d", s.Name, stats[i])
		}
	}
}

func TestDecode(t *testing.T) {
	if EventSize != 24 {
		t.Fatalf("event size %d, C struct is 24 bytes", EventSize)
	}
	raw := make([]byte, EventSize)
	if _, ok := Decode(raw); ok {
		t.Error("type 0 decoded")
	}
	raw[0] = EventExit
	raw[4] = 7
	if e, ok := Decode(raw); !ok || e.Pid != 7 || e.Type != EventExit {
		t.Errorf("decode %x: %+v %v", raw, e, ok)
	}
	if _, ok := Decode(raw[:EventSize-1]); ok {
		t.Error("short record decoded")
	}
}
