// Package sqlite is the embedded latchkey.Store: one file, WAL mode, no
// server to run. It uses modernc.org/sqlite (pure Go, no cgo).
//
// Writes go through a single connection in IMMEDIATE transactions (SQLite
// allows one writer; queueing in Go is cheaper than SQLITE_BUSY retries);
// reads use a separate pool, which WAL lets run beside the writer.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/latchkeyhq/latchkey"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DB is a latchkey.Store backed by one SQLite file.
type DB struct {
	path string
	w    *sql.DB // one connection: the writer
	r    *sql.DB // readers

	insertChunk, insertToken, insertTokens *sql.Stmt // audit inserts, prepared on the writer
	insertSources                          *sql.Stmt
	getToken                               *sql.Stmt // a token by id, prepared on the readers: parsing the query cost 3x the read

	writes    chan *writeReq // WriteTx calls waiting for the committer
	stop      chan struct{}  // closed by Close
	committed chan struct{}  // closed when the committer has finished
	closeOnce sync.Once

	nTx, nWrites atomic.Uint64

	sources sourceCache // which addresses the newest segment's rows of audit_sources hold
}

var _ latchkey.Store = (*DB)(nil)

// Open opens (creating if needed) the database at path and applies any
// pending migrations.
func Open(ctx context.Context, path string) (*DB, error) {
	q := url.Values{}
	for _, p := range []string{
		"busy_timeout(10000)",
		"journal_mode(WAL)",
		// FULL: a revocation that was acknowledged must survive power loss.
		// Audit batching amortises the fsync.
		"synchronous(FULL)",
		"foreign_keys(1)",
	} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	// A URI filename: '?', '#' and '%' in the path must be escaped.
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	r, err := sql.Open("sqlite", dsn)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	db := &DB{path: path, w: w, r: r, writes: make(chan *writeReq, maxGroup), stop: make(chan struct{}), committed: make(chan struct{})}
	go db.committer()
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if db.insertChunk, err = w.PrepareContext(ctx, chunkInsert); err == nil {
		if db.insertToken, err = w.PrepareContext(ctx, tokenIndexInsert(1)); err == nil {
			if db.insertTokens, err = w.PrepareContext(ctx, tokenIndexInsert(keysPerInsert)); err == nil {
				db.insertSources, err = w.PrepareContext(ctx, sourceIndexInsert)
			}
		}
	}
	if err == nil {
		db.getToken, err = r.PrepareContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = ?`)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: prepare: %w", err)
	}
	return db, nil
}

// Close closes both pools.
func (db *DB) Close() error {
	db.closeOnce.Do(func() { close(db.stop) })
	<-db.committed
	var errs []error
	for _, st := range []*sql.Stmt{db.insertChunk, db.insertToken, db.insertTokens, db.insertSources, db.getToken} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(append(errs, db.r.Close(), db.w.Close())...)
}

// Ping checks that the file can be read.
func (db *DB) Ping(ctx context.Context) error {
	var one int
	if err := db.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// migrate applies, in order and each in its own transaction, every
// embedded migration newer than the recorded schema version.
func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
		return fmt.Errorf("sqlite: migrations table: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("sqlite: migration %s: name must start with a number", base)
		}
		if err := db.applyMigration(ctx, v, name); err != nil {
			return err
		}
	}
	return nil
}

func (db *DB) applyMigration(ctx context.Context, v int, name string) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: migration %d: %w", v, err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, v).Scan(&n); err != nil {
		return fmt.Errorf("sqlite: migration %d: %w", v, err)
	}
	if n > 0 {
		return nil
	}
	body, err := migrations.ReadFile(name)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return fmt.Errorf("sqlite: migration %s: %w", name, err)
	}
	if step := goMigrations[v]; step != nil {
		if err := step(ctx, tx); err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", name, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (?)`, v); err != nil {
		return fmt.Errorf("sqlite: migration %d: %w", v, err)
	}
	return tx.Commit()
}

// GetSetting returns a stored server fact.
func (db *DB) GetSetting(ctx context.Context, key string) (string, bool, error) {
	var v string
	err := db.r.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("sqlite: get setting: %w", err)
	}
	return v, true, nil
}

// PutSettingIfAbsent stores value unless key is set and returns what is stored.
func (db *DB) PutSettingIfAbsent(ctx context.Context, key, value string) (string, error) {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("sqlite: put setting: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, key, value); err != nil {
		return "", fmt.Errorf("sqlite: put setting: %w", err)
	}
	var v string
	if err := tx.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v); err != nil {
		return "", fmt.Errorf("sqlite: put setting: %w", err)
	}
	return v, tx.Commit()
}

// PutSetting stores value under key.
func (db *DB) PutSetting(ctx context.Context, key, value string) error {
	if _, err := db.w.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value); err != nil {
		return fmt.Errorf("sqlite: put setting: %w", err)
	}
	return nil
}

// ChangeSetting implements latchkey.Store: one transaction on the single
// writer connection. A single node needs no announcement.
func (db *DB) ChangeSetting(ctx context.Context, key string, fn func(old string, ok bool) (string, bool, *latchkey.AuditEvent, error)) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: change setting: %w", err)
	}
	defer tx.Rollback()
	var old string
	err = tx.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&old)
	ok := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlite: change setting: %w", err)
	}
	value, del, ev, err := fn(old, ok)
	if err != nil {
		return err
	}
	if del {
		_, err = tx.ExecContext(ctx, `DELETE FROM settings WHERE key = ?`, key)
	} else {
		_, err = tx.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	}
	if err != nil {
		return fmt.Errorf("sqlite: change setting: %w", err)
	}
	if ev != nil {
		if err := db.insertAudit(ctx, tx, []latchkey.AuditEvent{*ev}, nil); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: change setting: %w", err)
	}
	return nil
}

// DeleteSetting removes key, if set.
func (db *DB) DeleteSetting(ctx context.Context, key string) error {
	if _, err := db.w.ExecContext(ctx, `DELETE FROM settings WHERE key = ?`, key); err != nil {
		return fmt.Errorf("sqlite: delete setting: %w", err)
	}
	return nil
}

// SettingsWithPrefix returns every setting whose key starts with prefix
// (the node's published activity counts).
func (db *DB) SettingsWithPrefix(ctx context.Context, prefix string) (map[string]string, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT key, value FROM settings WHERE substr(key, 1, length(?1)) = ?1`, prefix)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list settings: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("sqlite: list settings: %w", err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list settings: %w", err)
	}
	return out, nil
}

// isUniqueViolation reports a UNIQUE or PRIMARY KEY constraint failure.
func isUniqueViolation(err error) bool {
	var coder interface{ Code() int }
	if errors.As(err, &coder) {
		c := coder.Code()
		return c == 2067 || c == 1555 // SQLITE_CONSTRAINT_UNIQUE, _PRIMARYKEY
	}
	return false
}
