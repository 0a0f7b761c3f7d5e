package postgres_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/postgres"
)

// applied collects a follower's OnChange calls.
type applied struct {
	mu    sync.Mutex
	calls map[string]int // "id:version" → times applied
	got   chan string
}

func newApplied() *applied { return &applied{calls: map[string]int{}, got: make(chan string, 100)} }

func (a *applied) on(id string, version int64) {
	k := fmt.Sprintf("%s:%d", id, version)
	a.mu.Lock()
	a.calls[k]++
	a.mu.Unlock()
	select {
	case a.got <- k:
	default:
	}
}

func (a *applied) count(k string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[k]
}

// waitFor waits for k to be applied.
func (a *applied) waitFor(t *testing.T, k string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	timeout := time.After(within)
	for a.count(k) == 0 {
		select {
		case <-a.got:
		case <-timeout:
			t.Fatalf("%s not applied within %v", k, within)
		}
	}
	return time.Since(start)
}

// follow starts a follower on its own pool of the store at dsn.
func follow(t *testing.T, dsn string, poll time.Duration, a *applied) *postgres.Follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	db, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	f := postgres.NewFollower(db, poll, a.on, slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; db.Close() })
	return f
}

// rawChange writes a change-log entry with no notification: a change whose
// notification was lost.
func rawChange(t *testing.T, dsn, id string, version int64) {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), `INSERT INTO changes (token_id, version, at)
		VALUES ($1, $2, (extract(epoch from clock_timestamp()) * 1000000)::bigint)`, id, version); err != nil {
		t.Fatal(err)
	}
}

// Every read of the change log reaches back over the last reads, for
// safety; what it finds again is not applied again (an eviction of an
// entry that is current would leave the token unservable if the database
// failed then), and the poll counter counts only what was news.
func TestFollowerAppliesEachChangeOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, dsn := openSchema(t)
	a := newApplied()
	f := follow(t, dsn, time.Hour, a) // the poll is driven by hand
	for !f.Listening() {
		select {
		case <-ctx.Done():
			t.Fatal("the follower never listened")
		case <-time.After(5 * time.Millisecond):
		}
	}
	// A token created, a setting changed, a block put: each announced.
	tok := &latchkey.Token{ID: "once000000000001", Prefix: "lk", Status: latchkey.StatusActive, Version: 1, CreatedAt: time.Now(), Hash: make([]byte, 32)}
	if err := db.CreateToken(ctx, tok, &latchkey.AuditEvent{Time: time.Now(), Node: "n1", Kind: latchkey.KindAdmin,
		Action: latchkey.ActionTokenCreate, TokenID: tok.ID, Outcome: latchkey.OutcomeOK}); err != nil {
		t.Fatal(err)
	}
	if err := db.ChangeSetting(ctx, "role/default/r", func(string, bool) (string, bool, *latchkey.AuditEvent, error) {
		return `{"scopes":["a:b"]}`, true, nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.PutBlock(ctx, latchkey.Block{Source: "2001:db8::1", Until: time.Now().Add(time.Hour), Reason: "test"}, nil); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "once000000000001:1", 10*time.Second)
	settings, blocks := "", ""
	for settings == "" || blocks == "" {
		select {
		case k := <-a.got:
			if len(k) > 8 && k[:8] == "setting:" {
				settings = k
			}
			if len(k) > 6 && k[:6] == "block:" {
				blocks = k
			}
		case <-ctx.Done():
			t.Fatalf("announcements missing: setting %q, block %q", settings, blocks)
		}
	}
	if settings[len(settings)-2:] == ":0" || blocks[len(blocks)-2:] == ":0" {
		t.Errorf("a setting or block change without a version of its own: %s, %s", settings, blocks)
	}
	// Polls re-read all three (they are seconds old): none is applied again.
	for range 3 {
		if err := f.PollOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"once000000000001:1", settings, blocks} {
		if n := a.count(k); n != 1 {
			t.Errorf("%s applied %d times, want once", k, n)
		}
	}
	if st := f.FeedStats(); st.Polled != 0 || st.Notified != 3 {
		t.Errorf("feed counters %+v: want 3 notified, 0 found by polling", st)
	}
	// A change whose notification was lost is found by the next poll, once.
	rawChange(t, dsn, tok.ID, 2)
	for range 3 {
		if err := f.PollOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.count(tok.ID + ":2"); n != 1 {
		t.Errorf("the missed change applied %d times, want once", n)
	}
	if st := f.FeedStats(); st.Polled != 1 {
		t.Errorf("feed counters %+v: want 1 found by polling", st)
	}
	// An older version read late (a reordered commit) is not news either.
	rawChange(t, dsn, tok.ID, 1)
	if err := f.PollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if n := a.count(tok.ID + ":1"); n != 1 {
		t.Errorf("version 1 applied %d times after version 2", n)
	}
}

// A change made in a node's first moments, whose notification it missed
// (its listener was not up yet, or lost), is applied within one poll
// interval: the first poll runs at once and the next reaches back to when
// the follower started.
func TestFollowerFirstSecond(t *testing.T) {
	t.Parallel()
	_, dsn := openSchema(t)
	const poll = 500 * time.Millisecond
	for i := range 3 {
		a := newApplied()
		follow(t, dsn, poll, a)
		id := fmt.Sprintf("first00000000%03d", i)
		start := time.Now()
		rawChange(t, dsn, id, 1)
		took := a.waitFor(t, id+":1", 3*poll)
		if took > poll+200*time.Millisecond {
			t.Errorf("a change missed in the first moments applied after %v, want within one poll (%v)", took, poll)
		}
		t.Logf("applied %v after the change, %v after the follower started", took, time.Since(start))
	}
}
