package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/postgres"
	"github.com/latchkeyhq/latchkey/storetest"
)

// A database from before the token search (migrations 1-8) gets its
// tokens' terms from migration 9's Go step: they are found by search at
// once, a change of tags afterwards is found through the trigger, and the
// sorted listings work on them.
func TestTokenSearchMigration(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, c := migratedTo(ctx, t, 8)
	const n = 1005 // more than one page of the Go step
	if _, err := c.Exec(ctx, `INSERT INTO tokens (id, prefix, name, subject, tags, created_at, status, version, hash, series_id, expires_at)
		SELECT 'OldToken' || lpad(i::text, 8, '0'), 'lk', CASE WHEN i = $1 - 1 THEN 'Nightly Backup' ELSE 'svc-' || i END,
			'team-ops', '["eu-west"]', 1764590400000000 + i, 'active', 1, '\x00', 'OldToken' || lpad(i::text, 8, '0'), 1764590400000000 - i
		FROM generate_series(0, $1 - 1) AS i`, n); err != nil {
		t.Fatal(err)
	}
	db := migrateOn(ctx, t, dsn, c)
	storetest.CheckMigratedSearch(t, db, n)
}

// Every listing the dashboard offers can be answered from an index: with
// sequential scans and sorts priced out, no plan falls back on either (a
// search in another order than seq's may sort its matches).
func TestTokenListPlans(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dsn := schemaDSN(t)
	db, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `SET enable_seqscan = off; SET enable_sort = off`); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		f       latchkey.TokenFilter
		maySort bool
	}{
		{"newest", latchkey.TokenFilter{}, false},
		{"oldest, next page", latchkey.TokenFilter{Order: "asc", Cursor: latchkey.EncodeListCursor(latchkey.SortCreated, false, 9, 9)}, false},
		{"expires", latchkey.TokenFilter{Sort: latchkey.SortExpires}, false},
		{"expires, next page", latchkey.TokenFilter{Sort: latchkey.SortExpires, Cursor: latchkey.EncodeListCursor(latchkey.SortExpires, false, 5, 9)}, false},
		{"last used, next page", latchkey.TokenFilter{Sort: latchkey.SortLastUsed, Cursor: latchkey.EncodeListCursor(latchkey.SortLastUsed, true, 5, 9)}, false},
		{"least recently used", latchkey.TokenFilter{Sort: latchkey.SortLastUsed, Order: "asc"}, false},
		{"search", latchkey.TokenFilter{Search: "billing prod"}, false},
		{"search by expiry", latchkey.TokenFilter{Search: "billing", Sort: latchkey.SortExpires}, true},
		{"expires within", latchkey.TokenFilter{ExpiresBefore: now.Add(time.Hour), Now: now, Sort: latchkey.SortExpires}, false},
		{"unused for", latchkey.TokenFilter{UnusedBefore: now, Sort: latchkey.SortLastUsed}, false},
		{"never used", latchkey.TokenFilter{NeverUsed: true}, false},
	} {
		q, args, err := postgres.ListingSQL(tc.f)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		rows, err := c.Query(ctx, "EXPLAIN "+q, args...)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for rows.Next() {
			var line string
			rows.Scan(&line)
			plan = append(plan, line)
		}
		rows.Close()
		text := strings.Join(plan, "\n")
		t.Logf("%s:\n%s", tc.name, text)
		if strings.Contains(text, "Seq Scan on tokens") {
			t.Errorf("%s reads the whole table", tc.name)
		}
		if strings.Contains(text, "Sort") && !tc.maySort {
			t.Errorf("%s sorts", tc.name)
		}
		if tc.f.Search != "" && !strings.Contains(text, "token_terms_pkey") {
			t.Errorf("%s does not read token_terms by its key", tc.name)
		}
	}
}
