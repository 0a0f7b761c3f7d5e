package postgres

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/internal/auditrow"
)

// AppendAudit stores evs in one transaction, linking each to its node's
// chain and setting Seq and Hash.
func (db *DB) AppendAudit(ctx context.Context, evs []latchkey.AuditEvent) error {
	if len(evs) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error { return insertAudit(ctx, tx, evs) })
}

func appendEvent(ctx context.Context, tx pgx.Tx, ev *latchkey.AuditEvent) error {
	if ev == nil {
		return nil
	}
	return insertAudit(ctx, tx, []latchkey.AuditEvent{*ev})
}

// insertAudit locks each node's chain head (so one node's records are
// linked in order however many writers it has), takes sequence numbers
// after the lock, links and inserts the records, and moves the heads.
func insertAudit(ctx context.Context, tx pgx.Tx, evs []latchkey.AuditEvent) error {
	var nodes []string
	seen := map[string]bool{}
	for i := range evs {
		if n := evs[i].Node; !seen[n] {
			seen[n] = true
			nodes = append(nodes, n)
		}
	}
	sort.Strings(nodes) // a fixed lock order: no deadlock between writers
	head := map[string]string{}
	for _, n := range nodes {
		if _, err := tx.Exec(ctx, `INSERT INTO audit_heads (node, hash) VALUES ($1, '') ON CONFLICT (node) DO NOTHING`, n); err != nil {
			return fmt.Errorf("postgres: audit chain: %w", err)
		}
		var h string
		if err := tx.QueryRow(ctx, `SELECT hash FROM audit_heads WHERE node = $1 FOR UPDATE`, n).Scan(&h); err != nil {
			return fmt.Errorf("postgres: audit chain: %w", err)
		}
		head[n] = h
	}
	rows, err := tx.Query(ctx, `SELECT nextval(pg_get_serial_sequence('audit_events', 'seq')) FROM generate_series(1, $1)`, len(evs))
	if err != nil {
		return fmt.Errorf("postgres: append audit: %w", err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("postgres: append audit: %w", err)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	n := len(evs)
	cols := struct {
		seq, tm                                         []int64
		node, kind, action, tok, subj, out, ip, rest, h []string
	}{make([]int64, n), make([]int64, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)}
	var buf []byte
	for i := range evs {
		ev := &evs[i]
		ev.Time = latchkey.TimeOf(ev.Time)
		ev.Seq = seqs[i]
		ev.Hash = latchkey.ChainHash(head[ev.Node], ev)
		head[ev.Node] = ev.Hash
		buf = auditrow.AppendRest(buf[:0], ev)
		cols.seq[i], cols.tm[i], cols.node[i], cols.kind[i], cols.action[i] = ev.Seq, micros(ev.Time), ev.Node, ev.Kind, ev.Action
		cols.tok[i], cols.subj[i], cols.out[i], cols.ip[i], cols.rest[i], cols.h[i] = ev.TokenID, ev.Subject, ev.Outcome, ev.ClientIP, string(buf), ev.Hash
	}
	if _, err := tx.Exec(ctx, `INSERT INTO audit_events (seq, time, node, kind, action, token_id, subject, outcome, client_ip, rest, hash)
		SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])`,
		cols.seq, cols.tm, cols.node, cols.kind, cols.action, cols.tok, cols.subj, cols.out, cols.ip, cols.rest, cols.h); err != nil {
		return fmt.Errorf("postgres: append audit: %w", err)
	}
	for _, nd := range nodes {
		if _, err := tx.Exec(ctx, `UPDATE audit_heads SET hash = $2 WHERE node = $1`, nd, head[nd]); err != nil {
			return fmt.Errorf("postgres: audit chain: %w", err)
		}
	}
	return nil
}

// ListAudit returns a page of audit events.
func (db *DB) ListAudit(ctx context.Context, f latchkey.AuditFilter) (latchkey.AuditPage, error) {
	return listAudit(ctx, db.pool, f, 0)
}

func listAudit(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, f latchkey.AuditFilter, maxSeq int64) (latchkey.AuditPage, error) {
	var where []string
	var a args
	add := func(cond string, v any) { where = append(where, cond+" "+a.add(v)) }
	if maxSeq > 0 {
		add("seq <=", maxSeq)
	}
	if f.Node != "" {
		add("node =", f.Node)
	}
	if f.TokenID != "" {
		add("token_id =", f.TokenID)
	}
	if f.Keyspace != "" {
		// The keyspace's tokens' records, and its own (roles, requests...).
		where = append(where, "(token_id IN (SELECT id FROM tokens WHERE keyspace = "+a.add(f.Keyspace)+") OR subject = "+a.add(latchkey.KeyspaceSubject(f.Keyspace))+")")
	}
	if f.Subject != "" {
		add("subject =", f.Subject)
	}
	if f.Outcome != "" {
		add("outcome =", f.Outcome)
	}
	if f.Kind != "" {
		add("kind =", f.Kind)
	}
	if f.Action != "" {
		add("action =", f.Action)
	}
	if !f.Since.IsZero() {
		add("time >=", micros(f.Since))
	}
	if !f.Until.IsZero() {
		add("time <", micros(f.Until))
	}
	order := "DESC"
	switch {
	case f.After > 0 || f.Ascending:
		add("seq >", f.After)
		order = "ASC"
	case f.Cursor != "":
		seq, err := latchkey.DecodeCursor(f.Cursor)
		if err != nil {
			return latchkey.AuditPage{}, err
		}
		add("seq <", seq)
	}
	limit := latchkey.PageLimit(f.Limit)
	query := `SELECT seq, time, node, kind, action, token_id, subject, outcome, client_ip, rest, hash FROM audit_events`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY seq " + order + " LIMIT " + a.add(limit+1)
	rows, err := q.Query(ctx, query, a.v...)
	if err != nil {
		return latchkey.AuditPage{}, fmt.Errorf("postgres: list audit: %w", err)
	}
	defer rows.Close()
	var page latchkey.AuditPage
	for rows.Next() {
		var ev latchkey.AuditEvent
		var t int64
		var rs string
		if err := rows.Scan(&ev.Seq, &t, &ev.Node, &ev.Kind, &ev.Action, &ev.TokenID, &ev.Subject, &ev.Outcome, &ev.ClientIP, &rs, &ev.Hash); err != nil {
			return latchkey.AuditPage{}, fmt.Errorf("postgres: list audit: %w", err)
		}
		ev.Time = time.UnixMicro(t).UTC()
		if err := auditrow.DecodeRest([]byte(rs), &ev); err != nil {
			return latchkey.AuditPage{}, fmt.Errorf("postgres: audit record %d: %w", ev.Seq, err)
		}
		page.Events = append(page.Events, ev)
	}
	if err := rows.Err(); err != nil {
		return latchkey.AuditPage{}, fmt.Errorf("postgres: list audit: %w", err)
	}
	if len(page.Events) > limit {
		page.Events = page.Events[:limit]
		page.Next = latchkey.EncodeCursor(page.Events[limit-1].Seq)
	}
	return page, nil
}

// AuditNodes lists the nodes with records or anchors.
func (db *DB) AuditNodes(ctx context.Context) ([]string, error) {
	rows, err := db.pool.Query(ctx, `SELECT DISTINCT node FROM audit_events UNION SELECT node FROM audit_anchors ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("postgres: audit nodes: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// AuditAnchors lists the anchors of pruned chains.
func (db *DB) AuditAnchors(ctx context.Context) ([]latchkey.AuditAnchor, error) {
	rows, err := db.pool.Query(ctx, `SELECT node, seq, hash, at FROM audit_anchors ORDER BY node`)
	if err != nil {
		return nil, fmt.Errorf("postgres: audit anchors: %w", err)
	}
	defer rows.Close()
	var out []latchkey.AuditAnchor
	for rows.Next() {
		var a latchkey.AuditAnchor
		var at int64
		if err := rows.Scan(&a.Node, &a.Seq, &a.Hash, &at); err != nil {
			return nil, err
		}
		a.At = time.UnixMicro(at).UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}

// PruneAudit deletes old records node by node, archiving them first and
// anchoring the chain at the last one deleted.
func (db *DB) PruneAudit(ctx context.Context, before time.Time, archive func([]latchkey.AuditEvent) error) (int64, error) {
	nodes, err := db.AuditNodes(ctx)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, node := range nodes {
		var n int64
		err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
			var cut *int64
			if err := tx.QueryRow(ctx, `SELECT min(seq) - 1 FROM audit_events WHERE node = $1 AND time >= $2`, node, micros(before)).Scan(&cut); err != nil {
				return err
			}
			if cut == nil {
				if err := tx.QueryRow(ctx, `SELECT max(seq) FROM audit_events WHERE node = $1`, node).Scan(&cut); err != nil {
					return err
				}
			}
			if cut == nil || *cut < 1 {
				return nil
			}
			var last latchkey.AuditEvent
			for after := int64(0); ; {
				page, err := listAudit(ctx, tx, latchkey.AuditFilter{Node: node, After: after, Ascending: true, Limit: latchkey.MaxPageLimit}, *cut)
				if err != nil {
					return err
				}
				if len(page.Events) == 0 {
					break
				}
				if archive != nil {
					if err := archive(page.Events); err != nil {
						return fmt.Errorf("archive: %w", err)
					}
				}
				n += int64(len(page.Events))
				last = page.Events[len(page.Events)-1]
				after = last.Seq
			}
			if n == 0 {
				return nil
			}
			if _, err := tx.Exec(ctx, `INSERT INTO audit_anchors (node, seq, hash, at) VALUES ($1, $2, $3, $4)
				ON CONFLICT (node) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at`,
				node, last.Seq, last.Hash, micros(time.Now())); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DELETE FROM audit_events WHERE node = $1 AND seq <= $2`, node, *cut)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("postgres: prune audit: %w", err)
		}
		total += n
	}
	return total, nil
}
