package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/internal/auditrow"
)

// AppendAudit stores evs in one transaction, linking each to its node's
// chain and setting Seq and Hash.
func (db *DB) AppendAudit(ctx context.Context, evs []latchkey.AuditEvent) error {
	if len(evs) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error { return insertAudit(ctx, tx, nil, evs) })
}

// errWritten ends the transaction of a batch found already committed.
var errWritten = errors.New("postgres: audit batch already written")

// AppendAuditBatch is AppendAudit for a batch that may be a retry: key
// names the batch (the same for every attempt at it), and a batch whose
// key is already recorded was committed by an earlier attempt whose answer
// was lost (the connection dropped after COMMIT), so it is not written
// again. It implements audit.BatchSink.
func (db *DB) AppendAuditBatch(ctx context.Context, key string, evs []latchkey.AuditEvent) error {
	if len(evs) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO audit_batches (key, at) VALUES ($1, `+dbNowMicros+`) ON CONFLICT (key) DO NOTHING`, key)
		if err != nil {
			return fmt.Errorf("postgres: audit batch key: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return errWritten
		}
		return insertAudit(ctx, tx, nil, evs)
	})
	if errors.Is(err, errWritten) {
		return nil
	}
	return err
}

func appendEvent(ctx context.Context, tx pgx.Tx, held lanes, ev *latchkey.AuditEvent) error {
	if ev == nil {
		return nil
	}
	return insertAudit(ctx, tx, held, []latchkey.AuditEvent{*ev})
}

// auditLanes is how many chains each node's records are spread over.
// Writers on different lanes do not wait for each other, so a node takes
// up to this many audit-writing transactions at once.
const auditLanes = 16

// lane is a chain a transaction holds: its number and the hash its next
// record links to.
type lane struct {
	n    int
	hash string
}

// lanes are the lanes a transaction holds, by node. A transaction keeps
// the lane it first took (it holds its lock until commit): taking another
// could deadlock with a writer waiting for the first.
type lanes map[string]*lane

// querier runs statements: a transaction, or a connection in one.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// freeLane locks a lane of node ($1) no other transaction holds.
const freeLane = `SELECT lane, hash FROM audit_heads WHERE node = $1 ORDER BY lane LIMIT 1 FOR UPDATE SKIP LOCKED`

// takeLane locks one of node's lanes for tx: a free one if there is one
// (SKIP LOCKED), else it waits for one chosen at random.
func takeLane(ctx context.Context, tx querier, node string) (*lane, error) {
	for attempt := 0; ; attempt++ {
		var l lane
		err := tx.QueryRow(ctx, freeLane, node).Scan(&l.n, &l.hash)
		if err == nil {
			return &l, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return nil, err
		}
		var have int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM audit_heads WHERE node = $1`, node).Scan(&have); err != nil {
			return nil, err
		}
		if have < auditLanes && attempt == 0 {
			// A node's first records (or a database from before lanes):
			// make its lanes, then take one.
			if _, err := tx.Exec(ctx, `INSERT INTO audit_heads (node, lane, hash) SELECT $1, l, '' FROM generate_series(0, $2 - 1) l
				ON CONFLICT (node, lane) DO NOTHING`, node, auditLanes); err != nil {
				return nil, err
			}
			continue
		}
		// Every lane is busy: wait for one.
		err = tx.QueryRow(ctx, `SELECT lane, hash FROM audit_heads WHERE node = $1 AND lane = $2 FOR UPDATE`, node, rand.IntN(max(have, 1))).Scan(&l.n, &l.hash)
		return &l, err
	}
}

// insertAudit takes a lane of each node (in node order, so that writers
// never wait on each other in a cycle), takes sequence numbers after the
// locks, links and inserts the records, and moves the lanes' heads. held
// carries the lanes across the calls of one transaction (nil: one call).
func insertAudit(ctx context.Context, tx pgx.Tx, held lanes, evs []latchkey.AuditEvent) error {
	var nodes []string
	seen := map[string]bool{}
	for i := range evs {
		if n := evs[i].Node; !seen[n] {
			seen[n] = true
			nodes = append(nodes, n)
		}
	}
	sort.Strings(nodes)
	if held == nil {
		held = lanes{}
	}
	for _, n := range nodes {
		if held[n] != nil {
			continue
		}
		l, err := takeLane(ctx, tx, n)
		if err != nil {
			return fmt.Errorf("postgres: audit chain: %w", err)
		}
		held[n] = l
	}
	if len(evs) == 1 {
		return insertOne(ctx, tx, held[evs[0].Node], &evs[0])
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
		seq, tm, lane                                   []int64
		node, kind, action, tok, subj, out, ip, rest, h []string
	}{make([]int64, n), make([]int64, n), make([]int64, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)}
	var buf []byte
	inets := make([]*string, n)
	for i := range evs {
		ev := &evs[i]
		inets[i] = inetOf(ev.ClientIP)
		l := held[ev.Node]
		ev.Time = latchkey.TimeOf(ev.Time)
		ev.Seq = seqs[i]
		ev.Hash = latchkey.ChainHash(l.hash, ev)
		l.hash = ev.Hash
		buf = auditrow.AppendRest(buf[:0], ev)
		cols.seq[i], cols.tm[i], cols.lane[i], cols.node[i], cols.kind[i], cols.action[i] = ev.Seq, micros(ev.Time), int64(l.n), ev.Node, ev.Kind, ev.Action
		cols.tok[i], cols.subj[i], cols.out[i], cols.ip[i], cols.rest[i], cols.h[i] = ev.TokenID, ev.Subject, ev.Outcome, ev.ClientIP, string(buf), ev.Hash
	}
	if _, err := tx.Exec(ctx, `INSERT INTO audit_events (seq, time, lane, node, kind, action, token_id, subject, outcome, client_ip, rest, hash, client_inet)
		SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[]::inet[])`,
		cols.seq, cols.tm, cols.lane, cols.node, cols.kind, cols.action, cols.tok, cols.subj, cols.out, cols.ip, cols.rest, cols.h, inets); err != nil {
		return fmt.Errorf("postgres: append audit: %w", err)
	}
	for _, nd := range nodes {
		if _, err := tx.Exec(ctx, `UPDATE audit_heads SET hash = $3 WHERE node = $1 AND lane = $2`, nd, held[nd].n, held[nd].hash); err != nil {
			return fmt.Errorf("postgres: audit chain: %w", err)
		}
	}
	return nil
}

// insertOne is insertAudit for one record (an admin change's): the chain
// hash does not cover seq, so the record takes its number as it is
// inserted, and the insert and the lane's new head go in one round trip.
func insertOne(ctx context.Context, tx pgx.Tx, l *lane, ev *latchkey.AuditEvent) error {
	b := &pgx.Batch{}
	queueAuditOne(b, l, ev)
	res := tx.SendBatch(ctx, b)
	err := res.QueryRow().Scan(&ev.Seq)
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("postgres: append audit: %w", err)
	}
	return nil
}

// queueAuditOne links ev into lane l and queues on b, as one statement,
// its insert and the lane's new head; the statement returns its seq.
func queueAuditOne(b *pgx.Batch, l *lane, ev *latchkey.AuditEvent) {
	ev.Time = latchkey.TimeOf(ev.Time)
	ev.Hash = latchkey.ChainHash(l.hash, ev)
	l.hash = ev.Hash
	b.Queue(`WITH ev AS (INSERT INTO audit_events (time, lane, node, kind, action, token_id, subject, outcome, client_ip, rest, hash, client_inet)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::text::inet) RETURNING seq),
		head AS (UPDATE audit_heads SET hash = $11 WHERE node = $3 AND lane = $2)
		SELECT seq FROM ev`,
		micros(ev.Time), l.n, ev.Node, ev.Kind, ev.Action, ev.TokenID, ev.Subject, ev.Outcome, ev.ClientIP, string(auditrow.AppendRest(nil, ev)), ev.Hash, inetOf(ev.ClientIP))
}

// inetOf is a record's client address as client_inet takes it (the
// address parsed here, so that the insert's cast cannot fail), or nil
// (NULL) when it is not an address.
func inetOf(ip string) *string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return nil
	}
	s := a.Unmap().WithZone("").String()
	return &s
}

// ListAudit returns a page of audit events.
func (db *DB) ListAudit(ctx context.Context, f latchkey.AuditFilter) (latchkey.AuditPage, error) {
	return listAudit(ctx, db.pool, f, 0)
}

// filterConds are the conditions of f other than paging, their
// arguments added to a.
func filterConds(f latchkey.AuditFilter, a *args) []string {
	var where []string
	add := func(cond string, v any) { where = append(where, cond+" "+a.add(v)) }
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
	if f.Source.IsValid() {
		add("client_inet <<=", f.Source.String())
		where[len(where)-1] += "::cidr"
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
	return where
}

// AuditSources tallies the records matching f (its paging fields aside)
// by client address, in the database: the rows are read through the
// same indexes as ListAudit's (client_inet for a source filter), at most
// latchkey.MaxSourceRecords of them.
func (db *DB) AuditSources(ctx context.Context, f latchkey.AuditFilter) (latchkey.SourceReport, error) {
	var a args
	where := filterConds(f, &a)
	inner := `SELECT client_ip, outcome, time FROM audit_events`
	if len(where) > 0 {
		inner += " WHERE " + strings.Join(where, " AND ")
	}
	inner += " LIMIT " + a.add(latchkey.MaxSourceRecords+1)
	rows, err := db.pool.Query(ctx, `SELECT client_ip, outcome, count(*), min(time), max(time) FROM (`+inner+`) e GROUP BY client_ip, outcome`, a.v...)
	if err != nil {
		return latchkey.SourceReport{}, fmt.Errorf("postgres: audit sources: %w", err)
	}
	defer rows.Close()
	tally := map[string]*latchkey.SourceUsage{}
	var total int64
	for rows.Next() {
		var ip, outcome string
		var n, first, last int64
		if err := rows.Scan(&ip, &outcome, &n, &first, &last); err != nil {
			return latchkey.SourceReport{}, fmt.Errorf("postgres: audit sources: %w", err)
		}
		total += n
		u := tally[ip]
		if u == nil {
			u = &latchkey.SourceUsage{Address: ip, FirstSeen: time.UnixMicro(first).UTC(), LastSeen: time.UnixMicro(last).UTC(), Outcomes: map[string]int64{}}
			tally[ip] = u
		}
		u.Attempts += n
		u.Outcomes[outcome] += n
		u.FirstSeen = minTime(u.FirstSeen, time.UnixMicro(first).UTC())
		if l := time.UnixMicro(last).UTC(); l.After(u.LastSeen) {
			u.LastSeen = l
		}
	}
	if err := rows.Err(); err != nil {
		return latchkey.SourceReport{}, fmt.Errorf("postgres: audit sources: %w", err)
	}
	if total > latchkey.MaxSourceRecords {
		return latchkey.SourceReport{}, latchkey.Errorf(latchkey.EInvalid, "more than %d records match: narrow the window (since, until) or the filter", latchkey.MaxSourceRecords)
	}
	return latchkey.Report(tally), nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func listAudit(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, f latchkey.AuditFilter, maxSeq int64) (latchkey.AuditPage, error) {
	var a args
	where := filterConds(f, &a)
	add := func(cond string, v any) { where = append(where, cond+" "+a.add(v)) }
	if maxSeq > 0 {
		add("seq <=", maxSeq)
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

// AuditAnchors lists the anchors of pruned chains, one per node and lane.
func (db *DB) AuditAnchors(ctx context.Context) ([]latchkey.AuditAnchor, error) {
	rows, err := db.pool.Query(ctx, `SELECT node, lane, seq, hash, at FROM audit_anchors ORDER BY node, lane`)
	if err != nil {
		return nil, fmt.Errorf("postgres: audit anchors: %w", err)
	}
	defer rows.Close()
	var out []latchkey.AuditAnchor
	for rows.Next() {
		var a latchkey.AuditAnchor
		var at int64
		if err := rows.Scan(&a.Node, &a.Lane, &a.Seq, &a.Hash, &at); err != nil {
			return nil, err
		}
		a.At = time.UnixMicro(at).UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}

// chainLane is one chain: a node's lane.
type chainLane struct {
	node string
	lane int
}

// chainLanes lists the chains with records or anchors.
func chainLanes(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) ([]chainLane, error) {
	rows, err := q.Query(ctx, `SELECT node, lane FROM audit_events GROUP BY node, lane UNION SELECT node, lane FROM audit_anchors ORDER BY 1, 2`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (chainLane, error) {
		var c chainLane
		return c, r.Scan(&c.node, &c.lane)
	})
}

// lanePage reads the records of one chain after seq after (and up to
// through, when > 0), oldest first.
func lanePage(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, c chainLane, after, through int64) ([]latchkey.AuditEvent, error) {
	if through <= 0 {
		through = 1<<63 - 1
	}
	rows, err := q.Query(ctx, `SELECT seq, time, node, kind, action, token_id, subject, outcome, client_ip, rest, hash FROM audit_events
		WHERE node = $1 AND lane = $2 AND seq > $3 AND seq <= $4 ORDER BY seq LIMIT $5`, c.node, c.lane, after, through, latchkey.MaxPageLimit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var evs []latchkey.AuditEvent
	for rows.Next() {
		var ev latchkey.AuditEvent
		var t int64
		var rs string
		if err := rows.Scan(&ev.Seq, &t, &ev.Node, &ev.Kind, &ev.Action, &ev.TokenID, &ev.Subject, &ev.Outcome, &ev.ClientIP, &rs, &ev.Hash); err != nil {
			return nil, err
		}
		ev.Time = time.UnixMicro(t).UTC()
		if err := auditrow.DecodeRest([]byte(rs), &ev); err != nil {
			return nil, fmt.Errorf("audit record %d: %w", ev.Seq, err)
		}
		evs = append(evs, ev)
	}
	return evs, rows.Err()
}

// PruneAudit deletes old records chain by chain (each node's lane), each
// in its own transaction, archiving them first and anchoring the chain at
// the last one deleted.
func (db *DB) PruneAudit(ctx context.Context, before time.Time, archive func([]latchkey.AuditEvent) error) (int64, error) {
	chains, err := chainLanes(ctx, db.pool)
	if err != nil {
		return 0, fmt.Errorf("postgres: prune audit: %w", err)
	}
	var total int64
	for _, c := range chains {
		var n int64
		err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
			n = 0
			var cut *int64
			if err := tx.QueryRow(ctx, `SELECT min(seq) - 1 FROM audit_events WHERE node = $1 AND lane = $2 AND time >= $3`, c.node, c.lane, micros(before)).Scan(&cut); err != nil {
				return err
			}
			if cut == nil {
				if err := tx.QueryRow(ctx, `SELECT max(seq) FROM audit_events WHERE node = $1 AND lane = $2`, c.node, c.lane).Scan(&cut); err != nil {
					return err
				}
			}
			if cut == nil || *cut < 1 {
				return nil
			}
			var last latchkey.AuditEvent
			for after := int64(0); ; {
				page, err := lanePage(ctx, tx, c, after, *cut)
				if err != nil {
					return err
				}
				if len(page) == 0 {
					break
				}
				if archive != nil {
					if err := archive(page); err != nil {
						return fmt.Errorf("archive: %w", err)
					}
				}
				n += int64(len(page))
				last = page[len(page)-1]
				after = last.Seq
			}
			if n == 0 {
				return nil
			}
			if _, err := tx.Exec(ctx, `INSERT INTO audit_anchors (node, lane, seq, hash, at) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (node, lane) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at`,
				c.node, c.lane, last.Seq, last.Hash, micros(time.Now())); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DELETE FROM audit_events WHERE node = $1 AND lane = $2 AND seq <= $3`, c.node, c.lane, *cut)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("postgres: prune audit: %w", err)
		}
		total += n
	}
	return total, nil
}

// VerifyAuditChain checks every chain (each node's lane) from its anchor,
// or its start, record by record, and names the first whose hash does not
// follow. audit.VerifyChain uses it.
func (db *DB) VerifyAuditChain(ctx context.Context) (latchkey.ChainReport, error) {
	r, start, err := latchkey.StartChainReport(ctx, db)
	if err != nil {
		return r, err
	}
	chains, err := chainLanes(ctx, db.pool)
	if err != nil {
		return r, fmt.Errorf("postgres: audit chain: %w", err)
	}
	for _, c := range chains {
		a := start[latchkey.AnchorKey{Node: c.node, Lane: c.lane}]
		prev, after := a.Hash, a.Seq
		for {
			page, err := lanePage(ctx, db.pool, c, after, 0)
			if err != nil {
				return r, fmt.Errorf("postgres: audit chain: %w", err)
			}
			for i := range page {
				ev := &page[i]
				r.Checked++
				if ev.Hash != latchkey.ChainHash(prev, ev) {
					reason := "the record does not match its hash: it was changed, or a record before it was removed or inserted"
					if ev.Hash == "" {
						reason = "the record has no hash"
					}
					r.Broken = &latchkey.ChainBreak{Node: c.node, Lane: c.lane, Seq: ev.Seq, Reason: reason}
					return r, nil
				}
				prev, after = ev.Hash, ev.Seq
			}
			if len(page) < latchkey.MaxPageLimit {
				break
			}
		}
	}
	r.OK = true
	return r, nil
}
