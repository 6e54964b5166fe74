package symbolizer

import (
	"debug/elf"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// ResumeSite is where a call of a function has certainly returned: an
// instruction of one of its callers on the straight path from the
// return, which the kernel emulates (Site.Emulated). CallerExits may also
// give a tail-calling caller's RET, single-stepped.
type ResumeSite struct {
	Site
	// Shared: the site also runs on paths that did not call the function:
	// another branch joins the path before it (a rotated loop's condition,
	// say). There, no frame of the function is no error; the extra hits
	// cost an emulated trap each.
	Shared bool
}

// ErrNotResumable is wrapped by ResumeSites' errors: the function's
// returns must be probed at its own RET instructions.
var ErrNotResumable = errors.New("returns cannot be seen in the callers")

// resumeWindow bounds the instructions scanned after a call for an
// emulated one.
const resumeWindow = 16

// ResumeSites returns, for a function all of whose calls are direct, the
// sites where each call has returned, in the callers: the first emulated
// instruction (a branch, CALL, NOP or PUSH) on the straight path from
// each return address, with the first results result registers (RAX,
// RBX, RCX, RDI: what the exit program reads, at most 4) untouched on the
// way.
//
// A caller that tail-calls f (its RET comes first) makes f unresumable:
// its own return is where f's would be seen, in its caller, and if that
// caller is traced too, its exit would run first and take f's frame for
// one a panic skipped.
//
// The kernel single-steps a RET (~10 µs on a VM) but emulates these
// (~0.7 µs), so exits probed here are an order of magnitude cheaper. It
// applies only when no call can reach f unseen: f's address must not be
// taken (an interface's itab, a method table, a func value, a go or
// defer statement), else an error wrapping ErrNotResumable says which.
//
// Results are kept: the scans take milliseconds per function, and the
// agent asks for every function before attaching its first probe.
func (b *Binary) ResumeSites(f *Func, results int) ([]ResumeSite, error) {
	key := resumeKey{f.Entry, results}
	b.resumeMu.Lock()
	defer b.resumeMu.Unlock()
	if r, ok := b.resume[key]; ok {
		return r.sites, r.err
	}
	sites, err := b.scanResume(f, results, nil)
	if b.resume == nil {
		b.resume = make(map[resumeKey]resumeResult)
	}
	b.resume[key] = resumeResult{sites, err}
	return sites, err
}

// CallerExits is ResumeSites for a function whose callers the caller
// vouches for: callers are every function that calls f, none of them
// through an interface, a func value or a method value, and none of them
// traced (nor jumping to it: a tail JMP is refused as in ResumeSites). An indirect call right after f's call (a context's cancel) is
// then stepped over, so the exit sees f's return later by its duration,
// and the exit program must read no result register; where a caller
// tail-calls f, the exit is that caller's return, single-stepped as f's
// own RET would be. A call from any other function, or f's address in
// data or code, is an error wrapping ErrNotResumable.
func (b *Binary) CallerExits(f *Func, callers []*Func) ([]ResumeSite, error) {
	vouched := make(map[uint64]bool, len(callers))
	for _, c := range callers {
		vouched[c.Entry] = true
	}
	return b.scanResume(f, 0, vouched)
}

// ResumeAt is ResumeSites for one call site, found at run time by its
// return address ret (in any function, reached through a direct or
// indirect call): the site where a call from there has returned, always
// Shared, since other functions' calls may return there too (an
// interface call). tail reports a caller that returns right after the
// call instead, its epilogue keeping the results and restoring its frame
// pointer: the return is then seen where that caller's own call returns,
// one frame up (ResumeAt of its return address). caller is the function
// holding ret, a link-time address (a PIE's load bias taken off).
//
// A goroutine's first function returns into runtime.goexit, where no CALL
// precedes: refused. (Its CALL goexit1 would do as a site, and was tried:
// goroutine spans then ended milliseconds late in the e2e, 2 runs of 3.
// Every goroutine of the process passes there; the suspect is that
// registering another consumer on that hot uprobe stalls its hits.)
func (b *Binary) ResumeAt(ret uint64, results int) (site ResumeSite, caller *Func, tail bool, err error) {
	if b.Arch != "amd64" {
		return site, nil, false, newError(b.Path, ErrUnsupportedArch, "resume sites are implemented for amd64 only, not %s", b.Arch)
	}
	caller = b.funcAt(ret)
	if caller == nil {
		return site, nil, false, fmt.Errorf("%w: return address %#x is in no function", ErrNotResumable, ret)
	}
	code, err := b.code(caller)
	if err != nil {
		return site, caller, false, err
	}
	insns := decode(caller.Entry, code)
	i := indexAt(insns, ret)
	if i < 1 || insns[i-1].inst.Op != x86asm.CALL {
		return site, caller, false, fmt.Errorf("%w: %#x in %s does not follow a CALL", ErrNotResumable, ret, caller.Name)
	}
	r := resumer{b: b, results: results, tails: true, seen: map[uint64]int{}}
	switch err := r.after(caller, insns, i-1); {
	case errors.Is(err, errTailCall):
		return site, caller, true, nil
	case err != nil:
		return site, caller, false, fmt.Errorf("%w: %w", ErrNotResumable, err)
	}
	site = r.sites[0]
	site.Shared = true
	return site, caller, false, nil
}

// errTailCall: ResumeAt's caller returns right after the call.
var errTailCall = errors.New("the caller returns right after the call")

type resumeKey struct {
	entry   uint64
	results int
}

type resumeResult struct {
	sites []ResumeSite
	err   error
}

// scanResume runs the scan behind ResumeSites (callers nil) and CallerExits.
func (b *Binary) scanResume(f *Func, results int, callers map[uint64]bool) ([]ResumeSite, error) {
	if b.Arch != "amd64" {
		return nil, newError(b.Path, ErrUnsupportedArch, "resume sites are implemented for amd64 only, not %s", b.Arch)
	}
	r := resumer{b: b, results: results, callers: callers, decoded: map[uint64][]insn{}, seen: map[uint64]int{}}
	if err := r.walk(f); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", f.Name, ErrNotResumable, err)
	}
	if len(r.sites) == 0 {
		return nil, fmt.Errorf("%s: %w: no direct call to it", f.Name, ErrNotResumable)
	}
	return r.sites, nil
}

type resumer struct {
	b       *Binary
	results int
	// callers, when set, are every function that calls f, vouched for by
	// the caller of CallerExits: f's method-table entry is then no
	// reason to refuse, an indirect call after f's call is stepped over,
	// and a tail call is seen at that caller's own return.
	callers map[uint64]bool
	// tails (ResumeAt): a caller's epilogue that keeps the results and
	// pops BP ends the scan with errTailCall.
	tails   bool
	decoded map[uint64][]insn // by function entry
	seen    map[uint64]int    // site address → index in sites
	sites   []ResumeSite
}

// walk adds the resume sites of every call to f.
func (r *resumer) walk(f *Func) error {
	if err := r.b.addressTaken(f, r.callers == nil); err != nil {
		return err
	}
	for _, at := range r.b.callsTo(f.Entry) {
		caller := r.b.funcAt(at)
		if caller == nil {
			continue
		}
		if r.callers != nil && !r.callers[caller.Entry] {
			return fmt.Errorf("%s calls it at %#x and is not a listed caller", caller.Name, at)
		}
		insns, ok := r.decoded[caller.Entry]
		if !ok {
			code, err := r.b.code(caller)
			if err != nil {
				return err
			}
			insns = decode(caller.Entry, code)
			r.decoded[caller.Entry] = insns
		}
		i := indexAt(insns, at)
		if i < 0 || insns[i].inst.Op != x86asm.CALL {
			continue // the bytes at the address were not a CALL instruction
		}
		if err := r.after(caller, insns, i); err != nil {
			return err
		}
	}
	return nil
}

// after finds the resume site following the call insns[i] in caller.
func (r *resumer) after(caller *Func, insns []insn, i int) error {
	joins := branchSources(insns, caller)
	shared := false
	lift := int64(8) // the return popped the return address
	poppedBP := false
	for j := i + 1; j < len(insns) && j <= i+resumeWindow; j++ {
		in := insns[j]
		// Another path joining is harmless: the site pops only a frame of
		// f at exactly the SP f was called with, and while its caller runs
		// such a frame has returned. A loop's back edge is not: the site
		// would trap once per iteration, calling f or not.
		if from, ok := joins[in.addr]; ok {
			if from > in.addr {
				return fmt.Errorf("after its call at %#x in %s a loop's back edge joins (%#x)", insns[i].addr, caller.Name, in.addr)
			}
			shared = true
		}
		if emulated(in.raw) {
			return r.add(in, lift, shared)
		}
		if eff, ok := epilogueEffect(in); ok && eff > 0 || in.inst.Op == x86asm.RET {
			if r.tails {
				// The caller returns f's results as its own; one frame up,
				// its frame pointer must be its caller's again.
				if in.inst.Op == x86asm.RET {
					if !poppedBP {
						return fmt.Errorf("%s returns at %#x without restoring BP", caller.Name, in.addr)
					}
					return errTailCall
				}
				if in.inst.Op == x86asm.POP {
					if in.inst.Args[0] != x86asm.RBP {
						return fmt.Errorf("%s pops %s in its epilogue at %#x", caller.Name, in.inst.Args[0], in.addr)
					}
					poppedBP = true
				}
				lift += int64(eff)
				continue
			}
			if r.callers == nil {
				return fmt.Errorf("%s tail-calls it at %#x", caller.Name, insns[i].addr)
			}
			// A listed caller, traced by no one: f returned when it
			// returns, seen at its RET (single-stepped, as f's own) or at
			// an emulated instruction of its epilogue.
			if in.inst.Op == x86asm.RET {
				return r.add(in, lift, shared)
			}
			lift += int64(eff)
			continue
		}
		if r.callers != nil && in.inst.Op == x86asm.CALL && r.results == 0 {
			if _, direct := in.target(); !direct {
				continue // a vouched caller's indirect call (a context's cancel)
			}
		}
		if !r.keeps(in) {
			return fmt.Errorf("after its call at %#x in %s: %s before any emulated instruction", insns[i].addr, caller.Name, x86asm.GoSyntax(in.inst, in.addr, r.b.symName))
		}
	}
	return fmt.Errorf("no emulated instruction within %d after its call at %#x in %s", resumeWindow, insns[i].addr, caller.Name)
}

// add records in as a resume site; SP there is lift above SP at f's
// entry. A site reached after several calls is shared if any path to it
// is.
func (r *resumer) add(in insn, lift int64, shared bool) error {
	if i, ok := r.seen[in.addr]; ok {
		if r.sites[i].SPDelta != -lift {
			return fmt.Errorf("resume site %#x is reached at two stack depths", in.addr)
		}
		r.sites[i].Shared = r.sites[i].Shared || shared
		return nil
	}
	s, err := r.b.site(in, -lift)
	if err != nil {
		return err
	}
	r.seen[in.addr] = len(r.sites)
	r.sites = append(r.sites, ResumeSite{Site: s, Shared: shared})
	return nil
}

// branchSources maps each direct branch target inside f to the highest
// address branching to it.
func branchSources(insns []insn, f *Func) map[uint64]uint64 {
	from := make(map[uint64]uint64)
	for _, in := range insns {
		if in.inst.Op != x86asm.JMP && !in.isCondJump() {
			continue
		}
		if a, ok := in.target(); ok && a >= f.Entry && a < f.End && in.addr >= from[a] {
			from[a] = in.addr
		}
	}
	return from
}

func indexAt(insns []insn, addr uint64) int {
	lo, hi := 0, len(insns)
	for lo < hi {
		m := (lo + hi) / 2
		if insns[m].addr < addr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(insns) && insns[lo].addr == addr {
		return lo
	}
	return -1
}

// keeps reports straight-line instructions that leave the results read,
// SP and BP as they are: moves, loads, address computations and
// arithmetic into other registers or memory, and instructions writing
// only flags.
func (r *resumer) keeps(in insn) bool {
	switch in.inst.Op {
	case x86asm.TEST, x86asm.CMP, x86asm.NOP:
		return true
	case x86asm.MOV, x86asm.MOVZX, x86asm.MOVSX, x86asm.MOVSXD, x86asm.LEA,
		x86asm.MOVUPS, x86asm.MOVAPS, x86asm.MOVSD_XMM, x86asm.MOVSS, x86asm.MOVQ, x86asm.MOVD,
		x86asm.XORPS, x86asm.XOR, x86asm.ADD, x86asm.SUB, x86asm.AND, x86asm.OR, x86asm.SHL, x86asm.SHR,
		x86asm.INC, x86asm.DEC, x86asm.NEG, x86asm.NOT, x86asm.IMUL, x86asm.SAR, x86asm.SETE, x86asm.SETNE,
		x86asm.CMOVE, x86asm.CMOVNE:
		switch dst := in.inst.Args[0].(type) {
		case x86asm.Mem:
			return true
		case x86asm.Reg:
			return !frameReg(dst) && !r.clobbersResult(dst)
		}
	}
	return false
}

// frameReg: SP or BP, at any width.
func frameReg(reg x86asm.Reg) bool {
	switch reg {
	case x86asm.SP, x86asm.ESP, x86asm.RSP, x86asm.SPB,
		x86asm.BP, x86asm.EBP, x86asm.RBP, x86asm.BPB:
		return true
	}
	return false
}

// clobbersResult reports writes to a result register the exit program
// reads, at any width.
func (r *resumer) clobbersResult(reg x86asm.Reg) bool {
	switch reg {
	case x86asm.AL, x86asm.AH, x86asm.AX, x86asm.EAX, x86asm.RAX:
		return r.results >= 1
	case x86asm.BL, x86asm.BH, x86asm.BX, x86asm.EBX, x86asm.RBX:
		return r.results >= 2
	case x86asm.CL, x86asm.CH, x86asm.CX, x86asm.ECX, x86asm.RCX:
		return r.results >= 3
	case x86asm.DIB, x86asm.DI, x86asm.EDI, x86asm.RDI:
		return r.results >= 4
	}
	return false
}

// refs indexes, once per binary, every reference to a function's entry
// that ResumeSites must know about.
type refs struct {
	calls    map[uint64][]uint64 // entry → CALL rel32 (E8 disp32) addresses aimed at it
	jumps    map[uint64][]uint64 // entry → JMP rel32 (E9 disp32) addresses aimed at it (tail calls)
	lea      map[uint64]uint64   // entry → a LEAQ disp32(RIP) loading it
	data     map[uint64]string   // entry → where a pointer to it is stored
	textOffs map[uint64]uint64   // entry → address of a word holding its text offset (method tables)
	entries  map[uint64]bool     // every function entry
	sections []dataSection       // the data scanned
	err      error
}

type dataSection struct {
	name string
	addr uint64
	data []byte
}

// word returns the 32-bit word at vaddr in the indexed data.
func (r *refs) word(vaddr uint64) (uint32, bool) {
	for _, s := range r.sections {
		if vaddr >= s.addr && vaddr+4 <= s.addr+uint64(len(s.data)) {
			return le.Uint32(s.data[vaddr-s.addr:]), true
		}
	}
	return 0, false
}

// references builds the index. Byte patterns inside other instructions or
// data are indexed too: calls are confirmed by decoding, and a false
// reference only costs a function its cheap exits.
func (b *Binary) references() *refs {
	b.refsOnce.Do(func() {
		r := &refs{calls: map[uint64][]uint64{}, jumps: map[uint64][]uint64{}, lea: map[uint64]uint64{}, data: map[uint64]string{}, textOffs: map[uint64]uint64{}}
		b.refs = r
		entries := make(map[uint64]bool, len(b.Funcs))
		r.entries = entries
		for i := range b.Funcs {
			entries[b.Funcs[i].Entry] = true
		}
		// .text is read in chunks (it is not kept: Binary.textSize), each
		// with the 6 bytes after it, so a pattern starting in one chunk
		// is seen whole.
		const chunk, tail = 1 << 20, 6
		for start := uint64(0); start < b.textSize; start += chunk {
			n := min(chunk+tail, b.textSize-start)
			t, err := b.readAt(b.textAddr+start, int(n))
			if err != nil {
				r.err = err
				return
			}
			for p := 0; p < min(chunk, len(t)) && p+5 <= len(t); p++ {
				at := b.textAddr + start + uint64(p)
				switch {
				case t[p] == 0xe8:
					if to := at + 5 + uint64(int64(int32(le.Uint32(t[p+1:])))); entries[to] {
						r.calls[to] = append(r.calls[to], at)
					}
				case t[p] == 0xe9:
					if to := at + 5 + uint64(int64(int32(le.Uint32(t[p+1:])))); entries[to] {
						r.jumps[to] = append(r.jumps[to], at)
					}
				case p+7 <= len(t) && t[p+1] == 0x8d && (t[p] == 0x48 || t[p] == 0x4c) && t[p+2]&0xc7 == 0x05:
					// LEAQ disp32(RIP), reg: REX.W (48 or 4C) 8D, ModRM mod=00 rm=101.
					if to := at + 7 + uint64(int64(int32(le.Uint32(t[p+3:])))); entries[to] {
						r.lea[to] = at
					}
				}
			}
		}
		for _, sec := range b.elf.Sections {
			if sec.Type != elf.SHT_PROGBITS || sec.Flags&elf.SHF_ALLOC == 0 || sec.Flags&elf.SHF_EXECINSTR != 0 || sec.Name == ".gopclntab" {
				continue
			}
			data, err := b.sectionData(sec)
			if err != nil {
				r.err = err
				return
			}
			r.sections = append(r.sections, dataSection{sec.Name, sec.Addr, data})
			// The pclntab (inside .data.rel.ro in an externally linked
			// PIE of Go < 1.26) holds every function's text offset, none
			// of them a reference.
			inPcln := func(p int) bool {
				a := sec.Addr + uint64(p)
				return a >= b.pclnAddr && a < b.pclnEnd
			}
			for p := 0; p+8 <= len(data); p += 8 {
				if v := le.Uint64(data[p:]); entries[v] && !inPcln(p) {
					r.data[v] = fmt.Sprintf("%s at %#x", sec.Name, sec.Addr+uint64(p))
				}
			}
			// Method tables hold offsets from runtime.text.
			for p := 0; p+4 <= len(data); p += 4 {
				if v := b.runtimeText + uint64(le.Uint32(data[p:])); entries[v] && !inPcln(p) {
					r.textOffs[v] = sec.Addr + uint64(p)
				}
			}
		}
		for _, rel := range b.relativeRelocs() {
			if entries[rel.val] {
				r.data[rel.val] = fmt.Sprintf("a PIE relocation at %#x", rel.off)
			}
		}
	})
	return b.refs
}

// callsTo returns the addresses of the CALL rel32 instructions aimed at
// entry (candidates: see references).
func (b *Binary) callsTo(entry uint64) []uint64 { return b.references().calls[entry] }

// isInsn reports whether an instruction of op starts at addr, decoding
// the function holding it (the references index byte patterns).
func (b *Binary) isInsn(addr uint64, op x86asm.Op) bool {
	f := b.funcAt(addr)
	if f == nil {
		return false
	}
	code, err := b.code(f)
	if err != nil {
		return true // cannot tell: count it
	}
	insns := decode(f.Entry, code)
	i := indexAt(insns, addr)
	return i >= 0 && insns[i].inst.Op == op
}

func (b *Binary) funcName(addr uint64) string {
	if f := b.funcAt(addr); f != nil {
		return f.Name
	}
	return "code outside any function"
}

// CallEntries returns every call to f as an entry site: its callers'
// CALL instructions (emulated; SPDelta -8, the return address not pushed
// yet), for a probe that reads no argument register. An error wrapping
// ErrNotResumable when f may be called otherwise than by a direct CALL
// (ResumeSites): a probe at its calls would miss those.
func (b *Binary) CallEntries(f *Func) ([]Site, error) {
	if _, err := b.ResumeSites(f, 0); err != nil {
		return nil, err
	}
	var sites []Site
	decoded := map[uint64][]insn{} // by caller, decoded once
	for _, at := range b.callsTo(f.Entry) {
		caller := b.funcAt(at)
		if caller == nil {
			continue
		}
		insns, ok := decoded[caller.Entry]
		if !ok {
			code, err := b.code(caller)
			if err != nil {
				return nil, err
			}
			insns = decode(caller.Entry, code)
			decoded[caller.Entry] = insns
		}
		i := indexAt(insns, at)
		if i < 0 || insns[i].inst.Op != x86asm.CALL {
			continue // the bytes at the address were not a CALL instruction
		}
		s, err := b.site(insns[i], -8)
		if err != nil {
			return nil, err
		}
		sites = append(sites, s)
	}
	if len(sites) == 0 {
		return nil, fmt.Errorf("%s: %w: no direct call to it", f.Name, ErrNotResumable)
	}
	return sites, nil
}

// addressTaken reports (as an error saying where) any way f can be called
// other than by a direct CALL: its address loaded by a LEA in the code (a
// func value, a go or defer statement), stored in data (itabs, closures,
// method values), or, for a method, its offset in a type's method table
// (itabs built at run time, reflection). False positives only cost the
// cheap exit; a miss would lose calls, so every match counts.
func (b *Binary) addressTaken(f *Func, methodTables bool) error {
	r := b.references()
	if r.err != nil {
		return r.err
	}
	if at, ok := r.lea[f.Entry]; ok {
		return fmt.Errorf("its address is loaded at %#x (a func value)", at)
	}
	for _, at := range r.jumps[f.Entry] {
		// f's own morestack path jumps back to its entry: not a call.
		if at >= f.Entry && at < f.End {
			continue
		}
		if b.isInsn(at, x86asm.JMP) {
			return fmt.Errorf("%s jumps to it at %#x (a tail call: it returns to that function's caller)", b.funcName(at), at)
		}
	}
	if where, ok := r.data[f.Entry]; ok {
		return fmt.Errorf("its address is stored in %s (an itab, closure or method value)", where)
	}
	if at, ok := r.textOffs[f.Entry]; ok && methodTables && isMethod(f.Name) {
		if exportedName(f.Name) {
			return fmt.Errorf("it is an exported method in a method table (%#x): interfaces and reflection may call it", at)
		}
		if b.interfaceMayDeclare(r, at) {
			return fmt.Errorf("it is in a method table (%#x) and its name may be an interface's method: interfaces may call it", at)
		}
	}
	return nil
}

// interfaceMayDeclare reports whether an interface type may declare the
// unexported method whose method-table entry holds the text offset at
// at. The linker keeps a method of any type stored in an interface in
// its method table ({name, mtyp, ifn, tfn}, 32-bit offsets), from which
// itabs are built at run time; only an interface declaring the method
// (imethods: {name, typ}) can call it that way, and method names are
// shared: an interface's imethod holds the same name offset. So every
// other word holding that name offset must be another method-table entry
// (followed by two text offsets or -1s); anything else may be an
// interface. Doubt refuses.
func (b *Binary) interfaceMayDeclare(r *refs, at uint64) bool {
	off, _ := r.word(at)
	var nameAt uint64
	if w, ok := r.word(at - 4); ok && w == off {
		nameAt = at - 12 // at is tfn, ifn before it
	} else if w, ok := r.word(at + 4); ok && w == off {
		nameAt = at - 8 // at is ifn
	} else {
		return true
	}
	name, ok := r.word(nameAt)
	if !ok {
		return true
	}
	textOff := func(vaddr uint64) bool {
		w, ok := r.word(vaddr)
		return ok && (w == 0xffffffff || r.entries[b.runtimeText+uint64(w)])
	}
	for _, s := range r.sections {
		for p := 0; p+4 <= len(s.data); p += 4 {
			if le.Uint32(s.data[p:]) != name {
				continue
			}
			q := s.addr + uint64(p)
			if !textOff(q+8) || !textOff(q+12) {
				return true
			}
		}
	}
	return false
}

// exportedName reports whether the last element of a Go symbol name is
// exported.
func exportedName(name string) bool {
	i := strings.LastIndexByte(name, '.')
	return i >= 0 && i+1 < len(name) && name[i+1] >= 'A' && name[i+1] <= 'Z'
}

// isMethod reports whether a Go symbol name names a method ("pkg.T.M",
// "pkg.(*T).M"); closures ("pkg.F.func1") count too, harmlessly.
func isMethod(name string) bool {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	if i := strings.IndexByte(name, '.'); i >= 0 {
		name = name[i+1:]
	}
	return strings.Contains(name, ".")
}

// Exits returns the sites that see f's returns: the resume sites in its
// callers when ResumeSites finds them, else the chosen site of each of
// s's exit paths (s = b.Sites(f)). notResumed says why the callers' sites
// were not used; nil when they were.
func (b *Binary) Exits(f *Func, s *Sites, results int) (exits []ResumeSite, notResumed error) {
	rs, err := b.ResumeSites(f, results)
	if err == nil {
		return rs, nil
	}
	for _, e := range s.Exits {
		exits = append(exits, ResumeSite{Site: e.Chosen})
	}
	return exits, err
}
