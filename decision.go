package latchkey

import (
	"encoding/json"
	"time"
)

// Code is the outcome of one verification, in the order of docs/architecture.md §2.
// The zero value is Malformed, so a forgotten assignment never reads as valid.
type Code uint8

// Verification outcomes. Their string forms are the public contract.
const (
	Malformed         Code = iota // not a latchkey token: bad shape or checksum
	Blocked                       // the source is blocked by the detector
	NotFound                      // unknown id, or a secret that does not match
	Revoked                       // revoked: final
	Suspended                     // suspended: may be resumed
	Expired                       // past expires_at (or idle, or rotated)
	NotYetValid                   // before not_before
	IPNotAllowed                  // client IP outside the token's CIDR allowlist
	Forbidden                     // method, path or resource not allowed
	InsufficientScope             // a required scope is not covered
	RateLimited                   // over the token's rate limit
	UsageExceeded                 // the token's usage budget is spent
	Valid                         // every check passed
	numCodes
)

var codeNames = [numCodes]string{
	Malformed:         "MALFORMED",
	Blocked:           "BLOCKED",
	NotFound:          "NOT_FOUND",
	Revoked:           "REVOKED",
	Suspended:         "SUSPENDED",
	Expired:           "EXPIRED",
	NotYetValid:       "NOT_YET_VALID",
	IPNotAllowed:      "IP_NOT_ALLOWED",
	Forbidden:         "FORBIDDEN",
	InsufficientScope: "INSUFFICIENT_SCOPE",
	RateLimited:       "RATE_LIMITED",
	UsageExceeded:     "USAGE_EXCEEDED",
	Valid:             "VALID",
}

// String returns the public name, e.g. "NOT_FOUND".
func (c Code) String() string {
	if c < numCodes {
		return codeNames[c]
	}
	return "UNKNOWN"
}

// ParseCode returns the Code named s (e.g. "REVOKED") and whether it exists.
func ParseCode(s string) (Code, bool) {
	for i, n := range codeNames {
		if n == s {
			return Code(i), true
		}
	}
	return 0, false
}

// MarshalText encodes the code as its public name.
func (c Code) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText decodes a public name.
func (c *Code) UnmarshalText(b []byte) error {
	v, ok := ParseCode(string(b))
	if !ok {
		return Errorf(EInvalid, "unknown outcome code %q", b)
	}
	*c = v
	return nil
}

// Decision is the result of verifying one presented token. A refused
// token is a Decision with Code != Valid, never a Go error.
type Decision struct {
	Code Code
	// Reason is the internal reason, for the audit record only (for example
	// "secret_mismatch" behind a public NOT_FOUND). Never shown to end clients.
	Reason string
	// TokenID is the parsed id, when the token parsed.
	TokenID string
	// Found reports that a token with this id and secret exists: the facts
	// below are its own. (A refusal may still have found one: REVOKED,
	// EXPIRED, ...)
	Found bool
	// Subject is the token's subject, Keyspace its keyspace.
	Subject  string
	Keyspace string
	// Scopes are the token's grants and Meta its metadata. Both are
	// shared with the verifier's cache (and other tokens with the same
	// values) and must be treated as read-only.
	Scopes []string
	Meta   json.RawMessage
	// Audience is the token's audience (Constraints.Audience), shared
	// and read-only like Scopes.
	Audience []string
	// CreatedAt, ExpiresAt and NotBefore are the token's times (zero when
	// unset). ExpiresAt is cut to the end of the grace period once the
	// token was rotated.
	CreatedAt, ExpiresAt, NotBefore time.Time
	// Version is the token record's version: it changes with every change.
	Version int64
	// Latency is how long the decision took.
	Latency time.Duration
	// Remaining is how many uses a usage-limited token has left after this
	// verification; -1 when the token has no usage limit.
	Remaining int64
	// Rate is the state of the token's rate limit, when it has one
	// (Rate.Limit > 0).
	Rate RateStatus
	// Warnings flags conditions the caller should act on; the request is
	// still decided by Code.
	Warnings Warnings
}

// RateStatus reports a rate limit after one verification.
type RateStatus struct {
	Limit     int64
	Remaining int64
	// Reset is when the full limit is available again (Unix nanoseconds).
	Reset int64
	// RetryAfter, when refused, is how long until one more is allowed.
	RetryAfter time.Duration
}

// Warnings is a set of warning flags on a decision.
type Warnings uint8

// Warnings.
const (
	// WarnRotationDue: the token is older than the rotation policy allows.
	WarnRotationDue Warnings = 1 << iota
)

// Strings returns the public names of the set warnings.
func (w Warnings) Strings() []string {
	var out []string
	if w&WarnRotationDue != 0 {
		out = append(out, "rotation_due")
	}
	return out
}

// Valid reports whether every check passed.
func (d Decision) Valid() bool { return d.Code == Valid }
