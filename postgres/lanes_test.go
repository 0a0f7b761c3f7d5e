package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
)

// Concurrent writers of one node link their records into different
// lanes instead of queueing on one head row; every lane is a chain that
// verifies, a transaction writing several records keeps to one lane, an
// edit in any lane is found and named, and pruning anchors each lane.
func TestAuditLanes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db, dsn := openSchema(t)
	const writers, each = 16, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	base := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	var clock atomic.Int64 // records' times follow the order they are made in, as a node's clock does
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("w%02di%02d%010d", w, i, 0)
				tok := &latchkey.Token{ID: id, Prefix: "lk", Status: latchkey.StatusActive, Version: 1, CreatedAt: base, Hash: make([]byte, 32)}
				ev := &latchkey.AuditEvent{Time: base.Add(time.Duration(clock.Add(1)) * time.Minute), Node: "n1", Kind: latchkey.KindAdmin,
					Action: latchkey.ActionTokenCreate, TokenID: id, Outcome: latchkey.OutcomeOK}
				if err := db.CreateToken(ctx, tok, ev); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// One transaction, several records: one lane.
	ids := []string{"w00i00" + "0000000000", "w01i00" + "0000000000", "w02i00" + "0000000000"}
	err := db.WriteTx(ctx, func(tx latchkey.Tx) error {
		for _, id := range ids {
			tok, err := tx.GetToken(ctx, id)
			if err != nil {
				return err
			}
			tok.Name = "renamed"
			if err := tx.UpdateToken(ctx, tok, &latchkey.AuditEvent{Time: base.Add(30 * time.Hour), Node: "n1", Kind: latchkey.KindAdmin,
				Action: latchkey.ActionTokenUpdate, TokenID: id, Outcome: latchkey.OutcomeOK}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := audit.VerifyChain(ctx, db)
	if err != nil || !r.OK || r.Checked != writers*each+3 {
		t.Fatalf("after concurrent writes: %+v %+v %v", r, r.Broken, err)
	}
	raw, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close(ctx)
	var used, updateLanes int
	if err := raw.QueryRow(ctx, `SELECT count(DISTINCT lane) FROM audit_events`).Scan(&used); err != nil {
		t.Fatal(err)
	}
	if err := raw.QueryRow(ctx, `SELECT count(DISTINCT lane) FROM audit_events WHERE action = 'token.update'`).Scan(&updateLanes); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writers used %d lanes", writers, used)
	if used < 2 {
		t.Errorf("%d concurrent writers all used one lane: they queued on one head", writers)
	}
	if updateLanes != 1 {
		t.Errorf("one transaction's records went into %d lanes", updateLanes)
	}
	// An edit in a lane other than 0 is found, and named with its lane.
	var seq int64
	var lane int
	if err := raw.QueryRow(ctx, `SELECT seq, lane FROM audit_events WHERE lane > 0 ORDER BY seq LIMIT 1`).Scan(&seq, &lane); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(ctx, `UPDATE audit_events SET outcome = 'REFUSED' WHERE seq = $1`, seq); err != nil {
		t.Fatal(err)
	}
	r, _ = audit.VerifyChain(ctx, db)
	if r.OK || r.Broken == nil || r.Broken.Seq != seq || r.Broken.Lane != lane {
		t.Fatalf("after editing record %d (lane %d): %+v %+v", seq, lane, r, r.Broken)
	}
	raw.Exec(ctx, `UPDATE audit_events SET outcome = 'OK' WHERE seq = $1`, seq)
	// Pruning the first half anchors each lane, and the chain still holds.
	// (Each lane is cut before its first younger record, and a record's
	// time is taken before its transaction waits for a lane, so a few older
	// ones may stay.)
	var archived []latchkey.AuditEvent
	cut := base.Add(writers * each / 2 * time.Minute)
	n, err := db.PruneAudit(ctx, cut, func(evs []latchkey.AuditEvent) error {
		archived = append(archived, evs...)
		return nil
	})
	if err != nil || n < writers*each/4 || n >= writers*each/2 || int64(len(archived)) != n {
		t.Fatalf("pruned %d (archived %d), %v; want most of the %d older records", n, len(archived), err, writers*each/2)
	}
	for _, ev := range archived {
		if !ev.Time.Before(cut) {
			t.Fatalf("pruned a younger record: %+v", ev)
		}
	}
	anchors, _ := db.AuditAnchors(ctx)
	if len(anchors) == 0 || len(anchors) > used { // a lane whose first record is young keeps no anchor
		t.Errorf("%d anchors for %d lanes", len(anchors), used)
	}
	if r, err := audit.VerifyChain(ctx, db); err != nil || !r.OK || r.Checked != writers*each+3-n {
		t.Fatalf("after pruning: %+v %+v %v", r, r.Broken, err)
	}
}

// Concurrent creations share their announcements (group notify), and
// every change is still announced once it has committed: a listener hears
// each token created by 64 writers at once.
func TestAnnouncementsGrouped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, dsn := openSchema(t)
	ln, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close(context.Background())
	if _, err := ln.Exec(ctx, "LISTEN "+db.ChangeChannel()); err != nil {
		t.Fatal(err)
	}
	const n = 64
	want := map[string]bool{}
	var wg sync.WaitGroup
	for i := range n {
		id := fmt.Sprintf("grp%013d", i)
		want[id+":1"] = true
		wg.Go(func() {
			tok := &latchkey.Token{ID: id, Prefix: "lk", Status: latchkey.StatusActive, Version: 1, CreatedAt: time.Now(), Hash: make([]byte, 32)}
			if err := db.CreateToken(ctx, tok, &latchkey.AuditEvent{Time: time.Now(), Node: "n1", Kind: latchkey.KindAdmin,
				Action: latchkey.ActionTokenCreate, TokenID: id, Outcome: latchkey.OutcomeOK}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for len(want) > 0 {
		note, err := ln.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("%d announcements never came: %v", len(want), err)
		}
		delete(want, note.Payload)
	}
	// A duplicate id is refused, rolled back, and leaves the pool usable.
	dup := &latchkey.Token{ID: "grp0000000000000", Prefix: "lk", Status: latchkey.StatusActive, Version: 1, CreatedAt: time.Now(), Hash: make([]byte, 32)}
	err = db.CreateToken(ctx, dup, &latchkey.AuditEvent{Time: time.Now(), Node: "n1", Kind: latchkey.KindAdmin, Action: latchkey.ActionTokenCreate, Outcome: latchkey.OutcomeOK})
	if latchkey.ErrorCode(err) != latchkey.EConflict {
		t.Fatalf("a duplicate id: %v", err)
	}
	if r, err := audit.VerifyChain(ctx, db); err != nil || !r.OK || r.Checked != n {
		t.Fatalf("after the duplicate: %+v %+v %v", r, r.Broken, err)
	}
}
