package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/latchkeyhq/latchkey"
)

const tokenColumns = `seq, id, prefix, name, subject, scopes, tags, meta, created_at, created_by,
	expires_at, not_before, status, revoked_at, revoked_by, revoked_reason, last_used_at, version, hash`

// CreateToken inserts t and its audit event in one transaction.
func (db *DB) CreateToken(ctx context.Context, t *latchkey.Token, ev *latchkey.AuditEvent) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: create token: %w", err)
	}
	defer tx.Rollback()
	scopes, tags, meta, err := encodeLists(t)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO tokens (id, prefix, name, subject, scopes, tags, meta, created_at, created_by,
		expires_at, not_before, status, revoked_at, revoked_by, revoked_reason, last_used_at, version, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Prefix, t.Name, t.Subject, scopes, tags, meta, micros(t.CreatedAt), t.CreatedBy,
		nullMicros(t.ExpiresAt), nullMicros(t.NotBefore), string(t.Status), nullMicros(t.RevokedAt),
		t.RevokedBy, t.RevokedReason, nullMicros(t.LastUsedAt), t.Version, t.Hash)
	if isUniqueViolation(err) {
		return latchkey.Errorf(latchkey.EConflict, "a token with id %s already exists", t.ID)
	}
	if err != nil {
		return fmt.Errorf("sqlite: create token: %w", err)
	}
	if ev != nil {
		if err := insertAudit(ctx, tx, []latchkey.AuditEvent{*ev}); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: create token: %w", err)
	}
	return nil
}

// GetToken reads one token.
func (db *DB) GetToken(ctx context.Context, id string) (*latchkey.Token, error) {
	return getToken(ctx, db.r, id)
}

type queryer interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func getToken(ctx context.Context, q queryer, id string) (*latchkey.Token, error) {
	t, _, err := scanToken(q.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, latchkey.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get token: %w", err)
	}
	return t, nil
}

// ListTokens returns a page of tokens, newest first.
func (db *DB) ListTokens(ctx context.Context, f latchkey.TokenFilter) (latchkey.TokenPage, error) {
	var where []string
	var args []any
	if f.Subject != "" {
		where, args = append(where, "subject = ?"), append(args, f.Subject)
	}
	if f.Status != "" {
		where, args = append(where, "status = ?"), append(args, string(f.Status))
	}
	if f.Prefix != "" {
		where, args = append(where, "prefix = ?"), append(args, f.Prefix)
	}
	if f.Tag != "" {
		where, args = append(where, "EXISTS (SELECT 1 FROM json_each(tokens.tags) WHERE value = ?)"), append(args, f.Tag)
	}
	if f.Cursor != "" {
		seq, err := latchkey.DecodeCursor(f.Cursor)
		if err != nil {
			return latchkey.TokenPage{}, err
		}
		where, args = append(where, "seq < ?"), append(args, seq)
	}
	limit := latchkey.PageLimit(f.Limit)
	q := `SELECT ` + tokenColumns + ` FROM tokens`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq DESC LIMIT ?"
	rows, err := db.r.QueryContext(ctx, q, append(args, limit+1)...)
	if err != nil {
		return latchkey.TokenPage{}, fmt.Errorf("sqlite: list tokens: %w", err)
	}
	defer rows.Close()
	var page latchkey.TokenPage
	var seqs []int64
	for rows.Next() {
		t, seq, err := scanToken(rows)
		if err != nil {
			return latchkey.TokenPage{}, fmt.Errorf("sqlite: list tokens: %w", err)
		}
		page.Tokens, seqs = append(page.Tokens, t), append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return latchkey.TokenPage{}, fmt.Errorf("sqlite: list tokens: %w", err)
	}
	if len(page.Tokens) > limit {
		page.Tokens = page.Tokens[:limit]
		page.Next = latchkey.EncodeCursor(seqs[limit-1])
	}
	return page, nil
}

// UpdateToken applies fn to the token and stores the result and fn's audit
// event in one transaction.
func (db *DB) UpdateToken(ctx context.Context, id string, fn func(t *latchkey.Token) (*latchkey.AuditEvent, error)) (*latchkey.Token, error) {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: update token: %w", err)
	}
	defer tx.Rollback()
	t, err := getToken(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	old := t.Version
	ev, err := fn(t)
	if err != nil {
		return nil, err
	}
	t.ID, t.Version = id, old+1
	scopes, tags, meta, err := encodeLists(t)
	if err != nil {
		return nil, err
	}
	res, err := tx.ExecContext(ctx, `UPDATE tokens SET name = ?, subject = ?, scopes = ?, tags = ?, meta = ?,
		expires_at = ?, not_before = ?, status = ?, revoked_at = ?, revoked_by = ?, revoked_reason = ?,
		last_used_at = ?, version = ?, hash = ? WHERE id = ? AND version = ?`,
		t.Name, t.Subject, scopes, tags, meta, nullMicros(t.ExpiresAt), nullMicros(t.NotBefore), string(t.Status),
		nullMicros(t.RevokedAt), t.RevokedBy, t.RevokedReason, nullMicros(t.LastUsedAt), t.Version, t.Hash, id, old)
	if err != nil {
		return nil, fmt.Errorf("sqlite: update token: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return nil, latchkey.Errorf(latchkey.EConflict, "token %s changed concurrently; retry", id)
	}
	if ev != nil {
		if err := insertAudit(ctx, tx, []latchkey.AuditEvent{*ev}); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("sqlite: update token: %w", err)
	}
	return t, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanToken(s scanner) (*latchkey.Token, int64, error) {
	var (
		t                                         latchkey.Token
		seq                                       int64
		scopes, tags, meta, status                string
		created                                   int64
		expires, notBefore, revokedAt, lastUsedAt sql.NullInt64
	)
	err := s.Scan(&seq, &t.ID, &t.Prefix, &t.Name, &t.Subject, &scopes, &tags, &meta, &created, &t.CreatedBy,
		&expires, &notBefore, &status, &revokedAt, &t.RevokedBy, &t.RevokedReason, &lastUsedAt, &t.Version, &t.Hash)
	if err != nil {
		return nil, 0, err
	}
	if err := json.Unmarshal([]byte(scopes), &t.Scopes); err != nil {
		return nil, 0, fmt.Errorf("token %s: scopes: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(tags), &t.Tags); err != nil {
		return nil, 0, fmt.Errorf("token %s: tags: %w", t.ID, err)
	}
	t.Meta = json.RawMessage(meta)
	t.Status = latchkey.Status(status)
	t.CreatedAt = time.UnixMicro(created).UTC()
	t.ExpiresAt, t.NotBefore = fromMicros(expires), fromMicros(notBefore)
	t.RevokedAt, t.LastUsedAt = fromMicros(revokedAt), fromMicros(lastUsedAt)
	return &t, seq, nil
}

func encodeLists(t *latchkey.Token) (scopes, tags, meta string, err error) {
	s, err := json.Marshal(nonNil(t.Scopes))
	if err != nil {
		return "", "", "", fmt.Errorf("sqlite: encode scopes: %w", err)
	}
	g, err := json.Marshal(nonNil(t.Tags))
	if err != nil {
		return "", "", "", fmt.Errorf("sqlite: encode tags: %w", err)
	}
	m := string(t.Meta)
	if m == "" {
		m = "{}"
	}
	return string(s), string(g), m, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func nullMicros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func fromMicros(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.UnixMicro(n.Int64).UTC()
}
