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
	"github.com/latchkeyhq/latchkey/internal/tokenrow"
)

const tokenColumns = tokenrow.SelectColumns

// CreateToken inserts t and its audit event in one transaction.
func (db *DB) CreateToken(ctx context.Context, t *latchkey.Token, ev *latchkey.AuditEvent) error {
	return db.WriteTx(ctx, func(tx latchkey.Tx) error { return tx.CreateToken(ctx, t, ev) })
}

// GetToken reads one token.
func (db *DB) GetToken(ctx context.Context, id string) (*latchkey.Token, error) {
	t, _, err := scanToken(db.getToken.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, latchkey.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get token: %w", err)
	}
	return t, nil
}

type queryer interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
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

// ListTokens returns a page of tokens in the filter's order, and their
// number when asked.
func (db *DB) ListTokens(ctx context.Context, f latchkey.TokenFilter) (latchkey.TokenPage, error) {
	l, err := tokenrow.NewListing(f)
	if err != nil {
		return latchkey.TokenPage{}, err
	}
	var args []any
	q, err := l.Page(dialect(&args))
	if err != nil {
		return latchkey.TokenPage{}, err
	}
	toks, seqs, err := queryTokens(ctx, db.r, q, args...)
	if err != nil {
		return latchkey.TokenPage{}, fmt.Errorf("sqlite: list tokens: %w", err)
	}
	page := l.Finish(toks, seqs)
	if f.Count {
		args = nil
		if err := db.r.QueryRowContext(ctx, l.Count(dialect(&args)), args...).Scan(&page.Total); err != nil {
			return latchkey.TokenPage{}, fmt.Errorf("sqlite: count tokens: %w", err)
		}
	}
	return page, nil
}

// dialect binds a listing's arguments into args.
func dialect(args *[]any) tokenrow.Dialect {
	return tokenrow.Dialect{
		Arg: func(v any) string { *args = append(*args, v); return "?" },
		HasTag: func(ph string) string {
			return "EXISTS (SELECT 1 FROM json_each(tokens.tags) WHERE value = " + ph + ")"
		},
	}
}

func queryTokens(ctx context.Context, q queryer, query string, args ...any) ([]*latchkey.Token, []int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	return tokenrow.ScanAll(rows)
}

// UpdateToken applies fn to the token and stores the result and fn's audit
// event in one transaction.
func (db *DB) UpdateToken(ctx context.Context, id string, fn func(t *latchkey.Token) (*latchkey.AuditEvent, error)) (*latchkey.Token, error) {
	return latchkey.UpdateInTx(ctx, db.WriteTx, id, fn)
}

// WriteTx runs fn in a transaction on the writer connection and returns
// once it is durable (or has failed). Writes are group-committed: while
// one transaction commits, the writes that arrive queue up, and the next
// transaction runs them all, each in a savepoint of its own, so one
// write's failure undoes only that write. Alone, a write is its own
// transaction and waits for nothing. Every write is acknowledged only
// after the commit that holds it.
func (db *DB) WriteTx(ctx context.Context, fn func(tx latchkey.Tx) error) error {
	r := &writeReq{ctx: ctx, fn: fn, done: make(chan writeResult, 1)}
	select {
	case db.writes <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-db.stop:
		return errClosed
	}
	var res writeResult
	select {
	case res = <-r.done:
	case <-db.committed:
		// The committer has finished: it answered everything it took, so
		// a write still unanswered arrived after Close and never ran.
		select {
		case res = <-r.done:
		default:
			return errClosed
		}
	}
	if res.panicked != nil {
		panic(res.panicked)
	}
	return res.err
}

var errClosed = errors.New("sqlite: the database is closed")

// maxGroup bounds the writes in one transaction.
const maxGroup = 256

type writeReq struct {
	ctx  context.Context
	fn   func(tx latchkey.Tx) error
	done chan writeResult
}

type writeResult struct {
	err      error
	panicked any // fn panicked: re-raised on the caller's goroutine
}

// committer runs queued writes, as many per transaction as are waiting.
func (db *DB) committer() {
	defer close(db.committed)
	for {
		var r *writeReq
		select {
		case r = <-db.writes:
		case <-db.stop:
			// Writes that made it into the queue are still carried out.
			for {
				select {
				case r = <-db.writes:
					db.commitGroup([]*writeReq{r})
				default:
					return
				}
			}
		}
		group := []*writeReq{r}
	gather:
		for len(group) < maxGroup {
			select {
			case r = <-db.writes:
				group = append(group, r)
			default:
				break gather
			}
		}
		db.commitGroup(group)
	}
}

// runWrite calls fn, turning a panic into a result for its caller.
func runWrite(r *writeReq, x *tx) (res writeResult) {
	defer func() {
		if p := recover(); p != nil {
			res.panicked = p
		}
	}()
	return writeResult{err: r.fn(x)}
}

// WriteStats reports how many transactions the committer has run and how
// many writes they held: writes/transactions is the group commit's gain.
func (db *DB) WriteStats() (transactions, writes uint64) {
	return db.nTx.Load(), db.nWrites.Load()
}

func (db *DB) commitGroup(group []*writeReq) {
	db.nTx.Add(1)
	db.nWrites.Add(uint64(len(group)))
	fail := func(rs []*writeReq, err error) {
		for _, r := range rs {
			r.done <- writeResult{err: err}
		}
	}
	sqlTx, err := db.w.BeginTx(context.Background(), nil)
	if err != nil {
		fail(group, fmt.Errorf("sqlite: begin: %w", err))
		return
	}
	defer sqlTx.Rollback()
	x := &tx{db: db, tx: sqlTx}
	if len(group) == 1 {
		r := group[0]
		res := runWrite(r, x)
		if res.err == nil && res.panicked == nil {
			if err := sqlTx.Commit(); err != nil {
				res.err = fmt.Errorf("sqlite: commit: %w", err)
			}
		}
		r.done <- res
		return
	}
	var ok []*writeReq
	for i, r := range group {
		if err := r.ctx.Err(); err != nil {
			r.done <- writeResult{err: err}
			continue
		}
		// abort ends the group: nothing in the transaction is committed,
		// and every write not yet answered gets err.
		abort := func(err error, answered bool) {
			rest := append(ok, group[i+1:]...)
			if !answered {
				rest = append(rest, r)
			}
			fail(rest, err)
			ok = nil
		}
		if _, err := sqlTx.Exec("SAVEPOINT w"); err != nil {
			abort(fmt.Errorf("sqlite: savepoint: %w", err), false)
			break
		}
		res := runWrite(r, x)
		if res.err != nil || res.panicked != nil {
			_, err1 := sqlTx.Exec("ROLLBACK TO w")
			_, err2 := sqlTx.Exec("RELEASE w")
			r.done <- res
			if err := errors.Join(err1, err2); err != nil {
				abort(fmt.Errorf("sqlite: rolling back a failed write: %w", err), true)
				break
			}
			continue
		}
		if _, err := sqlTx.Exec("RELEASE w"); err != nil {
			abort(fmt.Errorf("sqlite: release savepoint: %w", err), false)
			break
		}
		ok = append(ok, r)
	}
	if len(ok) == 0 {
		return
	}
	if err := sqlTx.Commit(); err != nil {
		fail(ok, fmt.Errorf("sqlite: commit: %w", err))
		return
	}
	fail(ok, nil)
}

type tx struct {
	db *DB
	tx *sql.Tx
}

func (x *tx) GetToken(ctx context.Context, id string) (*latchkey.Token, error) {
	return getToken(ctx, x.tx, id)
}

// SelectTokens reads the tokens sel picks, oldest first. Descendants are
// found through parent_id with a recursive query.
func (x *tx) SelectTokens(ctx context.Context, sel latchkey.TokenSelector) ([]*latchkey.Token, error) {
	var base string
	var args []any
	switch {
	case len(sel.IDs) > 0:
		base = "SELECT id FROM tokens WHERE id IN (SELECT value FROM json_each(?))"
		ids, _ := json.Marshal(sel.IDs)
		args = append(args, string(ids))
	case sel.Subject != "":
		base, args = "SELECT id FROM tokens WHERE subject = ?", append(args, sel.Subject)
	case sel.Tag != "":
		base, args = "SELECT id FROM tokens WHERE EXISTS (SELECT 1 FROM json_each(tokens.tags) WHERE value = ?)", append(args, sel.Tag)
	case sel.Prefix != "":
		base, args = "SELECT id FROM tokens WHERE prefix = ?", append(args, sel.Prefix)
	case sel.Parent != "":
		base, args = "SELECT id FROM tokens WHERE parent_id = ?", append(args, sel.Parent)
	default:
		return nil, latchkey.Errorf(latchkey.EInvalid, "select tokens: no selector given")
	}
	q := `WITH RECURSIVE picked(id) AS (` + base
	if sel.Descendants || sel.Parent != "" {
		q += ` UNION SELECT t.id FROM tokens t JOIN picked p ON t.parent_id = p.id`
	}
	q += `) SELECT ` + tokenColumns + ` FROM tokens WHERE id IN (SELECT id FROM picked)`
	if sel.Keyspace != "" {
		q, args = q+` AND keyspace = ?`, append(args, sel.Keyspace)
	}
	q += ` ORDER BY seq`
	toks, _, err := queryTokens(ctx, x.tx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: select tokens: %w", err)
	}
	return toks, nil
}

func (x *tx) CreateToken(ctx context.Context, t *latchkey.Token, ev *latchkey.AuditEvent) error {
	if t.SeriesID == "" {
		t.SeriesID = t.ID
	}
	c, err := tokenrow.Encode(t)
	if err != nil {
		return err
	}
	_, err = x.tx.ExecContext(ctx, `INSERT INTO tokens (id, prefix, name, subject, scopes, tags, meta, created_at, created_by,
		expires_at, not_before, status, revoked_at, revoked_by, revoked_reason, last_used_at, version, hash,
		constraints, max_uses, uses, suspended_at, suspended_by, suspended_reason, suspended_via,
		parent_id, ancestors, predecessor_id, successor_id, rotated_at, series_id, inherited, keyspace, roles, terms)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Prefix, t.Name, t.Subject, c.Scopes, c.Tags, c.Meta, micros(t.CreatedAt), t.CreatedBy,
		nullMicros(t.ExpiresAt), nullMicros(t.NotBefore), string(t.Status), nullMicros(t.RevokedAt),
		t.RevokedBy, t.RevokedReason, nullMicros(t.LastUsedAt), t.Version, t.Hash,
		c.Constraints, t.MaxUses, t.Uses, nullMicros(t.SuspendedAt), t.SuspendedBy, t.SuspendedReason, t.SuspendedVia,
		t.ParentID, c.Ancestors, t.PredecessorID, t.SuccessorID, nullMicros(t.RotatedAt), t.SeriesID, c.Inherited, latchkey.KeyspaceOf(t.Keyspace), c.Roles, c.Terms)
	if isUniqueViolation(err) {
		return latchkey.Errorf(latchkey.EConflict, "a token with id %s already exists", t.ID)
	}
	if err != nil {
		return fmt.Errorf("sqlite: create token: %w", err)
	}
	return x.audit(ctx, ev)
}

func (x *tx) UpdateToken(ctx context.Context, t *latchkey.Token, ev *latchkey.AuditEvent) error {
	c, err := tokenrow.Encode(t)
	if err != nil {
		return err
	}
	res, err := x.tx.ExecContext(ctx, `UPDATE tokens SET name = ?, subject = ?, scopes = ?, tags = ?, meta = ?,
		expires_at = ?, not_before = ?, status = ?, revoked_at = ?, revoked_by = ?, revoked_reason = ?,
		version = ?, hash = ?, constraints = ?, max_uses = ?,
		suspended_at = ?, suspended_by = ?, suspended_reason = ?, suspended_via = ?,
		parent_id = ?, ancestors = ?, predecessor_id = ?, successor_id = ?, rotated_at = ?, series_id = ?, inherited = ?, roles = ?, terms = ?
		WHERE id = ? AND version = ?`,
		t.Name, t.Subject, c.Scopes, c.Tags, c.Meta, nullMicros(t.ExpiresAt), nullMicros(t.NotBefore), string(t.Status),
		nullMicros(t.RevokedAt), t.RevokedBy, t.RevokedReason, t.Version+1, t.Hash, c.Constraints, t.MaxUses,
		nullMicros(t.SuspendedAt), t.SuspendedBy, t.SuspendedReason, t.SuspendedVia,
		t.ParentID, c.Ancestors, t.PredecessorID, t.SuccessorID, nullMicros(t.RotatedAt), t.Series(), c.Inherited, c.Roles, c.Terms,
		t.ID, t.Version)
	if err != nil {
		return fmt.Errorf("sqlite: update token: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		if _, err := getToken(ctx, x.tx, t.ID); err != nil {
			return err
		}
		return latchkey.Errorf(latchkey.EConflict, "token %s changed concurrently; retry", t.ID)
	}
	t.Version++
	return x.audit(ctx, ev)
}

func (x *tx) audit(ctx context.Context, ev *latchkey.AuditEvent) error {
	if ev == nil {
		return nil
	}
	return x.db.insertAudit(ctx, x.tx, []latchkey.AuditEvent{*ev}, nil)
}

// ConsumeUse spends one use from each budget, all or none. The single
// writer connection serialises it with every other write, so the check
// and the decrement cannot interleave with another consumer's.
func (db *DB) ConsumeUse(ctx context.Context, series []string) (int64, bool, error) {
	if len(series) == 0 {
		return -1, true, nil
	}
	sqlTx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, fmt.Errorf("sqlite: consume use: %w", err)
	}
	defer sqlTx.Rollback()
	remaining := int64(-1)
	for _, id := range series {
		var left int64
		q := `UPDATE tokens SET uses = uses + 1 WHERE id = ? AND max_uses > 0 AND uses < max_uses RETURNING max_uses - uses`
		if strings.HasPrefix(id, latchkey.BudgetPrefix) {
			q = `UPDATE budgets SET uses = uses + 1 WHERE key = ? AND uses < max_uses RETURNING max_uses - uses`
		}
		err := sqlTx.QueryRowContext(ctx, q, id).Scan(&left)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, false, nil // spent (or gone): the rollback undoes the others
		}
		if err != nil {
			return 0, false, fmt.Errorf("sqlite: consume use: %w", err)
		}
		if remaining < 0 || left < remaining {
			remaining = left
		}
	}
	if err := sqlTx.Commit(); err != nil {
		return 0, false, fmt.Errorf("sqlite: consume use: %w", err)
	}
	return remaining, true, nil
}

// TouchTokens raises last_used_at, in one transaction for the batch.
func (db *DB) TouchTokens(ctx context.Context, uses []latchkey.TokenUse) error {
	if len(uses) == 0 {
		return nil
	}
	sqlTx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: touch tokens: %w", err)
	}
	defer sqlTx.Rollback()
	stmt, err := sqlTx.PrepareContext(ctx, `UPDATE tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`)
	if err != nil {
		return fmt.Errorf("sqlite: touch tokens: %w", err)
	}
	defer stmt.Close()
	for _, u := range uses {
		at := micros(latchkey.TimeOf(u.At))
		if _, err := stmt.ExecContext(ctx, at, u.ID, at); err != nil {
			return fmt.Errorf("sqlite: touch tokens: %w", err)
		}
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("sqlite: touch tokens: %w", err)
	}
	return nil
}

type scanner interface{ Scan(dest ...any) error }

func scanToken(s scanner) (*latchkey.Token, int64, error) {
	var r tokenrow.Row
	if err := s.Scan(r.Dest()...); err != nil {
		return nil, 0, err
	}
	return r.Token()
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func nullMicros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

// SetBudget sets the size of a shared usage budget (an identity's),
// keeping what has been spent; max 0 removes it.
func (db *DB) SetBudget(ctx context.Context, key string, max int64) error {
	var err error
	if max <= 0 {
		_, err = db.w.ExecContext(ctx, `DELETE FROM budgets WHERE key = ?`, key)
	} else {
		_, err = db.w.ExecContext(ctx, `INSERT INTO budgets (key, max_uses) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET max_uses = excluded.max_uses`, key, max)
	}
	if err != nil {
		return fmt.Errorf("sqlite: set budget: %w", err)
	}
	return nil
}

// BudgetUses reports how much of a shared budget is spent (0 if none).
func (db *DB) BudgetUses(ctx context.Context, key string) (int64, error) {
	var n int64
	err := db.r.QueryRowContext(ctx, `SELECT uses FROM budgets WHERE key = ?`, key).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: budget: %w", err)
	}
	return n, nil
}
