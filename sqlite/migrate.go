package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/internal/auditrow"
	"github.com/latchkeyhq/latchkey/internal/tokenrow"
)

// goMigrations are steps a migration's SQL cannot take, run after it in
// the same transaction.
var goMigrations = map[int]func(ctx context.Context, tx *sql.Tx) error{
	8:  moveAuditIntoChunks,
	9:  indexAuditSources,
	10: fillTokenTerms,
}

// fillTokenTerms gives the tokens already stored their search terms (the
// update trigger indexes them), a page of tokens at a time.
func fillTokenTerms(ctx context.Context, tx *sql.Tx) error {
	return tokenrow.FillTerms(ctx, func(after int64) ([]*latchkey.Token, []int64, error) {
		return queryTokens(ctx, tx, `SELECT `+tokenColumns+` FROM tokens WHERE seq > ? ORDER BY seq LIMIT ?`, after, tokenrow.FillPage)
	}, func(seq int64, terms string) error {
		_, err := tx.ExecContext(ctx, `UPDATE tokens SET terms = ? WHERE seq = ?`, terms, seq)
		return err
	})
}

// indexAuditSources fills audit_sources from the chunks already stored, a
// page of chunks at a time (no rows open while it writes).
func indexAuditSources(ctx context.Context, tx *sql.Tx) error {
	for after := int64(-1); ; {
		rows, err := tx.QueryContext(ctx, `SELECT `+chunkColumns+` FROM audit_chunks WHERE last_seq > ? ORDER BY last_seq LIMIT 64`, after)
		if err != nil {
			return err
		}
		var page []chunk
		for rows.Next() {
			var c chunk
			if err := scanChunk(rows, &c); err != nil {
				rows.Close()
				return err
			}
			page = append(page, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, c := range page {
			evs, _, err := c.decode()
			if err != nil {
				return fmt.Errorf("audit records %d-%d: %w", c.last-c.n+1, c.last, err)
			}
			ips := make([]string, len(evs))
			for i := range evs {
				ips[i] = evs[i].ClientIP
			}
			if keys := sourceKeys(ips); len(keys) > 0 {
				list, _ := json.Marshal(keys)
				if _, err := tx.ExecContext(ctx, sourceIndexInsert, string(list), c.last>>sourceSegBits); err != nil {
					return err
				}
			}
			after = c.last
		}
		if len(page) < 64 {
			return nil
		}
	}
}

// moveAuditIntoChunks moves every row of audit_events into audit_chunks,
// in seq order, as chunks of consecutive records of one node (a gap in
// seq, left by pruning, starts a new chunk), in chain format 1: their
// hashes stay what they were, so a chain that held still holds and one
// that was broken is still found broken. Rows written before the chain
// existed (no hash) are linked as they are moved. Then audit_events goes.
func moveAuditIntoChunks(ctx context.Context, tx *sql.Tx) error {
	heads := map[string][sha256.Size]byte{} // node → hash after its latest moved record
	anchors, err := tx.QueryContext(ctx, `SELECT node, hash FROM audit_anchors`)
	if err != nil {
		return err
	}
	for anchors.Next() {
		var node, h string
		if err := anchors.Scan(&node, &h); err != nil {
			anchors.Close()
			return err
		}
		heads[node] = auditrow.ParseHash(h)
	}
	anchors.Close()
	if err := anchors.Err(); err != nil {
		return err
	}
	ins, err := tx.PrepareContext(ctx, chunkInsert)
	if err != nil {
		return err
	}
	defer ins.Close()
	idx, err := tx.PrepareContext(ctx, tokenIndexInsert(1))
	if err != nil {
		return err
	}
	defer idx.Close()

	var run []latchkey.AuditEvent
	var stored []string // each run record's stored hash ("" before the chain existed)
	write := func() error {
		if len(run) == 0 {
			return nil
		}
		node := run[0].Node
		prev := heads[node]
		ch := auditrow.NewChain(auditrow.ChainV1, prev, node)
		var b []byte
		var enc auditrow.Writer
		var h [sha256.Size]byte
		tmin, tmax := int64(1<<63-1), int64(-1<<63)
		for i := range run {
			ev := &run[i]
			b = enc.Append(b, ev)
			computed := ch.Next(ev, nil)
			h = computed
			if stored[i] != "" {
				// The stored hash is what the chain promised: keep it, so a
				// record edited before the move still fails to match.
				h = auditrow.ParseHash(stored[i])
				ch = auditrow.NewChain(auditrow.ChainV1, h, node)
			}
			t := micros(ev.Time)
			tmin, tmax = min(tmin, t), max(tmax, t)
		}
		last := run[len(run)-1].Seq
		if _, err := ins.ExecContext(ctx, last, len(run), node, tmin, tmax, auditrow.ChainV1, prev[:], h[:], b); err != nil {
			return err
		}
		seen := map[string]bool{}
		for i := range run {
			if id := run[i].TokenID; id != "" && !seen[id] {
				seen[id] = true
				if _, err := idx.ExecContext(ctx, id, last); err != nil {
					return err
				}
			}
		}
		heads[node] = h
		run, stored = run[:0], stored[:0]
		return nil
	}
	// In pages of seq, so that memory stays bounded and no rows are open
	// while chunks are written.
	for after := int64(0); ; {
		page, hashes, err := legacyPage(ctx, tx, after)
		if err != nil {
			return err
		}
		for i := range page {
			ev := &page[i]
			if len(run) > 0 && (ev.Node != run[0].Node || ev.Seq != run[len(run)-1].Seq+1 || len(run) == auditrow.MaxChunk) {
				if err := write(); err != nil {
					return err
				}
			}
			run = append(run, *ev)
			stored = append(stored, hashes[i])
			after = ev.Seq
		}
		if len(page) < legacyPageSize {
			break
		}
	}
	if err := write(); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `DROP TABLE audit_events`)
	return err
}

const legacyPageSize = 10000

// legacyPage reads the rows of audit_events after seq after, and their
// stored hashes.
func legacyPage(ctx context.Context, tx *sql.Tx, after int64) ([]latchkey.AuditEvent, []string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT seq, time, node, kind, action, token_id, subject, outcome, client_ip, rest, hash
		FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?`, after, legacyPageSize)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var evs []latchkey.AuditEvent
	var hashes []string
	for rows.Next() {
		var (
			ev   latchkey.AuditEvent
			t    int64
			rest string
			hash string
		)
		if err := rows.Scan(&ev.Seq, &t, &ev.Node, &ev.Kind, &ev.Action, &ev.TokenID, &ev.Subject, &ev.Outcome, &ev.ClientIP, &rest, &hash); err != nil {
			return nil, nil, err
		}
		ev.Time = time.UnixMicro(t).UTC()
		if err := auditrow.DecodeRest([]byte(rest), &ev); err != nil {
			return nil, nil, fmt.Errorf("audit record %d: %w", ev.Seq, err)
		}
		evs = append(evs, ev)
		hashes = append(hashes, hash)
	}
	return evs, hashes, rows.Err()
}
