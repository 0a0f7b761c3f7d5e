package latchkey

import (
	"cmp"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Audit event kinds.
const (
	KindVerify = "verify" // a verification attempt (POST /v1/verify, admin auth)
	KindAdmin  = "admin"  // a change made through the admin API
	KindDetect = "detect" // the detector saw something and acted (or alerted)
	// KindSession: what happened inside a long-lived session a door admitted
	// (a database statement, the session's end).
	KindSession = "session"
)

// Audit actions.
const (
	ActionVerify       = "verify"             // POST /v1/verify
	ActionAdminAuth    = "admin_auth"         // authenticating an admin API call
	ActionTokenCreate  = "token.create"       // a token was issued
	ActionTokenRevoke  = "token.revoke"       // a token was revoked
	ActionTokenSuspend = "token.suspend"      // a token was suspended
	ActionTokenResume  = "token.resume"       // a suspended token was resumed
	ActionTokenRotate  = "token.rotate"       // a token was rotated (on the old token)
	ActionTokenDerive  = "token.derive"       // a token was derived (on the child)
	ActionTokenUpdate  = "token.update"       // name, meta, tags or scopes changed
	ActionTokenExpire  = "token.expire"       // a descendant's expiry was cut to its ancestor's
	ActionRootRecover  = "token.recover_root" // a new root token made from the data directory (latchkey admin recover-root)

	ActionSourceBlocked   = "source.blocked"       // the detector blocked a client address
	ActionSourceUnblocked = "source.unblocked"     // a block was removed (by an admin, or it expired)
	ActionLeakSuspected   = "token.leak_suspected" // many wrong secrets for one real token id
	ActionTokenReuse      = "token.reuse"          // a revoked token was presented: someone still holds it
	ActionLeakReported    = "leak.reported"        // a secret scanner reported a token
	ActionRotationDue     = "token.rotation_due"   // a token passed the rotation age

	ActionDBConnect    = "db.connect"     // a database client presented a token (the database gateway)
	ActionDBRecheck    = "db.recheck"     // an open database session's token was refused on a recheck
	ActionDBStatement  = "db.statement"   // a statement run in a database session
	ActionDBSessionEnd = "db.session_end" // a database session ended (Reason says why)

	ActionMCP             = "mcp"               // an agent's request was verified and refused (the MCP gateway)
	ActionMCPRequest      = "mcp.request"       // an agent's JSON-RPC request and its outcome
	ActionMCPHold         = "mcp.hold"          // a tool call was held for a human's approval
	ActionMCPDecision     = "mcp.decision"      // a held call was approved, denied or timed out
	ActionMCPToolChanged  = "mcp.tool_changed"  // an upstream changed a pinned tool's definition
	ActionMCPToolAccepted = "mcp.tool_accepted" // an administrator accepted a tool's new definition
	ActionMCPSessionEnd   = "mcp.session_end"   // an MCP session ended (Reason says why)

	ActionOAuthAuthorize    = "oauth.authorize"     // an authorization request was refused before consent (the OAuth authorization server)
	ActionOAuthConsent      = "oauth.consent"       // a person approved a client's request (Actor is their token)
	ActionOAuthDeny         = "oauth.deny"          // a person denied a client's request
	ActionOAuthToken        = "oauth.token"         // a token request and its outcome (Detail names the grant type)
	ActionOAuthReuse        = "oauth.reuse"         // a code or refresh token was used twice: its grant was revoked
	ActionOAuthRegister     = "oauth.register"      // a client registered itself (RFC 7591)
	ActionOAuthClientRevoke = "oauth.client_revoke" // an administrator revoked a client and its grants

	// Tenancy (Subject is "keyspace:<name>": KeyspaceSubject).
	ActionKeyspacePut    = "keyspace.put"    // a keyspace was created or its policy changed
	ActionKeyspaceDelete = "keyspace.delete" // an empty keyspace was deleted
	ActionRolePut        = "role.put"        // a role was created or its scopes changed (Detail: before and after)
	ActionRoleDelete     = "role.delete"     // a role was deleted: its tokens lose its scopes
	ActionIdentityPut    = "identity.put"    // a subject's shared limits were set
	ActionIdentityDelete = "identity.delete" // a subject's shared limits were removed
	ActionAccessRequest  = "access.request"  // someone asked for a token (an access request)
	ActionAccessApprove  = "access.approve"  // an approver approved a request (Detail: approvals so far)
	ActionAccessDeny     = "access.deny"     // an approver denied a request
	ActionAccessClaim    = "access.claim"    // the requester collected the approved token (TokenID), or failed to
)

// AuditEvent is one record of the audit trail (docs/architecture.md §5). It never
// holds a secret: TokenID is the public id only.
type AuditEvent struct {
	// Seq is assigned by the store: increasing, unique per store.
	Seq       int64     `json:"seq"`
	Time      time.Time `json:"time"`
	Node      string    `json:"node,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
	Kind      string    `json:"kind"`
	Action    string    `json:"action"`
	// Actor is the id of the token that made an admin change.
	Actor   string `json:"actor,omitempty"`
	TokenID string `json:"token_id,omitempty"`
	Subject string `json:"subject,omitempty"`
	// Outcome is a verification Code's name, or "OK" for an admin change.
	Outcome string `json:"outcome"`
	// Reason is the internal reason (e.g. "secret_mismatch", "missing_scope").
	Reason    string        `json:"reason,omitempty"`
	Scopes    []string      `json:"scopes,omitempty"`
	ClientIP  string        `json:"client_ip,omitempty"`
	UserAgent string        `json:"user_agent,omitempty"`
	Method    string        `json:"method,omitempty"`
	Path      string        `json:"path,omitempty"`
	Latency   time.Duration `json:"latency_ns"`
	// Detail holds action-specific facts as a JSON object (for example the
	// grants of a created token). Never a secret.
	Detail json.RawMessage `json:"detail,omitempty"`
	// Hash links the record into its node's chain (ChainHash), hex. Set by
	// the store.
	Hash string `json:"hash,omitempty"`
}

// OutcomeOK is the outcome of a successful admin change.
const OutcomeOK = "OK"

// OutcomeRefused is the outcome of an attempt a door refused before there
// was a token to verify (no credential, a credential in the URL, no
// route, a non-canonical path). Its Reason says which; its Detail
// {"count": n} says how many refusals the record stands for (they are
// sampled per source, so a flood cannot fill the disk).
const OutcomeRefused = "REFUSED"

// AuditFilter selects audit events. Zero fields match all.
type AuditFilter struct {
	// Keyspace, when set, selects the records about that keyspace's
	// tokens only (a keyspace admin's view).
	Keyspace string
	Node     string
	TokenID  string
	Subject  string
	Outcome  string
	Kind     string
	Action   string
	Since    time.Time // inclusive
	Until    time.Time // exclusive
	// Source, when valid, selects the records whose client address lies
	// in it (a single address is a /32 or /128; see ParseSource). Both
	// stores answer it from an index.
	Source netip.Prefix
	// After returns events with Seq > After in ascending order (for
	// following the log). When zero, pages run newest first, unless
	// Ascending is set.
	After     int64
	Ascending bool
	// Cursor continues a newest-first listing (opaque, from AuditPage.Next).
	Cursor string
	Limit  int
}

// ParseSource reads a source filter: an IP address (IPv4 or IPv6) or a
// CIDR prefix. IPv4-mapped IPv6 addresses are taken as IPv4 (as client
// addresses are recorded); host bits are cleared; zones are refused.
func ParseSource(s string) (netip.Prefix, error) {
	bad := Errorf(EInvalid, "client_ip must be an IP address or a CIDR prefix, e.g. 203.0.113.7 or 10.0.0.0/8")
	if len(s) > 64 {
		return netip.Prefix{}, bad
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, bad
		}
		if a := p.Addr(); a.Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, bad
			}
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, bad
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// SourceRange is the first and last 16-byte key (SourceKey) in p.
func SourceRange(p netip.Prefix) (lo, hi [16]byte) {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	lo = p.Masked().Addr().As16()
	hi = lo
	for i := bits; i < 128; i++ {
		hi[i/8] |= 0x80 >> (i % 8)
	}
	return lo, hi
}

// SourceKey is a recorded client address as a 16-byte key that sorts as
// SourceRange expects (IPv4 as IPv4-mapped IPv6); ok is false when ip is
// not an address (nothing recorded, or a door's placeholder).
func SourceKey(ip string) (k [16]byte, ok bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return k, false
	}
	return a.Unmap().WithZone("").As16(), true
}

// InSource reports whether the recorded client address ip lies in p.
func InSource(p netip.Prefix, ip string) bool {
	a, err := netip.ParseAddr(ip)
	return err == nil && p.Contains(a.Unmap().WithZone(""))
}

// SourceUsage is what the records matching a filter say about one client
// address: how many attempts came from it, when the first and the last
// came, and how many had each outcome.
type SourceUsage struct {
	Address   string           `json:"address"`
	Attempts  int64            `json:"attempts"`
	FirstSeen time.Time        `json:"first_seen"`
	LastSeen  time.Time        `json:"last_seen"`
	Outcomes  map[string]int64 `json:"outcomes"`
}

// SourceReport is the usage by source of the records matching a filter,
// the busiest sources first.
type SourceReport struct {
	Sources []SourceUsage `json:"sources"`
	// Total is the number of distinct addresses; Records the number of
	// records counted (records without an address are counted under "").
	Total   int   `json:"total_sources"`
	Records int64 `json:"records"`
	// Truncated says Sources holds only the busiest MaxSources of Total.
	Truncated bool `json:"truncated"`
}

// MaxSources is how many sources a SourceReport lists at most.
const MaxSources = 1000

// MaxSourceRecords bounds the records one SourceReport reads: past it,
// the store refuses the report (EInvalid: narrow the window), so one
// request cannot scan the whole log.
const MaxSourceRecords = 1_000_000

// Tally adds one record to the report being built in m.
func Tally(m map[string]*SourceUsage, ev *AuditEvent) {
	u := m[ev.ClientIP]
	if u == nil {
		u = &SourceUsage{Address: ev.ClientIP, FirstSeen: ev.Time, LastSeen: ev.Time, Outcomes: map[string]int64{}}
		m[ev.ClientIP] = u
	}
	u.Attempts++
	u.Outcomes[ev.Outcome]++
	if ev.Time.Before(u.FirstSeen) {
		u.FirstSeen = ev.Time
	}
	if ev.Time.After(u.LastSeen) {
		u.LastSeen = ev.Time
	}
}

// Report orders the tallies of m into a SourceReport: most attempts
// first, then the most recent, then by address.
func Report(m map[string]*SourceUsage) SourceReport {
	r := SourceReport{Sources: make([]SourceUsage, 0, min(len(m), MaxSources)), Total: len(m)}
	all := make([]*SourceUsage, 0, len(m))
	for _, u := range m {
		all = append(all, u)
		r.Records += u.Attempts
	}
	slices.SortFunc(all, func(a, b *SourceUsage) int {
		if a.Attempts != b.Attempts {
			return cmp.Compare(b.Attempts, a.Attempts)
		}
		if c := b.LastSeen.Compare(a.LastSeen); c != 0 {
			return c
		}
		return strings.Compare(a.Address, b.Address)
	})
	if len(all) > MaxSources {
		all, r.Truncated = all[:MaxSources], true
	}
	for _, u := range all {
		r.Sources = append(r.Sources, *u)
	}
	return r
}

// AuditPage is one page of audit events.
type AuditPage struct {
	Events []AuditEvent
	Next   string
}
