package benchproc

import (
	"os"
	"os/exec"
	"testing"
)

func TestCPUTicks(t *testing.T) {
	before, err := CPUTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := 0; i < 300_000_000; i++ { // ~0.1 s of CPU: ticks are 10 ms
		x += i
	}
	after, err := CPUTicks(os.Getpid())
	if err != nil || after <= before {
		t.Errorf("CPU ticks %d then %d (%v) across a busy loop (%d)", before, after, err, x)
	}
	if _, err := CPUTicks(1 << 30); err == nil {
		t.Error("a pid that does not exist must be an error")
	}
}

// TestStartNoAddress: a program that exits without logging an address is
// an error naming it, not a hang.
func TestStartNoAddress(t *testing.T) {
	sh, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Start([]string{sh}, nil); err == nil {
		t.Fatal("Start of a program that logs nothing: no error")
	}
}
