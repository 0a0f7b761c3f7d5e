package latchkey

import (
	"strings"
	"time"
)

// Tenancy (docs/architecture.md §11): keyspaces, roles, identities with shared
// limits, and access requests a person approves.

// DefaultKeyspace is the keyspace of every token issued without one, and
// of every token made before keyspaces existed. Its tokens' admin scopes
// reach every keyspace; a token of any other keyspace acts only in its own.
const DefaultKeyspace = "default"

// KeyspaceScopePrefix begins a keyspace's admin scopes:
// "latchkey:keyspaces.<name>:<permission>", e.g.
// "latchkey:keyspaces.acme:tokens:write". "…:admin" covers all of them.
const KeyspaceScopePrefix = "latchkey:keyspaces."

// Permissions: the part after "latchkey:" of an admin scope, and after
// "latchkey:keyspaces.<name>:" of a keyspace's.
const (
	PermAdmin       = "admin"
	PermTokensRead  = "tokens:read"
	PermTokensWrite = "tokens:write"
	PermAuditRead   = "audit:read"
	PermVerify      = "verify"
	PermApprove     = "approve"
)

// ScopeApprove lets a token approve or deny access requests in its
// keyspace (in every keyspace, for a default-keyspace token).
const ScopeApprove = "latchkey:approve"

// Limits on tenancy objects.
const (
	MaxKeyspaces     = 1000
	MaxRolesPerSpace = 500
	MaxRolesPerToken = 16
	MaxNameLen       = 64
	// BudgetPrefix marks a shared usage budget (an identity's) in the
	// series Store.ConsumeUse spends from; token ids never contain ':'.
	BudgetPrefix = "identity:"
)

// KeyspaceScope is the admin scope for perm in keyspace ks.
func KeyspaceScope(ks, perm string) string { return KeyspaceScopePrefix + ks + ":" + perm }

// ValidateName checks a keyspace, role or identity-free name: 1 to
// MaxNameLen of [a-z0-9-], starting with a letter (it becomes part of
// scopes and setting keys).
func ValidateName(kind, name string) error {
	if name == "" || len(name) > MaxNameLen {
		return Errorf(EInvalid, "%s name must be 1 to %d characters", kind, MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' && i > 0) || i == 0 && !('a' <= c && c <= 'z') {
			return Errorf(EInvalid, "%s name %q: use lowercase letters, digits and '-', starting with a letter", kind, name)
		}
	}
	return nil
}

// KeyspaceSubject is the Subject of the audit records of a keyspace's own
// changes (its policy, roles, identities, access requests), so that its
// admins see them: "keyspace:<name>".
func KeyspaceSubject(ks string) string { return "keyspace:" + ks }

// KeyspaceOf returns the keyspace a token of keyspace ks belongs to: ks,
// or DefaultKeyspace for "".
func KeyspaceOf(ks string) string {
	if ks == "" {
		return DefaultKeyspace
	}
	return ks
}

// SplitKeyspaceScope splits "latchkey:keyspaces.<ks>:<perm>".
func SplitKeyspaceScope(s string) (ks, perm string, ok bool) {
	rest, ok := strings.CutPrefix(s, KeyspaceScopePrefix)
	if !ok {
		return "", "", false
	}
	ks, perm, ok = strings.Cut(rest, ":")
	return ks, perm, ok && ks != "" && perm != ""
}

// keyspaceAdminCovers is ScopeCovers' rule for keyspace admins:
// "latchkey:keyspaces.<ks>:admin" covers every scope of keyspace ks
// ("<ks>" may be "*").
func keyspaceAdminCovers(granted, required string) bool {
	gks, gperm, ok := SplitKeyspaceScope(granted)
	if !ok || gperm != PermAdmin {
		return false
	}
	rks, _, ok := SplitKeyspaceScope(required)
	return ok && (gks == "*" || gks == rks)
}

// Reach is where a token's admin grants for one permission apply.
type Reach struct {
	// All: every keyspace (a default-keyspace token holding the global
	// scope, e.g. latchkey:tokens:read or latchkey:admin).
	All bool
	// Keyspaces lists the keyspaces otherwise reached.
	Keyspaces []string
}

// Has reports whether ks is within reach.
func (r Reach) Has(ks string) bool {
	if r.All {
		return true
	}
	ks = KeyspaceOf(ks)
	for _, k := range r.Keyspaces {
		if k == ks {
			return true
		}
	}
	return false
}

// Any reports whether anything is within reach.
func (r Reach) Any() bool { return r.All || len(r.Keyspaces) > 0 }

// ReachOf works out where the grants of a token of keyspace tokenKS
// allow perm. A global grant ("latchkey:"+perm, or latchkey:admin)
// reaches every keyspace from a default-keyspace token and the token's
// own keyspace from any other. A keyspace grant
// ("latchkey:keyspaces.<ks>:"+perm, or ":admin") reaches that keyspace,
// and only from a default-keyspace token or one of that keyspace: a
// token never acts outside its own keyspace.
func ReachOf(tokenKS string, granted []string, perm string) Reach {
	tokenKS = KeyspaceOf(tokenKS)
	var r Reach
	add := func(ks string) {
		for _, k := range r.Keyspaces {
			if k == ks {
				return
			}
		}
		r.Keyspaces = append(r.Keyspaces, ks)
	}
	for _, g := range granted {
		if ks, gperm, ok := SplitKeyspaceScope(g); ok {
			if gperm != PermAdmin && !ScopeCovers("latchkey:"+gperm, "latchkey:"+perm) {
				continue
			}
			switch {
			case ks == "*" && tokenKS == DefaultKeyspace:
				r.All = true
			case ks == "*" || ks == tokenKS:
				add(tokenKS)
			case tokenKS == DefaultKeyspace:
				add(ks)
			}
			continue
		}
		if ScopeCovers(g, "latchkey:"+perm) {
			if tokenKS == DefaultKeyspace {
				r.All = true
			} else {
				add(tokenKS)
			}
		}
	}
	if r.All {
		r.Keyspaces = nil
	}
	return r
}

// HoldsPermission reports whether a token of keyspace tokenKS with these
// grants may use perm in some keyspace: the check that admits a call to
// an admin endpoint, which then narrows what it shows to the token's
// reach.
// perm may name alternatives separated by "|" ("audit:read|approve").
func HoldsPermission(tokenKS string, granted []string, perm string) bool {
	for p := range strings.SplitSeq(perm, "|") {
		if ReachOf(tokenKS, granted, p).Any() {
			return true
		}
	}
	return false
}

// Keyspace is one product's or team's set of tokens: one prefix, one
// policy, its own admin scopes.
type Keyspace struct {
	Name string `json:"name"`
	// Prefix is every token's prefix in this keyspace (e.g. "acme_live").
	Prefix      string         `json:"prefix"`
	Description string         `json:"description,omitempty"`
	Policy      KeyspacePolicy `json:"policy"`
	CreatedAt   time.Time      `json:"created_at,omitzero"`
	CreatedBy   string         `json:"created_by,omitempty"`
	UpdatedAt   time.Time      `json:"updated_at,omitzero"`
	UpdatedBy   string         `json:"updated_by,omitempty"`
}

// KeyspacePolicy is a keyspace's rules for the tokens issued in it, on
// top of the server's own policy (the stricter of the two applies).
type KeyspacePolicy struct {
	DefaultTTL     Duration `json:"default_ttl,omitzero"`
	MaxLifetime    Duration `json:"max_lifetime,omitzero"`
	RequireExpiry  bool     `json:"require_expiry,omitempty"`
	RotateAfter    Duration `json:"rotate_after,omitzero"`
	MaxIdleTimeout Duration `json:"max_idle_timeout,omitzero"`
	// Requests are the scopes that may be asked for with an access
	// request, and how many approvals each needs. A scope no rule covers
	// cannot be requested.
	Requests []ApprovalRule `json:"requests,omitempty"`
	// RequestTTL is how long a request waits for its decision (default
	// 24h); ClaimTTL how long an approved one can be claimed (default 1h).
	RequestTTL Duration `json:"request_ttl,omitzero"`
	ClaimTTL   Duration `json:"claim_ttl,omitzero"`
}

// ApprovalRule says that scopes covered by Scopes need Approvals distinct
// approvers, and that the token issued lives at most MaxTTL.
type ApprovalRule struct {
	Scopes    []string `json:"scopes"`
	Approvals int      `json:"approvals"`
	MaxTTL    Duration `json:"max_ttl"`
}

// Role is a named set of scopes within a keyspace, resolved at
// verification: changing it changes every token holding it.
type Role struct {
	Keyspace    string    `json:"keyspace"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Scopes      []string  `json:"scopes"`
	UpdatedAt   time.Time `json:"updated_at,omitzero"`
	UpdatedBy   string    `json:"updated_by,omitempty"`
	Version     int64     `json:"version"`
}

// Identity is a subject of a keyspace whose limits are shared by all its
// tokens: a customer's three keys spend one rate limit and one budget.
type Identity struct {
	Keyspace  string     `json:"keyspace"`
	Subject   string     `json:"subject"`
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	MaxUses   int64      `json:"max_uses,omitempty"`
	UpdatedAt time.Time  `json:"updated_at,omitzero"`
	UpdatedBy string     `json:"updated_by,omitempty"`
}

// BudgetKey names an identity's shared usage budget (Store.SetBudget).
func (id *Identity) BudgetKey() string { return BudgetPrefix + id.Keyspace + "/" + id.Subject }

// Access request states.
const (
	RequestPending  = "pending"
	RequestApproved = "approved"
	RequestDenied   = "denied"
	RequestClaimed  = "claimed"
	RequestExpired  = "expired"
)

// AccessRequest is a person's or service's request for a token, issued
// only once enough approvers agree.
type AccessRequest struct {
	ID        string    `json:"id"`
	Keyspace  string    `json:"keyspace"`
	Scopes    []string  `json:"scopes"`
	TTL       Duration  `json:"ttl"`
	Reason    string    `json:"reason"`
	Requester string    `json:"requester"`          // the requesting token's subject
	RequestBy string    `json:"requested_by"`       // the requesting token's id
	Status    string    `json:"status"`             // pending, approved, denied, claimed, expired
	Needed    int       `json:"approvals_required"` // distinct approvers needed
	Approvals []Verdict `json:"approvals"`
	Denial    *Verdict  `json:"denial,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`         // pending until then
	ClaimBy   time.Time `json:"claim_by,omitzero"`  // once approved
	TokenID   string    `json:"token_id,omitempty"` // once claimed
	// ClaimHash is SHA-256 of the claim code, hex. Never serialised.
	ClaimHash string `json:"-"`
}

// Verdict is one approver's decision.
type Verdict struct {
	By      string    `json:"by"`      // the approver's token id
	Subject string    `json:"subject"` // and subject
	At      time.Time `json:"at"`
	Comment string    `json:"comment,omitempty"`
}

// StateAt is the request's status at now: a pending request past its
// deadline, or an approved one past its claim window, is expired.
func (r *AccessRequest) StateAt(now time.Time) string {
	switch {
	case r.Status == RequestPending && !now.Before(r.ExpiresAt),
		r.Status == RequestApproved && !now.Before(r.ClaimBy):
		return RequestExpired
	}
	return r.Status
}
