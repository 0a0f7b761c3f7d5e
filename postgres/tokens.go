package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/internal/tokenrow"
)

const tokenColumns = tokenrow.SelectColumns

func scanToken(s pgx.Row) (*latchkey.Token, int64, error) {
	var r tokenrow.Row
	if err := s.Scan(r.Dest()...); err != nil {
		return nil, 0, err
	}
	return r.Token()
}

// GetToken reads one token.
func (db *DB) GetToken(ctx context.Context, id string) (*latchkey.Token, error) {
	return getToken(ctx, db.pool, id, "")
}

func getToken(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, id, lock string) (*latchkey.Token, error) {
	t, _, err := scanToken(q.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = $1`+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, latchkey.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get token: %w", err)
	}
	return t, nil
}

// args builds numbered placeholders.
type args struct{ v []any }

func (a *args) add(v any) string {
	a.v = append(a.v, v)
	return fmt.Sprintf("$%d", len(a.v))
}

// ListTokens returns a page of tokens in the filter's order, and their
// number when asked.
func (db *DB) ListTokens(ctx context.Context, f latchkey.TokenFilter) (latchkey.TokenPage, error) {
	l, err := tokenrow.NewListing(f)
	if err != nil {
		return latchkey.TokenPage{}, err
	}
	var a args
	q, err := l.Page(a.dialect())
	if err != nil {
		return latchkey.TokenPage{}, err
	}
	toks, seqs, err := queryTokens(ctx, db.pool, q, a.v...)
	if err != nil {
		return latchkey.TokenPage{}, fmt.Errorf("postgres: list tokens: %w", err)
	}
	page := l.Finish(toks, seqs)
	if f.Count {
		var c args
		if err := db.pool.QueryRow(ctx, l.Count(c.dialect()), c.v...).Scan(&page.Total); err != nil {
			return latchkey.TokenPage{}, fmt.Errorf("postgres: count tokens: %w", err)
		}
	}
	return page, nil
}

// dialect binds a listing's arguments into a.
func (a *args) dialect() tokenrow.Dialect {
	return tokenrow.Dialect{Arg: a.add, HasTag: func(ph string) string { return "tags::jsonb ? " + ph }}
}

func queryTokens(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, query string, args ...any) ([]*latchkey.Token, []int64, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	return tokenrow.ScanAll(rows)
}

// CreateToken inserts t and its audit event in one transaction, in two
// round trips: BEGIN, the row, its change-log entry and a free audit lane
// in one pipeline; the record, the lane's new head and COMMIT in the
// next. Then the change is announced. (Issuing is the busiest write; the
// generic WriteTx takes six round trips for it.)
func (db *DB) CreateToken(ctx context.Context, t *latchkey.Token, ev *latchkey.AuditEvent) error {
	if ev == nil {
		return db.WriteTx(ctx, func(tx latchkey.Tx) error { return tx.CreateToken(ctx, t, ev) })
	}
	if t.SeriesID == "" {
		t.SeriesID = t.ID
	}
	c, err := tokenrow.Encode(t)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: create token: %w", err)
	}
	var n notes
	err = createInPipeline(ctx, conn, t, c, ev, &n)
	if err != nil {
		// Not committed, whatever failed: end the transaction, or close the
		// connection (the pool drops it) if it cannot even say that.
		if _, rerr := conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
			conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}
	// Released before announcing: the announcement takes a connection of
	// its own, and writers holding theirs while they wait for it would
	// starve the pool.
	conn.Release()
	if isUniqueViolation(err) {
		return latchkey.Errorf(latchkey.EConflict, "a token with id %s already exists", t.ID)
	}
	if err != nil {
		return fmt.Errorf("postgres: create token: %w", err)
	}
	db.announce(ctx, n)
	return nil
}

// createInPipeline is CreateToken's transaction on conn.
func createInPipeline(ctx context.Context, conn *pgxpool.Conn, t *latchkey.Token, c tokenrow.Columns, ev *latchkey.AuditEvent, n *notes) error {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	queueCreate(b, n, t, c)
	b.Queue(freeLane, ev.Node)
	res := conn.SendBatch(ctx, b)
	_, err := res.Exec() // BEGIN
	if err == nil {
		_, err = res.Exec() // the token and its change
	}
	var l *lane
	if err == nil {
		var free lane
		switch err = res.QueryRow().Scan(&free.n, &free.hash); {
		case err == nil:
			l = &free
		case errors.Is(err, pgx.ErrNoRows):
			err = nil // every lane busy, or none made yet
		}
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if l == nil {
		if l, err = takeLane(ctx, conn, ev.Node); err != nil {
			return err
		}
	}
	b = &pgx.Batch{}
	queueAuditOne(b, l, ev)
	b.Queue("COMMIT")
	res = conn.SendBatch(ctx, b)
	err = res.QueryRow().Scan(&ev.Seq) // the record and the lane's head
	if err == nil {
		_, err = res.Exec() // COMMIT
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	return err
}

// UpdateToken applies fn to the token (locked) and stores the result with
// fn's audit event in one transaction.
func (db *DB) UpdateToken(ctx context.Context, id string, fn func(t *latchkey.Token) (*latchkey.AuditEvent, error)) (*latchkey.Token, error) {
	return latchkey.UpdateInTx(ctx, db.WriteTx, id, fn)
}

// WriteTx runs fn in one transaction; rows read through tx are locked
// (SELECT ... FOR UPDATE), so concurrent changes to a token serialise.
func (db *DB) WriteTx(ctx context.Context, fn func(tx latchkey.Tx) error) error {
	x := &tx{lanes: lanes{}}
	err := pgx.BeginFunc(ctx, db.pool, func(t pgx.Tx) error {
		x.tx, x.notes = t, x.notes[:0]
		clear(x.lanes)
		return fn(x)
	})
	if err == nil {
		db.announce(ctx, x.notes)
	}
	return err
}

type tx struct {
	tx    pgx.Tx
	lanes lanes // the audit lanes this transaction holds
	notes notes // the notifications it owes once committed
}

func (x *tx) GetToken(ctx context.Context, id string) (*latchkey.Token, error) {
	return getToken(ctx, x.tx, id, " FOR UPDATE")
}

// SelectTokens reads (and locks) the tokens sel picks, oldest first.
func (x *tx) SelectTokens(ctx context.Context, sel latchkey.TokenSelector) ([]*latchkey.Token, error) {
	var a args
	var base string
	switch {
	case len(sel.IDs) > 0:
		base = "SELECT id FROM tokens WHERE id = ANY(" + a.add(sel.IDs) + ")"
	case sel.Subject != "":
		base = "SELECT id FROM tokens WHERE subject = " + a.add(sel.Subject)
	case sel.Tag != "":
		base = "SELECT id FROM tokens WHERE tags::jsonb ? " + a.add(sel.Tag)
	case sel.Prefix != "":
		base = "SELECT id FROM tokens WHERE prefix = " + a.add(sel.Prefix)
	case sel.Parent != "":
		base = "SELECT id FROM tokens WHERE parent_id = " + a.add(sel.Parent)
	default:
		return nil, latchkey.Errorf(latchkey.EInvalid, "select tokens: no selector given")
	}
	q := `WITH RECURSIVE picked(id) AS (` + base
	if sel.Descendants || sel.Parent != "" {
		q += ` UNION SELECT t.id FROM tokens t JOIN picked p ON t.parent_id = p.id`
	}
	q += `) SELECT ` + tokenColumns + ` FROM tokens WHERE id IN (SELECT id FROM picked)`
	if sel.Keyspace != "" {
		q += ` AND keyspace = ` + a.add(sel.Keyspace)
	}
	q += ` ORDER BY seq FOR UPDATE`
	toks, _, err := queryTokens(ctx, x.tx, q, a.v...)
	if err != nil {
		return nil, fmt.Errorf("postgres: select tokens: %w", err)
	}
	return toks, nil
}

// queueCreate queues on b, as one statement, the INSERT of t (encoded as
// c) and of its change-log entry, and owes the change's notification in n.
func queueCreate(b *pgx.Batch, n *notes, t *latchkey.Token, c tokenrow.Columns) {
	b.Queue(`WITH tok AS (INSERT INTO tokens (id, prefix, name, subject, scopes, tags, meta, created_at, created_by,
		expires_at, not_before, status, revoked_at, revoked_by, revoked_reason, last_used_at, version, hash,
		constraints, max_uses, uses, suspended_at, suspended_by, suspended_reason, suspended_via,
		parent_id, ancestors, predecessor_id, successor_id, rotated_at, series_id, inherited, keyspace, roles, terms)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
		$21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35) RETURNING id, version, seq, terms),
		indexed AS (INSERT INTO token_terms (term, seq) SELECT jsonb_array_elements_text(terms::jsonb), seq FROM tok)
		INSERT INTO changes (token_id, version, at) SELECT id, version, `+dbNowMicros+` FROM tok`,
		t.ID, t.Prefix, t.Name, t.Subject, c.Scopes, c.Tags, c.Meta, micros(t.CreatedAt), t.CreatedBy,
		nullMicros(t.ExpiresAt), nullMicros(t.NotBefore), string(t.Status), nullMicros(t.RevokedAt),
		t.RevokedBy, t.RevokedReason, nullMicros(t.LastUsedAt), t.Version, t.Hash,
		c.Constraints, t.MaxUses, t.Uses, nullMicros(t.SuspendedAt), t.SuspendedBy, t.SuspendedReason, t.SuspendedVia,
		t.ParentID, c.Ancestors, t.PredecessorID, t.SuccessorID, nullMicros(t.RotatedAt), t.SeriesID, c.Inherited, latchkey.KeyspaceOf(t.Keyspace), c.Roles, c.Terms)
	*n = append(*n, t.ID+":"+strconv.FormatInt(t.Version, 10))
}

func (x *tx) CreateToken(ctx context.Context, t *latchkey.Token, ev *latchkey.AuditEvent) error {
	if t.SeriesID == "" {
		t.SeriesID = t.ID
	}
	c, err := tokenrow.Encode(t)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	// The row and its change-log entry: one statement.
	b := &pgx.Batch{}
	queueCreate(b, &x.notes, t, c)
	res := x.tx.SendBatch(ctx, b)
	_, err = res.Exec()
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if isUniqueViolation(err) {
		return latchkey.Errorf(latchkey.EConflict, "a token with id %s already exists", t.ID)
	}
	if err != nil {
		return fmt.Errorf("postgres: create token: %w", err)
	}
	return appendEvent(ctx, x.tx, x.lanes, ev)
}

// publish records a change to token id (or to a block: BlockChange) for
// every node: a row in changes (polled as a backstop), in tx, and a
// notification owed in n, which the caller sends once tx has committed
// (announce). The row is stamped with the database's clock, which is also
// the clock pollers read against, so nodes' clocks need not agree.
//
// The notification is not sent inside tx: PostgreSQL serialises the
// commits of transactions that NOTIFY on one lock held through their WAL
// flush, which held a node to one token write per flush.
//
// A change without a version of its own (a block, a setting: version 0) is
// given its change-log sequence number as one, so that each change of an
// id has a version newer than the last, and a follower that reads it again
// (every read overlaps the previous) knows it has applied it.
func publish(ctx context.Context, tx pgx.Tx, n *notes, id string, version int64) error {
	if version == 0 {
		err := tx.QueryRow(ctx, `WITH s AS (SELECT nextval(pg_get_serial_sequence('changes', 'seq')) AS v)
			INSERT INTO changes (seq, token_id, version, at) SELECT v, $1, v, `+dbNowMicros+` FROM s RETURNING version`, id).Scan(&version)
		if err != nil {
			return fmt.Errorf("postgres: publish change: %w", err)
		}
	} else if _, err := tx.Exec(ctx, `INSERT INTO changes (token_id, version, at) VALUES ($1, $2, `+dbNowMicros+`)`, id, version); err != nil {
		return fmt.Errorf("postgres: publish change: %w", err)
	}
	*n = append(*n, id+":"+strconv.FormatInt(version, 10))
	return nil
}

// notes are the notifications a transaction owes, sent after it commits.
type notes []string

// announce sends n on the change channel, in one short transaction of its own, and
// returns once it is sent. Writers that announce at the same moment share
// that transaction: while one is sending, the notes of the others gather,
// and the next of them sends them all (group notify, as a group commit).
// A change whose notification is lost (a failure here, or a crash between
// the commit and this) still reaches every node through the change log's
// poll, within its interval.
func (db *DB) announce(ctx context.Context, n notes) {
	if len(n) == 0 {
		return
	}
	g := &db.notify
	me := make(chan bool, 1) // told false once ours is sent, true to send the next batch
	g.mu.Lock()
	g.pending = append(g.pending, n...)
	g.waiting = append(g.waiting, me)
	if g.sending {
		g.mu.Unlock()
		if !<-me {
			return
		}
		g.mu.Lock()
	}
	g.sending = true
	batch, waiting := g.pending, g.waiting
	g.pending, g.waiting = nil, nil
	g.mu.Unlock()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	if _, err := db.pool.Exec(sctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p`, db.ChangeChannel(), []string(batch)); err != nil {
		slog.Warn("postgres: a change was committed but not announced; other nodes see it at their next poll", "changes", len(batch), "err", err)
	}
	cancel()
	for _, w := range waiting {
		if w != me {
			w <- false
		}
	}
	// The writers that came while this batch was sent: the first of them
	// sends theirs (each sender sends once, so none waits on the others'
	// traffic for long).
	g.mu.Lock()
	if len(g.waiting) > 0 {
		next := g.waiting[0]
		g.mu.Unlock()
		next <- true
		return
	}
	g.sending = false
	g.mu.Unlock()
}

// groupNotify gathers the notes of concurrent writers (announce).
type groupNotify struct {
	mu      sync.Mutex
	sending bool
	pending notes
	waiting []chan bool
}

func (x *tx) UpdateToken(ctx context.Context, t *latchkey.Token, ev *latchkey.AuditEvent) error {
	c, err := tokenrow.Encode(t)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	tag, err := x.tx.Exec(ctx, `UPDATE tokens SET name = $1, subject = $2, scopes = $3, tags = $4, meta = $5,
		expires_at = $6, not_before = $7, status = $8, revoked_at = $9, revoked_by = $10, revoked_reason = $11,
		version = $12, hash = $13, constraints = $14, max_uses = $15,
		suspended_at = $16, suspended_by = $17, suspended_reason = $18, suspended_via = $19,
		parent_id = $20, ancestors = $21, predecessor_id = $22, successor_id = $23, rotated_at = $24, series_id = $25, inherited = $26, roles = $27, terms = $28
		WHERE id = $29 AND version = $30`,
		t.Name, t.Subject, c.Scopes, c.Tags, c.Meta, nullMicros(t.ExpiresAt), nullMicros(t.NotBefore), string(t.Status),
		nullMicros(t.RevokedAt), t.RevokedBy, t.RevokedReason, t.Version+1, t.Hash, c.Constraints, t.MaxUses,
		nullMicros(t.SuspendedAt), t.SuspendedBy, t.SuspendedReason, t.SuspendedVia,
		t.ParentID, c.Ancestors, t.PredecessorID, t.SuccessorID, nullMicros(t.RotatedAt), t.Series(), c.Inherited, c.Roles, c.Terms,
		t.ID, t.Version)
	if err != nil {
		return fmt.Errorf("postgres: update token: %w", err)
	}
	if tag.RowsAffected() != 1 {
		if _, err := getToken(ctx, x.tx, t.ID, ""); err != nil {
			return err
		}
		return latchkey.Errorf(latchkey.EConflict, "token %s changed concurrently; retry", t.ID)
	}
	t.Version++
	if err := publish(ctx, x.tx, &x.notes, t.ID, t.Version); err != nil {
		return err
	}
	return appendEvent(ctx, x.tx, x.lanes, ev)
}

// ConsumeUse spends one use from each budget, all or none: each is a
// conditional UPDATE ... WHERE uses < max_uses, so concurrent consumers
// on any number of nodes never overspend.
func (db *DB) ConsumeUse(ctx context.Context, series []string) (int64, bool, error) {
	if len(series) == 0 {
		return -1, true, nil
	}
	remaining, ok := int64(-1), true
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		for _, id := range series {
			var left int64
			q := `UPDATE tokens SET uses = uses + 1 WHERE id = $1 AND max_uses > 0 AND uses < max_uses RETURNING max_uses - uses`
			if strings.HasPrefix(id, latchkey.BudgetPrefix) {
				q = `UPDATE budgets SET uses = uses + 1 WHERE key = $1 AND uses < max_uses RETURNING max_uses - uses`
			}
			err := tx.QueryRow(ctx, q, id).Scan(&left)
			if errors.Is(err, pgx.ErrNoRows) {
				ok = false
				return errSpent // roll back the others
			}
			if err != nil {
				return err
			}
			if remaining < 0 || left < remaining {
				remaining = left
			}
		}
		return nil
	})
	if errors.Is(err, errSpent) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("postgres: consume use: %w", err)
	}
	return remaining, ok, nil
}

var errSpent = errors.New("budget spent")

// TouchTokens raises last_used_at for a batch in one statement.
func (db *DB) TouchTokens(ctx context.Context, uses []latchkey.TokenUse) error {
	if len(uses) == 0 {
		return nil
	}
	ids := make([]string, len(uses))
	ats := make([]int64, len(uses))
	for i, u := range uses {
		ids[i], ats[i] = u.ID, micros(latchkey.TimeOf(u.At))
	}
	_, err := db.pool.Exec(ctx, `UPDATE tokens t SET last_used_at = u.at
		FROM unnest($1::text[], $2::bigint[]) AS u(id, at)
		WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)`, ids, ats)
	if err != nil {
		return fmt.Errorf("postgres: touch tokens: %w", err)
	}
	return nil
}

// SetBudget sets the size of a shared usage budget (an identity's),
// keeping what has been spent; max 0 removes it.
func (db *DB) SetBudget(ctx context.Context, key string, max int64) error {
	var err error
	if max <= 0 {
		_, err = db.pool.Exec(ctx, `DELETE FROM budgets WHERE key = $1`, key)
	} else {
		_, err = db.pool.Exec(ctx, `INSERT INTO budgets (key, max_uses) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET max_uses = excluded.max_uses`, key, max)
	}
	if err != nil {
		return fmt.Errorf("postgres: set budget: %w", err)
	}
	return nil
}

// BudgetUses reports how much of a shared budget is spent (0 if none).
func (db *DB) BudgetUses(ctx context.Context, key string) (int64, error) {
	var n int64
	err := db.pool.QueryRow(ctx, `SELECT uses FROM budgets WHERE key = $1`, key).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("postgres: budget: %w", err)
	}
	return n, nil
}
