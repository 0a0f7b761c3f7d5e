// Package client is latchkey's Go SDK: a client for the HTTP API and
// every type that crosses it (requests, answers, lists, errors). The
// server decodes into and encodes from these same types, so the two
// cannot drift. It imports only the root package, whose domain values
// (Token, AuditEvent, Decision, Block) it shares; a program that talks to
// a latchkey server links no server code.
//
// API errors come back as *latchkey.Error with the server's code and
// message (latchkey.ErrorCode reads it); transport failures as
// *latchkey.Error with code EUnavailable.
package client

import (
	"encoding/json"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// CreatedToken is the response to POST /v1/tokens: the record plus the
// plaintext, which is shown this once and never again.
type CreatedToken struct {
	Plaintext string `json:"token"`
	*latchkey.Token
}

// TokenList is the response to GET /v1/tokens.
type TokenList struct {
	Tokens     []*latchkey.Token `json:"tokens"`
	NextCursor string            `json:"next_cursor,omitempty"`
	// Total is the number of tokens matching (cursor aside), when
	// count=true asked for it.
	Total *int64 `json:"total,omitempty"`
}

// AuditList is the response to GET /v1/audit.
type AuditList struct {
	Events     []latchkey.AuditEvent `json:"events"`
	NextCursor string                `json:"next_cursor,omitempty"`
}

// RevokeRequest is the body of POST /v1/tokens/{id}/revoke.
type RevokeRequest struct {
	Reason string `json:"reason"`
}

// VerifyRequest is the body of POST /v1/verify.
type VerifyRequest struct {
	Token  string   `json:"token"`
	Scopes []string `json:"scopes,omitempty"`
	// IP is the end client's address, as seen by the calling backend.
	IP     string `json:"ip,omitempty"`
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
	// Resource is the resource the caller serves (RFC 8707), for tokens
	// bound to an audience.
	Resource string `json:"resource,omitempty"`
	// Keyspace is the keyspace the caller serves: a token of another is
	// NOT_FOUND. Default: the default keyspace.
	Keyspace string `json:"keyspace,omitempty"`
}

// VerifyResponse is the answer of POST /v1/verify. A refused token is a
// 200 with valid=false and a code; only the token's public facts are
// returned, and only when it is valid (rate_limit also when RATE_LIMITED).
type VerifyResponse struct {
	Valid     bool            `json:"valid"`
	Code      latchkey.Code   `json:"code"`
	TokenID   string          `json:"token_id,omitempty"`
	Subject   string          `json:"subject,omitempty"`
	Scopes    []string        `json:"scopes,omitempty"`
	ExpiresAt *time.Time      `json:"expires_at,omitempty"`
	Meta      json.RawMessage `json:"meta,omitempty"`
	// Remaining is the number of uses left, for a usage-limited token.
	Remaining *int64 `json:"remaining,omitempty"`
	// RateLimit is the token's rate limit after this verification.
	RateLimit *RateLimitStatus `json:"rate_limit,omitempty"`
	// Warnings: "rotation_due" when the token is older than the rotation
	// policy allows.
	Warnings []string `json:"warnings,omitempty"`
}

// RateLimitStatus reports a token's rate limit.
type RateLimitStatus struct {
	Limit     int64 `json:"limit"`
	Remaining int64 `json:"remaining"`
	// Reset is when the full limit is available again.
	Reset time.Time `json:"reset"`
	// RetryAfter, when RATE_LIMITED, is the number of seconds (rounded
	// up) until one more verification is allowed.
	RetryAfter int64 `json:"retry_after,omitempty"`
}

// RotateRequest is the body of POST /v1/tokens/{id}/rotate.
type RotateRequest struct {
	// Grace is how long the old token keeps working, e.g. "24h" (default
	// 0: it stops at once). It never outlives its own expiry.
	Grace string `json:"grace,omitempty"`
}

// RotatedToken is the answer to a rotation: the successor with its
// plaintext (shown this once), and the old token as it now stands.
type RotatedToken struct {
	CreatedToken
	Predecessor *latchkey.Token `json:"predecessor"`
}

// RevocationRequest is the body of POST /v1/revocations: exactly one of
// subject, tag, prefix or parent.
type RevocationRequest struct {
	// Keyspace confines the revocation to one keyspace (required of a
	// caller that reaches several keyspaces but not all).
	Keyspace string `json:"keyspace,omitempty"`
	Subject  string `json:"subject,omitempty"`
	Tag      string `json:"tag,omitempty"`
	Prefix   string `json:"prefix,omitempty"`
	// Parent revokes every token derived from it (not the parent itself).
	Parent string `json:"parent,omitempty"`
	Reason string `json:"reason,omitempty"`
	// IncludeSelf revokes the caller's own token too when it matches; by
	// default it (and the ancestors whose revocation would revoke it) is
	// spared.
	IncludeSelf bool `json:"include_self,omitempty"`
	// DryRun changes nothing and answers what would be revoked.
	DryRun bool `json:"dry_run,omitempty"`
}

// RevocationResult is the answer of POST /v1/revocations: how many tokens
// were revoked (or would be, dry run), and the matching tokens spared
// because they are the caller's own.
type RevocationResult struct {
	Revoked int `json:"revoked"`
	// Spared lists the matching tokens left alone: the caller's own
	// token and the ancestors whose revocation would revoke it.
	Spared []string `json:"spared,omitempty"`
	DryRun bool     `json:"dry_run,omitempty"`
	// Receipt, when asked for (?wait=all), says which live nodes have
	// evicted the revoked tokens.
	Receipt *latchkey.Receipt `json:"receipt,omitempty"`
}

// Introspection is the answer of POST /oauth2/introspect (RFC 7662).
// An inactive token gets {"active":false} and nothing else.
type Introspection struct {
	Active    bool   `json:"active"`
	Scope     string `json:"scope,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	Subject   string `json:"sub,omitempty"`
	ExpiresAt int64  `json:"exp,omitempty"`
	IssuedAt  int64  `json:"iat,omitempty"`
	NotBefore int64  `json:"nbf,omitempty"`
	JTI       string `json:"jti,omitempty"`
	TokenType string `json:"token_type,omitempty"`
	// Audience is the token's audience (RFC 8707 resources), when bound:
	// a resource server not among them must refuse the token.
	Audience []string `json:"aud,omitempty"`
}

// OAuthClientRevoke is the body of POST /v1/oauth/clients/revoke.
type OAuthClientRevoke struct {
	ClientID string `json:"client_id"`
}

// OAuthClientRevoked answers it.
type OAuthClientRevoked struct {
	Client        OAuthClient `json:"client"`
	TokensRevoked int         `json:"tokens_revoked"`
}

// ErrorBody is the one error shape: {"error":{"code","message"}}.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// BlockList is the answer of GET /v1/blocks.
type BlockList struct {
	Blocks []latchkey.Block `json:"blocks"`
}

// OpenSessionList is the answer of GET /v1/sessions: the node's open
// sessions, oldest first.
type OpenSessionList struct {
	Sessions []latchkey.OpenSession `json:"sessions"`
}

// SessionInfo answers POST and GET /ui/api/session.
type SessionInfo struct {
	TokenID   string    `json:"token_id"`
	Subject   string    `json:"subject"`
	Scopes    []string  `json:"scopes"`
	ExpiresAt time.Time `json:"expires_at"`
	// CSRFToken goes in X-CSRF-Token on every state-changing call. The
	// page keeps it in memory only.
	CSRFToken string `json:"csrf_token"`
}

// SignInRequest is the body of POST /ui/api/session.
type SignInRequest struct {
	Token string `json:"token"`
	// Purpose "consent" signs in to answer an OAuth authorization request:
	// any valid token may, not only one that can read the audit log.
	Purpose string `json:"purpose,omitempty"`
}

// CreateRequest is the body of POST /v1/tokens (docs/architecture.md §8), and of
// POST /v1/tokens/{id}/derive, where unset fields are inherited from the
// parent.
type CreateRequest struct {
	Name      string          `json:"name"`
	Subject   string          `json:"subject"`
	Scopes    []string        `json:"scopes"`
	TTL       string          `json:"ttl,omitempty"`
	ExpiresAt *time.Time      `json:"expires_at,omitempty"`
	NotBefore *time.Time      `json:"not_before,omitempty"`
	Tags      []string        `json:"tags,omitempty"`
	Meta      json.RawMessage `json:"meta,omitempty"`
	Prefix    string          `json:"prefix,omitempty"`
	// Keyspace is the keyspace to issue in (default: "default"; a derived
	// token stays in its parent's). Roles are role names within it.
	Keyspace string   `json:"keyspace,omitempty"`
	Roles    []string `json:"roles,omitempty"`

	IdleTimeout    string       `json:"idle_timeout,omitempty"`
	AllowedCIDRs   []string     `json:"allowed_cidrs,omitempty"`
	AllowedMethods []string     `json:"allowed_methods,omitempty"`
	AllowedPaths   []string     `json:"allowed_paths,omitempty"`
	RateLimit      *RateRequest `json:"rate_limit,omitempty"`
	MaxUses        int64        `json:"max_uses,omitempty"`
	// Audience binds the token to these resources (RFC 8707 resource
	// indicators): it works only at doors that serve one of them.
	Audience []string `json:"audience,omitempty"`
}

// RateRequest is a rate limit as written in a request: {"limit": 100,
// "window": "1m"}.
type RateRequest struct {
	Limit  int64  `json:"limit"`
	Window string `json:"window"`
}

// LeakReport is one match in a secret scanner's report, in GitHub's
// secret-scanning partner format.
type LeakReport struct {
	Token  string `json:"token"`
	Type   string `json:"type"`
	URL    string `json:"url"`
	Source string `json:"source"`
}

// LeakResult answers one match, in GitHub's feedback format: the token is
// named by its SHA-256 (never echoed), and labelled true_positive when it
// was a real latchkey token (now revoked), false_positive otherwise.
type LeakResult struct {
	TokenHash string `json:"token_hash"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
	// TokenID is the public id of a real token (latchkey's addition).
	TokenID string `json:"token_id,omitempty"`
}

// Leak labels.
const (
	LabelTruePositive  = "true_positive"
	LabelFalsePositive = "false_positive"
)

// UpdateRequest is the body of PATCH /v1/tokens/{id}. Absent fields are
// left as they are.
type UpdateRequest struct {
	Name   *string         `json:"name,omitempty"`
	Meta   json.RawMessage `json:"meta,omitempty"`
	Tags   *[]string       `json:"tags,omitempty"`
	Scopes *[]string       `json:"scopes,omitempty"`
}

// ActivitySummary is a snapshot of Activity (or of a cluster's).
type ActivitySummary struct {
	// Node is the node that answered.
	Node string `json:"node"`
	// Nodes are the nodes whose attempts are counted: the one answering,
	// and in a cluster every other node that published within the last
	// few seconds.
	Nodes []string  `json:"nodes,omitempty"`
	Now   time.Time `json:"now"`
	Today struct {
		Since   time.Time `json:"since"`
		Valid   uint64    `json:"valid"`
		Refused uint64    `json:"refused"`
		Blocked uint64    `json:"blocked"`
	} `json:"today"`
	// Series holds per-second counts for the seconds Start, Start+1, ...
	// up to the current second (ActivityWindow of them), oldest first.
	Series struct {
		Start   time.Time `json:"start"`
		Valid   []uint64  `json:"valid"`
		Refused []uint64  `json:"refused"`
		Blocked []uint64  `json:"blocked"`
	} `json:"series"`
}

// HeldCallList is the answer of GET /v1/mcp/holds: the tool calls held
// (every node's on a shared store), oldest first, and the last ones
// decided on the node that answers.
type HeldCallList struct {
	Held    []latchkey.HeldCall `json:"held"`
	Decided []latchkey.HeldCall `json:"decided"`
}

// ToolPinList is the answer of GET /v1/mcp/tools.
type ToolPinList struct {
	Tools []latchkey.ToolPin `json:"tools"`
}

// AcceptToolRequest is the body of POST /v1/mcp/tools/{mcp_server}/{tool}/accept.
type AcceptToolRequest struct {
	Fingerprint string `json:"fingerprint"`
}

// OAuthRequest is an authorization request waiting for a person's
// consent, as the consent page shows it (GET /ui/api/oauth/requests/{id}).
type OAuthRequest struct {
	ID         string `json:"id"`
	ClientID   string `json:"client_id"`
	ClientName string `json:"client_name"`
	// ClientURI is where the client says it lives (from its registration
	// or metadata document); it is the client's claim, not checked.
	ClientURI string `json:"client_uri,omitempty"`
	// RedirectURI is where the answer goes: the page shows its host.
	RedirectURI string `json:"redirect_uri"`
	// Resources are the RFC 8707 resources the token is for (its audience).
	Resources []string `json:"resources"`
	// Scopes are what the client asked for; Held says, for each, whether
	// the signed-in token can delegate it (only those can be approved).
	Scopes    []OAuthScope `json:"scopes"`
	ExpiresAt time.Time    `json:"expires_at"`
	// AccessTTL is how long the access token will last.
	AccessTTL latchkey.Duration `json:"access_ttl"`
}

// OAuthScope is one requested scope on the consent page.
type OAuthScope struct {
	Scope string `json:"scope"`
	// Held: the signed-in token covers the scope, or part of it (the
	// part is what Grants lists).
	Held   bool     `json:"held"`
	Grants []string `json:"grants,omitempty"`
}

// OAuthDecision approves (with the scopes kept) or denies a request.
type OAuthDecision struct {
	Approve bool     `json:"approve"`
	Scopes  []string `json:"scopes,omitempty"`
}

// OAuthDecided is where the browser goes next: the client's redirect URI
// with the code (or the error) and the state.
type OAuthDecided struct {
	RedirectTo string `json:"redirect_to"`
}

// OAuthClient is a client the authorization server knows: registered
// (RFC 7591) or described by its metadata document (client_id is then
// that document's URL).
type OAuthClient struct {
	ClientID                string    `json:"client_id"`
	ClientName              string    `json:"client_name,omitempty"`
	ClientURI               string    `json:"client_uri,omitempty"`
	RedirectURIs            []string  `json:"redirect_uris"`
	TokenEndpointAuthMethod string    `json:"token_endpoint_auth_method"`
	GrantTypes              []string  `json:"grant_types"`
	Scope                   string    `json:"scope,omitempty"`
	Kind                    string    `json:"kind"` // "registered" or "metadata_document"
	CreatedAt               time.Time `json:"created_at"`
	RevokedAt               time.Time `json:"revoked_at,omitzero"`
	RevokedBy               string    `json:"revoked_by,omitempty"`
	// SecretTokenID is the id of the latchkey token that is the client's
	// secret (confidential clients).
	SecretTokenID string `json:"secret_token_id,omitempty"`
}

// OAuthClientList is GET /v1/oauth/clients.
type OAuthClientList struct {
	Clients []OAuthClient `json:"clients"`
}

// NewAccessRequest is the body of POST /v1/access-requests: the scopes
// wanted, for how long and why. The keyspace defaults to the
// requesting token's.
type NewAccessRequest struct {
	Keyspace string   `json:"keyspace,omitempty"`
	Scopes   []string `json:"scopes"`
	TTL      string   `json:"ttl"`
	Reason   string   `json:"reason"`
}

// CreatedAccessRequest answers POST /v1/access-requests: the request and
// its claim code, shown once. Whoever holds the code collects the token
// once the request is approved.
type CreatedAccessRequest struct {
	*latchkey.AccessRequest
	ClaimCode string `json:"claim_code"`
}

// AccessRequestList answers GET /v1/access-requests.
type AccessRequestList struct {
	Requests []latchkey.AccessRequest `json:"requests"`
}

// VerdictRequest is the body of an approval or a denial.
type VerdictRequest struct {
	Comment string `json:"comment,omitempty"`
}

// ClaimRequest is the body of POST /v1/access-requests/{id}/claim.
type ClaimRequest struct {
	Code string `json:"code"`
}

// KeyspaceList answers GET /v1/keyspaces.
type KeyspaceList struct {
	Keyspaces []latchkey.Keyspace `json:"keyspaces"`
}

// RoleList answers GET /v1/keyspaces/{keyspace}/roles.
type RoleList struct {
	Roles []latchkey.Role `json:"roles"`
}

// IdentityList answers GET /v1/keyspaces/{keyspace}/identities; Uses
// (by subject) is how much of each budget is spent.
type IdentityList struct {
	Identities []IdentityStatus `json:"identities"`
}

// IdentityStatus is an identity with its spent budget.
type IdentityStatus struct {
	latchkey.Identity
	Uses int64 `json:"uses"`
}
