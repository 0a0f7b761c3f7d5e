package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/internal/auditrow"
)

// A database written with the unpacked audit schema (migrations 1-5)
// reads the same after migration 6 packs it, and its chain still holds.
func TestAuditPackMigration(t *testing.T) {
	ctx := context.Background()
	path, w := migratedTo(t, 5)
	evs := []latchkey.AuditEvent{
		{Time: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC), Node: "n1", RequestID: "req-1", Kind: "verify", Action: "verify",
			TokenID: "AbCdEfGhIjKlMnOp", Subject: "svc", Outcome: "INSUFFICIENT_SCOPE", Reason: "missing_scope",
			Scopes: []string{"a:b", "c.*:d"}, ClientIP: "10.0.0.1", UserAgent: "curl/8", Method: "GET", Path: "/x?y", Latency: 1234},
		{Time: time.Date(2026, 11, 1, 12, 0, 1, 0, time.UTC), Node: "n1", Kind: "admin", Action: "token.revoke", Actor: "root",
			TokenID: "AbCdEfGhIjKlMnOp", Outcome: "OK", Reason: "leaked \"badly\"", Detail: json.RawMessage(`{"k":"v","n":[1,2]}`)},
	}
	prev := ""
	for i := range evs {
		ev := &evs[i]
		ev.Hash = latchkey.ChainHash(prev, ev)
		prev = ev.Hash
		scopes := []byte("[]")
		if ev.Scopes != nil {
			scopes, _ = json.Marshal(ev.Scopes)
		}
		res, err := w.ExecContext(ctx, `INSERT INTO audit_events (time, node, request_id, kind, action, actor, token_id, subject,
			outcome, reason, scopes, client_ip, user_agent, method, path, latency_ns, detail, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			micros(ev.Time), ev.Node, ev.RequestID, ev.Kind, ev.Action, ev.Actor, ev.TokenID, ev.Subject, ev.Outcome, ev.Reason,
			string(scopes), ev.ClientIP, ev.UserAgent, ev.Method, ev.Path, int64(ev.Latency), string(ev.Detail), ev.Hash)
		if err != nil {
			t.Fatal(err)
		}
		ev.Seq, _ = res.LastInsertId()
	}
	w.Close()

	up, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("migrating: %v", err)
	}
	defer up.Close()
	page, err := up.ListAudit(ctx, latchkey.AuditFilter{Ascending: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(page.Events, evs) {
		t.Fatalf("after migration:\n%+v\nwant\n%+v", page.Events, evs)
	}
	for i := range page.Events {
		if got := latchkey.ChainHash([]string{"", evs[0].Hash}[i], &page.Events[i]); got != page.Events[i].Hash {
			t.Errorf("record %d no longer matches its hash", i)
		}
	}
}

// A database of the row-per-record schema (migrations 1-7) moves into
// chunks (migration 8): the records read the same, with the hashes they
// had; rows from before the chain existed are linked as they move; a gap
// left by pruning starts a new chunk after the anchor; a row edited before
// the move is still found out; and new records chain on after the old.
func TestAuditChunkMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	build := func(t *testing.T, rows []latchkey.AuditEvent, tamper bool) string {
		path, w := migratedTo(t, 7)
		defer w.Close()
		// An anchor: records up to 3 of n1 were pruned.
		anchor := latchkey.ChainHash("", &latchkey.AuditEvent{Kind: "x"})
		if _, err := w.ExecContext(ctx, `INSERT INTO audit_anchors (node, seq, hash, at) VALUES ('n1', 3, ?, 0)`, anchor); err != nil {
			t.Fatal(err)
		}
		prev := map[string]string{"n1": anchor}
		for i := range rows {
			ev := &rows[i]
			hash := ""
			if ev.Node == "n1" { // n2's rows predate the chain
				hash = latchkey.ChainHash(prev[ev.Node], ev)
				prev[ev.Node] = hash
			}
			outcome := ev.Outcome
			if tamper && ev.Seq == 5 {
				outcome = "VALID" // edited after it was hashed
			}
			if _, err := w.ExecContext(ctx, `INSERT INTO audit_events (seq, time, node, kind, action, token_id, subject, outcome, client_ip, rest, hash)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, ev.Seq, micros(ev.Time), ev.Node, ev.Kind, ev.Action, ev.TokenID, ev.Subject,
				outcome, ev.ClientIP, string(auditrow.AppendRest(nil, ev)), hash); err != nil {
				t.Fatal(err)
			}
		}
		return path
	}
	at := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	var rows []latchkey.AuditEvent
	for i, seq := range []int64{4, 5, 6, 7, 9, 10} { // 8 is gone
		node := "n1"
		if seq == 7 || seq == 10 {
			node = "n2"
		}
		rows = append(rows, latchkey.AuditEvent{Seq: seq, Time: at.Add(time.Duration(i) * time.Second), Node: node, Kind: "verify", Action: "verify",
			TokenID: fmt.Sprintf("tok%013d", i%2), Outcome: "NOT_FOUND", Reason: "unknown_id", Scopes: []string{"a:b"}, ClientIP: "10.0.0.1", Latency: 99})
	}
	t.Run("intact", func(t *testing.T) {
		up, err := Open(ctx, build(t, append([]latchkey.AuditEvent(nil), rows...), false))
		if err != nil {
			t.Fatalf("migrating: %v", err)
		}
		defer up.Close()
		page, err := up.ListAudit(ctx, latchkey.AuditFilter{Ascending: true})
		if err != nil || len(page.Events) != len(rows) {
			t.Fatalf("after migration: %d records, %v", len(page.Events), err)
		}
		for i, ev := range page.Events {
			want := rows[i]
			want.Hash = ev.Hash
			if !reflect.DeepEqual(ev, want) {
				t.Errorf("record %d:\n%+v\nwant\n%+v", i, ev, want)
			}
		}
		r, err := audit.VerifyChain(ctx, up)
		if err != nil || !r.OK || r.Checked != int64(len(rows)) {
			t.Fatalf("the moved chain: %+v %+v %v", r, r.Broken, err)
		}
		var chunks int
		up.r.QueryRow(`SELECT count(*) FROM audit_chunks`).Scan(&chunks)
		if chunks != 4 { // 4-6 (n1), 7 (n2), 9 (n1, after the gap), 10 (n2)
			t.Errorf("%d chunks, want 4", chunks)
		}
		if h := page.Events[0].Hash; h != latchkey.ChainHash(latchkey.ChainHash("", &latchkey.AuditEvent{Kind: "x"}), &page.Events[0]) {
			t.Errorf("record 4 lost its hash: %s", h)
		}
		// New records chain on, numbered after the old.
		next := []latchkey.AuditEvent{{Time: at.Add(time.Hour), Node: "n1", Kind: "verify", Action: "verify", Outcome: "VALID", TokenID: "tok0000000000000"}}
		if err := up.AppendAudit(ctx, next); err != nil || next[0].Seq != 11 {
			t.Fatalf("a new record: seq %d %v", next[0].Seq, err)
		}
		if r, _ := audit.VerifyChain(ctx, up); !r.OK || r.Checked != int64(len(rows))+1 {
			t.Errorf("after a new record: %+v %+v", r, r.Broken)
		}
		if p, _ := up.ListAudit(ctx, latchkey.AuditFilter{TokenID: "tok0000000000000"}); len(p.Events) != 4 {
			t.Errorf("the token's history: %d records, want 4", len(p.Events))
		}
		// Migration 9 indexed the moved chunks by source.
		var indexed int
		up.r.QueryRow(`SELECT count(*) FROM audit_sources`).Scan(&indexed)
		src, _ := latchkey.ParseSource("10.0.0.0/8")
		if p, _ := up.ListAudit(ctx, latchkey.AuditFilter{Source: src}); len(p.Events) != len(rows) || indexed != 1 {
			t.Errorf("by source after migration: %d records (want %d), %d index rows (want 1: one address, one segment)", len(p.Events), len(rows), indexed)
		}
	})
	t.Run("edited before the move", func(t *testing.T) {
		up, err := Open(ctx, build(t, append([]latchkey.AuditEvent(nil), rows...), true))
		if err != nil {
			t.Fatalf("migrating: %v", err)
		}
		defer up.Close()
		r, err := audit.VerifyChain(ctx, up)
		if err != nil || r.OK || r.Broken == nil || r.Broken.Seq != 4 || r.Broken.LastSeq != 6 {
			t.Fatalf("an edited record survived the move unnoticed: %+v %+v %v", r, r.Broken, err)
		}
	})
}

// The writer's cache of indexed addresses never hides a record: after a
// prune takes a segment's chunks (and its index rows), the same address
// in the same segment is indexed again.
func TestSourceIndexAfterPrune(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	old := time.Now().Add(-48 * time.Hour)
	rec := func(at time.Time) []latchkey.AuditEvent {
		return []latchkey.AuditEvent{{Time: at, Node: "n1", Kind: "verify", Action: "verify", Outcome: "VALID", ClientIP: "192.0.2.44"}}
	}
	src, _ := latchkey.ParseSource("192.0.2.44")
	if err := db.AppendAudit(ctx, rec(old)); err != nil {
		t.Fatal(err)
	}
	if err := db.AppendAudit(ctx, rec(old)); err != nil { // a second chunk, same segment: skipped by the cache
		t.Fatal(err)
	}
	if p, _ := db.ListAudit(ctx, latchkey.AuditFilter{Source: src}); len(p.Events) != 2 {
		t.Fatalf("before the prune: %d records by source, want 2", len(p.Events))
	}
	if n, err := db.PruneAudit(ctx, time.Now().Add(-time.Hour), nil); err != nil || n != 2 {
		t.Fatalf("prune: %d %v", n, err)
	}
	var rows int
	db.r.QueryRow(`SELECT count(*) FROM audit_sources`).Scan(&rows)
	if rows != 0 {
		t.Errorf("%d index rows left for a segment without chunks", rows)
	}
	if err := db.AppendAudit(ctx, rec(time.Now())); err != nil {
		t.Fatal(err)
	}
	if p, _ := db.ListAudit(ctx, latchkey.AuditFilter{Source: src}); len(p.Events) != 1 {
		t.Errorf("after the prune, a new record from the same address: %d by source, want 1", len(p.Events))
	}
}

// migratedTo makes a database file with migrations 1..v applied, as an
// older release left it, and returns its path and a connection to it;
// the caller adds rows, closes it, and lets Open migrate on.
func migratedTo(t *testing.T, v int) (string, *sql.DB) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "old.db")
	w, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	w.SetMaxOpenConns(1)
	db := &DB{path: path, w: w, r: w}
	if _, err := w.ExecContext(context.Background(), `CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= v; i++ {
		names, _ := fs.Glob(migrations, fmt.Sprintf("migrations/%04d_*.sql", i))
		if len(names) != 1 {
			t.Fatalf("migration %d: %v", i, names)
		}
		if err := db.applyMigration(context.Background(), i, names[0]); err != nil {
			t.Fatal(err)
		}
	}
	return path, w
}
