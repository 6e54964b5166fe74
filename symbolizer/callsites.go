package symbolizer

import (
	"encoding/binary"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// CallReturnSites returns, for every direct call from caller to callee,
// the cheapest site in caller where callee has just returned with its
// result registers (amd64: RAX, RBX, RCX) untouched: the first emulated
// instruction among the next few that only read registers or set flags
// (NOPs, TEST, CMP), else the instruction right after the call. It is
// how a probe sees a callee's results without a single-stepped RET, for
// callees called from known places.
func (b *Binary) CallReturnSites(caller, callee *Func) ([]Site, error) {
	if b.Arch != "amd64" {
		return nil, newError(b.Path, ErrUnsupportedArch, "call-return sites are implemented for amd64 only, not %s", b.Arch)
	}
	code, err := b.code(caller)
	if err != nil {
		return nil, err
	}
	insns := decode(caller.Entry, code)
	targets := branchTargets(insns, caller)
	var sites []Site
	for i, in := range insns {
		if in.inst.Op != x86asm.CALL {
			continue
		}
		if a, ok := in.target(); !ok || a != callee.Entry || i+1 >= len(insns) {
			continue
		}
		pick := insns[i+1]
		for j := i + 1; j < len(insns) && j <= i+3; j++ {
			next := insns[j]
			if j > i+1 && targets[next.addr] {
				break // another path joins here: not only after the call
			}
			if emulated(next.raw) {
				pick = next
				break
			}
			if !flagsOnly(next) {
				break
			}
		}
		// The callee's return popped the return address: SP is 8 above
		// SP at its first instruction.
		s, err := b.site(pick, -8)
		if err != nil {
			return nil, err
		}
		sites = append(sites, s)
	}
	if len(sites) == 0 {
		return nil, newError(b.Path, ErrFuncNotFound, "%s has no direct call to %s", caller.Name, callee.Name)
	}
	return sites, nil
}

// flagsOnly reports instructions that change no register but the flags.
func flagsOnly(in insn) bool {
	switch in.inst.Op {
	case x86asm.TEST, x86asm.CMP, x86asm.NOP:
		return true
	}
	return false
}

// DirectCallers returns the functions whose name starts with prefix that
// call callee directly (a CALL rel32 to its entry). Indirect calls are
// not found: use it where every call is known to be direct (the runtime's
// own internals).
func (b *Binary) DirectCallers(callee *Func, prefix string) ([]*Func, error) {
	if b.Arch != "amd64" {
		return nil, newError(b.Path, ErrUnsupportedArch, "call scanning is implemented for amd64 only, not %s", b.Arch)
	}
	var out []*Func
	for i := range b.Funcs {
		f := &b.Funcs[i]
		if !strings.HasPrefix(f.Name, prefix) {
			continue
		}
		code, err := b.code(f)
		if err != nil {
			continue
		}
		// Quick reject before decoding: a CALL rel32 to callee is E8 and
		// the displacement from the next instruction to its entry.
		if !mayCall(code, f.Entry, callee.Entry) {
			continue
		}
		for _, in := range decode(f.Entry, code) {
			if in.inst.Op != x86asm.CALL {
				continue
			}
			if a, ok := in.target(); ok && a == callee.Entry {
				out = append(out, f)
				break
			}
		}
	}
	return out, nil
}

// CallSites returns the sites of caller's direct calls to callee: the CALL
// instructions themselves, which the kernel emulates and where callee's
// arguments are in their registers.
func (b *Binary) CallSites(caller, callee *Func) ([]Site, error) {
	if b.Arch != "amd64" {
		return nil, newError(b.Path, ErrUnsupportedArch, "call sites are implemented for amd64 only, not %s", b.Arch)
	}
	code, err := b.code(caller)
	if err != nil {
		return nil, err
	}
	var sites []Site
	for _, in := range decode(caller.Entry, code) {
		if in.inst.Op != x86asm.CALL {
			continue
		}
		if a, ok := in.target(); ok && a == callee.Entry {
			s, err := b.site(in, 0)
			if err != nil {
				return nil, err
			}
			sites = append(sites, s)
		}
	}
	return sites, nil
}

// mayCall reports whether code (at addr) holds the bytes of a CALL rel32
// to target somewhere; only decoding tells whether they are an
// instruction.
func mayCall(code []byte, addr, target uint64) bool {
	for i := 0; i+5 <= len(code); i++ {
		if code[i] == 0xe8 && uint64(int64(addr)+int64(i)+5+int64(int32(binary.LittleEndian.Uint32(code[i+1:])))) == target {
			return true
		}
	}
	return false
}
