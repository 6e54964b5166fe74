package calltracer

import (
	"testing"

	"github.com/latscope/latscope/internal/fixture"
)

// Tier 2: every program passes this kernel's verifier with the options the
// agent uses, and the counters can be read.
func TestLoad(t *testing.T) {
	fixture.RequireRoot(t)
	for _, opts := range []Options{
		{},
		{MinDuration: 1000, RingBytes: 1 << 16, WakeupBytes: 1 << 14, MaxGoroutines: 128, CountHits: true},
	} {
		objs, err := Load(opts)
		if err != nil {
			t.Fatalf("load %+v: %v", opts, err)
		}
		for name, p := range map[string]any{"call_entry": objs.CallEntry, "call_exit": objs.CallExit, "goroutine_created": objs.GoroutineCreated, "goroutine_exit": objs.GoroutineExit} {
			if p == nil {
				t.Errorf("program %s not loaded", name)
			}
		}
		if opts.RingBytes != 0 && objs.Events.MaxEntries() != opts.RingBytes {
			t.Errorf("ring size %d, want %d", objs.Events.MaxEntries(), opts.RingBytes)
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
}

func TestCookieLayout(t *testing.T) {
	c, err := Cookie(0x12345678, 0x40, 3)
	if err != nil || c != 0x0003_0040_12345678 {
		t.Errorf("cookie %#x, %v", c, err)
	}
	if c, err := Cookie(1, -8, 0); err != nil || c != 0x0000_fff8_00000001 {
		t.Errorf("negative SP delta: cookie %#x, %v", c, err)
	}
	if _, err := Cookie(1, 1<<15, 0); err == nil {
		t.Error("SP delta over 15 bits accepted")
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	ev := Event{StartNs: 1, EndNs: 2, Goid: 3, CallId: 4, Pid: 5, FuncId: 6, Depth: 7, Flags: FlagUnwound}
	raw := Encode(&ev)
	if len(raw) != EventSize || EventSize != 96 {
		t.Fatalf("event size %d, C struct is 96 bytes", EventSize)
	}
	got, ok := Decode(raw)
	if !ok || *got != ev {
		t.Errorf("decoded %+v", got)
	}
	if _, ok := Decode(raw[:10]); ok {
		t.Error("short record decoded")
	}
}
