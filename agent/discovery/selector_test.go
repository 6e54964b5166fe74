package discovery

import (
	"os"
	"strings"
	"testing"
)

var catalog = &Proc{
	PID:    42,
	Name:   "catalog",
	Exe:    "/srv/shop/bin/catalog",
	Cgroup: "/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope",
}

func TestSelectorMatches(t *testing.T) {
	ports := func() []int { return []int{8080, 9090} }
	for _, tc := range []struct {
		name  string
		sel   Selector
		ports func() []int
		want  bool
	}{
		{"empty selector matches nothing", Selector{}, ports, false},
		{"exact exe", Selector{Exe: "/srv/shop/bin/catalog"}, ports, true},
		{"exe * stays in one directory", Selector{Exe: "/srv/*/catalog"}, ports, false},
		{"exe ** crosses directories", Selector{Exe: "/srv/**/catalog"}, ports, true},
		{"exe leading **", Selector{Exe: "**/catalog"}, ports, true},
		{"exe other", Selector{Exe: "**/checkout"}, ports, false},
		{"name glob", Selector{Name: "cat*"}, ports, true},
		{"name alternatives", Selector{Name: "{checkout,catalog}"}, ports, true},
		{"name other", Selector{Name: "checkout"}, ports, false},
		{"cgroup **", Selector{Cgroup: "/kubepods.slice/**"}, ports, true},
		{"cgroup other", Selector{Cgroup: "/system.slice/**"}, ports, false},
		{"port listened on", Selector{Port: 9090}, ports, true},
		{"port not listened on", Selector{Port: 80}, ports, false},
		{"port, ports unknown", Selector{Port: 8080}, nil, false},
		{"all fields match", Selector{Exe: "**/catalog", Name: "catalog", Cgroup: "/kubepods.slice/**", Port: 8080}, ports, true},
		{"one field of several fails", Selector{Exe: "**/catalog", Name: "checkout"}, ports, false},
		{"malformed glob never matches", Selector{Exe: "["}, ports, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.sel.Matches(catalog, tc.ports); got != tc.want {
				t.Errorf("%v.Matches = %v, want %v", tc.sel, got, tc.want)
			}
		})
	}
}

// Ports are read only when a Port selector gets that far.
func TestSelectorReadsPortsLazily(t *testing.T) {
	calls := 0
	ports := func() []int { calls++; return []int{8080} }
	for _, sel := range []Selector{{Exe: "**/catalog"}, {Name: "other", Port: 8080}} {
		sel.Matches(catalog, ports)
	}
	if calls != 0 {
		t.Errorf("ports read %d times, want 0", calls)
	}
	if !(Selector{Name: "catalog", Port: 8080}).Matches(catalog, ports) || calls != 1 {
		t.Errorf("ports read %d times, want 1", calls)
	}
}

func TestSelectorsMatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sels   Selectors
		want   bool
		reason string
	}{
		{"no include", Selectors{}, false, "matches no selector (none configured)"},
		{"included", Selectors{Include: []Selector{{Name: "checkout"}, {Exe: "**/catalog"}}}, true, `include[1] (exe="**/catalog")`},
		{"matches no include", Selectors{Include: []Selector{{Name: "checkout"}}}, false, "matches no selector"},
		{"excluded", Selectors{
			Include: []Selector{{Cgroup: "/kubepods.slice/**"}},
			Exclude: []Selector{{Name: "sh"}, {Name: "checkout"}, {Exe: "/srv/**", Name: "cat*"}},
		}, false, `excluded by exclude[2] (exe="/srv/**" name="cat*")`},
		{"exclude not matching", Selectors{
			Include: []Selector{{Name: "catalog"}},
			Exclude: []Selector{{Cgroup: "/system.slice/**"}},
		}, true, `include[0] (name="catalog")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := tc.sels.Match(catalog)
			if got != tc.want || reason != tc.reason {
				t.Errorf("Match = %v, %q; want %v, %q", got, reason, tc.want, tc.reason)
			}
		})
	}
}

// A Port selector reads the process's real listening ports; when they
// cannot be read (no such process), the reason says so.
func TestSelectorsMatchPorts(t *testing.T) {
	ln := listen(t)
	sels := Selectors{Include: []Selector{{Port: ln}}}
	self, err := Inspect(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if ok, reason := sels.Match(self); !ok {
		t.Errorf("a process listening on %d: not matched: %s", ln, reason)
	}
	gone := *self
	gone.PID = 1 << 30 // above pid_max: no such process
	if ok, reason := sels.Match(&gone); ok || !strings.Contains(reason, "listening ports unreadable") {
		t.Errorf("ports unreadable: Match = %v, %q", ok, reason)
	}
}

func TestSelectorsValidate(t *testing.T) {
	for _, tc := range []struct {
		sels Selectors
		want string // "" for valid
	}{
		{Selectors{Include: []Selector{{Exe: "**/catalog"}}, Exclude: []Selector{{Port: 22}}}, ""},
		{Selectors{Include: []Selector{{Exe: "**/catalog"}, {Exe: "["}}}, `include[1]: exe: bad glob "["`},
		{Selectors{Include: []Selector{{Name: "a"}}, Exclude: []Selector{{Name: "b"}, {}}}, "exclude[1]: empty selector"},
		{Selectors{Exclude: []Selector{{Port: 70000}}}, "exclude[0]: port: 70000"},
	} {
		err := tc.sels.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v, want valid", tc.sels, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want an error starting %q", tc.sels, err, tc.want)
		}
	}
}

func TestSelectorString(t *testing.T) {
	for sel, want := range map[Selector]string{
		{}:                             "(empty)",
		{Port: 80}:                     "port=80",
		{Exe: "/a/*", Cgroup: "/x"}:    `exe="/a/*" cgroup="/x"`,
		{Name: "n", Port: 1, Exe: "e"}: `exe="e" name="n" port=1`,
	} {
		if got := sel.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", sel, got, want)
		}
	}
}
