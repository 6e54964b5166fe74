package symbolizer

import (
	"errors"
	"strings"
	"testing"

	"github.com/latscope/latscope/internal/fixture"
)

func TestGlob(t *testing.T) {
	tests := []struct {
		glob, name string
		want       bool
	}{
		{"main.*", "main.leaf", true},
		{"main.*", "main.catcher.func1", true},
		{"main.*", "runtime.main", false},
		{"*.leaf", "main.leaf", true},
		{"github.com/x/y.(*Cache).Get", "github.com/x/y.(*Cache).Get", true},
		{"github.com/x/y.(*Cache).Get", "github.com/x/y.xCachex.Get", false},
		{"github.com/*.Get", "github.com/x/y.(*Cache).Get", true},
		{"main.f[int]", "main.f[int]", true},
		{"main.f[int]", "main.fi", false},
		{"main.lea?", "main.leaf", true},
		{"main.lea?", "main.lea", false},
		{"a+b", "a+b", true},
		{"a+b", "aab", false},
	}
	for _, tt := range tests {
		if got := globRegexp(tt.glob).MatchString(tt.name); got != tt.want {
			t.Errorf("glob %q on %q = %v, want %v", tt.glob, tt.name, got, tt.want)
		}
	}
}

func TestMatch(t *testing.T) {
	b := openFixture(t, "local", fixture.Default)
	tests := []struct {
		patterns []string
		want     []string // must be present
		absent   []string // must not be present
	}{
		{[]string{"main.*"}, []string{"main.leaf", "main.middle", "main.catcher.func1"}, []string{"main.worker.deferwrap1", "runtime.main"}},
		{[]string{"main.leaf", "main.lea*"}, []string{"main.leaf"}, nil},
		{[]string{"main.worker.deferwrap1"}, []string{"main.worker.deferwrap1"}, nil},
		{[]string{"*.(*WaitGroup).Wait"}, []string{"sync.(*WaitGroup).Wait"}, nil},
	}
	for _, tt := range tests {
		got, err := b.Match(tt.patterns)
		if err != nil {
			t.Fatalf("Match(%q): %v", tt.patterns, err)
		}
		names := make(map[string]int)
		for _, f := range got {
			names[f.Name]++
		}
		for _, n := range tt.want {
			if names[n] != 1 {
				t.Errorf("Match(%q): %s present %d times, want once", tt.patterns, n, names[n])
			}
		}
		for _, n := range tt.absent {
			if names[n] != 0 {
				t.Errorf("Match(%q): %s present", tt.patterns, n)
			}
		}
	}
	_, err := b.Match([]string{"main.*", "nosuch.*"})
	if !errors.Is(err, ErrFuncNotFound) || !strings.Contains(err.Error(), "nosuch.*") || !strings.Contains(err.Error(), b.Path) {
		t.Errorf("Match(nosuch.*) = %v, want ErrFuncNotFound naming pattern and file", err)
	}
}
