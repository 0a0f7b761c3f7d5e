package latchkey

import (
	"strings"
	"testing"
)

// The scope matcher never lets a grant cover more than segment by segment
// allows: a covered scope is valid, has as many segments as its grant
// (unless the grant is "*"), and matches each literal segment.
func FuzzScopeCovers(f *testing.F) {
	for _, s := range [][2]string{{"invoices:read", "invoices:read"}, {"billing.*:read", "billing.eu:read"}, {"*", "a:b"},
		{"projects.42:*", "projects.42:write"}, {"a.*:read", "a:read"}, {"a:*", "a.b:read"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, granted, required string) {
		if ValidateScope(granted) != nil || ValidateScope(required) != nil || !ScopeCovers(granted, required) || granted == "*" {
			return
		}
		gr, ga, _ := strings.Cut(granted, ":")
		rr, ra, _ := strings.Cut(required, ":")
		if ga != "*" && ga != ra {
			t.Fatalf("%q covers %q with another action", granted, required)
		}
		gs, rs := strings.Split(gr, "."), strings.Split(rr, ".")
		if len(gs) != len(rs) {
			t.Fatalf("%q covers %q with another number of segments", granted, required)
		}
		for i := range gs {
			if gs[i] != "*" && gs[i] != rs[i] {
				t.Fatalf("%q covers %q: segment %d differs", granted, required, i)
			}
		}
	})
}

// On canonical paths (verification refuses the others before matching),
// the path matcher agrees with a plain segment-by-segment reading of the
// pattern.
func FuzzMatchPath(f *testing.F) {
	for _, s := range [][2]string{{"/v1/*/x", "/v1/a/x"}, {"/v1/**", "/v1/a/b"}, {"/a", "/a/../b"}, {"/a/**", "/a//b"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		if ValidatePathPattern(pattern) != nil || !CanonicalPath(path) || !MatchPath(pattern, path) {
			return
		}
		ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
		for i, p := range ps {
			if p == "**" && i == len(ps)-1 {
				return
			}
			if i >= len(xs) || (p != "*" && p != xs[i]) {
				t.Fatalf("MatchPath(%q, %q): segment %d does not match", pattern, path, i)
			}
		}
		if len(xs) != len(ps) {
			t.Fatalf("MatchPath(%q, %q): segment counts differ", pattern, path)
		}
	})
}
