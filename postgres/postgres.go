// Package postgres is the latchkey.Store for clusters: many stateless
// latchkey nodes on one PostgreSQL database (docs/architecture.md §4), through
// github.com/jackc/pgx/v5. It passes the same conformance suite
// (storetest) as the embedded SQLite store.
package postgres

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/internal/tokenrow"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DB is a latchkey.Store on PostgreSQL.
type DB struct {
	pool   *pgxpool.Pool
	notify groupNotify
	// namespace names this store among the others one database may hold
	// (a hash of the database and schema names), for the receipt channels.
	namespace string
}

var _ latchkey.Store = (*DB)(nil)

// DefaultMaxConns is the pool's size unless the URL sets pool_max_conns.
// pgx's own default is the number of CPUs (at least 4), which capped a
// 2-core node at 4 writing transactions at once; a write waits mostly on
// PostgreSQL's commit (the WAL flush, which PostgreSQL shares among the
// commits waiting), not on a CPU, so more of them in flight is what makes
// more of them per second.
const DefaultMaxConns = 32

// Open connects to dsn (a postgres:// URL or key=value string) and applies
// pending migrations, one node at a time (an advisory lock).
func Open(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	db := &DB{pool: pool}
	if err := db.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	var where string
	if err := pool.QueryRow(ctx, `SELECT current_database() || '.' || current_schema()`).Scan(&where); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	sum := sha256.Sum256([]byte(where))
	db.namespace = hex.EncodeToString(sum[:6])
	return db, nil
}

// Close closes the pool.
func (db *DB) Close() error {
	db.pool.Close()
	return nil
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

const migrationLock = 7480_0001 // pg_advisory_xact_lock key for migrations

// goMigrations are steps a migration's SQL cannot take, run after it in
// the same transaction.
var goMigrations = map[int]func(ctx context.Context, tx pgx.Tx) error{
	9: fillTokenTerms,
}

// fillTokenTerms gives the tokens already stored their search terms (the
// update trigger indexes them), a page of tokens at a time.
func fillTokenTerms(ctx context.Context, tx pgx.Tx) error {
	return tokenrow.FillTerms(ctx, func(after int64) ([]*latchkey.Token, []int64, error) {
		return queryTokens(ctx, tx, `SELECT `+tokenColumns+` FROM tokens WHERE seq > $1 ORDER BY seq LIMIT $2`, after, tokenrow.FillPage)
	}, func(seq int64, terms string) error {
		_, err := tx.Exec(ctx, `UPDATE tokens SET terms = $1 WHERE seq = $2`, terms, seq)
		return err
	})
}

func (db *DB) migrate(ctx context.Context) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("postgres: migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
			return fmt.Errorf("postgres: migrations table: %w", err)
		}
		for _, name := range names {
			base := strings.TrimPrefix(name, "migrations/")
			v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
			if err != nil {
				return fmt.Errorf("postgres: migration %s: name must start with a number", base)
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, v).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				continue
			}
			body, err := migrations.ReadFile(name)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return fmt.Errorf("postgres: migration %s: %w", base, err)
			}
			if step := goMigrations[v]; step != nil {
				if err := step(ctx, tx); err != nil {
					return fmt.Errorf("postgres: migration %s: %w", base, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v); err != nil {
				return err
			}
		}
		return nil
	})
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func nullMicros(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	v := t.UnixMicro()
	return &v
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// GetSetting returns a stored server fact.
func (db *DB) GetSetting(ctx context.Context, key string) (string, bool, error) {
	var v string
	err := db.pool.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("postgres: get setting: %w", err)
	}
	return v, true, nil
}

// PutSettingIfAbsent stores value unless key is set, and returns what is
// stored: concurrent first starts of several nodes agree on one value.
func (db *DB) PutSettingIfAbsent(ctx context.Context, key, value string) (string, error) {
	if _, err := db.pool.Exec(ctx, `INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, key, value); err != nil {
		return "", fmt.Errorf("postgres: put setting: %w", err)
	}
	v, _, err := db.GetSetting(ctx, key)
	return v, err
}

// PutSetting stores value under key.
func (db *DB) PutSetting(ctx context.Context, key, value string) error {
	if _, err := db.pool.Exec(ctx, `INSERT INTO settings (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value); err != nil {
		return fmt.Errorf("postgres: put setting: %w", err)
	}
	return nil
}

// ChangeSetting implements latchkey.Store: the row is locked (or, when
// absent, its insert conflicts with a concurrent one, which retries), and
// the change is announced with SettingChange.
func (db *DB) ChangeSetting(ctx context.Context, key string, fn func(old string, ok bool) (string, bool, *latchkey.AuditEvent, error)) error {
	for attempt := 0; ; attempt++ {
		var fnErr error
		var n notes
		err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
			n = n[:0]
			var old string
			err := tx.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1 FOR UPDATE`, key).Scan(&old)
			ok := err == nil
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("postgres: change setting: %w", err)
			}
			value, del, ev, err := fn(old, ok)
			if err != nil {
				fnErr = err
				return err
			}
			switch {
			case del:
				_, err = tx.Exec(ctx, `DELETE FROM settings WHERE key = $1`, key)
			case ok:
				_, err = tx.Exec(ctx, `UPDATE settings SET value = $2 WHERE key = $1`, key, value)
			default:
				_, err = tx.Exec(ctx, `INSERT INTO settings (key, value) VALUES ($1, $2)`, key, value)
			}
			if err != nil {
				return err
			}
			if err := publish(ctx, tx, &n, SettingChange+key, 0); err != nil {
				return err
			}
			return appendEvent(ctx, tx, nil, ev)
		})
		if err == nil {
			db.announce(ctx, n)
		}
		if isUniqueViolation(err) && attempt < 3 {
			continue // created concurrently: read it now
		}
		if fnErr != nil {
			return fnErr // unchanged, as the contract says
		}
		if err != nil && !strings.HasPrefix(err.Error(), "postgres:") {
			err = fmt.Errorf("postgres: change setting: %w", err)
		}
		return err
	}
}

// DeleteSetting removes key, if set.
func (db *DB) DeleteSetting(ctx context.Context, key string) error {
	if _, err := db.pool.Exec(ctx, `DELETE FROM settings WHERE key = $1`, key); err != nil {
		return fmt.Errorf("postgres: delete setting: %w", err)
	}
	return nil
}

// SettingsWithPrefix returns every setting whose key starts with prefix
// (the nodes' published activity counts).
func (db *DB) SettingsWithPrefix(ctx context.Context, prefix string) (map[string]string, error) {
	rows, err := db.pool.Query(ctx, `SELECT key, value FROM settings WHERE starts_with(key, $1)`, prefix)
	if err != nil {
		return nil, fmt.Errorf("postgres: list settings: %w", err)
	}
	out := map[string]string{}
	var k, v string
	_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error {
		out[k] = v
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list settings: %w", err)
	}
	return out, nil
}

// PutBlock stores or extends a block with its audit event.
func (db *DB) PutBlock(ctx context.Context, b latchkey.Block, ev *latchkey.AuditEvent) error {
	var n notes
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		n = n[:0]
		if _, err := tx.Exec(ctx, `INSERT INTO blocks (source, until, rule, reason, created_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (source) DO UPDATE SET until = greatest(blocks.until, excluded.until), rule = excluded.rule, reason = excluded.reason`,
			b.Source, micros(b.Until), b.Rule, b.Reason, micros(b.CreatedAt)); err != nil {
			return fmt.Errorf("postgres: put block: %w", err)
		}
		if err := publish(ctx, tx, &n, BlockChange+b.Source, 0); err != nil {
			return err
		}
		return appendEvent(ctx, tx, nil, ev)
	})
	if err == nil {
		db.announce(ctx, n)
	}
	return err
}

// DeleteBlock removes a block with its audit event.
func (db *DB) DeleteBlock(ctx context.Context, source string, ev *latchkey.AuditEvent) (bool, error) {
	var ok bool
	var n notes
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		n = n[:0]
		tag, err := tx.Exec(ctx, `DELETE FROM blocks WHERE source = $1`, source)
		if err != nil {
			return fmt.Errorf("postgres: delete block: %w", err)
		}
		if ok = tag.RowsAffected() > 0; !ok {
			return nil
		}
		if err := publish(ctx, tx, &n, BlockChange+source, 0); err != nil {
			return err
		}
		return appendEvent(ctx, tx, nil, ev)
	})
	if err == nil {
		db.announce(ctx, n)
	}
	return ok, err
}

// ListBlocks returns the blocks in force at now.
func (db *DB) ListBlocks(ctx context.Context, now time.Time) ([]latchkey.Block, error) {
	rows, err := db.pool.Query(ctx, `SELECT source, until, rule, reason, created_at FROM blocks WHERE until > $1 ORDER BY until, source`, micros(now))
	if err != nil {
		return nil, fmt.Errorf("postgres: list blocks: %w", err)
	}
	defer rows.Close()
	var out []latchkey.Block
	for rows.Next() {
		var b latchkey.Block
		var until, created int64
		if err := rows.Scan(&b.Source, &until, &b.Rule, &b.Reason, &created); err != nil {
			return nil, err
		}
		b.Until, b.CreatedAt = time.UnixMicro(until).UTC(), time.UnixMicro(created).UTC()
		out = append(out, b)
	}
	return out, rows.Err()
}
