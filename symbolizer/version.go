package symbolizer

import (
	"regexp"
	"strconv"
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
