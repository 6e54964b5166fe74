package symbolizer

import (
	"regexp"
	"strings"
)

// Lookup returns the function named name.
func (b *Binary) Lookup(name string) (*Func, error) {
	i, ok := b.byName[name]
	if !ok {
		return nil, newError(b.Path, ErrFuncNotFound, "no function %q; list candidates with `latscope symbols %s --match REGEX`", name, b.Path)
	}
	return &b.Funcs[i], nil
}

// Match returns the functions matching any of patterns, in address order
// and without duplicates. A pattern is a Go symbol glob: '*' matches any
// run of characters including '.' and '/', '?' matches one character, and
// every other character (including '(', ')', '[' and ']', which occur in
// method and generic names) matches itself.
//
// A pattern containing a wildcard skips compiler-generated functions (see
// isGenerated); naming such a function exactly still matches it. A pattern
// matching nothing is an error wrapping ErrFuncNotFound.
func (b *Binary) Match(patterns []string) ([]*Func, error) {
	seen := make(map[int]bool)
	for _, p := range patterns {
		hit := false
		if !strings.ContainsAny(p, "*?") {
			if i, ok := b.byName[p]; ok {
				seen[i], hit = true, true
			}
		} else {
			re := globRegexp(p)
			for i := range b.Funcs {
				name := b.Funcs[i].Name
				if !isGenerated(name) && re.MatchString(name) {
					seen[i], hit = true, true
				}
			}
		}
		if !hit {
			return nil, newError(b.Path, ErrFuncNotFound, "pattern %q matches no function; list candidates with `latscope symbols %s --match REGEX`", p, b.Path)
		}
	}
	out := make([]*Func, 0, len(seen))
	for i := range b.Funcs {
		if seen[i] {
			out = append(out, &b.Funcs[i])
		}
	}
	return out, nil
}

// globRegexp compiles a Go symbol glob into an anchored regexp.
func globRegexp(glob string) *regexp.Regexp {
	var sb strings.Builder
	sb.WriteString(`^`)
	for _, r := range glob {
		switch r {
		case '*':
			sb.WriteString(`.*`)
		case '?':
			sb.WriteString(`.`)
		default:
			sb.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	sb.WriteString(`$`)
	return regexp.MustCompile(sb.String())
}

// isGenerated reports compiler- and linker-generated functions that a glob
// should not sweep in: type equality/hash functions ("type:.eq.T", older
// "type..eq.T"), defer and go statement wrappers ("F.deferwrap1",
// "F.gowrap2"), method value wrappers ("T.M-fm"), ABI0 wrappers
// ("F.abi0") and linker symbols ("go:buildid"). Package initializers
// ("p.init", "p.init.0") and closures ("F.func1") are user code and kept.
func isGenerated(name string) bool {
	switch {
	case strings.HasPrefix(name, "type:"), strings.HasPrefix(name, "type.."), strings.HasPrefix(name, "go:"),
		strings.Contains(name, ".deferwrap"), strings.Contains(name, ".gowrap"),
		strings.HasSuffix(name, "-fm"), strings.HasSuffix(name, ".abi0"):
		return true
	}
	return false
}
