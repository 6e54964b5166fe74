package symbolizer

import (
	"bufio"
	"bytes"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/latscope/latscope/internal/fixture"
)

func TestSites(t *testing.T) {
	tests := []struct {
		name       string
		stackCheck bool
		entryInsn  string // instruction at the chosen entry
		exits      int
	}{
		{"main.leaf", false, "LEAQ 0(AX)(AX*1), AX", 1},
		{"main.middle", true, "PUSHQ BP", 1},
		{"main.catcher", true, "PUSHQ BP", 2},
		{"main.grow", true, "PUSHQ BP", 2}, // LEAQ -x(SP), R12; CMPQ R12, 16(R14) prologue
		{"main.bottom", true, "PUSHQ BP", 1},
	}
	for _, tc := range fixture.Matrix() {
		for _, mode := range allModes {
			t.Run(tc+"/"+string(mode), func(t *testing.T) {
				b := openFixture(t, tc, mode)
				for _, tt := range tests {
					f, err := b.Lookup(tt.name)
					if err != nil {
						t.Fatal(err)
					}
					s, err := b.Sites(f)
					if err != nil {
						t.Fatalf("Sites(%s): %v", tt.name, err)
					}
					if s.NaiveEntry.Addr != f.Entry {
						t.Errorf("%s: NaiveEntry %#x, want entry %#x", tt.name, s.NaiveEntry.Addr, f.Entry)
					}
					if moved := s.Entry.Addr != f.Entry; moved != tt.stackCheck {
						t.Errorf("%s: entry site %#x (%s), function entry %#x, stack check %v", tt.name, s.Entry.Addr, s.Entry.Insn, f.Entry, tt.stackCheck)
					}
					if s.Entry.Insn != tt.entryInsn || s.Entry.SPDelta != 0 {
						t.Errorf("%s: entry site %q SPDelta %d, want %q 0", tt.name, s.Entry.Insn, s.Entry.SPDelta, tt.entryInsn)
					}
					if tt.stackCheck && !s.Entry.Emulated {
						t.Errorf("%s: entry site %q should be emulated", tt.name, s.Entry.Insn)
					}
					if off, _ := b.FileOffset(s.Entry.Addr); off != s.Entry.Offset {
						t.Errorf("%s: entry Offset %#x, FileOffset %#x", tt.name, s.Entry.Offset, off)
					}
					if len(s.Exits) != tt.exits {
						t.Errorf("%s: %d exits, want %d", tt.name, len(s.Exits), tt.exits)
					}
					for _, e := range s.Exits {
						if e.Ret.Insn != "RET" || e.Candidates[0] != e.Ret {
							t.Errorf("%s: exit %+v: Ret is not RET or not Candidates[0]", tt.name, e)
						}
						if e.Chosen.Addr < f.Entry || e.Chosen.Addr >= f.End {
							t.Errorf("%s: chosen exit %#x outside [%#x,%#x)", tt.name, e.Chosen.Addr, f.Entry, f.End)
						}
						if tt.stackCheck && (len(e.Candidates) != 3 || e.Candidates[1].Insn != "POPQ BP" || e.Candidates[1].SPDelta != 8 ||
							!strings.HasPrefix(e.Candidates[2].Insn, "ADDQ $") || e.Candidates[2].SPDelta <= 8) {
							t.Errorf("%s: candidates %+v, want RET, POPQ BP (8), ADDQ $n,SP (8+n)", tt.name, e.Candidates)
						}
					}
				}
			})
		}
	}
}

// A frameless leaf's first instruction is single-stepped. A probe that
// reads no argument sees its calls at the first emulated instruction of
// its straight-line entry (tiny: the jump into its loop), or, when there
// is none but every call is a direct CALL (perimeter), at those CALLs,
// with SP 8 above the callee's first instruction; where neither exists
// (area, reached through an interface) it stays at the entry.
func TestCallEntry(t *testing.T) {
	checked := 0 // layouts where perimeter's calls are all known
	defer func() {
		if checked == 0 {
			t.Error("no layout had main.(*circle).perimeter's calls all known: CallEntries untested")
		}
	}()
	for _, tc := range fixture.Matrix() {
		for _, mode := range allModes {
			t.Run(tc+"/"+string(mode), func(t *testing.T) {
				b := openFixture(t, tc, mode)
				sites := func(name string) (*Func, *Sites) {
					f, err := b.Lookup(name)
					if err != nil {
						t.Fatal(err)
					}
					s, err := b.Sites(f)
					if err != nil {
						t.Fatalf("Sites(%s): %v", name, err)
					}
					return f, s
				}
				f, s := sites("main.tiny")
				if s.Entry.Emulated || !s.CallEntry.Emulated || s.CallEntry.Addr <= f.Entry || s.CallEntry.SPDelta != 0 ||
					!strings.HasPrefix(s.CallEntry.Insn, "J") {
					t.Errorf("main.tiny: entry %q, call entry %+v; want a jump after the entry, emulated, SPDelta 0", s.Entry.Insn, s.CallEntry)
				}
				if _, err := b.CallEntries(f); err == nil {
					t.Errorf("main.tiny is called through a func value: CallEntries should refuse")
				}
				for _, name := range []string{"main.middle", "main.(*circle).area"} {
					if _, s := sites(name); s.CallEntry != s.Entry {
						t.Errorf("%s: call entry %+v, want the entry %+v", name, s.CallEntry, s.Entry)
					}
				}
				f, _ = sites("main.(*circle).area")
				if _, err := b.CallEntries(f); err == nil {
					t.Errorf("main.(*circle).area is called through an interface: CallEntries should refuse")
				}
				f, s = sites("main.(*circle).perimeter")
				if s.CallEntry.Emulated {
					t.Fatalf("main.(*circle).perimeter: call entry %q emulated: the fixture no longer tests CallEntries", s.CallEntry.Insn)
				}
				calls, err := b.CallEntries(f)
				if _, rerr := b.ResumeSites(f, 0); rerr != nil {
					// Some layouts leave doubt whether an interface may call it.
					if !errors.Is(err, ErrNotResumable) {
						t.Errorf("CallEntries(main.(*circle).perimeter) = %v where ResumeSites refuses (%v)", err, rerr)
					}
					return
				}
				checked++
				if err != nil || len(calls) != 1 {
					t.Fatalf("CallEntries(main.(*circle).perimeter) = %+v, %v; want its one call", calls, err)
				}
				if c := calls[0]; !c.Emulated || c.SPDelta != -8 || c.Insn != "CALL main.(*circle).perimeter(SB)" || b.FuncAt(c.Addr).Name != "main.shapes" {
					t.Errorf("call entry %+v in %s, want main.shapes' CALL, emulated, SPDelta -8", c, b.FuncAt(c.Addr).Name)
				}
			})
		}
	}
}

// TestRetCount compares the RETs Sites finds in every main.* function with
// an independent disassembly by `go tool objdump`.
func TestRetCount(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		t.Run(tc, func(t *testing.T) {
			b := openFixture(t, tc, fixture.Default)
			want := objdumpRets(t, b.Path)
			if len(want) < 10 {
				t.Fatalf("objdump found only %d main.* functions", len(want))
			}
			for name, n := range want {
				f, err := b.Lookup(name)
				if err != nil {
					t.Fatal(err)
				}
				s, err := b.Sites(f)
				if err != nil {
					t.Fatal(err)
				}
				rets := 0
				for _, e := range s.Exits {
					if e.Ret.Insn == "RET" {
						rets++
					}
				}
				if rets != n {
					t.Errorf("%s: Sites found %d RETs, objdump %d", name, rets, n)
				}
			}
		})
	}
}

var textRE = regexp.MustCompile(`^TEXT (main\.\S+)\(SB\)`)

func objdumpRets(t *testing.T, path string) map[string]int {
	out, err := exec.Command("go", "tool", "objdump", "-s", `^main\.`, path).Output()
	if err != nil {
		t.Fatalf("go tool objdump: %v", err)
	}
	rets := make(map[string]int)
	var cur string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := textRE.FindStringSubmatch(line); m != nil {
			cur = m[1]
			rets[cur] += 0
			continue
		}
		if f := strings.Fields(line); len(f) >= 4 && f[3] == "RET" {
			rets[cur]++
		}
	}
	return rets
}

func TestEmulated(t *testing.T) {
	tests := []struct {
		raw  []byte
		want bool
	}{
		{[]byte{0x55}, true},             // PUSHQ BP
		{[]byte{0x41, 0x54}, true},       // PUSHQ R12
		{[]byte{0x5d}, false},            // POPQ BP
		{[]byte{0xc3}, false},            // RET
		{[]byte{0x90}, true},             // NOP
		{[]byte{0x0f, 0x1f, 0x00}, true}, // NOPL 0(AX)
		{[]byte{0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00}, true},
		{[]byte{0xe8, 0, 0, 0, 0}, true},        // CALL rel32
		{[]byte{0xeb, 0x10}, true},              // JMP rel8
		{[]byte{0x76, 0x32}, true},              // JBE rel8
		{[]byte{0x0f, 0x86, 0, 0, 0, 0}, true},  // JBE rel32
		{[]byte{0x49, 0x3b, 0x66, 0x10}, false}, // CMPQ SP, 0x10(R14)
		{[]byte{0x48, 0x83, 0xc4, 0x10}, false}, // ADDQ $0x10, SP
		{[]byte{0xff, 0xd1}, false},             // CALL CX
		{nil, false},
	}
	for _, tt := range tests {
		if got := emulated(tt.raw); got != tt.want {
			t.Errorf("emulated(% x) = %v, want %v", tt.raw, got, tt.want)
		}
	}
}

// emulatedFrom walks only code that runs once per call, cannot fault and
// keeps SP, up to the first instruction the kernel emulates.
func TestEmulatedFrom(t *testing.T) {
	const entry = 0x1000
	tests := []struct {
		name string
		code []byte
		want int
	}{
		{"XORL CX,CX; LEAQ 8(AX),CX; JMP", []byte{0x31, 0xc9, 0x48, 0x8d, 0x48, 0x08, 0xeb, 0x00, 0xc3}, 2},
		{"MOVQ (AX),CX; JMP (may fault first)", []byte{0x48, 0x8b, 0x08, 0xeb, 0x00, 0xc3}, -1},
		{"XORL CX,CX; RET (no emulated instruction)", []byte{0x31, 0xc9, 0xc3}, -1},
		{"SUBQ $8,SP; JMP (moves SP)", []byte{0x48, 0x83, 0xec, 0x08, 0xeb, 0x00, 0xc3}, -1},
		{"XORL CX,CX; JMP -4 (a branch lands in the prefix)", []byte{0x31, 0xc9, 0xeb, 0xfc, 0xc3}, -1},
		{"PUSHQ BP", []byte{0x55, 0xc3}, 0},
	}
	for _, tt := range tests {
		f := &Func{Name: "f", Entry: entry, End: entry + uint64(len(tt.code))}
		insns := decode(entry, tt.code)
		if got := emulatedFrom(insns, 0, branchTargets(insns, f), f); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
}
