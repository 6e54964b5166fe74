package symbolizer

import (
	"bytes"
	"debug/buildinfo"
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"syscall"
)

// Binary is an opened Go executable.
type Binary struct {
	Path      string
	GoVersion string               // e.g. "go1.22.12", from debug/buildinfo
	Build     *buildinfo.BuildInfo // main module path and dependency versions
	Arch      string               // "amd64" or "arm64"
	PIE       bool
	Stripped  bool // no .symtab
	HasDWARF  bool
	Funcs     []Func // sorted by Entry

	file     *os.File
	size     int64 // of the file
	elf      *elf.File
	loads    []*elf.Prog // PT_LOAD segments
	textAddr uint64      // .text section address
	// textSize is .text's size. Its bytes are read from the file when
	// needed (code, references), not kept: a service's .text is often
	// tens of MiB, held for as long as the agent traces it.
	textSize uint64
	// runtimeText is runtime.text, the address pclntab entries and method
	// tables count from: .text's start when the Go linker links, further
	// in when an external linker puts C start-up code first.
	runtimeText uint64
	pcln        *pclntab // raw pclntab view (inline trees, start lines)
	pclnAddr    uint64   // where the pclntab is
	pclnEnd     uint64
	md          *moduledata // runtime.firstmoduledata, when found

	relocsOnce sync.Once
	relocs     []reloc // R_X86_64_RELATIVE, sorted by target
	byName     map[string]int

	dwarfOnce sync.Once
	dwarf     *dwarf.Data
	dwarfErr  error

	inlineOnce sync.Once
	inline     inlineIndex

	gofuncOnce sync.Once // go:func.*, for PCFrames' inline trees
	gofuncAddr uint64
	gofuncErr  error

	structsOnce sync.Once
	structs     map[string]*dwarf.StructType
	structsErr  error

	resumeMu sync.Mutex
	resume   map[resumeKey]resumeResult
	refsOnce sync.Once
	refs     *refs
}

// Func is one function of the binary.
type Func struct {
	Name  string
	Entry uint64 // virtual address of the first instruction
	End   uint64 // virtual address just past the function
	File  string // declaration file, when known
	Line  int    // declaration line, when known
}

// Open reads the Go ELF executable at path. The returned Binary keeps the
// file open until Close.
func Open(path string) (*Binary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, openError(path, err)
	}
	b, err := newBinary(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return b, nil
}

// OpenPID opens the executable of process pid through /proc/PID/exe, which
// works even if the file was deleted or replaced since the process started.
func OpenPID(pid int) (*Binary, error) {
	exe := "/proc/" + strconv.Itoa(pid) + "/exe"
	label := fmt.Sprintf("%s (pid %d)", exe, pid)
	f, err := os.Open(exe)
	if err != nil {
		return nil, openError(label, err)
	}
	if target, err := os.Readlink(exe); err == nil {
		label = fmt.Sprintf("%s (pid %d)", target, pid)
	}
	b, err := newBinary(label, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return b, nil
}

// openError classifies a failure to open a file or /proc entry.
func openError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ESRCH):
		return newError(path, ErrProcessGone, "%v; check the path or that the process is still running", err)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EPERM):
		return newError(path, ErrPermission, "%v; run as root or with CAP_SYS_PTRACE to read another user's process", err)
	}
	return fmt.Errorf("open %s: %w", path, err)
}

// Close releases the underlying file.
func (b *Binary) Close() error {
	if b.file == nil {
		return nil
	}
	err := b.file.Close()
	b.file = nil
	return err
}

var elfMagic = []byte(elf.ELFMAG)

func newBinary(path string, f *os.File) (*Binary, error) {
	var magic [4]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil || !bytes.Equal(magic[:], elfMagic) {
		return nil, newError(path, ErrNotELF, "latscope reads Linux ELF executables only")
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, newError(path, ErrNotELF, "ELF headers are truncated or corrupt (%v); is the file complete?", err)
	}
	b := &Binary{Path: path, file: f, elf: ef, PIE: ef.Type == elf.ET_DYN}
	if st, err := f.Stat(); err == nil {
		b.size = st.Size()
	}
	if err := b.checkArch(); err != nil {
		return nil, err
	}
	if err := b.readBuildInfo(); err != nil {
		return nil, err
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD {
			b.loads = append(b.loads, p)
		}
	}
	b.Stripped = ef.Section(".symtab") == nil
	b.HasDWARF = ef.Section(".debug_info") != nil || ef.Section(".zdebug_info") != nil
	if err := b.readFuncs(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Binary) checkArch() error {
	if b.elf.Class != elf.ELFCLASS64 || b.elf.Data != elf.ELFDATA2LSB {
		return newError(b.Path, ErrUnsupportedArch, "%v %v; latscope supports 64-bit little-endian amd64 and arm64", b.elf.Class, b.elf.Data)
	}
	switch b.elf.Machine {
	case elf.EM_X86_64:
		b.Arch = "amd64"
	case elf.EM_AARCH64:
		b.Arch = "arm64"
	default:
		return newError(b.Path, ErrUnsupportedArch, "machine %v; latscope supports amd64 (and arm64 for symbols only)", b.elf.Machine)
	}
	return nil
}

func (b *Binary) readBuildInfo() error {
	bi, err := buildinfo.Read(b.file)
	if err != nil {
		if b.pclntabSection() == nil {
			return newError(b.Path, ErrNotGo, "only Go executables can be traced")
		}
		return newError(b.Path, ErrNotGo, "has .gopclntab but no readable Go build info (%v); rebuild with Go 1.21 or newer", err)
	}
	b.Build = bi
	b.GoVersion = bi.GoVersion
	minor, ok := goMinor(bi.GoVersion)
	if !ok {
		return newError(b.Path, ErrUnsupportedGoVersion, "cannot parse Go version %q", bi.GoVersion)
	}
	if minor < minGoMinor {
		return newError(b.Path, ErrUnsupportedGoVersion, "built with %s; latscope needs Go 1.%d or newer, rebuild the program with a newer Go", bi.GoVersion, minGoMinor)
	}
	return nil
}

// pclntabSection finds the Go PC/line table's own section, when it has
// one (see locateTables).
func (b *Binary) pclntabSection() *elf.Section {
	for _, name := range []string{".gopclntab", ".data.rel.ro.gopclntab"} {
		if s := b.elf.Section(name); s != nil && s.Type != elf.SHT_NOBITS {
			return s
		}
	}
	return nil
}

// sectionData reads a section, turning short reads into ErrCorruptPclntab.
func (b *Binary) sectionData(s *elf.Section) ([]byte, error) {
	if s.Type == elf.SHT_NOBITS {
		return nil, newError(b.Path, ErrCorruptPclntab, "section %s has no file data", s.Name)
	}
	if s.Flags&elf.SHF_COMPRESSED == 0 {
		if st, err := b.file.Stat(); err == nil && (s.Offset > uint64(st.Size()) || s.Size > uint64(st.Size())-s.Offset) {
			return nil, newError(b.Path, ErrCorruptPclntab, "section %s extends past the end of the file; the file is truncated", s.Name)
		}
	}
	data, err := s.Data()
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, newError(b.Path, ErrCorruptPclntab, "section %s is truncated", s.Name)
		}
		return nil, newError(b.Path, ErrCorruptPclntab, "read section %s: %v", s.Name, err)
	}
	return data, nil
}

// FileOffset converts a virtual address to the file offset a uprobe is
// attached at, through the PT_LOAD segment containing it.
func (b *Binary) FileOffset(vaddr uint64) (uint64, error) {
	for _, p := range b.loads {
		if vaddr >= p.Vaddr && vaddr-p.Vaddr < p.Filesz {
			return p.Off + (vaddr - p.Vaddr), nil
		}
	}
	return 0, newError(b.Path, ErrNotMapped, "address %#x is in no PT_LOAD segment's file image", vaddr)
}

// Vaddr is FileOffset's inverse: the link-time address of file offset off.
func (b *Binary) Vaddr(off uint64) (uint64, error) {
	for _, p := range b.loads {
		if off >= p.Off && off-p.Off < p.Filesz {
			return p.Vaddr + (off - p.Off), nil
		}
	}
	return 0, newError(b.Path, ErrNotMapped, "file offset %#x is in no PT_LOAD segment's file image", off)
}

// readAt reads n bytes at virtual address vaddr from the file image of
// one PT_LOAD segment.
func (b *Binary) readAt(vaddr uint64, n int) ([]byte, error) {
	if b.file == nil {
		return nil, newError(b.Path, ErrClosed, "read %d bytes at %#x of a closed binary", n, vaddr)
	}
	var off uint64
	found := false
	for _, p := range b.loads {
		if vaddr >= p.Vaddr && vaddr-p.Vaddr < p.Filesz {
			if n < 0 || uint64(n) > p.Filesz-(vaddr-p.Vaddr) {
				return nil, newError(b.Path, ErrNotMapped, "%d bytes at %#x run past the end of its PT_LOAD segment's file image", n, vaddr)
			}
			off, found = p.Off+(vaddr-p.Vaddr), true
			break
		}
	}
	if !found {
		return nil, newError(b.Path, ErrNotMapped, "address %#x is in no PT_LOAD segment's file image", vaddr)
	}
	if size := uint64(b.size); off > size || uint64(n) > size-off {
		return nil, newError(b.Path, ErrCorruptPclntab, "%d bytes at %#x lie past the end of the file; the file is truncated", n, vaddr)
	}
	buf := make([]byte, n)
	if _, err := b.file.ReadAt(buf, int64(off)); err != nil {
		return nil, newError(b.Path, ErrCorruptPclntab, "read %d bytes at %#x: %v", n, vaddr, err)
	}
	return buf, nil
}
