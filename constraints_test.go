package latchkey

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestMatchPath(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"/v1/invoices", "/v1/invoices", true},
		{"/v1/invoices", "/v1/invoices/", false},
		{"/v1/invoices", "/v1/invoices/1", false},
		{"/v1/invoices", "/v1/invoice", false},
		{"/v1/*", "/v1/x", true},
		{"/v1/*", "/v1/", false},
		{"/v1/*", "/v1", false},
		{"/v1/*", "/v1/x/y", false},
		{"/v1/*/files", "/v1/42/files", true},
		{"/v1/*/files", "/v1/42/files/a", false},
		{"/v1/**", "/v1", true},
		{"/v1/**", "/v1/", true},
		{"/v1/**", "/v1/a/b/c", true},
		{"/v1/**", "/v2/a", false},
		{"/v1/**", "/v10", false},
		{"/**", "/", true},
		{"/**", "/anything/at/all", true},
		{"/", "/", true},
		{"/", "/a", false},
		{"/v1/*/**", "/v1", false},
		{"/v1/*/**", "/v1/a", true},
		{"/V1/x", "/v1/x", false},
		{"/v1/x", "", false},
		{"/v1/x", "v1/x", false},
	}
	for _, tt := range tests {
		if err := ValidatePathPattern(tt.pattern); err != nil {
			t.Fatalf("pattern %q: %v", tt.pattern, err)
		}
		if got := MatchPath(tt.pattern, tt.path); got != tt.want {
			t.Errorf("MatchPath(%q, %q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { MatchPath("/v1/*/files/**", "/v1/42/files/a/b") }); n != 0 {
		t.Errorf("MatchPath allocates %v times", n)
	}
}

func TestValidatePathPattern(t *testing.T) {
	for _, p := range []string{"", "v1", "/v1/**/x", "/v1/a*", "/v1/*a", "/v1//x", "/v1/../x", "/v1/./x", "/v1/x?y", "/v1/x#y", "/v1/a b", "/" + strings.Repeat("a", 300)} {
		if err := ValidatePathPattern(p); ErrorCode(err) != EInvalid {
			t.Errorf("ValidatePathPattern(%q) = %v, want %s", p, err, EInvalid)
		}
	}
}

func TestCanonicalPath(t *testing.T) {
	for p, want := range map[string]bool{"/": true, "/a/b": true, "/a/b/": true, "": false, "a": false, "//a": false,
		"/a//b": false, "/a/./b": false, "/a/../b": false, "/a/..": false, "/a/.": false, "/a/...": true} {
		if got := CanonicalPath(p); got != want {
			t.Errorf("CanonicalPath(%q) = %v, want %v", p, got, want)
		}
	}
}

// PathPatternCovers must be sound: whenever it says yes, every path the
// child matches, the parent matches.
func TestPathPatternCovers(t *testing.T) {
	tests := []struct {
		parent, child string
		want          bool
	}{
		{"/v1/**", "/v1/x", true},
		{"/v1/**", "/v1/**", true},
		{"/v1/**", "/v1/*/x/**", true},
		{"/v1/**", "/v1", true},
		{"/v1/**", "/v2/x", false},
		{"/v1/*", "/v1/x", true},
		{"/v1/*", "/v1/*", true},
		{"/v1/*", "/v1/**", false},
		{"/v1/*", "/v1/x/y", false},
		{"/v1/x", "/v1/*", false},
		{"/v1/x", "/v1/x", true},
		{"/v1/*/files/**", "/v1/42/files/a", true},
		{"/v1/42/files/**", "/v1/*/files/a", false},
		{"/v1/x/**", "/v1/*/**", false},
	}
	paths := []string{"/", "/v1", "/v1/", "/v1/x", "/v1/x/y", "/v1/42/files", "/v1/42/files/a", "/v1/43/files/a/b", "/v2/x", "/v1/x/files/a"}
	for _, tt := range tests {
		if got := PathPatternCovers(tt.parent, tt.child); got != tt.want {
			t.Errorf("PathPatternCovers(%q, %q) = %v, want %v", tt.parent, tt.child, got, tt.want)
		}
		if !tt.want {
			continue
		}
		for _, p := range paths {
			if MatchPath(tt.child, p) && !MatchPath(tt.parent, p) {
				t.Errorf("%q covers %q, yet %q matches the child only", tt.parent, tt.child, p)
			}
		}
	}
}

func TestParseCIDR(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3/8": "10.0.0.0/8", "192.0.2.1": "192.0.2.1/32", "2001:db8::1": "2001:db8::1/128",
		"2001:db8:ffff::/32": "2001:db8::/32", "::ffff:10.0.0.0/104": "10.0.0.0/8", "::ffff:192.0.2.1": "192.0.2.1/32",
	} {
		p, err := ParseCIDR(in)
		if err != nil || p.String() != want {
			t.Errorf("ParseCIDR(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.0/33", "example.com", "10.0.0", "fe80::1%eth0", "::ffff:0.0.0.0/64"} {
		if _, err := ParseCIDR(in); ErrorCode(err) != EInvalid {
			t.Errorf("ParseCIDR(%q): %v, want %s", in, err, EInvalid)
		}
	}
}

// Narrows judges each dimension on its own.
func TestNarrows(t *testing.T) {
	rl := func(n int64, w time.Duration) *RateLimit { return &RateLimit{Limit: n, Window: Duration(w)} }
	parent := Constraints{IdleTimeout: Duration(time.Hour), AllowedCIDRs: []string{"10.0.0.0/8", "2001:db8::/32"},
		AllowedMethods: []string{"GET", "POST"}, AllowedPaths: []string{"/v1/**"}, RateLimit: rl(100, time.Minute), MaxUses: 10}
	ok := parent.Clone()
	if err := parent.Narrows(ok, 10); err != nil {
		t.Fatalf("identical constraints: %v", err)
	}
	for _, c := range []struct {
		name string
		mut  func(*Constraints)
		rem  int64
		ok   bool
	}{
		{"shorter idle", func(c *Constraints) { c.IdleTimeout = Duration(time.Minute) }, 10, true},
		{"longer idle", func(c *Constraints) { c.IdleTimeout = Duration(2 * time.Hour) }, 10, false},
		{"no idle", func(c *Constraints) { c.IdleTimeout = 0 }, 10, false},
		{"subnet", func(c *Constraints) { c.AllowedCIDRs = []string{"10.1.0.0/16"} }, 10, true},
		{"v6 subnet", func(c *Constraints) { c.AllowedCIDRs = []string{"2001:db8:1::/48"} }, 10, true},
		{"supernet", func(c *Constraints) { c.AllowedCIDRs = []string{"0.0.0.0/0"} }, 10, false},
		{"other net", func(c *Constraints) { c.AllowedCIDRs = []string{"11.0.0.0/8"} }, 10, false},
		{"no nets", func(c *Constraints) { c.AllowedCIDRs = nil }, 10, false},
		{"one method", func(c *Constraints) { c.AllowedMethods = []string{"GET"} }, 10, true},
		{"other method", func(c *Constraints) { c.AllowedMethods = []string{"DELETE"} }, 10, false},
		{"no methods", func(c *Constraints) { c.AllowedMethods = nil }, 10, false},
		{"narrower path", func(c *Constraints) { c.AllowedPaths = []string{"/v1/x/*"} }, 10, true},
		{"wider path", func(c *Constraints) { c.AllowedPaths = []string{"/**"} }, 10, false},
		{"no paths", func(c *Constraints) { c.AllowedPaths = nil }, 10, false},
		{"slower rate", func(c *Constraints) { c.RateLimit = rl(10, time.Minute) }, 10, true},
		{"bigger burst same rate", func(c *Constraints) { c.RateLimit = rl(200, 2*time.Minute) }, 10, false},
		{"faster rate", func(c *Constraints) { c.RateLimit = rl(100, time.Second) }, 10, false},
		{"no rate", func(c *Constraints) { c.RateLimit = nil }, 10, false},
		{"fewer uses", func(c *Constraints) { c.MaxUses = 3 }, 3, true},
		{"more uses than left", func(c *Constraints) { c.MaxUses = 4 }, 3, false},
		{"unlimited uses", func(c *Constraints) { c.MaxUses = 0 }, 10, false},
	} {
		child := parent.Clone()
		c.mut(&child)
		if err := parent.Narrows(child, c.rem); (err == nil) != c.ok {
			t.Errorf("%s: Narrows = %v, want ok=%v", c.name, err, c.ok)
		}
	}
	// Unconstrained parents accept anything.
	if err := (Constraints{}).Narrows(parent, 0); err != nil {
		t.Errorf("an unconstrained parent refused: %v", err)
	}
	// Inherit fills what the child leaves out.
	got := parent.Inherit(Constraints{AllowedMethods: []string{"GET"}}, 7)
	if got.MaxUses != 7 || got.RateLimit.Limit != 100 || len(got.AllowedCIDRs) != 2 || len(got.AllowedMethods) != 1 || got.IdleTimeout != parent.IdleTimeout {
		t.Errorf("Inherit = %+v", got)
	}
}

func TestDurationText(t *testing.T) {
	for d, want := range map[time.Duration]string{
		30 * 24 * time.Hour: "30d", 36 * time.Hour: "1d12h", 90 * time.Minute: "1h30m", 2 * time.Hour: "2h",
		90 * time.Second: "1m30s", 1500 * time.Millisecond: "1.5s", 0: "0s",
	} {
		if got := Duration(d).String(); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
		var back Duration
		if err := back.UnmarshalText([]byte(Duration(d).String())); err != nil || time.Duration(back) != d {
			t.Errorf("round trip of %v: %v, %v", d, time.Duration(back), err)
		}
	}
}

func TestTrustedProxiesClientIP(t *testing.T) {
	tp, err := ParseTrustedProxies([]string{"127.0.0.1, 10.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	for _, c := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"203.0.113.1", []string{"1.2.3.4"}, "203.0.113.1"},            // untrusted peer: header ignored
		{"127.0.0.1", nil, "127.0.0.1"},                                // no header
		{"127.0.0.1", []string{"1.2.3.4"}, "1.2.3.4"},                  // one trusted hop
		{"127.0.0.1", []string{"9.9.9.9, 1.2.3.4"}, "1.2.3.4"},         // spoofed left entry ignored
		{"127.0.0.1", []string{"1.2.3.4, 10.0.0.5"}, "1.2.3.4"},        // two trusted hops
		{"127.0.0.1", []string{"1.2.3.4", "10.0.0.5"}, "1.2.3.4"},      // split over header lines
		{"127.0.0.1", []string{"10.0.0.7, 10.0.0.5"}, "10.0.0.7"},      // all trusted: the leftmost
		{"127.0.0.1", []string{"bogus"}, "127.0.0.1"},                  // garbage stops the walk
		{"::ffff:127.0.0.1", []string{" 2001:db8::1 "}, "2001:db8::1"}, // mapped peer, spaces
		{"::1", []string{"1.2.3.4, garbage, 10.0.0.1"}, "10.0.0.1"},    // garbage written by a trusted hop: that hop is the client
	} {
		got := tp.ClientIP(a(c.peer), c.xff)
		if got.String() != c.want {
			t.Errorf("ClientIP(%s, %q) = %s, want %s", c.peer, c.xff, got, c.want)
		}
	}
	if _, err := ParseTrustedProxies([]string{"nope"}); ErrorCode(err) != EInvalid {
		t.Errorf("bad proxy: %v", err)
	}
}
