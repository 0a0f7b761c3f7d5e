package latchkey

import (
	"context"
	"encoding/json"
	"net/netip"
)

// The verification contract: what every door (the API, the gateway,
// forward auth, the middleware and the gateways to come) asks and what it
// gets back. It lives here, beside Decision, so that a door depends on
// the domain and not on the verifier that implements it (package verify).

// VerifyRequest is one verification: a presented token, the scopes it
// must cover and the facts about the caller. Only Token is required. Every
// door builds one and hands it to a Verifier.
type VerifyRequest struct {
	Token string
	// Scopes that must all be covered by the token's grants.
	Scopes []string
	// Facts about the caller, checked against the token's constraints and
	// kept in the audit record. ClientIP is the end client's address,
	// already resolved through trusted proxies.
	ClientIP  string
	UserAgent string
	Method    string
	Path      string
	// Resource is the resource the door serves, as its RFC 8707 resource
	// indicator (the MCP gateway's server URL, a gateway route's
	// resource). A token with an audience is refused (FORBIDDEN) unless
	// Resource is one of it; "" names no resource.
	Resource string
	// AnyResource skips the audience check: the caller is only asking
	// about the token (RFC 7662 introspection without a resource), and
	// is told the token's audience to check itself.
	AnyResource bool
	RequestID   string
	// Keyspace is the keyspace the door serves: a token of any other is
	// NOT_FOUND (the audit record says keyspace_mismatch). "" is the
	// default keyspace. API calls (APICall) accept every keyspace: their
	// admin scopes say where they may act.
	Keyspace string
	// AnyKeyspace skips the keyspace check: the token presents itself for
	// its own sake (a refresh token, RFC 7009 revocation) or is only
	// asked about (introspection, which reports its keyspace).
	AnyKeyspace bool
	// Permission, for an API call, admits a token that holds the admin
	// permission (e.g. "tokens:read") anywhere it reaches
	// (HoldsPermission): globally or in a keyspace. The endpoint then
	// narrows what it shows to the token's reach. Scopes still apply.
	Permission string
	// Action names the attempt in the audit log (default "verify").
	Action string
	// AuditFailuresOnly records the attempt only when it is refused. Used for
	// authenticating admin calls, so that reading the log does not flood it.
	AuditFailuresOnly bool
	// NoSpend decides without spending the token's rate or uses, and
	// without noting a use (token introspection).
	NoSpend bool
	// Source is the end client as a blockable source: the address the
	// detector counts failures against and may block. Leave it invalid when
	// the address is only the calling backend or a trusted proxy, which
	// relay everyone's requests and must never be blocked on their own
	// account.
	Source netip.Addr
	// APICall marks a call to latchkey's own API (admin calls, a token
	// deriving from itself). A token's allowed_methods and allowed_paths
	// describe the resource server it was issued for, so they are not
	// applied to such calls; Method and Path are still audited. Every
	// other check, network and rate and usage included, applies.
	APICall bool
	// Recheck re-verifies a token already admitted to a long-lived session
	// (a database connection, an MCP session): nothing is spent, and a
	// refusal is not counted by the detector, since it is not a new attempt
	// (a revoked token found by a recheck is no reuse). InUse, with
	// Recheck, notes a use, so that a session in use keeps its token from
	// going idle.
	Recheck bool
	InUse   bool
	// Detail is the door's own facts for the audit record (database and
	// role, MCP tool...), a JSON object. Never a secret.
	Detail json.RawMessage
}

// Verifier decides on a presented token. A refusal is a Decision with
// Code != Valid; an error means no decision could be made (the store is
// down) and the request must be refused. *verify.Verifier satisfies it.
type Verifier interface {
	Verify(ctx context.Context, req *VerifyRequest) (Decision, error)
}

// Refuser records an attempt a door refused before there was a token to
// decide on (no credential, a non-canonical path, a header only latchkey
// may set...), with one of the edge's reasons. *verify.Verifier
// satisfies it; the records are sampled, so a flood cannot fill the log.
type Refuser interface {
	Refuse(req *VerifyRequest, reason string)
}

// Actor is who is making a change, for permission checks and the audit
// record. TokenID is "" for the server itself (bootstrap).
type Actor struct {
	TokenID string
	// Keyspace is the acting token's keyspace, Subject its subject.
	Keyspace string
	Subject  string
	// System names a part of the server acting on its own (e.g.
	// "detector") when TokenID is "". It shows as "latchkey:<System>".
	System    string
	Scopes    []string
	ClientIP  string
	UserAgent string
	RequestID string
}

// Reach is where the actor's grants allow perm (ReachOf). An actor
// without a token (the server itself, or an unauthenticated call)
// reaches nothing here: code acting as the server does not ask.
func (a Actor) Reach(perm string) Reach {
	if a.TokenID == "" {
		return Reach{}
	}
	return ReachOf(a.Keyspace, a.Scopes, perm)
}
