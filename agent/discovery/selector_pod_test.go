package discovery

import (
	"strings"
	"testing"
)

// inPod returns a copy of catalog running in a pod with these labels and
// annotations.
func inPod(ns, container string, labels, annotations map[string]string) *Proc {
	p := *catalog
	p.Pod = &PodFacts{Namespace: ns, Name: "catalog-5d8f9c7b6-x7k2p", Container: container, Labels: labels, Annotations: annotations}
	return &p
}

var shopPod = inPod("shop", "app", map[string]string{"app": "catalog", "tier": "backend", "env": "prod"}, nil)

func TestSelectorMatchesPod(t *testing.T) {
	for _, tc := range []struct {
		name string
		sel  Selector
		p    *Proc
		want bool
	}{
		{"namespace", Selector{Namespace: "shop"}, shopPod, true},
		{"namespace glob", Selector{Namespace: "sh*"}, shopPod, true},
		{"namespace alternatives", Selector{Namespace: "{payments,shop}"}, shopPod, true},
		{"other namespace", Selector{Namespace: "kube-system"}, shopPod, false},
		{"label equality", Selector{PodSelector: "app=catalog"}, shopPod, true},
		{"labels ANDed", Selector{PodSelector: "app=catalog,tier=backend"}, shopPod, true},
		{"label inequality", Selector{PodSelector: "tier!=backend"}, shopPod, false},
		{"label set", Selector{PodSelector: "env in (prod,staging)"}, shopPod, true},
		{"label not in set", Selector{PodSelector: "env notin (prod)"}, shopPod, false},
		{"label exists", Selector{PodSelector: "tier"}, shopPod, true},
		{"label absent", Selector{PodSelector: "!canary"}, shopPod, true},
		{"label absent, but present", Selector{PodSelector: "!tier"}, shopPod, false},
		{"label missing", Selector{PodSelector: "team=a"}, shopPod, false},
		{"container", Selector{Container: "app"}, shopPod, true},
		{"container glob", Selector{Container: "a*"}, shopPod, true},
		{"other container", Selector{Container: "istio-proxy"}, shopPod, false},
		{"every field", Selector{Exe: "**/catalog", Namespace: "shop", PodSelector: "app=catalog", Container: "app"}, shopPod, true},
		{"process field fails", Selector{Exe: "**/cart", Namespace: "shop"}, shopPod, false},
		{"pod field fails", Selector{Exe: "**/catalog", Namespace: "cart"}, shopPod, false},
		// A Kubernetes field never matches outside a pod, even one that
		// would match an empty value.
		{"namespace, no pod", Selector{Namespace: "*"}, catalog, false},
		{"absent label, no pod", Selector{PodSelector: "!canary"}, catalog, false},
		{"container, no pod", Selector{Container: "**"}, catalog, false},
		{"process fields still match in a pod", Selector{Name: "catalog"}, shopPod, true},
		{"malformed label selector never matches", Selector{PodSelector: "=catalog"}, shopPod, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.sel.Matches(tc.p, nil); got != tc.want {
				t.Errorf("%v.Matches = %v, want %v", tc.sel, got, tc.want)
			}
		})
	}
}

// The pod annotation latscope.io/trace: "true" includes a process no
// selector picks, "false" excludes one they do; exclude selectors win
// over "true".
func TestSelectorsMatchAnnotation(t *testing.T) {
	optIn := inPod("shop", "app", nil, map[string]string{TraceAnnotation: "true"})
	optOut := inPod("shop", "app", map[string]string{"app": "catalog"}, map[string]string{TraceAnnotation: "false"})
	other := inPod("shop", "app", nil, map[string]string{TraceAnnotation: "yes"})
	for _, tc := range []struct {
		name   string
		sels   Selectors
		p      *Proc
		want   bool
		reason string
	}{
		{"opt-in, no selectors", Selectors{}, optIn, true, "pod annotation latscope.io/trace=true"},
		{"opt-in, selectors do not pick it", Selectors{Include: []Selector{{Namespace: "cart"}}}, optIn, true, "pod annotation latscope.io/trace=true"},
		{"opt-in, a selector picks it", Selectors{Include: []Selector{{Namespace: "shop"}}}, optIn, true, `include[0] (namespace="shop")`},
		{"opt-in, excluded", Selectors{Exclude: []Selector{{Namespace: "shop"}}}, optIn, false, `excluded by exclude[0] (namespace="shop")`},
		{"opt-out beats a selector", Selectors{Include: []Selector{{PodSelector: "app=catalog"}, {Exe: "**"}}}, optOut, false, "pod annotation latscope.io/trace=false"},
		{"other values are ignored", Selectors{}, other, false, "matches no selector (none configured)"},
		{"other values, a selector picks it", Selectors{Include: []Selector{{Container: "app"}}}, other, true, `include[0] (container="app")`},
		{"no pod, no annotation", Selectors{Include: []Selector{{Namespace: "shop"}}}, catalog, false, "matches no selector"},
		{"exclude by namespace", Selectors{Include: []Selector{{Exe: "**"}}, Exclude: []Selector{{Namespace: "kube-*"}}}, inPod("kube-system", "c", nil, nil), false, `excluded by exclude[0] (namespace="kube-*")`},
		{"exclude by namespace, host process", Selectors{Include: []Selector{{Exe: "**"}}, Exclude: []Selector{{Namespace: "kube-*"}}}, catalog, true, `include[0] (exe="**")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := tc.sels.Match(tc.p)
			if got != tc.want || reason != tc.reason {
				t.Errorf("Match = %v, %q; want %v, %q", got, reason, tc.want, tc.reason)
			}
		})
	}
}

func TestSelectorValidatePod(t *testing.T) {
	for _, tc := range []struct {
		sel  Selector
		want string // "" for valid
	}{
		{Selector{Namespace: "shop"}, ""},
		{Selector{PodSelector: "app=catalog,env in (prod, staging),!canary"}, ""},
		{Selector{Container: "app-*"}, ""},
		{Selector{Namespace: "[shop"}, `namespace: bad glob "[shop"`},
		{Selector{Container: "{a"}, `container: bad glob "{a"`},
		{Selector{PodSelector: "=catalog"}, `podSelector: "=catalog" is not a label selector`},
		{Selector{PodSelector: "env in prod"}, `podSelector: "env in prod" is not a label selector`},
		{Selector{PodSelector: "Bad Key=x"}, `podSelector: "Bad Key=x" is not a label selector`},
	} {
		err := tc.sel.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v, want valid", tc.sel, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want an error starting %q", tc.sel, err, tc.want)
		}
	}
	if err := (Selector{}).Validate(); err == nil || !strings.Contains(err.Error(), "namespace, podSelector, container") {
		t.Errorf("empty selector: %v, want the Kubernetes fields listed", err)
	}
}

func TestSelectorStringPod(t *testing.T) {
	for sel, want := range map[Selector]string{
		{Namespace: "shop"}: `namespace="shop"`,
		{Exe: "/a/*", PodSelector: "app=x", Container: "c"}: `exe="/a/*" podSelector="app=x" container="c"`,
		{Port: 80, Namespace: "n"}:                          `port=80 namespace="n"`,
	} {
		if got := sel.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", sel, got, want)
		}
	}
}

func BenchmarkSelectorsMatchPod(b *testing.B) {
	sels := Selectors{
		Include: []Selector{{Namespace: "cart"}, {Namespace: "shop", PodSelector: "app=catalog,env in (prod,staging)"}},
		Exclude: []Selector{{Namespace: "kube-*"}},
	}
	for b.Loop() {
		if ok, _ := sels.Match(shopPod); !ok {
			b.Fatal("not matched")
		}
	}
}
