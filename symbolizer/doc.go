// Package symbolizer turns a Go executable into what latscope needs to
// probe it: its function table (from .symtab, or from .gopclntab when the
// binary is stripped), the file offsets uprobes are placed at, the cheapest
// entry and return sites of each function (amd64 disassembly), where a
// function was inlined, and the runtime.g field offsets the BPF programs
// read (from DWARF, or from an embedded per-Go-version table).
//
// Everything here reads files only; nothing is attached or executed. Bad
// or hostile input yields a typed error (see Error), never a panic.
package symbolizer
