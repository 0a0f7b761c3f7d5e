package latchkey

import "strings"

// Scope limits, enforced when a token is created.
const (
	MaxScopeLen    = 128
	MaxScopes      = 64
	ReservedPrefix = "latchkey:" // latchkey's own admin scopes live here
	AdminScope     = "latchkey:admin"
)

// Admin scopes (docs/architecture.md §8). AdminScope covers each of them.
const (
	ScopeTokensRead  = "latchkey:tokens:read"
	ScopeTokensWrite = "latchkey:tokens:write"
	ScopeAuditRead   = "latchkey:audit:read"
	ScopeVerify      = "latchkey:verify"
	// ScopeMCPApprove lets a person approve or deny tool calls the MCP
	// gateway holds.
	ScopeMCPApprove = "latchkey:mcp:approve"
	// ScopeOAuthRegister is the initial access token's scope when client
	// registration is gated (RFC 7591 §3).
	ScopeOAuthRegister = "latchkey:oauth:register"
)

// OAuthClientSubject prefixes the subject of a registered OAuth client's
// secret (a latchkey token): "oauth-client:<client_id>". The authorization
// server issues such tokens; introspection and revocation read the
// prefix to match a client id to its secret.
const OAuthClientSubject = "oauth-client:"

// ValidateScope reports whether s is a well-formed scope: segments of
// [A-Za-z0-9_-] or a lone "*", separated by "." (hierarchy) or ":"
// (resource from action), at most MaxScopeLen bytes. Examples:
// "invoices:read", "billing.*:read", "projects.42:*", "*".
func ValidateScope(s string) error {
	if s == "" {
		return Errorf(EInvalid, "scope must not be empty")
	}
	if len(s) > MaxScopeLen {
		return Errorf(EInvalid, "scope %.20q… is longer than %d bytes", s, MaxScopeLen)
	}
	seg := 0 // length of the current segment
	star := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.' || c == ':':
			if seg == 0 {
				return Errorf(EInvalid, "scope %q has an empty segment", s)
			}
			seg, star = 0, false
		case c == '*':
			if seg != 0 {
				return Errorf(EInvalid, "scope %q: '*' must be a whole segment", s)
			}
			seg, star = 1, true
		case isScopeChar(c):
			if star {
				return Errorf(EInvalid, "scope %q: '*' must be a whole segment", s)
			}
			seg++
		default:
			return Errorf(EInvalid, "scope %q contains %q; allowed are letters, digits, '_', '-', '.', ':' and '*'", s, c)
		}
	}
	if seg == 0 {
		return Errorf(EInvalid, "scope %q has an empty segment", s)
	}
	return nil
}

func isScopeChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// ScopeCovers reports whether the granted scope covers the required one.
//
// Both are compared segment by segment; the separators ('.' or ':') must
// agree. A granted "*" segment matches any one segment, and a "*" that ends
// the granted scope matches all remaining segments too (so "billing.*"
// covers "billing.invoices:read" and "*" covers everything).
//
// Two rules protect latchkey's own namespace: a grant that does not itself
// start with "latchkey:" never covers a "latchkey:" scope (an application
// token holding "*" is not an administrator), and "latchkey:admin" covers
// every "latchkey:" scope.
//
// Empty and malformed scopes are covered by nothing. It does not allocate.
func ScopeCovers(granted, required string) bool {
	if required == "" {
		return false
	}
	if granted == required {
		return true // the common case, without walking segments (grants are validated when issued)
	}
	if strings.HasPrefix(required, ReservedPrefix) {
		if !strings.HasPrefix(granted, ReservedPrefix) {
			return false
		}
		if granted == AdminScope || keyspaceAdminCovers(granted, required) {
			return true
		}
	}
	g, r := granted, required
	for {
		gs, gsep, grest := cutSegment(g)
		rs, rsep, rrest := cutSegment(r)
		if rs == "" {
			return false // a malformed required scope is covered by nothing
		}
		if gs == "*" && gsep == 0 {
			return true // trailing wildcard: covers this segment and all below
		}
		if gs != "*" && gs != rs {
			return false
		}
		if gsep != rsep {
			return false
		}
		if gsep == 0 {
			return true // both ended together
		}
		g, r = grest, rrest
	}
}

// cutSegment splits s at its first '.' or ':'; sep is 0 at the end.
func cutSegment(s string) (seg string, sep byte, rest string) {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' || s[i] == ':' {
			return s[:i], s[i], s[i+1:]
		}
	}
	return s, 0, ""
}

// ScopesCover reports whether some scope in granted covers required.
func ScopesCover(granted []string, required string) bool {
	for _, g := range granted {
		if ScopeCovers(g, required) {
			return true
		}
	}
	return false
}

// IntersectScopes returns the scopes that both a and b cover: for every
// pair, the narrower one when one covers the other, else their segment
// by segment meet ("mcp.*.tools.echo:call" and "mcp.files.tools.*:call"
// meet in "mcp.files.tools.echo:call"). Every scope returned is covered
// by some scope of a and by some scope of b, and none is covered by
// another one returned. Delegation uses it: what a client asked for,
// what a person approved and what the person's token holds.
func IntersectScopes(a, b []string) []string {
	var out []string
	add := func(s string) {
		for i, o := range out {
			if ScopeCovers(o, s) {
				return
			}
			if ScopeCovers(s, o) {
				out[i] = s
				// drop any others s covers
				out = slicesDeleteCovered(out, i)
				return
			}
		}
		out = append(out, s)
	}
	for _, x := range a {
		for _, y := range b {
			if m, ok := meetScope(x, y); ok {
				add(m)
			}
		}
	}
	return out
}

// slicesDeleteCovered removes from out every scope, other than out[keep],
// that out[keep] covers.
func slicesDeleteCovered(out []string, keep int) []string {
	k := out[keep]
	res := out[:0]
	for i, o := range out {
		if i == keep || !ScopeCovers(k, o) {
			res = append(res, o)
		}
	}
	return res
}

// meetScope is the narrowest scope covered by both x and y, when one is
// a well-formed scope they both cover.
func meetScope(x, y string) (string, bool) {
	if ValidateScope(x) != nil || ValidateScope(y) != nil {
		return "", false
	}
	if ScopeCovers(x, y) {
		return y, true
	}
	if ScopeCovers(y, x) {
		return x, true
	}
	var b strings.Builder
	g, r := x, y
	for {
		gs, gsep, grest := cutSegment(g)
		rs, rsep, rrest := cutSegment(r)
		switch {
		case gs == "*" && gsep == 0: // x's trailing wildcard: the rest of y
			b.WriteString(r)
		case rs == "*" && rsep == 0:
			b.WriteString(g)
		case gs != "*" && rs != "*" && gs != rs, gsep != rsep:
			return "", false
		default:
			if gs == "*" {
				b.WriteString(rs)
			} else {
				b.WriteString(gs)
			}
			if gsep != 0 {
				b.WriteByte(gsep)
				g, r = grest, rrest
				continue
			}
		}
		break
	}
	m := b.String()
	if ValidateScope(m) != nil || !ScopeCovers(x, m) || !ScopeCovers(y, m) {
		return "", false
	}
	return m, true
}
