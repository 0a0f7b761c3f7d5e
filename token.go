package latchkey

import (
	"encoding/json"
	"slices"
	"time"
)

// Status is a token's administrative state.
type Status string

// Token statuses. Suspended may be resumed; Revoked is final.
const (
	StatusActive    Status = "active"
	StatusSuspended Status = "suspended"
	StatusRevoked   Status = "revoked"
)

// Effective statuses: what an active token amounts to at a moment (see
// EffectiveStatus). They are never stored.
const (
	StatusExpired Status = "expired" // past its expiry
	StatusIdle    Status = "idle"    // unused for longer than its idle timeout
	StatusRotated Status = "rotated" // replaced by rotation; working out its grace
)

// EffectiveStatus is the token's status as a person means it at now: an
// active token past its expiry is expired, one unused past its idle
// timeout is idle, one that has a successor is rotated. A suspended or
// revoked token is just that.
func (t *Token) EffectiveStatus(now time.Time) Status {
	switch {
	case t.Status != StatusActive:
		return t.Status
	case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
		return StatusExpired
	case t.IdleTimeout > 0 && !now.Before(latest(t.CreatedAt, t.NotBefore, t.LastUsedAt).Add(time.Duration(t.IdleTimeout))):
		return StatusIdle
	case t.SuccessorID != "":
		return StatusRotated
	}
	return StatusActive
}

func latest(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}

// Token is the stored record of one token. It never holds the plaintext:
// only Hash, the keyed hash of the id and secret (docs/architecture.md §1).
//
// Zero times mean "not set": no expiry, no not-before, never used.
// Times are UTC and truncated to microseconds, the precision every store
// keeps.
type Token struct {
	ID     string `json:"id"`
	Prefix string `json:"prefix"`
	// Keyspace is the keyspace the token belongs to (DefaultKeyspace for
	// every token made before keyspaces existed); it never changes.
	Keyspace string `json:"keyspace"`
	// Roles are role names within the keyspace, resolved to scopes at
	// verification (docs/architecture.md §11).
	Roles     []string        `json:"roles,omitempty"`
	Name      string          `json:"name"`
	Subject   string          `json:"subject"`
	Scopes    []string        `json:"scopes"`
	Tags      []string        `json:"tags"`
	Meta      json.RawMessage `json:"meta"`
	CreatedAt time.Time       `json:"created_at"`
	CreatedBy string          `json:"created_by"`
	ExpiresAt time.Time       `json:"expires_at,omitzero"`
	NotBefore time.Time       `json:"not_before,omitzero"`
	Status    Status          `json:"status"`
	// Effective is EffectiveStatus when the server answered: set in API
	// responses (token list and show), never stored.
	Effective Status `json:"effective_status,omitempty"`

	// Constraints, fixed at creation (docs/architecture.md §2 step 6 and 8).
	Constraints

	RevokedAt     time.Time `json:"revoked_at,omitzero"`
	RevokedBy     string    `json:"revoked_by,omitempty"`
	RevokedReason string    `json:"revoked_reason,omitempty"`
	// SuspendedVia is the id of the token whose suspension suspended this
	// one: its own id when suspended directly, an ancestor's when the
	// suspension cascaded. Resuming that token resumes this one.
	SuspendedAt     time.Time `json:"suspended_at,omitzero"`
	SuspendedBy     string    `json:"suspended_by,omitempty"`
	SuspendedReason string    `json:"suspended_reason,omitempty"`
	SuspendedVia    string    `json:"suspended_via,omitempty"`
	// LastUsedAt is written behind, coalesced (at most once per token per
	// interval), so it may lag the last verification by that interval.
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	// Uses counts VALID verifications of a usage-limited token (MaxUses >
	// 0). Tokens of one rotation series share one count.
	Uses int64 `json:"uses,omitempty"`

	// Lineage. ParentID is the token this one was derived from; Ancestors
	// lists every ancestor, parent first. PredecessorID and SuccessorID link
	// the two sides of a rotation; RotatedAt is when this token was rotated.
	ParentID      string    `json:"parent_id,omitempty"`
	Ancestors     []string  `json:"ancestors,omitempty"`
	PredecessorID string    `json:"predecessor_id,omitempty"`
	SuccessorID   string    `json:"successor_id,omitempty"`
	RotatedAt     time.Time `json:"rotated_at,omitzero"`
	// SeriesID names the rotation series: the id of its first token. Usage
	// budgets and rate limits belong to the series, so rotating a token
	// neither refills its budget nor resets its rate.
	SeriesID string `json:"-"`
	// Inherited lists the budgets and rates of ancestors that a derived
	// token must also respect, parent first (docs/architecture.md §3: a child can
	// never do more than its parent).
	Inherited []Inherited `json:"-"`

	// Version increases by one with every change; caches compare it.
	Version int64 `json:"version"`
	// Hash is HMAC-SHA256(server key, id || secret bytes). Never serialised.
	Hash []byte `json:"-"`
}

// Clone returns a deep copy, so a cached token can be changed safely.
func (t *Token) Clone() *Token {
	c := *t
	c.Scopes = append([]string(nil), t.Scopes...)
	c.Roles = slices.Clone(t.Roles)
	c.Tags = append([]string(nil), t.Tags...)
	c.Meta = append(json.RawMessage(nil), t.Meta...)
	c.Hash = append([]byte(nil), t.Hash...)
	c.Constraints = t.Constraints.Clone()
	c.Ancestors = slices.Clone(t.Ancestors)
	c.Inherited = slices.Clone(t.Inherited)
	return &c
}

// TimeOf normalises t to what every store keeps: UTC, microseconds.
func TimeOf(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(time.Microsecond)
}

// TokenFilter selects tokens in Store.ListTokens. Zero fields match all.
type TokenFilter struct {
	// Keyspace, when set, selects that keyspace's tokens only.
	Keyspace string
	Subject  string
	Status   Status
	Tag      string
	Prefix   string
	// ParentID selects the tokens derived directly from that token.
	ParentID string
	// RotationDue selects the tokens due for rotation under the server's
	// policy; the token service turns it into RotationDueBefore and Now.
	RotationDue bool
	// RotationDueBefore, when set, selects active tokens created before it
	// that have not been rotated and have not expired by Now.
	RotationDueBefore time.Time
	Now               time.Time
	// Expired (with Now) selects active tokens whose expiry is at or
	// before Now; Rotated selects active tokens with a successor that have
	// not expired by Now. The token service sets them for the effective
	// statuses "expired" and "rotated".
	Expired bool
	Rotated bool
	// Search selects the tokens that every word of it begins a word of:
	// of the name, the subject, a tag, or the id (ParseSearch, SearchTerms).
	Search string
	// ExpiresWithin (converted by ListWindow into ExpiresBefore, with Now)
	// selects active tokens that expire after Now and by ExpiresBefore.
	ExpiresWithin time.Duration
	ExpiresBefore time.Time
	// UnusedFor (converted by ListWindow into UnusedBefore) selects the
	// tokens not used since UnusedBefore, and created before it: those
	// never used at all included. NeverUsed selects the tokens never used.
	UnusedFor    time.Duration
	UnusedBefore time.Time
	NeverUsed    bool
	// Sort orders the listing (SortCreated, the default, SortExpires or
	// SortLastUsed) and Order ("asc" or "desc") reverses its natural
	// direction (Ordering). A cursor keeps to the order that gave it.
	Sort  string
	Order string
	// Count asks for the number of tokens matching (TokenPage.Total),
	// cursor aside.
	Count bool
	// Cursor continues a previous listing (opaque, from TokenPage.Next).
	Cursor string
	// Limit caps the page; the store applies a default and a maximum.
	Limit int
}

// TokenPage is one page of a token listing, in the filter's order.
type TokenPage struct {
	Tokens []*Token
	// Next is the cursor for the following page, "" on the last page.
	Next string
	// Total is the number of tokens matching, when TokenFilter.Count
	// asked for it.
	Total int64
}

// Series returns the id of t's rotation series (its own id for a token
// that is not a successor).
func (t *Token) Series() string {
	if t.SeriesID != "" {
		return t.SeriesID
	}
	return t.ID
}

// Inherited is one ancestor's limit that a derived token enforces as well
// as its own: a use of the child spends the ancestor's budget and rate.
type Inherited struct {
	SeriesID  string     `json:"series_id"`
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	MaxUses   int64      `json:"max_uses,omitempty"`
}

// TokenSelector picks tokens for a bulk change (Store.Select). Set exactly
// one of its selecting fields.
type TokenSelector struct {
	// Keyspace, when set, confines the selection (and its descendants)
	// to that keyspace; it is not a selecting field.
	Keyspace string
	IDs      []string
	Subject  string
	Tag      string
	Prefix   string
	// Parent selects the descendants of that token (not the token itself).
	Parent string
	// Descendants adds every descendant of the selected tokens.
	Descendants bool
}

// BulkOptions adjust a bulk revocation (tokens.Service.RevokeMatching).
type BulkOptions struct {
	// IncludeSelf revokes the caller's own token too when it matches (or
	// descends from a match). By default it is spared, with its
	// ancestors, so that "revoke --prefix lk" run with the root token
	// does not lock the operator out.
	IncludeSelf bool
	// DryRun changes nothing: the result says what would be revoked.
	DryRun bool
}

// TokenUse is one noted use, for Store.TouchTokens.
type TokenUse struct {
	ID string
	At time.Time
}
