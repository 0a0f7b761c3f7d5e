package latchkey

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestScopeCovers(t *testing.T) {
	tests := []struct {
		granted, required string
		want              bool
	}{
		{"invoices:read", "invoices:read", true},
		{"invoices:read", "invoices:write", false},
		{"invoices:*", "invoices:write", true},
		{"invoices:*", "payments:write", false},
		{"billing.*:read", "billing.invoices:read", true},
		{"billing.*:read", "billing.invoices:write", false},
		{"billing.*:read", "billing:read", false},
		{"billing.*", "billing.invoices:read", true},
		{"billing.*", "billing.invoices.2024:read", true},
		{"billing.invoices:read", "billing.*:read", false},
		{"projects.42:*", "projects.42:read", true},
		{"projects.42:*", "projects.43:read", false},
		{"*", "anything:at.all", true},
		{"*:read", "invoices:read", true},
		{"*:read", "invoices:write", false},
		{"invoices:read", "invoices:read:extra", false},
		{"invoices.read", "invoices:read", false}, // separators must agree
		{"*", "latchkey:admin", false},            // application wildcards never reach latchkey's scopes
		{"*:*", "latchkey:verify", false},
		{"latchkey:admin", "latchkey:tokens:write", true},
		{"latchkey:admin", "invoices:read", false},
		{"latchkey:*", "latchkey:audit:read", true},
		{"latchkey:tokens:write", "latchkey:admin", false},
		{"latchkey:tokens:*", "latchkey:tokens:read", true},
		{"latchkey:tokens:*", "latchkey:audit:read", false},
		// Empty and malformed scopes never match anything.
		{"", "invoices:read", false},
		{"invoices:read", "", false},
		{"", "", false},
		{"inv*:read", "invoices:read", false},
		{"invoices:", "invoices:read", false},
		{"*", "", false},
		{"billing.*:read", "billing.:read", false},
		{"billing.*:read", "billing..x:read", false},
	}
	for _, tt := range tests {
		if got := ScopeCovers(tt.granted, tt.required); got != tt.want {
			t.Errorf("ScopeCovers(%q, %q) = %v, want %v", tt.granted, tt.required, got, tt.want)
		}
	}
	var ok bool
	if n := testing.AllocsPerRun(100, func() { ok = ScopeCovers("billing.*:read", "billing.invoices:read") }); n != 0 || !ok {
		t.Errorf("ScopeCovers allocates %v times (result %v)", n, ok)
	}
}

func TestScopesCover(t *testing.T) {
	if ScopesCover(nil, "a:b") || ScopesCover([]string{}, "a:b") {
		t.Error("no grants cover a scope")
	}
	if !ScopesCover([]string{"x:y", "a:*"}, "a:b") {
		t.Error("the second grant covers a:b")
	}
}

func TestValidateScope(t *testing.T) {
	for _, s := range []string{"invoices:read", "billing.*:write", "projects.42:*", "*", "latchkey:tokens:read", "a-b_c:d"} {
		if err := ValidateScope(s); err != nil {
			t.Errorf("ValidateScope(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", ":", "a:", ":a", "a::b", "a..b", "inv*:read", "*a", "a b", "a/b", "é:x", string(make([]byte, 129))} {
		if err := ValidateScope(s); ErrorCode(err) != EInvalid {
			t.Errorf("ValidateScope(%q) = %v, want %s", s, err, EInvalid)
		}
	}
}

func TestParseDuration(t *testing.T) {
	day := 24 * time.Hour
	for in, want := range map[string]time.Duration{"30d": 30 * day, "2w": 14 * day, "1h30m": 90 * time.Minute, "1d12h": 36 * time.Hour, "90s": 90 * time.Second} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "-5m", "5", "d", "99999999999999999999d"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", in)
		}
	}
}

func TestCodeNames(t *testing.T) {
	for c := Code(0); c < numCodes; c++ {
		back, ok := ParseCode(c.String())
		if !ok || back != c {
			t.Errorf("code %d: %q does not round-trip", c, c.String())
		}
	}
	var zero Code
	if zero == Valid {
		t.Error("the zero Code must not be Valid")
	}
}

func TestIntersectScopes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		a, b, want []string
	}{
		{[]string{"invoices:read"}, []string{"*"}, []string{"invoices:read"}},
		{[]string{"invoices:*"}, []string{"invoices:read", "customers:read"}, []string{"invoices:read"}},
		{[]string{"mcp.*.tools.echo:call"}, []string{"mcp.files.tools.*:call"}, []string{"mcp.files.tools.echo:call"}},
		{[]string{"mcp.files.tools.*:call"}, []string{"mcp.mail.tools.*:call"}, nil},
		{[]string{"latchkey:admin"}, []string{"*"}, nil},
		{[]string{"latchkey:tokens:read"}, []string{"latchkey:admin"}, []string{"latchkey:tokens:read"}},
		{[]string{"a:read", "a:*"}, []string{"a:read", "a:write"}, []string{"a:read", "a:write"}},
		{[]string{"a.b"}, []string{"a:b"}, nil},
	}
	for _, c := range cases {
		got := IntersectScopes(c.a, c.b)
		if !slices.Equal(got, c.want) {
			t.Errorf("IntersectScopes(%q, %q) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}

// FuzzIntersectScopes: whatever the inputs, every scope of the
// intersection is covered by both sides, and every scope both sides cover
// (of those in either list) is covered by the intersection.
func FuzzIntersectScopes(f *testing.F) {
	f.Add("mcp.*.tools.echo:call", "mcp.files.tools.*:call", "mcp.files.tools.echo:call")
	f.Add("*", "latchkey:admin", "latchkey:tokens:read")
	f.Add("a.*", "a.b:c", "a.b:*")
	f.Fuzz(func(t *testing.T, x, y, probe string) {
		a, b := strings.Fields(x), strings.Fields(y)
		got := IntersectScopes(a, b)
		for _, s := range got {
			if !ScopesCover(a, s) || !ScopesCover(b, s) {
				t.Fatalf("IntersectScopes(%q, %q) holds %q, not covered by both", a, b, s)
			}
		}
		for _, p := range append(append(strings.Fields(probe), a...), b...) {
			if ValidateScope(p) == nil && ScopesCover(a, p) && ScopesCover(b, p) && !ScopesCover(got, p) {
				t.Fatalf("IntersectScopes(%q, %q) = %q misses %q, covered by both", a, b, got, p)
			}
		}
	})
}
