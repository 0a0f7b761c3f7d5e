package latchkey

import (
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Limits on constraint lists, enforced when a token is created.
const (
	MaxCIDRs        = 64
	MaxMethods      = 16
	MaxPaths        = 32
	MaxPathLen      = 256
	MaxRateLimit    = 1_000_000_000
	MinRateWindow   = time.Millisecond
	MaxRateWindow   = 366 * 24 * time.Hour
	MinIdleTimeout  = time.Minute
	MaxMethodLength = 16
	MaxAudience     = 8
	MaxAudienceLen  = 512
)

// Constraints bind a token to where, how and how often it may be used.
// The zero value constrains nothing. They are fixed when the token is
// created; a derived token's constraints are at least as strict as its
// parent's (Constraints.Narrows).
type Constraints struct {
	// IdleTimeout expires a token unused for that long (EXPIRED, reason
	// "idle"). Zero: never idle-expires.
	IdleTimeout Duration `json:"idle_timeout,omitzero"`
	// AllowedCIDRs lists the networks the client may connect from
	// (IP_NOT_ALLOWED otherwise). Canonical prefix form, e.g. "10.0.0.0/8".
	AllowedCIDRs []string `json:"allowed_cidrs,omitempty"`
	// AllowedMethods lists HTTP methods, upper case (FORBIDDEN otherwise).
	AllowedMethods []string `json:"allowed_methods,omitempty"`
	// AllowedPaths lists path patterns (see MatchPath) (FORBIDDEN otherwise).
	AllowedPaths []string `json:"allowed_paths,omitempty"`
	// RateLimit caps verifications per window (RATE_LIMITED otherwise).
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// MaxUses caps the number of VALID verifications (USAGE_EXCEEDED
	// afterwards). Zero: unlimited.
	MaxUses int64 `json:"max_uses,omitempty"`
	// Audience lists the resources (RFC 8707 resource indicators:
	// absolute URLs) the token is meant for. When set, the token works
	// only at a door that names one of them as the resource it serves
	// (VerifyRequest.Resource), and nowhere else: not at a door that
	// names none, nor at latchkey's own API (FORBIDDEN otherwise). Tokens
	// the OAuth authorization server issues carry one.
	Audience []string `json:"audience,omitempty"`
}

// RateLimit allows Limit verifications per Window, as a burst or spread
// out (GCRA: one verification is allowed every Window/Limit, with a burst
// of up to Limit).
type RateLimit struct {
	Limit  int64    `json:"limit"`
	Window Duration `json:"window"`
}

// Interval is the time one verification "costs": Window/Limit.
func (r RateLimit) Interval() time.Duration { return time.Duration(r.Window) / time.Duration(r.Limit) }

// Clone returns a deep copy.
func (c Constraints) Clone() Constraints {
	c.AllowedCIDRs = slices.Clone(c.AllowedCIDRs)
	c.AllowedMethods = slices.Clone(c.AllowedMethods)
	c.AllowedPaths = slices.Clone(c.AllowedPaths)
	c.Audience = slices.Clone(c.Audience)
	if c.RateLimit != nil {
		r := *c.RateLimit
		c.RateLimit = &r
	}
	return c
}

// Normalize validates c and returns it in canonical form: CIDRs masked
// (a bare address becomes a /32 or /128), methods upper case, lists
// de-duplicated. Every problem is an EInvalid error that names the field.
func (c Constraints) Normalize() (Constraints, error) {
	out := Constraints{IdleTimeout: c.IdleTimeout, MaxUses: c.MaxUses}
	if d := time.Duration(c.IdleTimeout); d < 0 || d != 0 && d < MinIdleTimeout {
		return out, Errorf(EInvalid, "idle_timeout must be at least %s", Duration(MinIdleTimeout))
	}
	if c.MaxUses < 0 {
		return out, Errorf(EInvalid, "max_uses must not be negative")
	}
	if len(c.AllowedCIDRs) > MaxCIDRs {
		return out, Errorf(EInvalid, "allowed_cidrs may list at most %d networks", MaxCIDRs)
	}
	for _, s := range c.AllowedCIDRs {
		p, err := ParseCIDR(s)
		if err != nil {
			return out, err
		}
		if v := p.String(); !slices.Contains(out.AllowedCIDRs, v) {
			out.AllowedCIDRs = append(out.AllowedCIDRs, v)
		}
	}
	if len(c.AllowedMethods) > MaxMethods {
		return out, Errorf(EInvalid, "allowed_methods may list at most %d methods", MaxMethods)
	}
	for _, m := range c.AllowedMethods {
		if !validMethod(m) {
			return out, Errorf(EInvalid, "allowed_methods: %.20q is not an HTTP method (e.g. GET, POST)", m)
		}
		if m = strings.ToUpper(m); !slices.Contains(out.AllowedMethods, m) {
			out.AllowedMethods = append(out.AllowedMethods, m)
		}
	}
	if len(c.AllowedPaths) > MaxPaths {
		return out, Errorf(EInvalid, "allowed_paths may list at most %d patterns", MaxPaths)
	}
	for _, p := range c.AllowedPaths {
		if err := ValidatePathPattern(p); err != nil {
			return out, err
		}
		if !slices.Contains(out.AllowedPaths, p) {
			out.AllowedPaths = append(out.AllowedPaths, p)
		}
	}
	if len(c.Audience) > MaxAudience {
		return out, Errorf(EInvalid, "audience may list at most %d resources", MaxAudience)
	}
	for _, a := range c.Audience {
		if err := ValidateResource(a); err != nil {
			return out, err
		}
		if !slices.Contains(out.Audience, a) {
			out.Audience = append(out.Audience, a)
		}
	}
	if r := c.RateLimit; r != nil {
		w := time.Duration(r.Window)
		switch {
		case r.Limit < 1 || r.Limit > MaxRateLimit:
			return out, Errorf(EInvalid, "rate_limit.limit must be between 1 and %d", MaxRateLimit)
		case w < MinRateWindow || w > MaxRateWindow:
			return out, Errorf(EInvalid, "rate_limit.window must be between %s and %s", Duration(MinRateWindow), Duration(MaxRateWindow))
		case r.Interval() <= 0:
			return out, Errorf(EInvalid, "rate_limit allows more than one verification per nanosecond")
		}
		rl := *r
		out.RateLimit = &rl
	}
	return out, nil
}

// IsZero reports whether c constrains nothing.
func (c Constraints) IsZero() bool {
	return c.IdleTimeout == 0 && len(c.AllowedCIDRs) == 0 && len(c.AllowedMethods) == 0 &&
		len(c.AllowedPaths) == 0 && c.RateLimit == nil && c.MaxUses == 0 && len(c.Audience) == 0
}

// Narrows reports, as an EInvalid error naming the dimension, whether
// child fails to be at least as strict as c, its parent's constraints.
// Both must be normalised. An unset child dimension is not accepted here:
// a derived token inherits the parent's value first (Inherit).
// parentRemaining is the parent's unspent budget (meaningful when
// c.MaxUses > 0).
func (c Constraints) Narrows(child Constraints, parentRemaining int64) error {
	if c.IdleTimeout != 0 && (child.IdleTimeout == 0 || child.IdleTimeout > c.IdleTimeout) {
		return Errorf(EInvalid, "idle_timeout %s is longer than the parent's %s", child.IdleTimeout, c.IdleTimeout)
	}
	if len(c.AllowedCIDRs) > 0 {
		if len(child.AllowedCIDRs) == 0 {
			return Errorf(EInvalid, "allowed_cidrs: the parent is limited to %s; the child must be too", strings.Join(c.AllowedCIDRs, ", "))
		}
		for _, s := range child.AllowedCIDRs {
			if !prefixesCover(c.AllowedCIDRs, s) {
				return Errorf(EInvalid, "allowed_cidrs: %s is not inside the parent's networks (%s)", s, strings.Join(c.AllowedCIDRs, ", "))
			}
		}
	}
	if len(c.AllowedMethods) > 0 {
		if len(child.AllowedMethods) == 0 {
			return Errorf(EInvalid, "allowed_methods: the parent is limited to %s; the child must be too", strings.Join(c.AllowedMethods, ", "))
		}
		for _, m := range child.AllowedMethods {
			if !slices.Contains(c.AllowedMethods, m) {
				return Errorf(EInvalid, "allowed_methods: %s is not among the parent's (%s)", m, strings.Join(c.AllowedMethods, ", "))
			}
		}
	}
	if len(c.AllowedPaths) > 0 {
		if len(child.AllowedPaths) == 0 {
			return Errorf(EInvalid, "allowed_paths: the parent is limited to %s; the child must be too", strings.Join(c.AllowedPaths, ", "))
		}
		for _, p := range child.AllowedPaths {
			if !slices.ContainsFunc(c.AllowedPaths, func(q string) bool { return PathPatternCovers(q, p) }) {
				return Errorf(EInvalid, "allowed_paths: %s reaches beyond the parent's patterns (%s)", p, strings.Join(c.AllowedPaths, ", "))
			}
		}
	}
	if len(c.Audience) > 0 {
		if len(child.Audience) == 0 {
			return Errorf(EInvalid, "audience: the parent is meant only for %s; the child must be too", strings.Join(c.Audience, ", "))
		}
		for _, a := range child.Audience {
			if !slices.Contains(c.Audience, a) {
				return Errorf(EInvalid, "audience: %s is not among the parent's resources (%s)", a, strings.Join(c.Audience, ", "))
			}
		}
	}
	if r := c.RateLimit; r != nil {
		cr := child.RateLimit
		if cr == nil {
			return Errorf(EInvalid, "rate_limit: the parent is limited to %d per %s; the child must be too", r.Limit, r.Window)
		}
		// Rate (limit/window) and burst (limit) both no larger.
		if cr.Limit > r.Limit || cr.Interval() < r.Interval() {
			return Errorf(EInvalid, "rate_limit %d per %s is more than the parent's %d per %s", cr.Limit, cr.Window, r.Limit, r.Window)
		}
	}
	if c.MaxUses > 0 && (child.MaxUses == 0 || child.MaxUses > parentRemaining) {
		return Errorf(EInvalid, "max_uses: the parent has %d uses left; the child may have at most that many", max(0, parentRemaining))
	}
	return nil
}

// Inherit fills each dimension child leaves unset with c's value (the
// parent's), so that an unspecified constraint means "as the parent".
// parentRemaining is the parent's unspent budget.
func (c Constraints) Inherit(child Constraints, parentRemaining int64) Constraints {
	child = child.Clone()
	if child.IdleTimeout == 0 {
		child.IdleTimeout = c.IdleTimeout
	}
	if len(child.AllowedCIDRs) == 0 {
		child.AllowedCIDRs = slices.Clone(c.AllowedCIDRs)
	}
	if len(child.AllowedMethods) == 0 {
		child.AllowedMethods = slices.Clone(c.AllowedMethods)
	}
	if len(child.AllowedPaths) == 0 {
		child.AllowedPaths = slices.Clone(c.AllowedPaths)
	}
	if len(child.Audience) == 0 {
		child.Audience = slices.Clone(c.Audience)
	}
	if child.RateLimit == nil && c.RateLimit != nil {
		r := *c.RateLimit
		child.RateLimit = &r
	}
	if child.MaxUses == 0 && c.MaxUses > 0 {
		child.MaxUses = max(0, parentRemaining)
	}
	return child
}

func prefixesCover(parents []string, child string) bool {
	cp, err := netip.ParsePrefix(child)
	if err != nil {
		return false
	}
	for _, s := range parents {
		pp, err := netip.ParsePrefix(s)
		if err == nil && pp.Bits() <= cp.Bits() && pp.Contains(cp.Addr()) {
			return true
		}
	}
	return false
}

// ParseCIDR parses a network ("10.0.0.0/8", "2001:db8::/32") or a single
// address ("192.0.2.7", taken as /32 or /128), and returns it masked.
// IPv4-mapped IPv6 forms are unmapped, so one network has one spelling.
func ParseCIDR(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, Errorf(EInvalid, "allowed_cidrs: %.50q is not an IP address or network", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, Errorf(EInvalid, "allowed_cidrs: %.50q is not a network (use e.g. 10.0.0.0/8 or 2001:db8::/32)", s)
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, Errorf(EInvalid, "allowed_cidrs: %.50q mixes IPv4-mapped and IPv6 space", s)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// ValidateResource checks a resource indicator (RFC 8707 §2): an
// absolute http or https URL with a host, no fragment and no user
// information, at most MaxAudienceLen bytes, in the form it is compared
// in (byte for byte: no normalisation is applied, so what a door names
// and what a token holds must be spelt alike).
func ValidateResource(s string) error {
	if len(s) > MaxAudienceLen {
		return Errorf(EInvalid, "resource %.40q… is longer than %d bytes", s, MaxAudienceLen)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "":
		return Errorf(EInvalid, "resource %.80q must be an absolute URL, e.g. https://mcp.example.com/mcp/files", s)
	case u.Scheme != "https" && u.Scheme != "http":
		return Errorf(EInvalid, "resource %.80q must be an http or https URL", s)
	case u.Fragment != "" || strings.Contains(s, "#"):
		return Errorf(EInvalid, "resource %.80q must not have a fragment (RFC 8707)", s)
	case u.User != nil:
		return Errorf(EInvalid, "resource %.80q must not hold user information", s)
	case u.String() != s:
		return Errorf(EInvalid, "resource %.80q is not in canonical form (write it as %.80q)", s, u.String())
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return Errorf(EInvalid, "resource %.80q holds a space or a character outside ASCII", s)
		}
	}
	return nil
}

func validMethod(m string) bool {
	if m == "" || len(m) > MaxMethodLength {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// ValidatePathPattern checks a path pattern: it starts with "/", its
// segments are literal text, "*" (exactly one segment) or, as the last
// segment only, "**" (any number of segments, including none). Literal
// segments may not hold "*", and "." or ".." segments are refused.
// Examples: "/v1/invoices", "/v1/projects/*/files", "/v1/projects/42/**".
func ValidatePathPattern(p string) error {
	if len(p) > MaxPathLen {
		return Errorf(EInvalid, "allowed_paths: pattern %.20q… is longer than %d bytes", p, MaxPathLen)
	}
	if !strings.HasPrefix(p, "/") {
		return Errorf(EInvalid, "allowed_paths: pattern %.50q must start with /", p)
	}
	rest := p[1:]
	for rest != "" {
		seg, tail, more := strings.Cut(rest, "/")
		switch {
		case seg == "**":
			if more {
				return Errorf(EInvalid, "allowed_paths: in %.50q, ** may only be the last segment", p)
			}
		case seg == "*":
		case strings.Contains(seg, "*"):
			return Errorf(EInvalid, "allowed_paths: in %.50q, * must be a whole segment", p)
		case seg == "." || seg == "..":
			return Errorf(EInvalid, "allowed_paths: %.50q holds a . or .. segment", p)
		case seg == "" && more:
			return Errorf(EInvalid, "allowed_paths: %.50q holds an empty segment (//)", p)
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; c < 0x21 || c == 0x7f || c == '?' || c == '#' {
				return Errorf(EInvalid, "allowed_paths: %.50q holds a character not allowed in a path", p)
			}
		}
		rest = tail
	}
	return nil
}

// CanonicalPath reports whether path is absolute and already clean: no
// empty, "." or ".." segments that could walk a matcher past a pattern.
// A trailing slash is allowed. Verification refuses non-canonical paths
// outright rather than cleaning them, because the backend may not clean
// them the same way.
func CanonicalPath(path string) bool {
	if path == "" || path[0] != '/' {
		return false
	}
	rest := path[1:]
	for rest != "" {
		seg, tail, more := strings.Cut(rest, "/")
		if seg == "." || seg == ".." || (seg == "" && more) {
			return false
		}
		rest = tail
	}
	return true
}

// MatchPath reports whether path matches pattern (see
// ValidatePathPattern). Matching is by segment and case-sensitive: "*"
// matches one non-empty segment, a final "**" matches the rest of the path
// (so "/a/**" matches "/a", "/a/" and "/a/b/c"). It does not allocate.
func MatchPath(pattern, path string) bool {
	if pattern == "" || path == "" || path[0] != '/' {
		return false
	}
	p, s := pattern[1:], path[1:]
	for {
		pseg, ptail, pmore := strings.Cut(p, "/")
		if pseg == "**" {
			return true
		}
		sseg, stail, smore := strings.Cut(s, "/")
		if pseg == "*" {
			if sseg == "" {
				return false
			}
		} else if pseg != sseg {
			return false
		}
		if !pmore || !smore {
			return pmore == smore || (pmore && ptail == "**")
		}
		p, s = ptail, stail
	}
}

// PathPatternCovers reports whether every path matching child also
// matches parent, judged segment by segment.
func PathPatternCovers(parent, child string) bool {
	if parent == "" || child == "" {
		return false
	}
	p, c := parent[1:], child[1:]
	for {
		pseg, ptail, pmore := strings.Cut(p, "/")
		if pseg == "**" {
			return true
		}
		cseg, ctail, cmore := strings.Cut(c, "/")
		switch {
		case cseg == "**":
			return false // the child reaches any depth; only ** covers that
		case pseg == "*":
			if cseg == "" {
				return false
			}
		case pseg != cseg:
			return false
		}
		if !pmore || !cmore {
			return pmore == cmore || (pmore && ptail == "**")
		}
		p, c = ptail, ctail
	}
}

// Duration is a time.Duration that reads and writes the forms
// ParseDuration accepts ("30d", "1h30m", "90s").
type Duration time.Duration

// String formats d with days where they fit: "30d", "1d12h", "1h30m", "90ms".
func (d Duration) String() string {
	v := time.Duration(d)
	if v <= 0 {
		return "0s"
	}
	var b []byte
	if days := v / (24 * time.Hour); days > 0 {
		b = strconv.AppendInt(b, int64(days), 10)
		b = append(b, 'd')
		v -= days * 24 * time.Hour
		if v == 0 {
			return string(b)
		}
	}
	s := v.String()
	// "1h30m0s" → "1h30m", "2h0m0s" → "2h"
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return string(b) + s
}

// MarshalText writes the String form.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads any form ParseDuration accepts.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}
