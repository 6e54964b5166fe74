package config

import (
	"strings"
	"testing"
)

func TestParseByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ByteSize
		str  string
	}{
		{"0", 0, "0"},
		{"4096", 4096, "4KiB"},
		{"12345", 12345, "12345"},
		{"128MiB", 128 << 20, "128MiB"},
		{"128mib", 128 << 20, "128MiB"},
		{"128Mi", 128 << 20, "128MiB"},
		{"512MB", 512e6, "512MB"},
		{"512M", 512e6, "512MB"},
		{"1GiB", 1 << 30, "1GiB"},
		{"1024MiB", 1 << 30, "1GiB"},
		{"1.5GiB", 3 << 29, "1536MiB"},
		{" 8 KiB ", 8 << 10, "8KiB"},
		{"2TB", 2e12, "2TB"},
		{"100B", 100, "100"},
		{"0.5KB", 500, "500"},
		{"1000KiB", 1024000, "1000KiB"},
	} {
		got, err := ParseByteSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			continue
		}
		if got.String() != tc.str {
			t.Errorf("%d.String() = %q, want %q", got, got.String(), tc.str)
		}
		if back, err := ParseByteSize(got.String()); err != nil || back != got {
			t.Errorf("round trip of %q: %d, %v", got.String(), back, err)
		}
	}
	for _, in := range []string{"", "MiB", "12XB", "-1", "1e3", "1.5", "0.3B", "1..2MB", "99999999999TiB", "10 M B"} {
		_, err := ParseByteSize(in)
		if err == nil {
			t.Errorf("ParseByteSize(%q) succeeded", in)
			continue
		}
		if !strings.Contains(err.Error(), "(e.g. 128MiB)") && !strings.Contains(err.Error(), "whole number of bytes") {
			t.Errorf("ParseByteSize(%q) error %q does not show the syntax", in, err)
		}
	}
}
