package propagation_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/latscope/latscope/bpf/calltracer"
	"github.com/latscope/latscope/bpf/propagation"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/symbolizer"
)

// The client span's context every request here is given, and its traceparent.
const (
	ownTraceHi, ownTraceLo, ownSpan = 0x0123456789abcdef, 0xfedcba9876543210, 0x1122334455667788
	ownTP                           = "00-0123456789abcdeffedcba9876543210-1122334455667788-01"
)

// The values the request chain received (received_by_root under root):
// a traceparent line carrying one of these is a forwarded copy.
var forwarded = []string{
	"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
}

const root = 77 // the root call id the received values are kept under

// The outcomes of one request head, as the program counts them.
const (
	injected = "injected"
	replaced = "replaced"
	present  = "present"
	failed   = "failed"
	tlsBytes = "tls"
)

var outcomeStat = map[string]calltracer.TracerTracerStat{
	injected: calltracer.TracerTracerStatSTAT_INJECTED,
	replaced: calltracer.TracerTracerStatSTAT_INJECT_REPLACED,
	present:  calltracer.TracerTracerStatSTAT_INJECT_PRESENT,
	failed:   calltracer.TracerTracerStatSTAT_INJECT_FAILED,
	tlsBytes: calltracer.TracerTracerStatSTAT_INJECT_TLS,
}

// wire is the sk_msg program attached to a sockhash holding one
// loopback connection's client socket: what the client writes with a
// pending context goes through inject_http1, what the server reads is
// what left.
type wire struct {
	objs           *propagation.PropagationObjects
	client, server *net.TCPConn
	key            propagation.PropagationConnkey
	pid            uint32
	byGoroutine    bool // procs knows this process: contexts can be handed on by goroutine
	rd             []byte
}

func newWire(tb testing.TB) *wire {
	tb.Helper()
	fixture.RequireRoot(tb)
	objs, err := propagation.Load(calltracer.Options{Inject: true}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { objs.Close() })
	l, err := link.AttachRawLink(link.RawLinkOptions{Target: objs.Sockets.FD(), Program: objs.InjectTraceparent, Attach: ebpf.AttachSkMsgVerdict})
	if err != nil {
		tb.Fatalf("attach sk_msg: %v", err)
	}
	tb.Cleanup(func() { l.Close() })

	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	client, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		tb.Fatal(err)
	}
	server, err := ln.AcceptTCP()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.Close(); server.Close() })
	w := &wire{objs: objs, client: client, server: server, pid: uint32(os.Getpid())}
	lp, rp := client.LocalAddr().(*net.TCPAddr).Port, client.RemoteAddr().(*net.TCPAddr).Port
	w.key = propagation.PropagationConnkey{Pid: w.pid, LocalPort: uint16(lp), RemotePort: uint16(rp)}

	// The program follows sockets the sock_ops program put in the map; here the test does.
	raw, err := client.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	var perr error
	if err := raw.Control(func(fd uintptr) {
		perr = objs.Sockets.Put(propagation.PropagationSockkey{Family: unix.AF_INET, LocalPort: uint32(lp), RemotePort: uint32(rp)}, uint64(fd))
	}); err != nil || perr != nil {
		tb.Fatalf("add the client socket to the sockhash: %v", errors.Join(err, perr))
	}

	// This process as a traced one, so the program reads which goroutine sends.
	if exe, err := os.Executable(); err == nil && runtime.GOARCH == "amd64" {
		if bin, err := symbolizer.Open(exe); err == nil {
			offs, oerr := bin.Offsets()
			tls, terr := bin.GTLS()
			bin.Close()
			if oerr == nil && terr == nil {
				cfg := propagation.PropagationProcConfig{GoidOff: offs.GoID, TlsOff: tls.Offset}
				if err := objs.Procs.Put(w.pid, cfg); err != nil {
					tb.Fatal(err)
				}
				w.byGoroutine = true
			}
		}
	}
	rk := propagation.PropagationRootkey{Pid: w.pid, CallId: root}
	var in propagation.PropagationReceived
	for i, v := range forwarded {
		hi, lo, span := tpIDs(tb, v)
		in.V[i].TraceHi, in.V[i].TraceLo, in.V[i].SpanId = hi, lo, span
	}
	in.N, in.Lines = uint8(len(forwarded)), uint8(len(forwarded))
	if err := objs.ReceivedByRoot.Put(rk, in); err != nil {
		tb.Fatal(err)
	}
	return w
}

func tpIDs(tb testing.TB, v string) (hi, lo, span uint64) {
	tb.Helper()
	parse := func(s string) uint64 {
		x, err := strconv.ParseUint(s, 16, 64)
		if err != nil {
			tb.Fatalf("traceparent %q: %v", v, err)
		}
		return x
	}
	return parse(v[3:19]), parse(v[19:35]), parse(v[36:52])
}

// goid is the calling goroutine's id.
func goid() uint64 {
	b := make([]byte, 64)
	b = b[:runtime.Stack(b, false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	id, _ := strconv.ParseUint(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return id
}

// pend leaves the client call's context for the next message: by the
// sending goroutine (as net/http's writer goroutine gets it) or by the
// connection's ports.
// age is how long ago it was ready (bpf_ktime_get_ns's clock).
func (w *wire) pend(tb testing.TB, byGoroutine bool, age time.Duration) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		tb.Fatal(err)
	}
	var p propagation.PropagationPendingCtx
	p.Tc.TraceHi, p.Tc.TraceLo, p.Tc.SpanId, p.Tc.Flags, p.Tc.Valid = ownTraceHi, ownTraceLo, ownSpan, 1, 1
	p.AtNs = uint64(ts.Nano() - age.Nanoseconds())
	p.RootCallId = root
	var err error
	if byGoroutine {
		err = w.objs.Handoffs.Put(propagation.PropagationHandkey{Pid: w.pid, Kind: 1 /* HAND_GOROUTINE */, Id: goid()}, p)
	} else {
		err = w.objs.ConnPending.Put(w.key, p)
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// marker follows every message, written on its own: the server reads up to it.
const marker = "\x00<end of message>\x00"

// send writes msg with one write, a client call's context pending for
// it, and returns what the server received and the counters that moved.
func (w *wire) send(tb testing.TB, msg []byte, byGoroutine bool) ([]byte, map[string]uint64) {
	return w.sendAged(tb, msg, byGoroutine, 0)
}

// sendAged is send with a context that was ready age ago.
func (w *wire) sendAged(tb testing.TB, msg []byte, byGoroutine bool, age time.Duration) ([]byte, map[string]uint64) {
	tb.Helper()
	before, err := calltracer.ReadStats(w.objs.Stats)
	if err != nil {
		tb.Fatal(err)
	}
	w.pend(tb, byGoroutine, age)
	if _, err := w.client.Write(msg); err != nil {
		tb.Fatal(err)
	}
	if _, err := w.client.Write([]byte(marker)); err != nil {
		tb.Fatal(err)
	}
	w.server.SetReadDeadline(time.Now().Add(10 * time.Second)) // a failure guard, not a measure
	buf := make([]byte, 64<<10)
	for !bytes.Contains(w.rd, []byte(marker)) {
		n, err := w.server.Read(buf)
		if err != nil {
			tb.Fatalf("read what the server got: %v (so far %q)", err, w.rd)
		}
		w.rd = append(w.rd, buf[:n]...)
	}
	i := bytes.Index(w.rd, []byte(marker))
	got := append([]byte(nil), w.rd[:i]...)
	w.rd = w.rd[i+len(marker):]
	after, err := calltracer.ReadStats(w.objs.Stats)
	if err != nil {
		tb.Fatal(err)
	}
	moved := map[string]uint64{}
	for name, st := range outcomeStat {
		if d := after[st] - before[st]; d != 0 {
			moved[name] = d
		}
	}
	if d := after[calltracer.TracerTracerStatSTAT_INJECT_UNSENT] - before[calltracer.TracerTracerStatSTAT_INJECT_UNSENT]; d != 0 {
		moved["unsent"] = d
	}
	return got, moved
}

// paths are the ways a context reaches the program that this process can use.
func (w *wire) paths() []bool {
	if w.byGoroutine {
		return []bool{false, true}
	}
	return []bool{false}
}

func pathName(byGoroutine bool) string {
	if byGoroutine {
		return "by goroutine"
	}
	return "by connection"
}

// The HTTP/1 request heads the program must tell apart, each sent with
// the request path padded by 0 to 16 bytes so that every line end and
// every traceparent line falls at every offset within an 8-byte word,
// by both ways a context reaches the program. {P} is the padded path,
// {TP} the client span's traceparent; want is the bytes that leave
// (empty: msg unchanged, or msg with the traceparent line inserted after
// the request line when the outcome is injected).
func TestHTTP1Heads(t *testing.T) {
	w := newWire(t)
	tp := func(v string) string { return "traceparent: " + v + "\r\n" }
	cases := []struct {
		name, msg, want, outcome string
	}{
		{"go client", "GET {P} HTTP/1.1\r\nHost: 127.0.0.1:8081\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n", "", injected},
		{"no header lines", "GET {P} HTTP/1.1\r\n\r\n", "", injected},
		{"LF line ends", "GET {P} HTTP/1.1\nHost: a\nX: y\n\n", "", injected},
		{"mixed line ends", "GET {P} HTTP/1.1\nHost: a\r\nX: y\n\r\n", "", injected},
		{"CR inside a line", "GET {P} HTTP/1.1\r\nX: a\rb\r\n\r\n", "", injected},
		{"body after the head", "POST {P} HTTP/1.1\r\nContent-Length: 40\r\n\r\ntraceparent: x\r\n\r\nmore\nlines\n\n\r\n01234", "", injected},
		{"head ends at the message's end", "GET {P} HTTP/1.1\r\nA: b\n\n", "", injected},
		{"CR ending the message after a line end", "GET {P} HTTP/1.1\r\nAbcdefghijk: l\n\r", "", injected},
		{"name with a dash", "GET {P} HTTP/1.1\r\ntraceparent-x: 1\r\n\r\n", "", injected},
		{"name inside another", "GET {P} HTTP/1.1\r\nx-traceparent: 1\r\nxtraceparent: 2\r\n\r\n", "", injected},
		{"space before the colon", "GET {P} HTTP/1.1\r\ntraceparent : 1\r\n\r\n", "", injected},
		{"name in the request line", "GET {P}traceparent: HTTP/1.1\r\nA: b\r\n\r\n", "", injected},
		{"name in a value", "GET {P} HTTP/1.1\r\nA: traceparent: 1\r\n\r\n", "", injected},
		{"name after the head's end", "GET {P} HTTP/1.1\r\n\ntraceparent:", "", injected},

		{"own value", "GET {P} HTTP/1.1\r\nHost: a\r\n" + tp("00-5ad7e6c3d2b1a0f9e8d7c6b5a4938271-a1b2c3d4e5f60718-01") + "\r\n", "", present},
		{"own value, first line", "GET {P} HTTP/1.1\r\ntraceparent:x\r\n\r\n", "", present},
		{"own value, upper case", "GET {P} HTTP/1.1\r\nHost: a\r\nTRACEPARENT: x\r\n\r\n", "", present},
		{"own value, LF", "GET {P} HTTP/1.1\nTraceParent: 1\n\n", "", present},
		{"forwarded and own", "GET {P} HTTP/1.1\r\n" + tp(forwarded[0]) + tp("00-5ad7e6c3d2b1a0f9e8d7c6b5a4938271-a1b2c3d4e5f60718-01") + "\r\n", "", present},
		{"own and forwarded", "GET {P} HTTP/1.1\r\n" + tp("00-5ad7e6c3d2b1a0f9e8d7c6b5a4938271-a1b2c3d4e5f60718-01") + tp(forwarded[0]) + "\r\n", "", present},
		{"forwarded with more than 5 trailing blanks", "GET {P} HTTP/1.1\r\ntraceparent: " + forwarded[0] + "      \r\n\r\n", "", present},
		{"five forwarded", "GET {P} HTTP/1.1\r\n" + strings.Repeat(tp(forwarded[0]), 5) + "\r\n", "", present},
		{"forwarded, upper-case hex", "GET {P} HTTP/1.1\r\ntraceparent: " + strings.ToUpper(forwarded[0]) + "\r\n\r\n", "", present},

		{"forwarded", "GET {P} HTTP/1.1\r\nHost: a\r\n" + tp(forwarded[0]) + "Accept-Encoding: gzip\r\n\r\n",
			"GET {P} HTTP/1.1\r\nHost: a\r\n" + tp(ownTP) + "Accept-Encoding: gzip\r\n\r\n", replaced},
		{"forwarded, canonical name, last line", "GET {P} HTTP/1.1\r\nHost: a\r\nTraceparent: " + forwarded[1] + "\r\n\r\n",
			"GET {P} HTTP/1.1\r\nHost: a\r\nTraceparent: " + ownTP + "\r\n\r\n", replaced},
		{"forwarded, blanks", "GET {P} HTTP/1.1\r\ntraceparent:\t  " + forwarded[0] + " \t \r\n\r\n",
			"GET {P} HTTP/1.1\r\ntraceparent:\t  " + ownTP + " \t \r\n\r\n", replaced},
		{"forwarded, no blank, LF", "GET {P} HTTP/1.1\ntraceparent:" + forwarded[1] + "\n\n",
			"GET {P} HTTP/1.1\ntraceparent:" + ownTP + "\n\n", replaced},
		{"two forwarded", "GET {P} HTTP/1.1\r\n" + tp(forwarded[0]) + "A: b\r\n" + tp(forwarded[1]) + "\r\n",
			"GET {P} HTTP/1.1\r\n" + tp(ownTP) + "A: b\r\n\r\n", replaced},
		{"four forwarded", "GET {P} HTTP/1.1\r\n" + tp(forwarded[1]) + tp(forwarded[0]) + "X: y\n" + tp(forwarded[1]) + tp(forwarded[0]) + "\r\n",
			"GET {P} HTTP/1.1\r\n" + tp(ownTP) + "X: y\n\r\n", replaced},
		{"forwarded, body after the head", "POST {P} HTTP/1.1\r\n" + tp(forwarded[0]) + "\r\n" + tp(forwarded[1]),
			"POST {P} HTTP/1.1\r\n" + tp(ownTP) + "\r\n" + tp(forwarded[1]), replaced},

		{"no head end", "GET {P} HTTP/1.1\r\nHost: a\r\n", "", failed},
		{"no head end, line end last", "GET {P} HTTP/1.1\n", "", failed},
		{"no line end", "GET {P} HTTP/1.1", "", failed},
		{"head longer than 4096 bytes", "GET {P} HTTP/1.1\r\nX: " + strings.Repeat("x", 4096) + "\r\n\r\n", "", failed},
		{"not a request", "get {P} HTTP/1.1\r\n\r\n", "", failed},
		{"short", "GET / HTTP/1\n\n", "", failed},
		{"TLS", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03{P}...............", "", tlsBytes},
		{"TLS alert", "\x15\x03\x03\x00\x02\x02\x28", "", tlsBytes},
	}
	for _, c := range cases {
		for _, byG := range w.paths() {
			for pad := 0; pad <= 16; pad++ {
				path := "/" + strings.Repeat("p", pad)
				if !strings.Contains(c.msg, "{P}") && pad > 0 {
					continue
				}
				msg := strings.ReplaceAll(c.msg, "{P}", path)
				want := strings.ReplaceAll(c.want, "{P}", path)
				switch {
				case c.want != "":
				case c.outcome == injected:
					at := strings.IndexByte(msg, '\n') + 1
					want = msg[:at] + tp(ownTP) + msg[at:]
				default:
					want = msg
				}
				got, moved := w.send(t, []byte(msg), byG)
				if string(got) != want {
					t.Errorf("%s, %s, path %q: sent\n%q\nwant\n%q", c.name, pathName(byG), path, got, want)
				}
				if len(moved) != 1 || moved[c.outcome] != 1 {
					t.Errorf("%s, %s, path %q: counters moved %v, want %s once", c.name, pathName(byG), path, moved, c.outcome)
				}
			}
		}
	}
}

// A context older than PENDING_MAX_AGE_NS (1 s) is an earlier request's
// that never left: counted as unsent, not put on this one. One stamped
// just now is put on it, even a few milliseconds ahead of the clock the
// program reads (the coarse clock lags by up to a tick).
func TestHTTP1Stale(t *testing.T) {
	w := newWire(t)
	msg := "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	for _, byG := range w.paths() {
		for _, c := range []struct {
			age     time.Duration
			want    string
			outcome string
		}{
			{1500 * time.Millisecond, msg, "unsent"},
			{-20 * time.Millisecond, "GET / HTTP/1.1\r\ntraceparent: " + ownTP + "\r\nHost: a\r\n\r\n", injected},
			{500 * time.Millisecond, "GET / HTTP/1.1\r\ntraceparent: " + ownTP + "\r\nHost: a\r\n\r\n", injected},
		} {
			got, moved := w.sendAged(t, []byte(msg), byG, c.age)
			if string(got) != c.want || len(moved) != 1 || moved[c.outcome] != 1 {
				t.Errorf("%s, ready %v ago: sent %q, counters moved %v; want %q, %s once", pathName(byG), c.age, got, moved, c.want, c.outcome)
			}
		}
	}
}

// Random request heads (line ends with and without CR, traceparent
// lines of every kind at every offset, bodies) leave as a reference
// model of the program's rules says they must (model, below).
func TestHTTP1HeadsRandom(t *testing.T) {
	w := newWire(t)
	rng := rand.New(rand.NewSource(1))
	outcomes := map[string]int{}
	for i := 0; i < 3000; i++ {
		msg := randomHead(rng)
		want, outcome := model(msg)
		outcomes[outcome]++
		byG := w.byGoroutine && i%2 == 1
		got, moved := w.send(t, msg, byG)
		if !bytes.Equal(got, want) || len(moved) != 1 || moved[outcome] != 1 {
			t.Fatalf("head %d, %s:\n%q\nsent\n%q\nwant (%s)\n%q\ncounters moved %v", i, pathName(byG), msg, got, outcome, want, moved)
		}
	}
	t.Logf("outcomes: %v; by goroutine too: %v", outcomes, w.byGoroutine)
}

func randomHead(rng *rand.Rand) []byte {
	eol := func() string {
		if rng.Intn(3) == 0 {
			return "\n"
		}
		return "\r\n"
	}
	blanks := func() string { return strings.Repeat([]string{" ", "\t"}[rng.Intn(2)], rng.Intn(7)) }
	names := []string{"traceparent", "Traceparent", "TRACEPARENT", "tRaCePaReNt", "traceparent-x", "xtraceparent", "traceparen", "traceparent "}
	values := append([]string{ownTP, "00-5ad7e6c3d2b1a0f9e8d7c6b5a4938271-a1b2c3d4e5f60718-01", "00-00000000000000000000000000000000-b7ad6b7169203331-01", "x", ""}, forwarded...)
	var b strings.Builder
	b.WriteString([]string{"GET", "POST", "PUT", "DELETE"}[rng.Intn(4)] + " /" + strings.Repeat("a", rng.Intn(40)) + " HTTP/1.1" + eol())
	lines := rng.Intn(8)
	for j := 0; j < lines; j++ {
		switch rng.Intn(4) {
		case 0, 1:
			name := names[rng.Intn(3)]
			if rng.Intn(4) == 0 {
				name = names[rng.Intn(len(names))]
			}
			v := values[rng.Intn(len(values))]
			if rng.Intn(3) > 0 {
				v = forwarded[rng.Intn(len(forwarded))]
			}
			b.WriteString(name + ":" + blanks() + v + blanks() + eol())
		case 2:
			b.WriteString("X-" + strings.Repeat("h", rng.Intn(20)) + ": " + strings.Repeat("v", rng.Intn(60)) + eol())
		default:
			b.WriteString("Host: 127.0.0.1:" + strconv.Itoa(rng.Intn(65536)) + eol())
		}
	}
	switch rng.Intn(10) {
	case 0: // no head end
	case 1: // a head longer than the program looks at
		b.WriteString("X-Big: " + strings.Repeat("b", 4000+rng.Intn(200)) + eol() + eol())
	default:
		b.WriteString(eol())
	}
	if rng.Intn(3) == 0 {
		b.WriteString("body\n\ntraceparent: " + forwarded[0] + "\r\n\r\n" + hex.EncodeToString([]byte(strconv.Itoa(rng.Int())))[:rng.Intn(16)])
	}
	return []byte(b.String())
}

// model is the program's rules for an HTTP/1 message with a client
// call's context pending (inject_http1), written plainly: what leaves
// and which counter counts it.
func model(msg []byte) ([]byte, string) {
	const headMax, tpMax, nameLen, tpLen = 4096, 4, len("traceparent:"), 55
	h := msg[:min(len(msg), headMax)]
	n := len(h)
	if n >= 5 && h[0] >= 20 && h[0] <= 23 && h[1] == 3 {
		return msg, tlsBytes
	}
	if n < 16 || h[0] < 'A' || h[0] > 'Z' {
		return msg, failed
	}
	// Lines: a line ends at LF; the head at a line starting with CR or LF.
	lineEnd, headEnd := -1, -1
	var tpAt, tpEnd []int
	for i := 0; i < n && headEnd < 0; i++ {
		if h[i] != '\n' {
			continue
		}
		if len(tpEnd) < len(tpAt) {
			tpEnd = append(tpEnd, i+1)
		}
		if lineEnd < 0 {
			lineEnd = i + 1
		}
		s := i + 1
		if s >= n {
			break
		}
		if h[s] == '\r' || h[s] == '\n' {
			headEnd = s
			break
		}
		if s+nameLen <= n && strings.EqualFold(string(h[s:s+nameLen]), "traceparent:") {
			tpAt = append(tpAt, s)
		}
	}
	if lineEnd < 0 || headEnd < 0 {
		return msg, failed
	}
	if len(tpAt) == 0 {
		line := "traceparent: " + ownTP + "\r\n"
		return append(append(append([]byte(nil), msg[:lineEnd]...), line...), msg[lineEnd:]...), injected
	}
	if len(tpAt) > tpMax {
		return msg, present
	}
	// A forwarded copy: the line is the name, up to 4 blanks, a value
	// with the ids of one the request chain received, up to 5 blanks (the
	// last may be CR), LF.
	value := func(k int) int {
		v := tpAt[k] + nameLen
		for j := 0; j < 4 && (h[v] == ' ' || h[v] == '\t'); j++ {
			v++
		}
		end := tpEnd[k]
		if end < v+tpLen+1 {
			return -1
		}
		tail := h[v+tpLen : end-1]
		if len(tail) > 5 {
			return -1
		}
		for j, ch := range tail {
			if ch != ' ' && ch != '\t' && (ch != '\r' || j != len(tail)-1) {
				return -1
			}
		}
		ids, ok := parseTP(h[v : v+tpLen])
		if !ok {
			return -1
		}
		for _, f := range forwarded {
			if fids, _ := parseTP([]byte(f)); fids == ids {
				return v
			}
		}
		return -1
	}
	for k := range tpAt {
		if value(k) < 0 {
			return msg, present
		}
	}
	out := append([]byte(nil), msg...)
	v := value(0)
	copy(out[v:], ownTP)
	for k := len(tpAt) - 1; k > 0; k-- {
		out = append(out[:tpAt[k]:tpAt[k]], out[tpEnd[k]:]...)
	}
	return out, replaced
}

// What the program costs per HTTP/1 request it changes, in the kernel's
// run-time statistics (reported as bpf-ns/op): a Go client's request
// head given the client span's traceparent, and one carrying a forwarded
// copy, the context handed on by goroutine as net/http's is, and a
// message of a traced process with no context for it (a request body,
// anything else it sends on a followed connection). Hot: one
// request after another; cold: 4 MiB written between requests (as a
// service's own work evicts the program's code and data from the CPU's
// caches between its requests).
//
//	flock /tmp/latscope-bpf.lock go test -run '^$' -bench HTTP1 ./bpf/propagation/
func BenchmarkHTTP1(b *testing.B) {
	w := newWire(b)
	heads := []struct{ name, msg string }{
		{"no-context", "{\"items\":[1,2,3],\"cursor\":\"9f86d081884c7d65\"}"},
		{"go-get", "GET /reviews/42 HTTP/1.1\r\nHost: 127.0.0.1:8081\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n"},
		{"go-get-300", "GET /api/v1/catalog/items/42/reviews?limit=20&offset=0 HTTP/1.1\r\nHost: reviews.default.svc.cluster.local:8081\r\nUser-Agent: Go-http-client/1.1\r\nAccept: application/json\r\nAuthorization: Bearer 0123456789abcdef0123456789abcdef\r\nX-Request-Id: 9f86d081884c7d65\r\nAccept-Encoding: gzip\r\n\r\n"},
		{"forwarded", "GET /echo/rp/lower HTTP/1.1\r\nHost: 127.0.0.1:8081\r\nUser-Agent: Go-http-client/1.1\r\nTraceparent: " + forwarded[0] + "\r\nAccept-Encoding: gzip\r\n\r\n"},
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF statistics: %v", err)
	}
	defer stats.Close()
	if !w.byGoroutine {
		b.Log("this process's goroutines are not known to the program: contexts pended by connection")
	}
	evict := make([]byte, 4<<20)
	for _, cold := range []bool{false, true} {
		for _, h := range heads {
			name := h.name
			if cold {
				name += "/cold"
			}
			b.Run(name, func(b *testing.B) {
				want, _ := model([]byte(h.msg))
				pend := h.name != "no-context"
				if !pend {
					want = []byte(h.msg)
				}
				done := make(chan error, 1)
				go func() {
					_, err := io.CopyN(io.Discard, w.server, int64(b.N*len(want)))
					done <- err
				}()
				before, err := w.objs.InjectTraceparent.Stats()
				if err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if cold {
						for j := 0; j < len(evict); j += 64 {
							evict[j]++
						}
					}
					if pend {
						w.pend(b, w.byGoroutine, 0)
					}
					if _, err := w.client.Write([]byte(h.msg)); err != nil {
						b.Fatal(err)
					}
				}
				if err := <-done; err != nil {
					b.Fatalf("read what left: %v", err)
				}
				after, err := w.objs.InjectTraceparent.Stats()
				if err != nil {
					b.Fatal(err)
				}
				if runs := after.RunCount - before.RunCount; runs > 0 {
					b.ReportMetric(float64(after.Runtime-before.Runtime)/float64(runs), "bpf-ns/op")
				}
			})
		}
	}
}

// parseTP reads a traceparent value's ids as the program does: version
// 00, lower-case hex, ids not all zero.
func parseTP(v []byte) ([3]uint64, bool) {
	var ids [3]uint64
	if len(v) != 55 || string(v[:3]) != "00-" || v[35] != '-' || v[52] != '-' {
		return ids, false
	}
	for i, f := range [][2]int{{3, 19}, {19, 35}, {36, 52}, {53, 55}} {
		var x uint64
		for _, ch := range v[f[0]:f[1]] {
			switch {
			case ch >= '0' && ch <= '9':
				x = x<<4 | uint64(ch-'0')
			case ch >= 'a' && ch <= 'f':
				x = x<<4 | uint64(ch-'a'+10)
			default:
				return ids, false
			}
		}
		if i < 3 {
			ids[i] = x
		}
	}
	return ids, ids[0]|ids[1] != 0 && ids[2] != 0
}
