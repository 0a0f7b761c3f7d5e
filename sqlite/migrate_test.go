package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// A database written with the unpacked audit schema (migrations 1-5)
// reads the same after migration 6 packs it, and its chain still holds.
func TestAuditPackMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	w, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	w.SetMaxOpenConns(1)
	db := &DB{path: path, w: w, r: w}
	if _, err := w.ExecContext(ctx, `CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	for v, name := range []string{"0001_init.sql", "0002_lifecycle.sql", "0003_audit_chain.sql", "0004_blocks.sql", "0005_audit_indexes.sql"} {
		if err := db.applyMigration(ctx, v+1, "migrations/"+name); err != nil {
			t.Fatal(err)
		}
	}
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
