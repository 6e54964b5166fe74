package symbolizer

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/latscope/latscope/internal/fixture"
)

// TestGTLS: g's TLS slot is found in every layout, and the two ways of
// finding it (symbol and PT_TLS; the runtime's own FS-relative load)
// agree wherever both are possible. The Go linker's layouts, glibc's
// dynamic ones and musl's keep it at −8; glibc's static TLS comes first
// in a static(-PIE) build.
func TestGTLS(t *testing.T) {
	for _, tc := range fixture.Matrix() {
		for _, mode := range allModes {
			t.Run(tc+"/"+string(mode), func(t *testing.T) {
				b := openFixture(t, tc, mode)
				g, err := b.GTLS()
				if err != nil {
					t.Fatal(err)
				}
				load, err := b.tlsgLoad()
				if err != nil {
					t.Fatalf("from runtime.systemstack: %v", err)
				}
				if load != g.Offset {
					t.Errorf("runtime.systemstack loads g at %d, GTLS says %d (%s)", load, g.Offset, g.Source)
				}
				// Only an external linker leaves a runtime.tlsg symbol.
				want := "runtime.systemstack"
				if mode.External() && !mode.Stripped() {
					want = "runtime.tlsg"
				}
				if g.Source != want {
					t.Errorf("Source %q, want %q", g.Source, want)
				}
				static := mode == fixture.StaticPIE || mode == fixture.StaticPIEStripped
				if (g.Offset == -8) == static {
					t.Errorf("g at %d from the thread pointer", g.Offset)
				}
			})
		}
	}
}

// TestGTLSRunning: in running processes, the word GTLS names is each
// thread's current g — the g register (R14) of every thread, stopped
// where it waits (in a syscall from Go code, where R14 is g or g0).
func TestGTLSRunning(t *testing.T) {
	for _, tc := range []string{"go1.21.13", "go1.27.3"} {
		for _, mode := range []fixture.Mode{fixture.Stripped, fixture.StrippedPIE, fixture.ExternalStripped, fixture.ExternalPIEStripped, fixture.StaticPIEStripped, fixture.MuslStatic} {
			t.Run(tc+"/"+string(mode), func(t *testing.T) {
				bin := fixture.Build(t, "httpapp", tc, mode)
				b, err := Open(bin)
				if err != nil {
					t.Fatal(err)
				}
				defer b.Close()
				g, err := b.GTLS()
				if err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(bin, "wait")
				stdin, _ := cmd.StdinPipe()
				stdout, _ := cmd.StdoutPipe()
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				defer func() { stdin.Close(); cmd.Wait() }()
				if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
					t.Fatalf("fixture said %q, %v", line, err)
				}
				checkThreadGs(t, cmd.Process.Pid, g.Offset)
			})
		}
	}
}

// checkThreadGs stops each thread of pid with ptrace and compares the
// word at fs_base+off with R14. A thread caught between setting the TLS
// slot and R14 (a goroutine switch) is sampled again; one caught being
// born (stopped at the return of clone/clone3, before its first
// instruction set up TLS: slot 0) is not a Go thread yet and is skipped.
func checkThreadGs(t *testing.T, pid int, off int64) {
	t.Helper()
	runtime.LockOSThread() // ptrace requests come from the tracing thread
	defer runtime.UnlockOSThread()
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	matched := 0
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		var s threadState
		for try := 0; try < 5; try++ {
			if s, err = threadG(tid, off); err != nil {
				t.Fatalf("thread %d: %v", tid, err)
			}
			if s.word == s.r14 && s.word != 0 {
				matched++
				break
			}
		}
		switch {
		case s.word == s.r14 && s.word != 0:
		case s.word == 0 && (s.syscall == unix.SYS_CLONE || s.syscall == unix.SYS_CLONE3):
			t.Logf("thread %d of %d is being created (syscall %d): skipped", tid, pid, s.syscall)
		default:
			t.Errorf("thread %d of %d: fs_base%+d holds %#x, R14 is %#x (syscall %d)", tid, pid, off, s.word, s.r14, s.syscall)
		}
	}
	if matched < 2 {
		t.Errorf("%d of %d threads checked: expected the runtime's several", matched, len(tasks))
	}
}

type threadState struct {
	r14, word uint64
	syscall   int64 // the syscall it is stopped in, or -1
}

func threadG(tid int, off int64) (threadState, error) {
	if err := unix.PtraceSeize(tid); err != nil {
		return threadState{}, err
	}
	defer unix.PtraceDetach(tid)
	if err := unix.PtraceInterrupt(tid); err != nil {
		return threadState{}, err
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(tid, &ws, unix.WALL, nil); err != nil {
		return threadState{}, err
	}
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(tid, &regs); err != nil {
		return threadState{}, err
	}
	buf := make([]byte, 8)
	if _, err := unix.PtracePeekData(tid, uintptr(int64(regs.Fs_base)+off), buf); err != nil {
		return threadState{}, err
	}
	return threadState{r14: regs.R14, word: le.Uint64(buf), syscall: int64(regs.Orig_rax)}, nil
}
