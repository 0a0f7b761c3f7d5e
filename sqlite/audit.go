package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/internal/auditrow"
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
	if err := db.insertAudit(ctx, tx, evs); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: append audit: %w", err)
	}
	return nil
}

// insertAudit stores evs in tx, linking each to the previous record of
// its node. The writer connection serialises transactions, so reading the
// last hash and appending after it cannot interleave with another writer.
func (db *DB) insertAudit(ctx context.Context, tx *sql.Tx, evs []latchkey.AuditEvent) error {
	last := map[string]string{} // node → hash of its latest record
	var err error
	for i := range evs {
		ev := &evs[i]
		ev.Time = latchkey.TimeOf(ev.Time)
		prev, ok := last[ev.Node]
		if !ok {
			if prev, err = lastHash(ctx, tx, ev.Node); err != nil {
				return err
			}
		}
		ev.Hash = latchkey.ChainHash(prev, ev)
		last[ev.Node] = ev.Hash
	}
	// Many rows per statement: the per-statement cost of database/sql and
	// the driver is paid once per chunk instead of once per record, and the
	// two statements are prepared once, on the writer connection.
	for len(evs) > 0 {
		n := auditRowsPerInsert
		stmt := db.insertMany
		if len(evs) < n {
			n, stmt = 1, db.insertOne
		}
		if err := insertAuditRows(ctx, tx.StmtContext(ctx, stmt), evs[:n]); err != nil {
			return err
		}
		evs = evs[n:]
	}
	return nil
}

// auditRowsPerInsert is how many records one INSERT carries (10
// parameters each, well under SQLite's limit).
const auditRowsPerInsert = 64

// auditInsert is the INSERT statement for n records.
func auditInsert(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO audit_events (time, node, kind, action, token_id, subject, outcome, client_ip, rest, hash) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?,?,?,?)")
	}
	return b.String()
}

// insertAuditRows inserts evs (at most auditRowsPerInsert) in one
// statement. The writer connection is the only writer, so the rows get
// consecutive sequence numbers ending at the last insert id.
func insertAuditRows(ctx context.Context, stmt *sql.Stmt, evs []latchkey.AuditEvent) error {
	args := make([]any, 0, 10*len(evs))
	var buf []byte
	for i := range evs {
		ev := &evs[i]
		buf = auditrow.AppendRest(buf[:0], ev)
		args = append(args, micros(ev.Time), ev.Node, ev.Kind, ev.Action, ev.TokenID, ev.Subject, ev.Outcome,
			ev.ClientIP, string(buf), ev.Hash)
	}
	res, err := stmt.ExecContext(ctx, args...)
	if err != nil {
		return fmt.Errorf("sqlite: append audit: %w", err)
	}
	lastID, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("sqlite: append audit: %w", err)
	}
	for i := range evs {
		evs[i].Seq = lastID - int64(len(evs)-1-i)
	}
	return nil
}

// lastHash is the hash the next record of node links to: its latest
// record's, else its anchor's, else "" (the start of the chain).
func lastHash(ctx context.Context, q queryer, node string) (string, error) {
	var h string
	err := q.QueryRowContext(ctx, `SELECT hash FROM audit_events WHERE node = ? ORDER BY seq DESC LIMIT 1`, node).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		err = q.QueryRowContext(ctx, `SELECT hash FROM audit_anchors WHERE node = ?`, node).Scan(&h)
		if errors.Is(err, sql.ErrNoRows) {
			return "", nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("sqlite: audit chain: %w", err)
	}
	return h, nil
}

// timeSlack is how far commit order may stray from time order: records
// wait in the audit queue for up to a flush interval (or longer while the
// store is failing) and admin records commit at once, so a record can have
// a lower seq than one a little older. Time bounds are widened by this
// before they become seq bounds; the exact time filter still applies.
const timeSlack = 10 * time.Minute

// seqAtTime returns the first seq whose record is at or after t (or one
// past the last record), by binary search over seq: a handful of primary
// key lookups instead of an index on time maintained on every insert.
func seqAtTime(ctx context.Context, q queryer, t time.Time) (int64, error) {
	var lo, hi sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT min(seq), max(seq) FROM audit_events`).Scan(&lo, &hi); err != nil {
		return 0, fmt.Errorf("sqlite: audit time search: %w", err)
	}
	if !lo.Valid {
		return 0, nil
	}
	a, b, at := lo.Int64, hi.Int64+1, micros(t)
	for a < b {
		mid := a + (b-a)/2
		var seq, tm int64
		err := q.QueryRowContext(ctx, `SELECT seq, time FROM audit_events WHERE seq >= ? ORDER BY seq LIMIT 1`, mid).Scan(&seq, &tm)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			b = mid
		case err != nil:
			return 0, fmt.Errorf("sqlite: audit time search: %w", err)
		case tm < at:
			a = seq + 1
		default:
			b = mid
		}
	}
	return a, nil
}

// AuditNodes lists the nodes with records or anchors.
func (db *DB) AuditNodes(ctx context.Context) ([]string, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT DISTINCT node FROM audit_events UNION SELECT node FROM audit_anchors ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: audit nodes: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// AuditAnchors lists the anchors of pruned chains.
func (db *DB) AuditAnchors(ctx context.Context) ([]latchkey.AuditAnchor, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT node, seq, hash, at FROM audit_anchors ORDER BY node`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: audit anchors: %w", err)
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

// PruneAudit deletes records older than before, node by node, each node
// in one transaction: archive sees them first, then the anchor moves to
// the last one and they are deleted.
func (db *DB) PruneAudit(ctx context.Context, before time.Time, archive func([]latchkey.AuditEvent) error) (int64, error) {
	nodes, err := db.AuditNodes(ctx)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, node := range nodes {
		n, err := db.pruneNode(ctx, node, before, archive)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (db *DB) pruneNode(ctx context.Context, node string, before time.Time, archive func([]latchkey.AuditEvent) error) (int64, error) {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("sqlite: prune audit: %w", err)
	}
	defer tx.Rollback()
	// The cut: just before the node's first record at or after before, so
	// no younger record goes (commit order and time order differ a little).
	// Without a time index, walk seq order from the oldest record: the
	// walk stops at the first young one, so it reads about what is pruned.
	var cut sql.NullInt64
	var first int64
	err = tx.QueryRowContext(ctx, `SELECT seq FROM audit_events WHERE node = ? AND time >= ? ORDER BY seq LIMIT 1`, node, micros(before)).Scan(&first)
	switch {
	case err == nil:
		cut = sql.NullInt64{Int64: first - 1, Valid: true}
	case !errors.Is(err, sql.ErrNoRows):
		return 0, fmt.Errorf("sqlite: prune audit: %w", err)
	}
	if !cut.Valid {
		if err := tx.QueryRowContext(ctx, `SELECT max(seq) FROM audit_events WHERE node = ?`, node).Scan(&cut); err != nil {
			return 0, fmt.Errorf("sqlite: prune audit: %w", err)
		}
	}
	if !cut.Valid || cut.Int64 < 1 {
		return 0, nil
	}
	var last latchkey.AuditEvent
	var n int64
	for after := int64(0); ; {
		page, err := listAudit(ctx, tx, latchkey.AuditFilter{Node: node, After: after, Ascending: true, Limit: latchkey.MaxPageLimit}, cut.Int64)
		if err != nil {
			return 0, err
		}
		if len(page.Events) == 0 {
			break
		}
		if archive != nil {
			if err := archive(page.Events); err != nil {
				return 0, fmt.Errorf("sqlite: prune audit: archive: %w", err)
			}
		}
		n += int64(len(page.Events))
		last = page.Events[len(page.Events)-1]
		after = last.Seq
	}
	if n == 0 {
		return 0, nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_anchors (node, seq, hash, at) VALUES (?, ?, ?, ?)
		ON CONFLICT (node) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at`,
		node, last.Seq, last.Hash, micros(time.Now())); err != nil {
		return 0, fmt.Errorf("sqlite: prune audit: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM audit_events WHERE node = ? AND seq <= ?`, node, cut.Int64); err != nil {
		return 0, fmt.Errorf("sqlite: prune audit: %w", err)
	}
	return n, tx.Commit()
}

// ListAudit returns a page of audit events: newest first, or, with
// f.After set, oldest first from just after that sequence number.
func (db *DB) ListAudit(ctx context.Context, f latchkey.AuditFilter) (latchkey.AuditPage, error) {
	return listAudit(ctx, db.r, f, 0)
}

// listAudit is ListAudit on q, limited to seq <= maxSeq when maxSeq > 0.
func listAudit(ctx context.Context, q queryer, f latchkey.AuditFilter, maxSeq int64) (latchkey.AuditPage, error) {
	var where []string
	var args []any
	add := func(cond string, v any) { where, args = append(where, cond), append(args, v) }
	if maxSeq > 0 {
		add("seq <= ?", maxSeq)
	}
	if f.Node != "" {
		add("node = ?", f.Node)
	}
	if f.TokenID != "" {
		add("token_id = ?", f.TokenID)
	}
	if f.Keyspace != "" {
		// The keyspace's tokens' records, and its own (roles, requests...).
		where = append(where, "(token_id IN (SELECT id FROM tokens WHERE keyspace = ?) OR subject = ?)")
		args = append(args, f.Keyspace, latchkey.KeyspaceSubject(f.Keyspace))
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
	if f.Action != "" {
		add("action = ?", f.Action)
	}
	if !f.Since.IsZero() {
		add("time >= ?", micros(f.Since))
		// Bound the scan too: there is no time index.
		lo, err := seqAtTime(ctx, q, f.Since.Add(-timeSlack))
		if err != nil {
			return latchkey.AuditPage{}, err
		}
		add("seq >= ?", lo)
	}
	if !f.Until.IsZero() {
		add("time < ?", micros(f.Until))
		hi, err := seqAtTime(ctx, q, f.Until.Add(timeSlack))
		if err != nil {
			return latchkey.AuditPage{}, err
		}
		add("seq < ?", hi)
	}
	order := "DESC"
	switch {
	case f.After > 0 || f.Ascending:
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
	query := `SELECT seq, time, node, kind, action, token_id, subject, outcome, client_ip, rest, hash FROM audit_events`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY seq " + order + " LIMIT ?"
	rows, err := q.QueryContext(ctx, query, append(args, limit+1)...)
	if err != nil {
		return latchkey.AuditPage{}, fmt.Errorf("sqlite: list audit: %w", err)
	}
	defer rows.Close()
	var page latchkey.AuditPage
	for rows.Next() {
		var (
			ev latchkey.AuditEvent
			t  int64
			rs string
		)
		if err := rows.Scan(&ev.Seq, &t, &ev.Node, &ev.Kind, &ev.Action, &ev.TokenID, &ev.Subject, &ev.Outcome,
			&ev.ClientIP, &rs, &ev.Hash); err != nil {
			return latchkey.AuditPage{}, fmt.Errorf("sqlite: list audit: %w", err)
		}
		ev.Time = time.UnixMicro(t).UTC()
		if err := auditrow.DecodeRest([]byte(rs), &ev); err != nil {
			return latchkey.AuditPage{}, fmt.Errorf("sqlite: audit record %d: %w", ev.Seq, err)
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
