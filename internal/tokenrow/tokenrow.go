// Package tokenrow is the part of a token's row layout the stores share:
// the fields kept as JSON text (scopes, tags, metadata, constraints,
// ancestors, inherited limits). Each store scans and binds the plain
// columns its own way and hands these to Encode and Decode.
package tokenrow

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// Columns are a token's JSON-held fields as stored.
type Columns struct {
	Scopes, Tags, Meta, Constraints, Ancestors, Inherited, Roles string
	// Terms are the words the token is found by (latchkey.SearchTerms),
	// written only: the stores index them in token_terms.
	Terms string
}

// Encode renders t's JSON-held fields. Lists are never null, and the
// usage limit is left out of the constraints: it has a column of its own,
// the one truth.
func Encode(t *latchkey.Token) (Columns, error) {
	var c Columns
	cons := t.Constraints
	cons.MaxUses = 0
	for _, f := range []struct {
		dst *string
		v   any
	}{{&c.Scopes, nonNil(t.Scopes)}, {&c.Tags, nonNil(t.Tags)}, {&c.Constraints, cons},
		{&c.Ancestors, nonNil(t.Ancestors)}, {&c.Inherited, nonNil(t.Inherited)}, {&c.Roles, nonNil(t.Roles)},
		{&c.Terms, latchkey.SearchTerms(t)}} {
		b, err := json.Marshal(f.v)
		if err != nil {
			return c, fmt.Errorf("encode token %s: %w", t.ID, err)
		}
		*f.dst = string(b)
	}
	c.Meta = string(t.Meta)
	if c.Meta == "" {
		c.Meta = "{}"
	}
	return c, nil
}

// Decode fills t's JSON-held fields from c. Empty lists and empty
// constraints, which most tokens have, are not parsed: a cache miss reads
// a token on the verification path. Ancestors and inherited limits come
// back nil when empty, tags as an empty list.
func Decode(t *latchkey.Token, c *Columns) error {
	for _, f := range []struct {
		name, src string
		dst       any
	}{{"scopes", c.Scopes, &t.Scopes}, {"tags", c.Tags, &t.Tags}, {"constraints", c.Constraints, &t.Constraints},
		{"ancestors", c.Ancestors, &t.Ancestors}, {"inherited", c.Inherited, &t.Inherited}, {"roles", c.Roles, &t.Roles}} {
		switch {
		case f.src == "{}" && f.name == "constraints", f.src == "[]" && (f.name == "ancestors" || f.name == "inherited" || f.name == "roles"):
			continue // the zero value is right
		case f.src == "[]" && f.name == "tags":
			t.Tags = []string{} // empty, not absent (no allocation)
			continue
		}
		if err := json.Unmarshal([]byte(f.src), f.dst); err != nil {
			return fmt.Errorf("token %s: %s: %w", t.ID, f.name, err)
		}
	}
	t.Meta = json.RawMessage(c.Meta)
	if len(t.Ancestors) == 0 {
		t.Ancestors = nil
	}
	if len(t.Inherited) == 0 {
		t.Inherited = nil
	}
	if len(t.Roles) == 0 {
		t.Roles = nil
	}
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// Row receives a token row in the stores' shared column order (each
// store's tokenColumns): Scan into Dest, then take Token. Times are Unix
// microseconds; nullable ones scan as nil.
type Row struct {
	t       latchkey.Token
	seq     int64
	created int64
	cols    Columns
	status  string

	expires, notBefore, revokedAt, lastUsedAt, suspendedAt, rotatedAt, uses *int64
}

// Dest returns the scan destinations, in column order.
func (r *Row) Dest() []any {
	t := &r.t
	return []any{&r.seq, &t.ID, &t.Prefix, &t.Name, &t.Subject, &r.cols.Scopes, &r.cols.Tags, &r.cols.Meta, &r.created, &t.CreatedBy,
		&r.expires, &r.notBefore, &r.status, &r.revokedAt, &t.RevokedBy, &t.RevokedReason, &r.lastUsedAt, &t.Version, &t.Hash,
		&r.cols.Constraints, &t.MaxUses, &r.uses, &r.suspendedAt, &t.SuspendedBy, &t.SuspendedReason, &t.SuspendedVia,
		&t.ParentID, &r.cols.Ancestors, &t.PredecessorID, &t.SuccessorID, &r.rotatedAt, &t.SeriesID, &r.cols.Inherited, &t.Keyspace, &r.cols.Roles}
}

// Token returns the scanned token and its row's sequence number.
func (r *Row) Token() (*latchkey.Token, int64, error) {
	t := r.t
	if err := Decode(&t, &r.cols); err != nil {
		return nil, 0, err
	}
	t.Status = latchkey.Status(r.status)
	t.CreatedAt = time.UnixMicro(r.created).UTC()
	t.ExpiresAt, t.NotBefore = fromMicros(r.expires), fromMicros(r.notBefore)
	t.RevokedAt, t.LastUsedAt = fromMicros(r.revokedAt), fromMicros(r.lastUsedAt)
	t.SuspendedAt, t.RotatedAt = fromMicros(r.suspendedAt), fromMicros(r.rotatedAt)
	if r.uses != nil {
		t.Uses = *r.uses
	}
	return &t, r.seq, nil
}

func fromMicros(v *int64) time.Time {
	if v == nil {
		return time.Time{}
	}
	return time.UnixMicro(*v).UTC()
}

// Rows is what both drivers' result sets offer (*sql.Rows, pgx.Rows).
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// ScanAll reads every token row of rows, with their sequence numbers.
// The caller closes rows.
func ScanAll(rows Rows) ([]*latchkey.Token, []int64, error) {
	var toks []*latchkey.Token
	var seqs []int64
	for rows.Next() {
		var r Row
		if err := rows.Scan(r.Dest()...); err != nil {
			return nil, nil, err
		}
		t, seq, err := r.Token()
		if err != nil {
			return nil, nil, err
		}
		toks, seqs = append(toks, t), append(seqs, seq)
	}
	return toks, seqs, rows.Err()
}
