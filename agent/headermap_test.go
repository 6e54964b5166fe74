package agent_test

import (
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"strings"
	"testing"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/bpf/library/nethttp"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
)

// headerMapToolchains are every supported Go release and every runtime
// map layout: classic maps (Go <= 1.23, and 1.24, 1.25 with
// GOEXPERIMENT=noswissmap), Swiss tables with interleaved slots (Go >=
// 1.24) and with split keys and elements (Go 1.27,
// GOEXPERIMENT=mapsplitgroup).
var headerMapToolchains = []string{
	"go1.21.13", "go1.22.12", "go1.23.12",
	"go1.24.9", "go1.24.9+noswissmap", "go1.25.4", "go1.25.4+noswissmap",
	"local", "go1.27.3", "go1.27.3+mapsplitgroup",
}

// What each of headerapp's cases must make of its server span: continue
// the trace it sent (one valid traceparent value, whatever the other
// headers), start a new one (none, two, malformed: W3C), or, past the
// headers latscope reads through, either (counted when not).
var headerMapCases = map[string]string{
	"few": "continued", "spaces": "continued", "upper-name": "continued", "many": "continued",
	"grown-1": "continued", "grown-2": "continued", "grown-3": "continued", "grown-4": "continued",
	"two": "new", "copies": "new", "malformed-and-valid": "new", "malformed-hex": "new", "malformed-length": "new",
	"none": "new", "huge": "new",
	"huge-tp": "either",
}

// An HTTP/1 request's incoming traceparent is read from its Header map
// where the server span starts (no probe per header line), on every
// release and map layout: with a few headers (one small group or
// bucket), ~40 (a table of several groups, buckets with overflows), a
// map still growing (classic maps' old buckets), two values or a
// malformed one (no valid context: a new trace), none, and 300 headers,
// more than latscope reads through: counted, never silently.
func TestIncomingTraceparentFromHeaderMap(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range headerMapToolchains {
		t.Run(tc, func(t *testing.T) { testHeaderMap(t, tc) })
	}
}

func testHeaderMap(t *testing.T, tc string) {
	bin := fixture.Build(t, "headerapp", tc, fixture.Stripped)
	tr, out := traceRun(t, agent.Config{Inject: true}, []string{"main.handle"}, bin)
	servers := map[string]*span.Span{}
	for _, s := range tr.ofKind(span.KindServer) {
		servers[strings.TrimPrefix(fmt.Sprint(attr(s, "url.path")), "/case/")] = s
	}
	sent := map[string]bool{} // every trace id sent
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, line := range lines {
		if f := strings.Fields(line); len(f) >= 3 && len(f[2]) == 55 {
			sent[f[2][3:35]] = true
		}
	}
	unread, growing := uint64(0), 0
	answered := map[string]bool{}
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) < 3 || f[1] != "200" {
			t.Fatalf("output line %q", line)
		}
		name, tp := f[0], f[2]
		want, ok := headerMapCases[name]
		s := servers[name]
		if !ok || s == nil {
			t.Errorf("%s: case %v, server span %v", name, ok, s)
			continue
		}
		answered[name] = true
		if strings.HasPrefix(name, "grown-") && len(f) > 3 && f[3] == "growing" {
			growing++
		}
		continued := len(tp) == 55 && s.TraceID.String() == tp[3:35] && s.ParentID.String() == tp[36:52] && s.RemoteParent
		fresh := !s.RemoteParent && s.ParentID == span.SpanID{} && !sent[s.TraceID.String()]
		switch {
		case want == "either" && fresh:
			unread++ // not found among the headers read: counted
		case want == "either" && continued:
		case want == "continued" && continued:
		case want == "new" && fresh:
		default:
			t.Errorf("%s: server span trace %s parent %s remote %v; want %s (sent %s)", name, s.TraceID, s.ParentID, s.RemoteParent, want, tp)
		}
	}
	for name := range headerMapCases {
		if !answered[name] {
			t.Errorf("case %s not answered: %q", name, out)
		}
	}
	// Classic maps: a grown case's map still held entries in its old
	// buckets when the server span started (the path is exercised).
	if classicMaps(tc) && growing == 0 {
		t.Errorf("no grown case's map was still growing: %q", out)
	}
	// "huge" is counted, and "huge-tp" when its value was not reached.
	checkCounters(t, tr.res, map[string]uint64{"propagation_incoming_unread": 1 + unread, "lib_read_failed": 0})
}

// The header map's buckets and groups are laid out as nethttp.c reads
// them (HDR_* constants there: 8 slots; a 16-byte string key and a
// 24-byte []string element), checked against each release's DWARF:
// classic buckets of tophash[8], keys[8] at 8, elems[8] at 136 and the
// overflow pointer at 328 (336 bytes); Swiss groups of a control word
// then 8 slots of 40 bytes, key at 0 and element at 16 (328 bytes), or
// keys[8] at 8 and elems[8] at 136 (mapsplitgroup).
func TestHeaderMapLayout(t *testing.T) {
	for _, tc := range headerMapToolchains {
		t.Run(tc, func(t *testing.T) {
			bin := fixture.Build(t, "headerapp", tc, fixture.Default)
			f, err := elf.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			d, err := f.DWARF()
			if err != nil {
				t.Fatal(err)
			}
			bucket, group := dwarfStruct(t, d, "noalg.map.bucket[string][]string"), dwarfStruct(t, d, nethttp.HeaderGroupType)
			classic := classicMaps(tc)
			var got, want string
			switch {
			case classic && bucket == nil:
				// Go 1.22 and 1.23 leave this bucket type out of DWARF; 1.21
				// and the noswissmap builds have it (the same compiler code).
				if tc != "go1.22.12" && tc != "go1.23.12" {
					t.Fatalf("no DWARF type for the header map's buckets")
				}
				return
			case classic:
				got, want = layout(bucket), "336: topbits@0 keys@8 elems@136 overflow@328"
			case group == nil:
				t.Fatalf("no DWARF type for the header map's groups")
			case strings.Contains(tc, "mapsplitgroup"):
				got, want = layout(group), "328: ctrl@0 keys@8 elems@136"
			default:
				got, want = layout(group), "328: ctrl@0 slots@8"
				arr, ok := underlying(group.Field[1].Type).(*dwarf.ArrayType)
				if !ok {
					t.Fatalf("slots: %T %v", group.Field[1].Type, group.Field[1].Type)
				}
				slot, ok := underlying(arr.Type).(*dwarf.StructType)
				if !ok || arr.Count != 8 {
					t.Fatalf("slots: %d of %T %v", arr.Count, arr.Type, arr.Type)
				}
				if l := layout(slot); !strings.HasSuffix(l, "40: key@0 elem@16") {
					t.Errorf("slot %s, want 40: key@0 elem@16", l)
				}
			}
			if got != want {
				t.Errorf("%s, want %s", got, want)
			}
		})
	}
}

// classicMaps reports whether toolchain tc builds classic maps.
func classicMaps(tc string) bool {
	switch tc {
	case "go1.21.13", "go1.22.12", "go1.23.12":
		return true
	}
	return strings.HasSuffix(tc, "+noswissmap")
}

func dwarfStruct(t *testing.T, d *dwarf.Data, name string) *dwarf.StructType {
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			return nil
		}
		if e.Tag != dwarf.TagCompileUnit {
			r.SkipChildren()
		}
		if n, _ := e.Val(dwarf.AttrName).(string); e.Tag != dwarf.TagStructType || n != name {
			continue
		}
		typ, err := d.Type(e.Offset)
		if err != nil {
			t.Fatal(err)
		}
		return typ.(*dwarf.StructType)
	}
}

func underlying(t dwarf.Type) dwarf.Type {
	for {
		td, ok := t.(*dwarf.TypedefType)
		if !ok {
			return t
		}
		t = td.Type
	}
}

func layout(st *dwarf.StructType) string {
	s := fmt.Sprint(st.ByteSize, ":")
	for _, f := range st.Field {
		s += fmt.Sprintf(" %s@%d", f.Name, f.ByteOffset)
	}
	return s
}
