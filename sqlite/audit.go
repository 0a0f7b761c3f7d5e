package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// AppendAudit stores evs in one transaction and sets each event's Seq.
func (db *DB) AppendAudit(ctx context.Context, evs []latchkey.AuditEvent) error {
	if len(evs) == 0 {
		return nil
	}
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: append audit: %w", err)
	}
	defer tx.Rollback()
	if err := insertAudit(ctx, tx, evs); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: append audit: %w", err)
	}
	return nil
}

func insertAudit(ctx context.Context, tx *sql.Tx, evs []latchkey.AuditEvent) error {
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO audit_events (time, node, request_id, kind, action, actor,
		token_id, subject, outcome, reason, scopes, client_ip, user_agent, method, path, latency_ns, detail)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("sqlite: append audit: %w", err)
	}
	defer stmt.Close()
	for i := range evs {
		ev := &evs[i]
		scopes, err := json.Marshal(nonNil(ev.Scopes))
		if err != nil {
			return fmt.Errorf("sqlite: append audit: %w", err)
		}
		res, err := stmt.ExecContext(ctx, micros(ev.Time), ev.Node, ev.RequestID, ev.Kind, ev.Action, ev.Actor,
			ev.TokenID, ev.Subject, ev.Outcome, ev.Reason, string(scopes), ev.ClientIP, ev.UserAgent,
			ev.Method, ev.Path, int64(ev.Latency), string(ev.Detail))
		if err != nil {
			return fmt.Errorf("sqlite: append audit: %w", err)
		}
		if ev.Seq, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("sqlite: append audit: %w", err)
		}
	}
	return nil
}

// ListAudit returns a page of audit events: newest first, or, with
// f.After set, oldest first from just after that sequence number.
func (db *DB) ListAudit(ctx context.Context, f latchkey.AuditFilter) (latchkey.AuditPage, error) {
	var where []string
	var args []any
	add := func(cond string, v any) { where, args = append(where, cond), append(args, v) }
	if f.TokenID != "" {
		add("token_id = ?", f.TokenID)
	}
	if f.Subject != "" {
		add("subject = ?", f.Subject)
	}
	if f.Outcome != "" {
		add("outcome = ?", f.Outcome)
	}
	if f.Kind != "" {
		add("kind = ?", f.Kind)
	}
	if !f.Since.IsZero() {
		add("time >= ?", micros(f.Since))
	}
	if !f.Until.IsZero() {
		add("time < ?", micros(f.Until))
	}
	order := "DESC"
	switch {
	case f.After > 0:
		add("seq > ?", f.After)
		order = "ASC"
	case f.Cursor != "":
		seq, err := latchkey.DecodeCursor(f.Cursor)
		if err != nil {
			return latchkey.AuditPage{}, err
		}
		add("seq < ?", seq)
	}
	limit := latchkey.PageLimit(f.Limit)
	q := `SELECT seq, time, node, request_id, kind, action, actor, token_id, subject, outcome, reason, scopes,
		client_ip, user_agent, method, path, latency_ns, detail FROM audit_events`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq " + order + " LIMIT ?"
	rows, err := db.r.QueryContext(ctx, q, append(args, limit+1)...)
	if err != nil {
		return latchkey.AuditPage{}, fmt.Errorf("sqlite: list audit: %w", err)
	}
	defer rows.Close()
	var page latchkey.AuditPage
	for rows.Next() {
		var (
			ev             latchkey.AuditEvent
			t, latency     int64
			scopes, detail string
		)
		if err := rows.Scan(&ev.Seq, &t, &ev.Node, &ev.RequestID, &ev.Kind, &ev.Action, &ev.Actor, &ev.TokenID,
			&ev.Subject, &ev.Outcome, &ev.Reason, &scopes, &ev.ClientIP, &ev.UserAgent, &ev.Method, &ev.Path,
			&latency, &detail); err != nil {
			return latchkey.AuditPage{}, fmt.Errorf("sqlite: list audit: %w", err)
		}
		ev.Time = time.UnixMicro(t).UTC()
		ev.Latency = time.Duration(latency)
		if err := json.Unmarshal([]byte(scopes), &ev.Scopes); err != nil {
			return latchkey.AuditPage{}, fmt.Errorf("sqlite: audit %d scopes: %w", ev.Seq, err)
		}
		if len(ev.Scopes) == 0 {
			ev.Scopes = nil
		}
		if detail != "" {
			ev.Detail = json.RawMessage(detail)
		}
		page.Events = append(page.Events, ev)
	}
	if err := rows.Err(); err != nil {
		return latchkey.AuditPage{}, fmt.Errorf("sqlite: list audit: %w", err)
	}
	if len(page.Events) > limit {
		page.Events = page.Events[:limit]
		page.Next = latchkey.EncodeCursor(page.Events[limit-1].Seq)
	}
	return page, nil
}
