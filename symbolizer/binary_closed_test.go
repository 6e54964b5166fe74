package symbolizer

import (
	"errors"
	"testing"

	"github.com/latscope/latscope/internal/fixture"
)

// Machine code is read from the file when needed: after Close that is an
// error naming the cause, not a read on a closed file.
func TestCodeAfterClose(t *testing.T) {
	b := openFixture(t, "local", fixture.Default)
	f, err := b.Lookup("main.main")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.code(f); err != nil {
		t.Fatalf("code before Close: %v", err)
	}
	b.Close()
	if _, err := b.code(f); !errors.Is(err, ErrClosed) {
		t.Fatalf("code after Close: %v, want ErrClosed", err)
	}
}
