package symbolizer

import (
	"debug/elf"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// GTLS says where a thread's current g is kept in thread-local storage,
// for code that must find the goroutine without the g register (R14 is g
// only inside Go functions): from the kernel (a scheduler tracepoint, a
// CPU sample in C or assembly), read the word at the thread pointer
// (fs_base on amd64) plus Offset.
type GTLS struct {
	Offset int64  // bytes from the thread pointer; negative (x86-64 TLS lies below it)
	Source string // "runtime.tlsg" (symbol and PT_TLS) or "runtime.systemstack" (its FS-relative load)
}

// GTLS returns where g is kept in TLS. Go's own linker puts it at −8.
// An external linker lays the executable's TLS block out with the C
// library's own variables (glibc's static builds: −0x60), at
// runtime.tlsg − (PT_TLS memsz rounded up to its alignment). Without
// symbols the offset is read from the runtime's own FS-relative load of
// g in runtime.systemstack (a constant displacement; in a PIE a constant
// or GOT slot loaded into a register first). amd64 only.
func (b *Binary) GTLS() (GTLS, error) {
	if b.Arch != "amd64" {
		return GTLS{}, newError(b.Path, ErrUnsupportedArch, "g's TLS slot is read from amd64 code only (arch %s)", b.Arch)
	}
	if off, ok := b.tlsgSymbol(); ok {
		return GTLS{Offset: off, Source: "runtime.tlsg"}, nil
	}
	off, err := b.tlsgLoad()
	if err != nil {
		return GTLS{}, newError(b.Path, ErrUnsupportedLayout, "cannot tell where g is kept in TLS: %v", err)
	}
	return GTLS{Offset: off, Source: "runtime.systemstack"}, nil
}

// tlsgSymbol computes the offset from runtime.tlsg and PT_TLS (x86-64
// TLS variant II: the executable's block ends at the thread pointer).
func (b *Binary) tlsgSymbol() (int64, bool) {
	if b.Stripped {
		return 0, false
	}
	syms, err := b.elf.Symbols()
	if err != nil {
		return 0, false
	}
	for _, s := range syms {
		if s.Name != "runtime.tlsg" || elf.ST_TYPE(s.Info) != elf.STT_TLS {
			continue
		}
		for _, p := range b.elf.Progs {
			if p.Type != elf.PT_TLS {
				continue
			}
			align := max(p.Align, 1)
			size := (p.Memsz + align - 1) / align * align
			if s.Value >= size {
				return 0, false
			}
			return int64(s.Value) - int64(size), true
		}
	}
	return 0, false
}

// tlsgLoad finds the first FS-relative load in runtime.systemstack (its
// `get_tls(CX); MOVQ g(CX), AX`) and returns its offset.
func (b *Binary) tlsgLoad() (int64, error) {
	f, err := b.Lookup("runtime.systemstack")
	if err != nil {
		return 0, err
	}
	code, err := b.code(f)
	if err != nil {
		return 0, err
	}
	insns := decode(f.Entry, code)
	for i, in := range insns {
		for _, a := range in.inst.Args {
			m, ok := a.(x86asm.Mem)
			if !ok || m.Segment != x86asm.FS {
				continue
			}
			switch {
			case m.Base == 0 && m.Index == 0:
				// MOVQ FS:disp32, reg (non-PIE); the decoder leaves an
				// absolute disp32 unextended.
				return checkTLSOffset(int64(int32(m.Disp)))
			case m.Base != 0 && m.Index == 0 || m.Base == 0 && m.Index != 0 && m.Scale == 1:
				// MOVQ $off, CX (or MOVQ off@GOTTPOFF(RIP), CX); MOVQ FS:0(CX), AX (PIE)
				reg := m.Base
				if reg == 0 {
					reg = m.Index
				}
				v, err := b.loadedInto(insns[:i], reg)
				if err != nil {
					return 0, fmt.Errorf("runtime.systemstack at %#x (%s): %w", in.addr, in.inst, err)
				}
				return checkTLSOffset(v + m.Disp)
			}
			return 0, fmt.Errorf("runtime.systemstack at %#x: FS-relative operand %s not understood", in.addr, in.inst)
		}
	}
	return 0, fmt.Errorf("no FS-relative load in runtime.systemstack [%#x,%#x)", f.Entry, f.End)
}

// loadedInto returns the value the last of insns to write reg loaded into
// it: an immediate, or the word at a RIP-relative address (a GOT slot the
// linker filled with the TLS offset).
func (b *Binary) loadedInto(insns []insn, reg x86asm.Reg) (int64, error) {
	for i := len(insns) - 1; i >= 0; i-- {
		in := insns[i]
		if len(in.inst.Args) < 2 || in.inst.Args[0] != reg {
			continue
		}
		if in.inst.Op != x86asm.MOV {
			return 0, fmt.Errorf("%s last written by %s", reg, in.inst)
		}
		switch src := in.inst.Args[1].(type) {
		case x86asm.Imm:
			return int64(src), nil
		case x86asm.Mem:
			if src.Base != x86asm.RIP || src.Index != 0 {
				break
			}
			v, err := b.pointerAt(in.addr + uint64(in.inst.Len) + uint64(src.Disp))
			return int64(v), err
		}
		return 0, fmt.Errorf("%s loaded by %s", reg, in.inst)
	}
	return 0, fmt.Errorf("%s is not loaded before its use", reg)
}

// checkTLSOffset accepts what a g slot below the thread pointer can be.
func checkTLSOffset(off int64) (int64, error) {
	if off >= 0 || off%8 != 0 || off < -1<<20 {
		return 0, fmt.Errorf("TLS offset %d is not a g slot below the thread pointer", off)
	}
	return off, nil
}
