package symbolizer

import (
	"fmt"
	"testing"
)

// A binary's standard-library offsets row: its Go release, then the
// GOEXPERIMENTs that change a layout latscope reads, as the runtime's
// version string records them (" X:" up to Go 1.25.4, "-X:" from 1.26.8);
// other experiments share the release's row.
func TestStdTableKey(t *testing.T) {
	for _, tc := range []struct{ version, key string }{
		{"go1.21.13", "go1.21"},
		{"go1.24.9 X:noswissmap", "go1.24+noswissmap"},
		{"go1.25.4 X:boringcrypto,noswissmap", "go1.25+noswissmap"},
		{"go1.25.4 X:boringcrypto", "go1.25"},
		{"go1.27.3-X:mapsplitgroup", "go1.27+mapsplitgroup"},
		{"go1.27.3-X:nogreenteagc,mapsplitgroup", "go1.27+mapsplitgroup"},
		{"devel go1.28-abcdef X:noswissmap", "go1.28+noswissmap"},
		// An experiment's inverse is a layout of its own, which no row
		// has (a release that turned mapsplitgroup on by default).
		{"go1.28.1-X:nomapsplitgroup", "go1.28+nomapsplitgroup"},
		{"go1.24.9 X:swissmap", "go1.24+swissmap"},
		{"gccgo", ""},
	} {
		key, ok := StdTableKey(tc.version)
		if key != tc.key || ok != (tc.key != "") {
			t.Errorf("StdTableKey(%q) = %q, %v; want %q", tc.version, key, ok, tc.key)
		}
	}
}

// Rows of one release sort together, its experiment builds after it.
func TestFormatFieldTableOrdersExperimentRows(t *testing.T) {
	got := string(FormatFieldTable(FieldTable{"std": {
		"go1.27+mapsplitgroup": {}, "go1.24+noswissmap": {}, "go1.9": {}, "go1.24": {}, "go1.27": {}, "go1.25": {},
	}}))
	want := fmt.Sprintf("{\n  %q: {\n%s  }\n}\n", "std",
		"    \"go1.9\": {},\n    \"go1.24\": {},\n    \"go1.24+noswissmap\": {},\n    \"go1.25\": {},\n    \"go1.27\": {},\n    \"go1.27+mapsplitgroup\": {}\n")
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
