package latchkey

import (
	"encoding/json"
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

// Token is the stored record of one token. It never holds the plaintext:
// only Hash, the keyed hash of the id and secret (DESIGN.md §1).
//
// Zero times mean "not set": no expiry, no not-before, never used.
// Times are UTC and truncated to microseconds, the precision every store
// keeps.
type Token struct {
	ID        string          `json:"id"`
	Prefix    string          `json:"prefix"`
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

	RevokedAt     time.Time `json:"revoked_at,omitzero"`
	RevokedBy     string    `json:"revoked_by,omitempty"`
	RevokedReason string    `json:"revoked_reason,omitempty"`
	LastUsedAt    time.Time `json:"last_used_at,omitzero"`

	// Version increases by one with every change; caches compare it.
	Version int64 `json:"version"`
	// Hash is HMAC-SHA256(server key, id || secret bytes). Never serialised.
	Hash []byte `json:"-"`
}

// Clone returns a deep copy, so a cached token can be changed safely.
func (t *Token) Clone() *Token {
	c := *t
	c.Scopes = append([]string(nil), t.Scopes...)
	c.Tags = append([]string(nil), t.Tags...)
	c.Meta = append(json.RawMessage(nil), t.Meta...)
	c.Hash = append([]byte(nil), t.Hash...)
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
	Subject string
	Status  Status
	Tag     string
	Prefix  string
	// Cursor continues a previous listing (opaque, from TokenPage.Next).
	Cursor string
	// Limit caps the page; the store applies a default and a maximum.
	Limit int
}

// TokenPage is one page of a token listing, newest first.
type TokenPage struct {
	Tokens []*Token
	// Next is the cursor for the following page, "" on the last page.
	Next string
}
