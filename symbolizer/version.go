package symbolizer

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// minGoMinor is the oldest Go 1.x release latscope supports: 1.21 added
// runtime.g.parentGoid, which goroutine-tree rebuilding depends on.
const minGoMinor = 21

var goVersionRE = regexp.MustCompile(`go1\.(\d+)`)

// goMinor extracts the minor release from a Go version string such as
// "go1.22.12", "go1.27rc1" or "devel go1.27-abcdef".
func goMinor(v string) (int, bool) {
	m := goVersionRE.FindStringSubmatch(v)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}

// layoutExperiments are the GOEXPERIMENTs that change the layout of
// memory latscope's probes read (a library's struct fields or the
// runtime's maps): a build with one has fields.json rows of its own.
// noswissmap (Go 1.24, 1.25) keeps the maps of Go ≤ 1.23 (runtime.hmap
// and its buckets); mapsplitgroup (Go 1.27) puts a Swiss table group's 8
// keys before its 8 elements instead of interleaving them.
var layoutExperiments = []string{"noswissmap", "mapsplitgroup"}

// GoExperiments returns the GOEXPERIMENTs a Go version string names: the
// runtime's version records those that differ from the release's
// defaults, as "go1.24.9 X:noswissmap" (Go 1.21–1.25) or
// "go1.27.3-X:mapsplitgroup" (from Go 1.26: go.dev/issue/75953).
func GoExperiments(v string) []string {
	i := strings.Index(v, "X:")
	if i < 0 {
		return nil
	}
	list, _, _ := strings.Cut(v[i+2:], " ")
	return strings.Split(list, ",")
}

// StdTableKey returns the fields.json row of the standard library a
// binary built with Go version v reads: "go1.NN", then "+EXPERIMENT" for
// each of layoutExperiments it was built with ("go1.24+noswissmap").
func StdTableKey(v string) (string, bool) {
	minor, ok := goMinor(v)
	if !ok {
		return "", false
	}
	key := "go1." + strconv.Itoa(minor)
	exps := GoExperiments(v)
	for _, e := range layoutExperiments {
		// The experiment's inverse too: a release that turns one on by
		// default records its opt-out ("nomapsplitgroup"), a layout no
		// row describes, so such a build finds no row (DWARF, else the
		// library is off and says so) rather than the release's row.
		inverse, ok := strings.CutPrefix(e, "no")
		if !ok {
			inverse = "no" + e
		}
		for _, name := range []string{e, inverse} {
			if slices.Contains(exps, name) {
				key += "+" + name
			}
		}
	}
	return key, true
}
