package symbolizer

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package that a caller may
// need to branch on wraps one of these inside an *Error; test with
// errors.Is.
var (
	ErrNotELF               = errors.New("not an ELF file")
	ErrNotGo                = errors.New("not a Go binary (no Go build info / .gopclntab)")
	ErrUnsupportedArch      = errors.New("unsupported architecture")
	ErrUnsupportedGoVersion = errors.New("unsupported Go version")
	ErrUnsupportedVersion   = errors.New("unsupported library version")
	ErrCorruptPclntab       = errors.New("corrupt or truncated Go symbol table (.gopclntab)")
	ErrUnsupportedLayout    = errors.New("unsupported binary layout")
	ErrFuncNotFound         = errors.New("function not found")
	ErrNotMapped            = errors.New("address not in any loadable segment")
	ErrProcessGone          = errors.New("process not found")
	ErrPermission           = errors.New("permission denied")
	ErrClosed               = errors.New("binary closed: machine code is read from the file, which Close released")
)

// Error is the error type returned by this package. It names the binary,
// the failure class (Err, one of the sentinels above) and, in Detail,
// what went wrong and what to do next.
type Error struct {
	Path   string // the binary (or /proc/PID/exe) concerned
	Err    error  // one of the Err* sentinels
	Detail string // specifics and a hint for the user
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("%s: %v", e.Path, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Path, e.Err, e.Detail)
}

// Unwrap returns the sentinel so that errors.Is works.
func (e *Error) Unwrap() error { return e.Err }

func newError(path string, sentinel error, format string, args ...any) *Error {
	return &Error{Path: path, Err: sentinel, Detail: fmt.Sprintf(format, args...)}
}
