package postgres_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/postgres"
)

// A database written before keyspaces (migrations 1 and 2) upgrades in
// place: its tokens read back unchanged, in the default keyspace, with no
// roles, and keyspace filters find them.
func TestTenancyMigration(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dsn, c := migratedTo(ctx, t, 2)
	if _, err := c.Exec(ctx, `INSERT INTO tokens (id, prefix, name, subject, scopes, created_at, status, version, hash, series_id, max_uses, uses)
		VALUES ('OldToken00000000', 'lk', 'old', 'svc', '["invoices:read"]', 1764590400000000, 'active', 3, '\x00', 'OldToken00000000', 10, 4)`); err != nil {
		t.Fatal(err)
	}
	db := migrateOn(ctx, t, dsn, c)
	tok, err := db.GetToken(ctx, "OldToken00000000")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Keyspace != latchkey.DefaultKeyspace || tok.Roles != nil || tok.Name != "old" || tok.Version != 3 || tok.Uses != 4 || tok.Scopes[0] != "invoices:read" {
		t.Errorf("after the migration: %+v", tok)
	}
	page, err := db.ListTokens(ctx, latchkey.TokenFilter{Keyspace: latchkey.DefaultKeyspace})
	if err != nil || len(page.Tokens) != 1 {
		t.Errorf("the default keyspace lists %v, %v", page.Tokens, err)
	}
	if _, ok, err := db.ConsumeUse(ctx, []string{"OldToken00000000"}); !ok || err != nil {
		t.Errorf("the old budget after the migration: %v %v", ok, err)
	}
}

// A database from before lanes (migrations 1-3: one chain head per node)
// upgrades in place: its records are lane 0 and still verify, and the
// node's next records link on after them.
func TestAuditLanesMigration(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dsn, c := migratedTo(ctx, t, 3)
	at := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	prev := ""
	for i := range 3 {
		ev := latchkey.AuditEvent{Seq: int64(i + 1), Time: at.Add(time.Duration(i) * time.Second), Node: "n1", Kind: "verify", Action: "verify", Outcome: "VALID"}
		ev.Hash = latchkey.ChainHash(prev, &ev)
		prev = ev.Hash
		if _, err := c.Exec(ctx, `INSERT INTO audit_events (seq, time, node, kind, action, outcome, rest, hash) VALUES ($1, $2, $3, $4, $5, $6, '{}', $7)`,
			ev.Seq, ev.Time.UnixMicro(), ev.Node, ev.Kind, ev.Action, ev.Outcome, ev.Hash); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Exec(ctx, `SELECT setval(pg_get_serial_sequence('audit_events', 'seq'), 3)`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `INSERT INTO audit_heads (node, hash) VALUES ('n1', $1)`, prev); err != nil {
		t.Fatal(err)
	}
	db := migrateOn(ctx, t, dsn, c)
	if r, err := audit.VerifyChain(ctx, db); err != nil || !r.OK || r.Checked != 3 {
		t.Fatalf("after the migration: %+v %+v %v", r, r.Broken, err)
	}
	if err := db.AppendAudit(ctx, []latchkey.AuditEvent{{Time: at.Add(time.Hour), Node: "n1", Kind: "verify", Action: "verify", Outcome: "VALID"}}); err != nil {
		t.Fatal(err)
	}
	page, _ := db.ListAudit(ctx, latchkey.AuditFilter{Limit: 1})
	if r, err := audit.VerifyChain(ctx, db); err != nil || !r.OK || r.Checked != 4 || len(page.Events) != 1 || page.Events[0].Hash != latchkey.ChainHash(prev, &page.Events[0]) {
		t.Fatalf("a new record does not link on after the old ones: %+v %+v %v", r, r.Broken, err)
	}
}

// Migration 8 gives the records already stored their address as inet:
// IPv4 in one statement, IPv6 one by one, and text that is not an
// address (it never should be, but an audit record must not stop an
// upgrade) stays NULL. A source filter then finds them through the index.
func TestAuditSourcesMigration(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dsn, c := migratedTo(ctx, t, 7)
	ips := []string{"10.1.2.3", "2001:db8::1", "999.1.1.1", "unix", "", "10.200.0.1"}
	for i, ip := range ips {
		if _, err := c.Exec(ctx, `INSERT INTO audit_events (time, node, kind, action, outcome, client_ip, rest, hash) VALUES ($1, 'n1', 'verify', 'verify', 'VALID', $2, '{}', '')`,
			int64(i), ip); err != nil {
			t.Fatal(err)
		}
	}
	db := migrateOn(ctx, t, dsn, c)
	for _, c := range []struct {
		source string
		want   int
	}{{"10.0.0.0/8", 2}, {"10.1.2.3", 1}, {"2001:db8::/32", 1}, {"0.0.0.0/0", 2}} {
		p, _ := latchkey.ParseSource(c.source)
		page, err := db.ListAudit(ctx, latchkey.AuditFilter{Source: p})
		if err != nil || len(page.Events) != c.want {
			t.Errorf("after the migration, source %s: %d records (want %d), %v", c.source, len(page.Events), c.want, err)
		}
	}
}

// migrateOn closes c, the older release's connection, and opens the
// store on dsn, which migrates the rest of the way; the store is closed
// when the test ends.
func migrateOn(ctx context.Context, t *testing.T, dsn string, c *pgx.Conn) *postgres.DB {
	t.Helper()
	c.Close(ctx)
	db, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("migrating: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// migratedTo connects to a fresh schema of its own with migrations 1..v
// applied (and recorded) by hand, as a database made by an older
// release; the caller adds rows, closes it, and lets Open migrate on.
func migratedTo(ctx context.Context, t *testing.T, v int) (dsn string, c *pgx.Conn) {
	t.Helper()
	dsn = schemaDSN(t)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= v; i++ {
		names, _ := filepath.Glob(fmt.Sprintf("migrations/%04d_*.sql", i))
		if len(names) != 1 {
			t.Fatalf("migration %d: %v", i, names)
		}
		b, err := os.ReadFile(names[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, string(b)); err != nil {
			t.Fatalf("%s: %v", names[0], err)
		}
	}
	if _, err := c.Exec(ctx, fmt.Sprintf(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY); INSERT INTO schema_migrations SELECT generate_series(1, %d)`, v)); err != nil {
		t.Fatal(err)
	}
	return dsn, c
}
