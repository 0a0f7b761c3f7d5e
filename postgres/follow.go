package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/latchkeyhq/latchkey"
)

// Channel is the LISTEN/NOTIFY channel changes are announced on, suffixed
// with the store's namespace like the others below (DB.ChangeChannel): the
// payload is "<token id>:<version>", or "block:<source>:<seq>" for a block
// put or lifted, "setting:<key>:<seq>" for a setting changed.
const Channel = "latchkey_changes"

// ChangeChannel is the channel this store's changes are announced on:
// Channel and the namespace, so that a deployment in another schema of the
// same database (NOTIFY reaches every session of a database) neither
// evicts this one's cache entries nor reloads its settings.
func (db *DB) ChangeChannel() string { return Channel + "_" + db.namespace }

// BarrierChannel carries receipt requests ("<receipt id>:<node>"): every
// other node applies what it has been told so far (and what the change log
// holds), then answers on AckChannel ("<receipt id>:<its node>").
// Notifications reach each listener in the order they were sent, so a
// barrier arrives after every change announced before it. Both are
// suffixed with the store's namespace (DB.namespace): NOTIFY reaches every
// session of the database, and two deployments in two schemas of one
// database must not answer each other's receipts.
const (
	BarrierChannel = "latchkey_barriers"
	AckChannel     = "latchkey_acks"
)

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
	// and the version the change left it at (for blocks and settings, the
	// change's sequence number: newer for every change, and nothing else).
	OnChange func(id string, version int64)
	// Poll is the backstop interval (default 1s): the bound on how long a
	// node that missed a notification keeps serving a stale entry.
	Poll   time.Duration
	Logger *slog.Logger

	// Node names this node in the live-node list and in receipts.
	Node string
	// OnPoll, when set, is told how long each successful poll took (the
	// verifier learns from it how slow the database is).
	OnPoll func(took time.Duration)

	appName string // the listening connection's application_name
	holder  string // this process's id in the nodes table: the holder of Node

	lost     chan struct{} // closed when another process took Node over
	lostOnce sync.Once

	notified, polled, reconnects atomic.Uint64
	listening                    atomic.Bool

	pollMu  sync.Mutex // one read of the change log at a time (the poll, a barrier)
	since   int64      // guarded by pollMu: where the next read starts (database clock, µs); 0: not yet read
	started time.Time  // when Run began: the first read reaches back to it

	seenMu sync.Mutex
	seen   map[string]seenChange // what has been applied lately, by id: a re-read applies nothing twice

	waitMu  sync.Mutex
	waiters map[string]chan string // receipt id → the nodes' answers
}

// NewFollower returns a follower calling onChange for every token changed
// on any node, and for every block put or lifted (BlockChange+source).
func NewFollower(db *DB, poll time.Duration, onChange func(string, int64), logger *slog.Logger) *Follower {
	b := make([]byte, 4)
	rand.Read(b)
	h := make([]byte, 8)
	rand.Read(h)
	return &Follower{DB: db, OnChange: onChange, Poll: poll, Logger: logger, appName: "latchkey-listener-" + hex.EncodeToString(b),
		holder: hex.EncodeToString(h), lost: make(chan struct{})}
}

// Claim takes the node name (Node) for this process before it serves.
// Two processes with one name would overwrite each other's activity
// counts and answer each other's receipts, so a name whose holder is live
// (its heartbeat within liveFor) is refused; a name whose holder stopped
// renewing (a crashed or killed node) is taken over once its heartbeat is
// that old, which Claim waits for.
func (f *Follower) Claim(ctx context.Context) error {
	if f.Node == "" {
		return nil
	}
	live := f.liveFor()
	deadline := time.Now().Add(live + time.Second)
	var first time.Time // when the holder's heartbeat was first seen, by its age
	for waited := false; ; waited = true {
		ok, ago, err := f.DB.claimNode(ctx, f.Node, f.holder, live)
		if err != nil {
			return fmt.Errorf("postgres: claiming the node name %q: %w", f.Node, err)
		}
		if ok {
			if waited {
				f.Logger.Info("postgres: took over the node name from a process that stopped renewing it", "node", f.Node)
			}
			return nil
		}
		beat := time.Now().Add(-ago)
		renewed := waited && beat.After(first.Add(50*time.Millisecond))
		if !waited {
			first = beat
		}
		if renewed || time.Now().After(deadline) {
			// The holder renewed its heartbeat while this one waited: it is
			// live, and it keeps the name.
			return fmt.Errorf("another node named %q is running (its heartbeat is %v old): give this node its own --node name, or stop the other one first",
				f.Node, ago.Round(time.Millisecond))
		}
		if !waited {
			f.Logger.Warn("postgres: the node name is held by another process; waiting to see whether it is still live",
				"node", f.Node, "heartbeat_age", ago.Round(time.Millisecond), "takeover_after", live)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Lost is closed if another process takes the node name over (this one
// could not renew it for liveFor, and the other claimed it): this process
// must stop serving under that name.
func (f *Follower) Lost() <-chan struct{} { return f.lost }

// claimNode makes holder the holder of node, unless another holder renewed
// it within live; it returns false and the age of that holder's heartbeat
// then.
func (db *DB) claimNode(ctx context.Context, node, holder string, live time.Duration) (bool, time.Duration, error) {
	var got string
	err := db.pool.QueryRow(ctx, `INSERT INTO nodes (node, seen, holder) VALUES ($1, `+dbNowMicros+`, $2)
		ON CONFLICT (node) DO UPDATE SET seen = excluded.seen, holder = excluded.holder
		WHERE nodes.holder = excluded.holder OR nodes.seen < excluded.seen - $3
		RETURNING holder`, node, holder, live.Microseconds()).Scan(&got)
	if err == nil {
		return true, 0, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return false, 0, err
	}
	var ago int64
	if err := db.pool.QueryRow(ctx, `SELECT `+dbNowMicros+` - seen FROM nodes WHERE node = $1`, node).Scan(&ago); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, 0, err
	}
	return false, time.Duration(ago) * time.Microsecond, nil
}

// beat renews this process's hold on Node, claiming it again if its row
// is gone or its hold lapsed (an outage longer than liveFor) while nobody
// else took it; if somebody did, Lost is closed.
func (f *Follower) beat(ctx context.Context) {
	tag, err := f.DB.pool.Exec(ctx, `UPDATE nodes SET seen = `+dbNowMicros+` WHERE node = $1 AND holder = $2`, f.Node, f.holder)
	if err == nil && tag.RowsAffected() == 1 {
		return
	}
	ok := false
	var ago time.Duration
	if err == nil {
		ok, ago, err = f.DB.claimNode(ctx, f.Node, f.holder, f.liveFor())
	}
	switch {
	case err != nil:
		if ctx.Err() == nil {
			f.Logger.Warn("postgres: marking this node live failed", "err", err)
		}
	case !ok:
		f.Logger.Error("postgres: another process now holds this node's name; stopping", "node", f.Node, "its_heartbeat_age", ago)
		f.lostOnce.Do(func() { close(f.lost) })
	}
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
	f.pollMu.Lock()
	f.started = time.Now()
	f.pollMu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.listen(ctx)
	}()
	if f.Node != "" {
		f.beat(ctx)
	}
	f.poll(ctx)
	<-done
	if f.Node != "" {
		// Stopping: no longer a node receipts wait for, and the name is
		// free at once (if it is still this process's).
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		f.DB.pool.Exec(dctx, `DELETE FROM nodes WHERE node = $1 AND holder = $2`, f.Node, f.holder)
	}
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
	barriers, acks := BarrierChannel+"_"+f.DB.namespace, AckChannel+"_"+f.DB.namespace
	for _, ch := range []string{f.DB.ChangeChannel(), barriers, acks} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			return err
		}
	}
	f.listening.Store(true)
	if f.reconnects.Load() > 0 {
		// Back after losing the connection: what was announced meanwhile
		// is lost; read the change log now rather than at the next poll.
		if err := f.pollOnce(ctx); err != nil && ctx.Err() == nil {
			f.Logger.Warn("postgres: reading the change log after reconnecting failed; the next poll will", "err", err)
		}
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case barriers:
			f.barrier(ctx, n.Payload)
			continue
		case acks:
			f.ack(n.Payload)
			continue
		}
		id, version := n.Payload, int64(0)
		if i := strings.LastIndexByte(id, ':'); i >= 0 {
			version, _ = strconv.ParseInt(id[i+1:], 10, 64)
			id = id[:i]
		}
		if id != "" {
			f.notified.Add(1)
			if f.news(id, version) { // else a read of the log came first
				f.OnChange(id, version)
			}
		}
	}
}

// seenChange is the newest version of an id this node has applied, and
// when (monotonic), for forgetting it once no read can return it again.
type seenChange struct {
	version int64
	at      time.Time
}

// news records that version of id is being applied (by a notification or
// a read of the change log) and reports whether it is news: newer than any
// version applied for the id. Each read reaches pollOverlap back for
// safety, so most of what it returns was applied already; applying it
// again would evict entries that are current, every poll, for as long as
// the overlap (and a node that lost the database in that window could not
// serve them). Version 0 (none known) is always news.
func (f *Follower) news(id string, version int64) bool {
	f.seenMu.Lock()
	defer f.seenMu.Unlock()
	if f.seen == nil {
		f.seen = map[string]seenChange{}
	}
	if old, ok := f.seen[id]; ok && version != 0 && version <= old.version {
		return false
	}
	f.seen[id] = seenChange{version: version, at: time.Now()}
	return true
}

// forget drops what no read can return again: entries applied longer ago
// than a read reaches back (the overlap and two polls, with a margin for
// the gap between the database's clock and ours).
func (f *Follower) forget() {
	horizon := time.Now().Add(-(pollOverlap + 2*f.Poll + 5*time.Second))
	f.seenMu.Lock()
	for id, s := range f.seen {
		if s.at.Before(horizon) {
			delete(f.seen, id)
		}
	}
	f.seenMu.Unlock()
}

// pollOverlap is how far each poll reaches back before the previous one
// began: a change stamped just before that moment may commit after it
// (a transaction's stamp precedes its commit), so the overlap must exceed
// the longest write transaction. What a read returns again is not applied
// again (fresh).
const pollOverlap = 5 * time.Second

// poll reads the changes table at once and then every Poll interval, from
// where the last successful read began (less the overlap) by the
// database's clock, so a node that could not poll for a while (an outage)
// catches up on everything it missed once it can. The first successful
// read reaches back to when Run began (and the overlap before it), so a
// change made in the node's first moments, or while every read failed, is
// applied by it: the bound holds from the first second.
func (f *Follower) poll(ctx context.Context) {
	t := time.NewTicker(f.Poll)
	defer t.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		began := time.Now()
		if err := f.pollOnce(ctx); err != nil {
			if ctx.Err() == nil {
				f.Logger.Warn("postgres: polling changes failed", "err", err)
			}
		} else if f.OnPoll != nil {
			f.OnPoll(time.Since(began))
		}
		f.forget()
		if f.Node != "" {
			f.beat(ctx)
		}
	}
}

// pollOnce reads the change log from where the last read began (less the
// overlap) and applies what it finds.
func (f *Follower) pollOnce(ctx context.Context) error {
	f.pollMu.Lock()
	defer f.pollMu.Unlock()
	since := f.since
	if since == 0 {
		// Not read yet: from when this node began (by its own clock; the
		// database's runs at the same rate), less the overlap.
		back := pollOverlap
		if !f.started.IsZero() {
			back += time.Since(f.started)
		}
		since = -back.Microseconds()
	}
	changes, start, err := f.DB.changesSince(ctx, since)
	if err != nil {
		return err
	}
	for _, c := range changes {
		if !f.news(c.id, c.version) {
			continue
		}
		f.polled.Add(1)
		f.OnChange(c.id, c.version)
	}
	f.since = start - pollOverlap.Microseconds()
	return nil
}

// liveFor is how recently a node must have been seen to be asked for a
// receipt: three of its polls (the default poll is 1 s), or 3 s.
func (f *Follower) liveFor() time.Duration { return max(3*f.Poll, 3*time.Second) }

// Receipt implements latchkey.Receipter: it asks every other live node
// (seen within liveFor) to confirm, on BarrierChannel, and collects their
// answers until all have come or timeout ends. This node counts as
// confirmed: it applied its own change before the call.
func (f *Follower) Receipt(ctx context.Context, timeout time.Duration) (latchkey.Receipt, error) {
	start := time.Now()
	rows, err := f.DB.pool.Query(ctx, `SELECT node FROM nodes WHERE node <> $1 AND seen >= `+dbNowMicros+` - $2 ORDER BY node`,
		f.Node, f.liveFor().Microseconds())
	if err != nil {
		return latchkey.Receipt{}, fmt.Errorf("postgres: receipt: %w", err)
	}
	others, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return latchkey.Receipt{}, fmt.Errorf("postgres: receipt: %w", err)
	}
	r := latchkey.Receipt{Nodes: len(others) + 1, Confirmed: 1}
	if len(others) > 0 {
		b := make([]byte, 8)
		rand.Read(b)
		rid := hex.EncodeToString(b)
		answers := make(chan string, len(others))
		f.waitMu.Lock()
		if f.waiters == nil {
			f.waiters = map[string]chan string{}
		}
		f.waiters[rid] = answers
		f.waitMu.Unlock()
		defer func() {
			f.waitMu.Lock()
			delete(f.waiters, rid)
			f.waitMu.Unlock()
		}()
		if _, err := f.DB.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, BarrierChannel+"_"+f.DB.namespace, rid+":"+f.Node); err != nil {
			return latchkey.Receipt{}, fmt.Errorf("postgres: receipt: %w", err)
		}
		f.Logger.Debug("postgres: receipt asked", "receipt", rid, "of", others)
		pending := map[string]bool{}
		for _, n := range others {
			pending[n] = true
		}
		timer := time.NewTimer(timeout)
		defer timer.Stop()
	wait:
		for len(pending) > 0 {
			select {
			case n := <-answers:
				if pending[n] {
					delete(pending, n)
					r.Confirmed++
				}
			case <-timer.C:
				r.TimedOut = true
				break wait
			case <-ctx.Done():
				r.TimedOut = true
				break wait
			}
		}
		for _, n := range others {
			if pending[n] {
				r.Missing = append(r.Missing, n)
			}
		}
	}
	r.At = time.Now().UTC()
	r.TookMS = float64(time.Since(start).Microseconds()) / 1000
	return r, nil
}

// barrier answers a receipt request from another node: everything
// announced before it has been applied (notifications arrive in order);
// the change log is read too, for any notification this node missed.
func (f *Follower) barrier(ctx context.Context, payload string) {
	rid, from, ok := strings.Cut(payload, ":")
	if !ok || from == f.Node || f.Node == "" {
		return
	}
	f.Logger.Debug("postgres: a receipt asked for", "receipt", rid, "from", from)
	if err := f.pollOnce(ctx); err != nil {
		f.Logger.Warn("postgres: a receipt asked for, but the change log could not be read; not confirming", "err", err)
		return
	}
	if _, err := f.DB.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, AckChannel+"_"+f.DB.namespace, rid+":"+f.Node); err != nil && ctx.Err() == nil {
		f.Logger.Warn("postgres: confirming a receipt failed", "err", err)
		return
	}
	f.Logger.Debug("postgres: receipt confirmed", "receipt", rid)
}

// ack hands a node's answer to the receipt waiting for it, if any (acks
// for other nodes' receipts are heard too, and dropped).
func (f *Follower) ack(payload string) {
	rid, node, ok := strings.Cut(payload, ":")
	if !ok {
		return
	}
	f.waitMu.Lock()
	ch := f.waiters[rid]
	f.waitMu.Unlock()
	f.Logger.Debug("postgres: a receipt's confirmation", "receipt", rid, "node", node, "ours", ch != nil)
	if ch != nil {
		select {
		case ch <- node:
		default:
		}
	}
}

// change is one entry of the change log: a token (or block, setting) and
// the latest version a change left it at.
type change struct {
	id      string
	version int64
}

// changesSince lists the tokens changed at or after since (Unix
// microseconds by the database's clock; a negative since is relative: that
// many microseconds before the read begins), each with its latest version,
// and returns the database's clock as the read began.
func (db *DB) changesSince(ctx context.Context, since int64) (changes []change, start int64, err error) {
	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback(context.Background())
	if err := tx.QueryRow(ctx, `SELECT `+dbNowMicros).Scan(&start); err != nil {
		return nil, 0, err
	}
	if since < 0 {
		since += start
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
// nodes catching up after a short disconnection), and the keys of audit
// batches as old (they only serve a writer retrying a batch).
func (db *DB) PruneChanges(ctx context.Context, d time.Duration) error {
	if _, err := db.pool.Exec(ctx, `DELETE FROM changes WHERE at < `+dbNowMicros+` - $1`, d.Microseconds()); err != nil {
		return err
	}
	_, err := db.pool.Exec(ctx, `DELETE FROM audit_batches WHERE at < `+dbNowMicros+` - $1`, d.Microseconds())
	return err
}
