// Package library declares what an instrumented library is: the Go
// symbols it probes, the struct fields its probes read, its BPF object
// and how its records become span fields. Each library lives in a
// subdirectory (one .c, one .go); agent/libraries.go lists them.
package library

import (
	"bytes"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/latscope/latscope/span"
)

// Probe is one probed function: the programs (by name in the library's
// object) run at its entry site and at each of its exit sites; its calls
// are traced frames. With Exit empty, Entry is a hook at the entry site
// (no frame). With Callee set, a hook at Symbol's direct calls to Callee
// (no frame): program Calling runs at each call instruction (the callee's
// arguments in registers), program Returned where each has just returned
// (the callee's results still in registers). Both sites are emulated by
// the kernel: cheaper than a hook on a busy callee's own entry.
type Probe struct {
	Symbol string // e.g. "net/http.serverHandler.ServeHTTP"
	Entry  string
	Exit   string

	Callee   string
	Calling  string
	Returned string

	// Results is how many result registers the Exit program reads, in
	// ABI order (RAX, RBX, RCX, RDI): its exits are moved into callers
	// only where those survive. 0 means 2 (an error, or one interface).
	Results int

	// Callers, when set, are every function that calls Symbol in the
	// library's code, none through an interface, a func value or a method
	// value. The Exit program (which must then read no result register)
	// runs where they resume, past an indirect call on the way, or at the
	// return of one that tail-calls Symbol (symbolizer.CallerExits):
	// cheaper than Symbol's own single-stepped RET where the main caller
	// resumes at an emulated instruction. The binary is checked: another
	// caller, a reference to Symbol in data, or a caller that is traced
	// itself keeps the exits at Symbol's RETs.
	Callers []string
}

// Library is one instrumented library.
type Library struct {
	Name string // e.g. "net/http"
	// Module is the module path whose version selects struct offsets;
	// "std" for the standard library (keyed by Go version).
	Module string
	Probes []Probe
	// Fields are the struct fields the probes read ("pkg.Type.Field"),
	// indexed by the library's C field enum.
	Fields []string
	// Linker is a Go main package that links every struct the probes read;
	// scripts/genfields builds it with each version to tabulate offsets.
	Linker string
	// Versions are the module versions scripts/genfields tabulates (not
	// for "std": every supported Go release is). A binary built with a
	// version between two tabled ones uses the older one's offsets.
	Versions []string
	// Deps are further modules whose structs the probes read, each
	// tabulated by its own versions (database/sql reads its drivers'). A
	// field or func belongs to the dep whose module path prefixes its
	// package (ModuleOf). A dep the binary does not link, or whose offsets
	// are unknown for the version it links, is off on its own: its fields
	// and funcs read as 0, the rest of the library attaches.
	Deps []Dep
	// Funcs are functions whose run-time entry addresses the probes read
	// from lib_offsets after the Fields (slot len(Fields)+i), e.g. to
	// tell the dynamic type of an interface value by its itab's first
	// method; 0 where the binary does not link one. Names as in
	// Probe.Symbol; indexed by the library's C enum, like Fields.
	Funcs []string
	// Spec loads the library's compiled BPF object.
	Spec func() (*ebpf.CollectionSpec, error)
	// Decode applies one of the library's records (raw: the whole record,
	// lib_header first) to its call's span. raw is valid only during the
	// call (the agent reuses its memory): keep nothing that shares it
	// (CString copies).
	Decode func(probe uint16, raw []byte, s *span.Span)
}

// Dep is a module a library reads structs of besides its own.
type Dep struct {
	Module string // e.g. "github.com/go-sql-driver/mysql"
	// Linker is a main package linking every struct of the module the
	// probes read; scripts/genfields builds it with each of Versions.
	Linker   string
	Versions []string
}

// ModuleOf returns the module whose version selects the offset of field
// ("pkg.Type.Field") or the address of func ("pkg.Func",
// "pkg.(*T).Method"): the Dep whose module path is the longest prefix of
// its package path, else the library's own Module.
func (l *Library) ModuleOf(name string) string {
	name = strings.TrimPrefix(name, "?")
	best := l.Module
	n := 0
	for _, d := range l.Deps {
		if len(d.Module) > n && (name == d.Module || strings.HasPrefix(name, d.Module+".") || strings.HasPrefix(name, d.Module+"/")) {
			best, n = d.Module, len(d.Module)
		}
	}
	return best
}

// Record views raw as the library record T, in place; nil if raw is too
// short. T is a bpf2go-generated struct starting with the lib_header.
func Record[T any](raw []byte) *T {
	var zero T
	if len(raw) < int(unsafe.Sizeof(zero)) {
		return nil
	}
	return (*T)(unsafe.Pointer(&raw[0]))
}

// CString returns the NUL-terminated string at the start of b.
func CString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// FieldNames turns a library's field table, keyed by its generated field
// enum, into Library.Fields: the names in enum order, n of them (the
// enum's F_FIELD_MAX); a field the table lacks is an empty name.
func FieldNames[E ~uint32](byEnum map[E]string, n E) []string {
	out := make([]string, n)
	for i, name := range byEnum {
		out[i] = name
	}
	return out
}
