package agent_test

import (
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/symbolizer"
)

// Where two programs probe one instruction, the kernel runs the one
// attached last first. The agent relies on it (probeSites.lead) to run
// the call tracer's entries at callers' CALLs after any exit probed at
// the same address (an earlier call's return seen there: twice(sq sq) in
// the calls fixture), on both attach paths: uprobe_multi links and
// perf-event uprobes.
func TestUprobeNewestRunsFirst(t *testing.T) {
	fixture.RequireRoot(t)
	bin := fixture.Build(t, "calls", "local", fixture.Default)
	sym, err := symbolizer.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer sym.Close()
	f, err := sym.Lookup("main.benchTarget")
	if err != nil {
		t.Fatal(err)
	}
	sites, err := sym.Sites(f)
	if err != nil {
		t.Fatal(err)
	}
	first, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	// prog stores id in first[0] unless a program did before it.
	prog := func(id int64, attach ebpf.AttachType) *ebpf.Program {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.Kprobe, AttachType: attach, License: "GPL",
			Instructions: asm.Instructions{
				asm.StoreImm(asm.RFP, -4, 0, asm.Word),
				asm.Mov.Reg(asm.R2, asm.RFP),
				asm.Add.Imm(asm.R2, -4),
				asm.LoadMapPtr(asm.R1, first.FD()),
				asm.FnMapLookupElem.Call(),
				asm.JEq.Imm(asm.R0, 0, "out"),
				asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
				asm.JNE.Imm(asm.R1, 0, "out"),
				asm.Mov.Imm(asm.R1, int32(id)),
				asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
				asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
				asm.Return(),
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	exe, err := link.OpenExecutable(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, multi := range []bool{true, false} {
		attachType := ebpf.AttachNone
		if multi {
			attachType = ebpf.AttachTraceUprobeMulti
		}
		if err := first.Put(uint32(0), uint64(0)); err != nil {
			t.Fatal(err)
		}
		var links []link.Link
		for id := int64(1); id <= 2; id++ {
			p := prog(id, attachType)
			var l link.Link
			if multi {
				l, err = exe.UprobeMulti(nil, p, &link.UprobeMultiOptions{Addresses: []uint64{sites.Entry.Offset}})
			} else {
				l, err = exe.Uprobe("", p, &link.UprobeOptions{Address: sites.Entry.Offset})
			}
			if err != nil {
				t.Fatalf("multi=%v: attach program %d: %v", multi, id, err)
			}
			links = append(links, l)
		}
		out, err := exec.Command(bin, "bench", "1").CombinedOutput()
		for _, l := range links {
			l.Close()
		}
		if err != nil {
			t.Fatalf("bench: %v: %s", err, out)
		}
		var got uint64
		if err := first.Lookup(uint32(0), &got); err != nil {
			t.Fatal(err)
		}
		if got != 2 {
			t.Errorf("multi=%v: program %d ran first at a shared site, want 2 (the one attached last)", multi, got)
		}
	}
}
