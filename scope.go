package latchkey

import "strings"

// Scope limits, enforced when a token is created.
const (
	MaxScopeLen    = 128
	MaxScopes      = 64
	ReservedPrefix = "latchkey:" // latchkey's own admin scopes live here
	AdminScope     = "latchkey:admin"
)

// Admin scopes (DESIGN.md §8). AdminScope covers each of them.
const (
	ScopeTokensRead  = "latchkey:tokens:read"
	ScopeTokensWrite = "latchkey:tokens:write"
	ScopeAuditRead   = "latchkey:audit:read"
	ScopeVerify      = "latchkey:verify"
	// ScopeMCPApprove lets a person approve or deny tool calls the MCP
	// gateway holds.
	ScopeMCPApprove = "latchkey:mcp:approve"
)

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
		if granted == AdminScope {
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
