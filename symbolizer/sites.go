package symbolizer

import (
	"sort"

	"golang.org/x/arch/x86/x86asm"
)

// Site is one instruction a uprobe can be placed on.
type Site struct {
	Addr     uint64 // virtual address
	Offset   uint64 // file offset, what the uprobe is attached at
	Insn     string // Go-syntax disassembly, e.g. "PUSHQ BP"
	Emulated bool   // the kernel emulates it instead of single-stepping (see emulated)
	// SPDelta is what to add to SP at this site to get SP at the
	// function's first instruction: 0 at entry and at RET, 8 at POPQ BP,
	// 8+n at ADDQ $n, SP, -8 in a caller right after the call returned.
	SPDelta int64
}

// ExitPath is one way out of a function: a RET, or a tail jump to
// another function.
type ExitPath struct {
	Ret Site
	// Candidates are the sites on this path that run exactly once per
	// return: the RET itself (Candidates[0]) and the epilogue instructions
	// before it in the same basic block, nearest first.
	Candidates []Site
	Chosen     Site // see chooseExit
}

// Sites are the probe sites of one function.
type Sites struct {
	Entry      Site // runs once per call; after the stack-bound check when there is one
	NaiveEntry Site // the function's first instruction (after ENDBR64)
	// CallEntry is where a probe that reads no argument register (only
	// SP, the g register and BP, which Go code never allocates) sees each
	// call: Entry, unless Entry would be single-stepped (~10 µs a hit on
	// a VM, against ~0.5 µs emulated) and the straight-line code from it
	// reaches an instruction the kernel emulates first, as a frameless
	// leaf's first branch: no branch lands before it and nothing before
	// it moves SP, so it runs once per call with SP as at entry
	// (SPDelta 0). Argument registers may have been overwritten there.
	CallEntry Site
	// Exits has one path per RET or tail jump. It is empty, without error,
	// for functions that never return (they end in a call to a function
	// such as runtime.gopanic or runtime.throw).
	Exits []ExitPath
}

// insn is one decoded instruction of a function body.
type insn struct {
	addr uint64
	raw  []byte
	inst x86asm.Inst
}

// prologueWindow is how many leading instructions may hold the stack
// check: ENDBR64 aside, the longest Go prologue (huge frames) is
// MOVQ SP,R12; SUBQ $n,R12; JCS; CMPQ R12,16(R14); JLS.
const prologueWindow = 8

// Sites disassembles f (amd64 only) and returns its entry and exit sites.
func (b *Binary) Sites(f *Func) (*Sites, error) {
	if b.Arch != "amd64" {
		return nil, newError(b.Path, ErrUnsupportedArch, "probe-site selection is implemented for amd64 only, not %s", b.Arch)
	}
	code, err := b.code(f)
	if err != nil {
		return nil, err
	}
	insns := decode(f.Entry, code)
	if len(insns) == 0 {
		return nil, newError(b.Path, ErrCorruptPclntab, "function %s at %#x has no decodable instructions", f.Name, f.Entry)
	}
	targets := branchTargets(insns, f)
	s := &Sites{}
	if s.NaiveEntry, err = b.site(insns[0], 0); err != nil {
		return nil, err
	}
	s.Entry = s.NaiveEntry
	entry := 0
	if i := b.afterStackCheck(insns, f); i > 0 && i < len(insns) {
		if s.Entry, err = b.site(insns[i], 0); err != nil {
			return nil, err
		}
		entry = i
	}
	s.CallEntry = s.Entry
	if i := emulatedFrom(insns, entry, targets, f); i > entry && !s.Entry.Emulated {
		if s.CallEntry, err = b.site(insns[i], 0); err != nil {
			return nil, err
		}
	}
	for i, in := range insns {
		if !isExit(in, f) {
			continue
		}
		p, err := b.exitPath(insns, i, targets)
		if err != nil {
			return nil, err
		}
		s.Exits = append(s.Exits, p)
	}
	return s, nil
}

// code returns the bytes of f, read from the file's .text.
func (b *Binary) code(f *Func) ([]byte, error) {
	if f.Entry < b.textAddr || f.End < f.Entry || f.End-b.textAddr > b.textSize {
		return nil, newError(b.Path, ErrCorruptPclntab, "function %s [%#x,%#x) is outside .text", f.Name, f.Entry, f.End)
	}
	return b.readAt(f.Entry, int(f.End-f.Entry))
}

// decode disassembles code linearly. ENDBR64, which x86asm cannot decode,
// is skipped, and so is one byte at any other decoding error: padding and
// data never abort the scan.
func decode(addr uint64, code []byte) []insn {
	var out []insn
	for off := 0; off < len(code); {
		if isEndbr64(code[off:]) {
			off += 4
			continue
		}
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil || inst.Len == 0 {
			off++
			continue
		}
		out = append(out, insn{addr: addr + uint64(off), raw: code[off : off+inst.Len], inst: inst})
		off += inst.Len
	}
	return out
}

func isEndbr64(b []byte) bool {
	return len(b) >= 4 && b[0] == 0xf3 && b[1] == 0x0f && b[2] == 0x1e && b[3] == 0xfa
}

// target returns the destination of a direct (PC-relative) branch or call.
func (in insn) target() (uint64, bool) {
	if rel, ok := in.inst.Args[0].(x86asm.Rel); ok {
		return in.addr + uint64(len(in.raw)) + uint64(int64(rel)), true
	}
	return 0, false
}

func (in insn) isCondJump() bool {
	switch in.inst.Op {
	case x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JG, x86asm.JGE, x86asm.JL,
		x86asm.JLE, x86asm.JNE, x86asm.JNO, x86asm.JNP, x86asm.JNS, x86asm.JO, x86asm.JP, x86asm.JS,
		x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ, x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE:
		return true
	}
	return false
}

func (in insn) isBranch() bool {
	switch in.inst.Op {
	case x86asm.JMP, x86asm.CALL, x86asm.RET, x86asm.LCALL, x86asm.LJMP, x86asm.LRET, x86asm.IRET,
		x86asm.INT, x86asm.UD2, x86asm.SYSCALL:
		return true
	}
	return in.isCondJump()
}

// branchTargets collects the direct branch targets inside f. (Jump-table
// targets are not known; Go's jump tables land on case bodies, not inside
// epilogues.)
func branchTargets(insns []insn, f *Func) map[uint64]bool {
	t := make(map[uint64]bool)
	for _, in := range insns {
		if in.inst.Op != x86asm.JMP && !in.isCondJump() {
			continue
		}
		if a, ok := in.target(); ok && a >= f.Entry && a < f.End {
			t[a] = true
		}
	}
	return t
}

// isExit reports a RET or a direct JMP leaving f (a tail call).
func isExit(in insn, f *Func) bool {
	switch in.inst.Op {
	case x86asm.RET:
		return true
	case x86asm.JMP:
		a, ok := in.target()
		return ok && (a < f.Entry || a >= f.End)
	}
	return false
}

// straightLineWindow bounds the search for an emulated instruction
// after the entry: a leaf's first block is a few instructions long.
const straightLineWindow = 32

// emulatedFrom returns the index of the first instruction the kernel
// emulates on the straight-line path from insns[from], or -1: the path
// ends at a branch or exit it does not emulate, at an instruction that
// writes SP or may fault, or where a branch lands (code there also runs
// for other reasons than entering the function).
func emulatedFrom(insns []insn, from int, targets map[uint64]bool, f *Func) int {
	for i := from; i < len(insns) && i < from+straightLineWindow; i++ {
		in := insns[i]
		if targets[in.addr] || isExit(in, f) {
			return -1
		}
		if emulated(in.raw) {
			return i
		}
		// A fault there (a nil receiver) would end the call before the
		// probe saw it; probed at the entry, it is recorded, unwound.
		if in.isBranch() || writesSP(in) || mayFault(in) {
			return -1
		}
	}
	return -1
}

// mayFault reports whether in may fault: it touches memory (LEA only
// computes an address) or divides.
func mayFault(in insn) bool {
	switch in.inst.Op {
	case x86asm.LEA:
		return false
	case x86asm.DIV, x86asm.IDIV:
		return true
	}
	for _, a := range in.inst.Args {
		if _, ok := a.(x86asm.Mem); ok {
			return true
		}
	}
	return false
}

// writesSP reports whether in changes the stack pointer.
func writesSP(in insn) bool {
	switch in.inst.Op {
	case x86asm.PUSH, x86asm.POP, x86asm.PUSHF, x86asm.POPF, x86asm.PUSHFQ, x86asm.POPFQ,
		x86asm.ENTER, x86asm.LEAVE, x86asm.CALL, x86asm.RET:
		return true
	}
	if r, ok := in.inst.Args[0].(x86asm.Reg); ok {
		return r == x86asm.RSP || r == x86asm.ESP || r == x86asm.SP
	}
	return false
}

// afterStackCheck returns the index of the instruction following the last
// prologue conditional jump to the morestack block, or -1 when f has no
// stack check (nosplit functions). morestack re-enters the function at its
// first instruction, so the check may run twice per call but the
// instruction after it runs once.
func (b *Binary) afterStackCheck(insns []insn, f *Func) int {
	last := -1
	for i := 0; i < len(insns) && i < prologueWindow; i++ {
		in := insns[i]
		if !in.isCondJump() {
			continue
		}
		if t, ok := in.target(); ok && t >= f.Entry && t < f.End && b.isMorestackBlock(insns, t) {
			last = i
		}
	}
	if last < 0 {
		return -1
	}
	return last + 1
}

// isMorestackBlock reports whether the straight-line code at addr (argument
// spills, then a call) calls runtime.morestack or one of its variants.
func (b *Binary) isMorestackBlock(insns []insn, addr uint64) bool {
	i := sort.Search(len(insns), func(i int) bool { return insns[i].addr >= addr })
	for n := 0; i < len(insns) && n < 32; i, n = i+1, n+1 {
		in := insns[i]
		if in.inst.Op == x86asm.CALL {
			t, ok := in.target()
			return ok && b.isMorestack(t)
		}
		if in.isBranch() {
			return false
		}
	}
	return false
}

func (b *Binary) isMorestack(addr uint64) bool {
	f := b.funcAt(addr)
	if f == nil || f.Entry != addr {
		return false
	}
	switch f.Name {
	// morestackc is where a //go:systemstack function's check against
	// g.stackguard1 branches on a user stack: it throws, never re-enters.
	case "runtime.morestack", "runtime.morestack_noctxt", "runtime.morestackc":
		return true
	}
	return false
}

// FuncAt returns the function containing addr, or nil.
func (b *Binary) FuncAt(addr uint64) *Func { return b.funcAt(addr) }

// funcAt returns the function containing addr, or nil.
func (b *Binary) funcAt(addr uint64) *Func {
	i := sort.Search(len(b.Funcs), func(i int) bool { return b.Funcs[i].End > addr })
	if i < len(b.Funcs) && b.Funcs[i].Entry <= addr {
		return &b.Funcs[i]
	}
	return nil
}

// exitPath builds the exit path ending at insns[i] (a RET or tail jump):
// walking back from it, epilogue instructions (stack pops, SP
// adjustments, NOPs) belong to the path while they are in the same basic
// block, i.e. until an instruction that is a branch target (which is still
// taken, since every path into it continues to the exit) or anything else.
func (b *Binary) exitPath(insns []insn, i int, targets map[uint64]bool) (ExitPath, error) {
	ret, err := b.site(insns[i], 0)
	if err != nil {
		return ExitPath{}, err
	}
	p := ExitPath{Ret: ret, Candidates: []Site{ret}}
	delta := uint64(0)
	for j := i - 1; j >= 0; j-- {
		next := insns[j+1]
		in := insns[j]
		if targets[next.addr] || in.addr+uint64(len(in.raw)) != next.addr {
			break
		}
		eff, ok := epilogueEffect(in)
		if !ok {
			break
		}
		delta += eff
		s, err := b.site(in, int64(delta))
		if err != nil {
			return ExitPath{}, err
		}
		p.Candidates = append(p.Candidates, s)
	}
	p.Chosen = chooseExit(p.Candidates)
	return p, nil
}

// epilogueEffect reports whether in may belong to an epilogue and by how
// much it raises SP.
func epilogueEffect(in insn) (uint64, bool) {
	a := in.inst.Args
	switch in.inst.Op {
	case x86asm.NOP:
		return 0, true
	case x86asm.POP:
		if r, ok := a[0].(x86asm.Reg); ok && r >= x86asm.RAX && r <= x86asm.R15 {
			return 8, true
		}
	case x86asm.ADD:
		if r, ok := a[0].(x86asm.Reg); ok && r == x86asm.RSP {
			if imm, ok := a[1].(x86asm.Imm); ok && imm >= 0 {
				return uint64(imm), true
			}
		}
	}
	return 0, false
}

// chooseExit picks the site probed for one return path. Policy (to be
// revised after measurement): the emulated candidate nearest the RET,
// since an emulated site costs ~0.6 µs against ~10 µs for a single-stepped
// one here; otherwise the RET itself. candidates[0] is the RET.
func chooseExit(candidates []Site) Site {
	for _, c := range candidates {
		if c.Emulated {
			return c
		}
	}
	return candidates[0]
}

// site describes in as a probe site.
func (b *Binary) site(in insn, spDelta int64) (Site, error) {
	off, err := b.FileOffset(in.addr)
	if err != nil {
		return Site{}, err
	}
	return Site{
		Addr:     in.addr,
		Offset:   off,
		Insn:     x86asm.GoSyntax(in.inst, in.addr, b.symName),
		Emulated: emulated(in.raw),
		SPDelta:  spDelta,
	}, nil
}

// symName resolves addresses for GoSyntax.
func (b *Binary) symName(addr uint64) (string, uint64) {
	if f := b.funcAt(addr); f != nil {
		return f.Name, f.Entry
	}
	return "", 0
}

// emulated reports whether the kernel's x86 uprobe code emulates the
// instruction encoded by raw instead of single-stepping it out of line:
// JMP rel8/rel32, CALL rel32, Jcc rel8/rel32, NOP (0x90 and 0F 1F /0,
// optionally with a 0x66 operand-size prefix) and PUSH r64.
func emulated(raw []byte) bool {
	if len(raw) == 0 {
		return false
	}
	op := raw[0]
	switch {
	case op == 0xeb || op == 0xe9 || op == 0xe8:
		return true
	case op >= 0x70 && op <= 0x7f:
		return true
	case op == 0x90 && len(raw) == 1:
		return true
	case op >= 0x50 && op <= 0x57:
		return true
	case op == 0x41 && len(raw) == 2 && raw[1] >= 0x50 && raw[1] <= 0x57:
		return true
	case op == 0x0f && len(raw) >= 2 && raw[1] >= 0x80 && raw[1] <= 0x8f:
		return true
	}
	if op == 0x66 {
		raw = raw[1:]
	}
	// Multi-byte NOP: 0F 1F with ModRM.reg == 0.
	return len(raw) >= 3 && raw[0] == 0x0f && raw[1] == 0x1f && (raw[2]>>3)&7 == 0
}
