package sampling

import (
	"strings"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Policy
		str  string // String(); "" = in
	}{
		{"all", Policy{All: true}, ""},
		{" all ", Policy{All: true}, "all"},
		{"none", Policy{}, ""},
		{"errors", Policy{Errors: true}, ""},
		{"duration>250ms", Policy{MinDuration: 250 * time.Millisecond}, ""},
		{"slow=1.5s", Policy{MinDuration: 1500 * time.Millisecond}, "duration>1.5s"},
		{"p99", Policy{Percentile: 99}, ""},
		{"p99.9", Policy{Percentile: 99.9}, ""},
		{"percentile=95", Policy{Percentile: 95}, "p95"},
		{"ratio=0.01", Policy{Ratio: 0.01}, ""},
		{"ratio=1", Policy{Ratio: 1}, ""},
		{"errors,duration>500ms,p99,ratio=0.05", Policy{Errors: true, MinDuration: 500 * time.Millisecond, Percentile: 99, Ratio: 0.05}, ""},
		{"ratio=0.05, p99 ,errors", Policy{Errors: true, Percentile: 99, Ratio: 0.05}, "errors,p99,ratio=0.05"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePolicy(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("ParsePolicy(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			want := tc.str
			if want == "" {
				want = tc.in
			}
			if got.String() != want {
				t.Errorf("String() = %q, want %q", got.String(), want)
			}
			back, err := ParsePolicy(got.String())
			if err != nil || back != got {
				t.Errorf("round trip of %q: %+v, %v", got.String(), back, err)
			}
		})
	}
}

func TestParsePolicyErrors(t *testing.T) {
	for _, tc := range []struct{ in, term, why string }{
		{"", `""`, "empty term"},
		{"errors,", `""`, "empty term"},
		{"fast", `"fast"`, "unknown rule"},
		{"errors,bogus=1", `"bogus=1"`, "unknown rule"},
		{"duration>", `"duration>"`, "not a positive duration"},
		{"duration>250", `"duration>250"`, "not a positive duration"},
		{"duration>-1s", `"duration>-1s"`, "not a positive duration"},
		{"slow=0s", `"slow=0s"`, "not a positive duration"},
		{"ratio>0.1", `"ratio>0.1"`, "only duration takes '>'"},
		{"ratio=0", `"ratio=0"`, "not a ratio in (0, 1]"},
		{"ratio=1.5", `"ratio=1.5"`, "not a ratio in (0, 1]"},
		{"ratio=abc", `"ratio=abc"`, "not a ratio"},
		{"p100", `"p100"`, "not a percentile in (0, 100)"},
		{"percentile=0", `"percentile=0"`, "not a percentile"},
		{"p9x", `"p9x"`, "not a percentile"},
		{"errors=true", `"errors=true"`, "errors takes no value"},
		{"errors,errors", `"errors"`, "errors given twice"},
		{"p99,percentile=95", `"percentile=95"`, "percentile given twice"},
		{"all,errors", "", "all and none stand alone"},
		{"none,p99", "", "all and none stand alone"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := ParsePolicy(tc.in)
			if err == nil {
				t.Fatalf("ParsePolicy(%q) succeeded", tc.in)
			}
			msg := err.Error()
			for _, want := range []string{tc.term, tc.why, "syntax: all | none"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
		})
	}
}

func TestPolicyText(t *testing.T) {
	var p Policy
	if err := p.UnmarshalText([]byte("errors,p99.5")); err != nil {
		t.Fatal(err)
	}
	b, _ := p.MarshalText()
	if string(b) != "errors,p99.5" {
		t.Errorf("MarshalText = %q", b)
	}
	if err := p.UnmarshalText([]byte("bogus")); err == nil {
		t.Error("UnmarshalText(bogus) succeeded")
	}
}
