package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// PutBlock stores or extends a block, with its audit event.
func (db *DB) PutBlock(ctx context.Context, b latchkey.Block, ev *latchkey.AuditEvent) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: put block: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO blocks (source, until, rule, reason, created_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (source) DO UPDATE SET until = max(until, excluded.until), rule = excluded.rule, reason = excluded.reason`,
		b.Source, micros(b.Until), b.Rule, b.Reason, micros(b.CreatedAt)); err != nil {
		return fmt.Errorf("sqlite: put block: %w", err)
	}
	if ev != nil {
		if err := db.insertAudit(ctx, tx, []latchkey.AuditEvent{*ev}, nil); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// DeleteBlock removes a block, with its audit event.
func (db *DB) DeleteBlock(ctx context.Context, source string, ev *latchkey.AuditEvent) (bool, error) {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("sqlite: delete block: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM blocks WHERE source = ?`, source)
	if err != nil {
		return false, fmt.Errorf("sqlite: delete block: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, nil
	}
	if ev != nil {
		if err := db.insertAudit(ctx, tx, []latchkey.AuditEvent{*ev}, nil); err != nil {
			return false, err
		}
	}
	return true, tx.Commit()
}

// ListBlocks returns the blocks in force at now, soonest to expire first.
func (db *DB) ListBlocks(ctx context.Context, now time.Time) ([]latchkey.Block, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT source, until, rule, reason, created_at FROM blocks WHERE until > ? ORDER BY until, source`, micros(now))
	if err != nil {
		return nil, fmt.Errorf("sqlite: list blocks: %w", err)
	}
	defer rows.Close()
	var out []latchkey.Block
	for rows.Next() {
		var b latchkey.Block
		var until, created int64
		if err := rows.Scan(&b.Source, &until, &b.Rule, &b.Reason, &created); err != nil {
			return nil, fmt.Errorf("sqlite: list blocks: %w", err)
		}
		b.Until, b.CreatedAt = time.UnixMicro(until).UTC(), time.UnixMicro(created).UTC()
		out = append(out, b)
	}
	return out, rows.Err()
}
