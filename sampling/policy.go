// Package sampling owns the keep policy for traces exported over OTLP
// (latscope agent --keep): which traces leave the node. The trace store
// and the RED metrics see every span; only OTLP export is thinned.
//
// A Policy keeps a trace when any of its rules does:
//
//   - all: every trace.
//   - errors: some span of the trace has StatusError.
//   - duration>D: the trace's local root took longer than D.
//   - pQ: the local root was slower than the rolling Q-th percentile of
//     its operation (service.name + span name) over the last ~5 minutes.
//   - ratio=P: consistent probability sampling on the trace id.
//
// # What one node can know
//
// A node sees only its own part of a trace: the spans of the processes it
// traces. The error, duration and percentile rules therefore judge this
// node's part alone — a trace whose error happened on another node, or
// whose slowness is spent downstream, is not kept here by them, and two
// nodes may decide the same trace differently. The ratio rule is the one
// that agrees across nodes: it depends on the trace id alone, with the
// same threshold arithmetic as OpenTelemetry's consistent probability
// sampling, so every node (and every OpenTelemetry SDK or collector using
// that sampling at the same or a lower probability) keeps the same traces.
// To keep whole traces by errors or latency, export everything (all) to a
// collector's tail-sampling processor instead.
package sampling

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Policy says which traces are exported. The zero Policy keeps nothing
// (String "none"); ParsePolicy("all") keeps everything.
type Policy struct {
	// All keeps every trace; no other rule may be set with it.
	All bool
	// Errors keeps a trace with a span whose status is Error.
	Errors bool
	// MinDuration keeps a trace whose local root is slower than it; 0 = off.
	MinDuration time.Duration
	// Percentile, in (0, 100), keeps a trace whose local root is slower
	// than its operation's rolling percentile (99 = p99); 0 = off.
	Percentile float64
	// Ratio, in (0, 1], keeps that fraction of traces by trace id,
	// consistently across agents; 0 = off.
	Ratio float64
}

// PolicySyntax describes the policy syntax for error messages and flag help.
const PolicySyntax = "all | none | a comma list of errors, duration>250ms (or slow=250ms), p99 (or percentile=99), ratio=0.01; e.g. errors,duration>500ms,p99,ratio=0.05"

// ParsePolicy parses the --keep syntax (see PolicySyntax). Terms are
// case-sensitive, surrounding spaces are ignored. An error names the bad
// term and shows the syntax.
func ParsePolicy(s string) (Policy, error) {
	var p Policy
	seen := map[string]bool{}
	terms := strings.Split(s, ",")
	for _, raw := range terms {
		term := strings.TrimSpace(raw)
		bad := func(why string) error {
			return fmt.Errorf("keep policy %q: term %q: %s (syntax: %s)", s, term, why, PolicySyntax)
		}
		if term == "" {
			return Policy{}, bad("empty term")
		}
		name, value := term, ""
		if k, v, ok := strings.Cut(term, "="); ok {
			name, value = k, v
		} else if k, v, ok := strings.Cut(term, ">"); ok {
			name, value = k, v
			if name != "duration" {
				return Policy{}, bad("only duration takes '>'")
			}
		} else if len(term) > 1 && term[0] == 'p' && (term[1] >= '0' && term[1] <= '9') {
			name, value = "percentile", term[1:]
		}
		switch name {
		case "slow":
			name = "duration"
		case "all", "none", "errors":
			if value != "" {
				return Policy{}, bad(name + " takes no value")
			}
		}
		if seen[name] {
			return Policy{}, bad(name + " given twice")
		}
		seen[name] = true
		switch name {
		case "all":
			p.All = true
		case "none":
		case "errors":
			p.Errors = true
		case "duration":
			d, err := time.ParseDuration(value)
			if err != nil || d <= 0 {
				return Policy{}, bad(fmt.Sprintf("%q is not a positive duration (e.g. 250ms)", value))
			}
			p.MinDuration = d
		case "percentile":
			q, err := strconv.ParseFloat(value, 64)
			if err != nil || !(q > 0 && q < 100) {
				return Policy{}, bad(fmt.Sprintf("%q is not a percentile in (0, 100) (e.g. p99, p99.9)", value))
			}
			p.Percentile = q
		case "ratio":
			r, err := strconv.ParseFloat(value, 64)
			if err != nil || !(r > 0 && r <= 1) {
				return Policy{}, bad(fmt.Sprintf("%q is not a ratio in (0, 1] (e.g. 0.01)", value))
			}
			p.Ratio = r
		default:
			return Policy{}, bad("unknown rule")
		}
	}
	if (p.All || seen["none"]) && len(terms) > 1 {
		return Policy{}, fmt.Errorf("keep policy %q: all and none stand alone (syntax: %s)", s, PolicySyntax)
	}
	return p, nil
}

// String formats p in the ParsePolicy syntax, rules in a fixed order:
// ParsePolicy(p.String()) == p.
func (p Policy) String() string {
	if p.All {
		return "all"
	}
	var terms []string
	if p.Errors {
		terms = append(terms, "errors")
	}
	if p.MinDuration > 0 {
		terms = append(terms, "duration>"+p.MinDuration.String())
	}
	if p.Percentile > 0 {
		terms = append(terms, "p"+strconv.FormatFloat(p.Percentile, 'f', -1, 64))
	}
	if p.Ratio > 0 {
		terms = append(terms, "ratio="+strconv.FormatFloat(p.Ratio, 'f', -1, 64))
	}
	if len(terms) == 0 {
		return "none"
	}
	return strings.Join(terms, ",")
}

// MarshalText implements encoding.TextMarshaler (String).
func (p Policy) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (ParsePolicy).
func (p *Policy) UnmarshalText(b []byte) error {
	q, err := ParsePolicy(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}
