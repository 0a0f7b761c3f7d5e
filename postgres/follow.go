package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
)

// Channel is the LISTEN/NOTIFY channel changes are announced on; the
// payload is "<token id>:<version>".
const Channel = "latchkey_changes"

// FollowStats are a follower's counters.
type FollowStats struct {
	Notified   uint64 // changes received by notification
	Polled     uint64 // changes found by polling
	Reconnects uint64 // times the listening connection was replaced
}

// Follower keeps one node's caches coherent with changes made on any
// node: it LISTENs for notifications (the fast path) and polls the changes
// table (the backstop, for notifications missed while its connection was
// down). Every change reaches OnChange within the poll interval at worst.
type Follower struct {
	DB       *DB
	OnChange func(tokenID string)
	// Poll is the backstop interval (default 1s): the bound on how long a
	// node that missed a notification keeps serving a stale entry.
	Poll   time.Duration
	Logger *slog.Logger

	appName string // the listening connection's application_name

	notified, polled, reconnects atomic.Uint64
	listening                    atomic.Bool
}

// NewFollower returns a follower calling onChange for every token changed
// on any node.
func NewFollower(db *DB, poll time.Duration, onChange func(string), logger *slog.Logger) *Follower {
	b := make([]byte, 4)
	rand.Read(b)
	return &Follower{DB: db, OnChange: onChange, Poll: poll, Logger: logger, appName: "latchkey-listener-" + hex.EncodeToString(b)}
}

// Stats returns the counters.
func (f *Follower) Stats() FollowStats {
	return FollowStats{Notified: f.notified.Load(), Polled: f.polled.Load(), Reconnects: f.reconnects.Load()}
}

// AppName is the application_name of the listening connection, as
// pg_stat_activity shows it.
func (f *Follower) AppName() string { return f.appName }

// Listening reports whether the notification connection is up.
func (f *Follower) Listening() bool { return f.listening.Load() }

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

// listen holds one connection LISTENing, reconnecting with backoff.
func (f *Follower) listen(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := f.listenOnce(ctx)
		f.listening.Store(false)
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
		backoff = min(2*backoff, 10*time.Second)
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
		id, _, _ := strings.Cut(n.Payload, ":")
		if id != "" {
			f.notified.Add(1)
			f.OnChange(id)
		}
	}
}

// poll reads the changes table every Poll interval. Each read looks back a
// little further than the last (sequence numbers can commit out of order),
// so a change is never skipped; invalidating twice is harmless.
func (f *Follower) poll(ctx context.Context) {
	since := time.Now().Add(-f.Poll)
	t := time.NewTicker(f.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		ids, err := f.DB.changesSince(ctx, since.Add(-5*time.Second))
		if err != nil {
			if ctx.Err() == nil {
				f.Logger.Warn("postgres: polling changes failed", "err", err)
			}
			continue
		}
		for _, id := range ids {
			f.polled.Add(1)
			f.OnChange(id)
		}
		since = start
	}
}

// changesSince lists the tokens changed at or after t.
func (db *DB) changesSince(ctx context.Context, t time.Time) ([]string, error) {
	rows, err := db.pool.Query(ctx, `SELECT DISTINCT token_id FROM changes WHERE at >= $1`, t.UnixMicro())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// PruneChanges deletes change records older than d (they only serve
// nodes catching up after a short disconnection).
func (db *DB) PruneChanges(ctx context.Context, d time.Duration) error {
	_, err := db.pool.Exec(ctx, `DELETE FROM changes WHERE at < $1`, time.Now().Add(-d).UnixMicro())
	return err
}
