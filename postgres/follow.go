package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/latchkeyhq/latchkey"
)

// Channel is the LISTEN/NOTIFY channel changes are announced on; the
// payload is "<token id>:<version>", or "block:<source>:0" for a block
// put or lifted.
const Channel = "latchkey_changes"

// BlockChange prefixes the subject of a change to a block: OnChange is
// called with "block:" and the source. Token ids never contain a colon.
const BlockChange = "block:"

// SettingChange prefixes the subject of a change made with ChangeSetting
// (a keyspace, role or identity): "setting:<key>". Keys hold no colon.
const SettingChange = "setting:"

// dbNowMicros is the database's clock in Unix microseconds.
const dbNowMicros = `(extract(epoch from clock_timestamp()) * 1000000)::bigint`

// Follower keeps one node's caches coherent with changes made on any
// node: it LISTENs for notifications (the fast path) and polls the changes
// table (the backstop, for notifications missed while its connection was
// down). Every change reaches OnChange within the poll interval at worst.
type Follower struct {
	DB *DB
	// OnChange gets the token id (or BlockChange/SettingChange subject)
	// and the version the change left it at (0 for blocks and settings).
	OnChange func(id string, version int64)
	// Poll is the backstop interval (default 1s): the bound on how long a
	// node that missed a notification keeps serving a stale entry.
	Poll   time.Duration
	Logger *slog.Logger

	appName string // the listening connection's application_name

	notified, polled, reconnects atomic.Uint64
	listening                    atomic.Bool
}

// NewFollower returns a follower calling onChange for every token changed
// on any node, and for every block put or lifted (BlockChange+source).
func NewFollower(db *DB, poll time.Duration, onChange func(string, int64), logger *slog.Logger) *Follower {
	b := make([]byte, 4)
	rand.Read(b)
	return &Follower{DB: db, OnChange: onChange, Poll: poll, Logger: logger, appName: "latchkey-listener-" + hex.EncodeToString(b)}
}

// AppName is the application_name of the listening connection, as
// pg_stat_activity shows it.
func (f *Follower) AppName() string { return f.appName }

// Listening reports whether the notification connection is up.
func (f *Follower) Listening() bool { return f.listening.Load() }

// Follow implements latchkey.ChangeFeed: it dispatches every change to h
// (a block's subject carries BlockChange) and, while it runs, prunes the
// change log of entries older than a day once an hour.
func (f *Follower) Follow(ctx context.Context, h latchkey.ChangeHandler) {
	if f.Logger == nil {
		f.Logger = slog.Default()
	}
	f.OnChange = func(id string, version int64) {
		if src, ok := strings.CutPrefix(id, BlockChange); ok {
			h.BlockChanged(src)
			return
		}
		if key, ok := strings.CutPrefix(id, SettingChange); ok {
			h.SettingChanged(key)
			return
		}
		h.TokenChanged(id, version)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := f.DB.PruneChanges(ctx, 24*time.Hour); err != nil && ctx.Err() == nil {
					f.Logger.Warn("postgres: pruning the change log failed", "err", err)
				}
			}
		}
	})
	f.Run(ctx)
}

// FeedStats implements latchkey.ChangeFeed.
func (f *Follower) FeedStats() latchkey.FeedStats {
	return latchkey.FeedStats{Listening: f.Listening(), Notified: f.notified.Load(), Polled: f.polled.Load(), Reconnects: f.reconnects.Load()}
}

// Run follows changes until ctx ends.
func (f *Follower) Run(ctx context.Context) {
	if f.Poll <= 0 {
		f.Poll = time.Second
	}
	if f.Logger == nil {
		f.Logger = slog.Default()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.listen(ctx)
	}()
	f.poll(ctx)
	<-done
}

// maxBackoff caps the wait between reconnection attempts: the poll covers
// the gap, but notifications should be back soon after the database is.
const maxBackoff = 2 * time.Second

// listen holds one connection LISTENing, reconnecting with backoff.
func (f *Follower) listen(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := f.listenOnce(ctx)
		if f.listening.Swap(false) {
			backoff = 100 * time.Millisecond // it was up: start over
		}
		if ctx.Err() != nil {
			return
		}
		f.reconnects.Add(1)
		f.Logger.Warn("postgres: change notifications lost; reconnecting (polling covers the gap)", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (f *Follower) listenOnce(ctx context.Context) error {
	pc, err := f.DB.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	conn := pc.Hijack() // ours alone: it stays in LISTEN
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SELECT set_config('application_name', $1, false)", f.appName); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return err
	}
	f.listening.Store(true)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		id, version := n.Payload, int64(0)
		if i := strings.LastIndexByte(id, ':'); i >= 0 {
			version, _ = strconv.ParseInt(id[i+1:], 10, 64)
			id = id[:i]
		}
		if id != "" {
			f.notified.Add(1)
			f.OnChange(id, version)
		}
	}
}

// pollOverlap is how far each poll reaches back before the previous one
// began: a change stamped just before that moment may commit after it
// (a transaction's stamp precedes its commit), so the overlap must exceed
// the longest write transaction. Invalidating twice is harmless.
const pollOverlap = 5 * time.Second

// poll reads the changes table every Poll interval, from where the last
// successful read began (less the overlap) by the database's clock, so a
// node that could not poll for a while (an outage) catches up on
// everything it missed once it can.
func (f *Follower) poll(ctx context.Context) {
	var since int64 // database clock, Unix microseconds; 0: not yet read
	t := time.NewTicker(f.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changes, start, err := f.DB.changesSince(ctx, since)
		if err != nil {
			if ctx.Err() == nil {
				f.Logger.Warn("postgres: polling changes failed", "err", err)
			}
			continue
		}
		for _, c := range changes {
			f.polled.Add(1)
			f.OnChange(c.id, c.version)
		}
		since = start - pollOverlap.Microseconds()
	}
}

// change is one entry of the change log: a token (or block, setting) and
// the latest version a change left it at.
type change struct {
	id      string
	version int64
}

// changesSince lists the tokens changed at or after since (Unix
// microseconds by the database's clock; 0: the first read, which starts
// from now), each with its latest version, and returns the database's
// clock as the read began.
func (db *DB) changesSince(ctx context.Context, since int64) (changes []change, start int64, err error) {
	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback(context.Background())
	if err := tx.QueryRow(ctx, `SELECT `+dbNowMicros).Scan(&start); err != nil {
		return nil, 0, err
	}
	if since == 0 {
		return nil, start, nil
	}
	rows, err := tx.Query(ctx, `SELECT token_id, MAX(version) FROM changes WHERE at >= $1 GROUP BY token_id`, since)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var c change
		if err := rows.Scan(&c.id, &c.version); err != nil {
			return nil, 0, err
		}
		changes = append(changes, c)
	}
	return changes, start, rows.Err()
}

// PruneChanges deletes change records older than d (they only serve
// nodes catching up after a short disconnection).
func (db *DB) PruneChanges(ctx context.Context, d time.Duration) error {
	_, err := db.pool.Exec(ctx, `DELETE FROM changes WHERE at < `+dbNowMicros+` - $1`, d.Microseconds())
	return err
}
