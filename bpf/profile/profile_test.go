package profile

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/symbolizer"
)

func TestParseCPUList(t *testing.T) {
	for in, want := range map[string][]int{"0": {0}, "0-3": {0, 1, 2, 3}, "0-1,4,6-7": {0, 1, 4, 6, 7}} {
		got, err := parseCPUList(in)
		if err != nil || len(got) != len(want) {
			t.Fatalf("parseCPUList(%q) = %v, %v", in, got, err)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("parseCPUList(%q) = %v, want %v", in, got, want)
			}
		}
	}
	for _, bad := range []string{"", "a", "3-1", "1-"} {
		if _, err := parseCPUList(bad); err == nil {
			t.Errorf("parseCPUList(%q) accepted", bad)
		}
	}
}

// spin burns CPU in a function of its own, so samples can be recognised.
//
//go:noinline
func spin(until time.Time) int {
	n := 0
	for time.Now().Before(until) {
		for i := 0; i < 1000; i++ {
			n += i ^ n
		}
	}
	return n
}

// goid parses the current goroutine's id from its stack trace header.
func goid() uint64 {
	b := make([]byte, 64)
	b = b[:runtime.Stack(b, false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	id, _ := strconv.ParseUint(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return id
}

// Tier 2 and a real sample: the program passes the verifier sharing the
// call tracer's maps, and with this test process registered as traced
// and one traced frame open on a spinning goroutine, the samples it sends
// name that goroutine and that frame's trace, and their stacks symbolize
// (pclntab) to the spinning function.
func TestSampleOwnProcess(t *testing.T) {
	fixture.RequireRoot(t)
	tracer, err := calltracer.Load(calltracer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tracer.Close()
	objs, err := Load(Options{RingBytes: 1 << 20}, tracer.SharedMaps())
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := symbolizer.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer bin.Close()
	if bin.PIE {
		t.Skip("the test binary is PIE: this test reads its addresses unrelocated")
	}
	offs, err := bin.Offsets()
	if err != nil {
		t.Fatal(err)
	}
	tls, err := bin.GTLS()
	if err != nil {
		t.Fatal(err)
	}
	pid := uint32(os.Getpid())
	cfg := calltracer.TracerProcConfig{GoidOff: offs.GoID, ParentGoidOff: offs.ParentGoID, StackHiOff: offs.StackHi, TlsOff: tls.Offset, GmOff: offs.M, CurgOff: offs.MCurG}
	if err := tracer.Procs.Put(pid, cfg); err != nil {
		t.Fatal(err)
	}

	rd, err := ringbuf.NewReader(objs.Samples)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	ev, err := objs.Attach(time.Second / 999)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	g := goid()
	var st calltracer.TracerGstate
	st.Depth = 1
	st.Goid = g
	st.TraceHi, st.TraceLo = 0x1234, 0x5678
	st.Frames[0].StartNs, st.Frames[0].CallId, st.Frames[0].FuncId = 1, 42, 1
	if err := tracer.Goroutines.Put(calltracer.TracerGkey{Pid: pid, Goid: g}, &st); err != nil {
		t.Fatal(err)
	}
	spin(time.Now().Add(300 * time.Millisecond))
	ev.Close()

	fn, err := bin.Lookup("github.com/latscope/latscope/bpf/profile.spin")
	if err != nil {
		t.Fatal(err)
	}
	var mine, inSpin int
	rd.SetDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		s, stack, ok := Decode(rec.RawSample)
		if !ok {
			t.Fatalf("undecodable record of %d bytes", len(rec.RawSample))
		}
		if s.Pid != pid || s.Goid != g {
			continue
		}
		mine++
		if s.TraceHi != 0x1234 || s.TraceLo != 0x5678 || s.SpanId == 0 || s.Flags&FlagSpawned != 0 {
			t.Errorf("sample %+v: want the open frame's trace and a span id", *s)
		}
		for i, pc := range stack {
			if i > 0 {
				pc-- // a return address: the call's instruction
			}
			if frames, ok := bin.PCFrames(pc); ok && frames[len(frames)-1].Function == fn.Name {
				inSpin++
				break
			}
		}
	}
	stats, err := ReadStats(objs.ProfileStats)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d samples of the spinning goroutine, %d through spin; counters %v", mine, inSpin, stats)
	// 300 ms at 999 Hz: ~300 samples if the thread had the CPU throughout;
	// the machine is shared (2 cores, other tests), so ask for a tenth.
	if mine < 30 || inSpin < mine*9/10 {
		t.Errorf("%d samples of the spinning goroutine, %d with spin on their stack", mine, inSpin)
	}
	for _, i := range []ProfileProfileStat{ProfileProfileStatPROFILE_NO_TLS, ProfileProfileStatPROFILE_READ_G_FAILED, ProfileProfileStatPROFILE_RINGBUF_FULL} {
		if stats[i] != 0 {
			t.Errorf("%s = %d", Stats[i].Name, stats[i])
		}
	}
}
