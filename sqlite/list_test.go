package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/internal/tokenrow"
	"github.com/latchkeyhq/latchkey/storetest"
)

// A database from before the token search (migrations 1-9) gets its
// tokens' terms from migration 10: they are found by search at once, and
// the sorted listings work on them.
func TestTokenSearchMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path, w := migratedTo(t, 9)
	// More tokens than one page of the Go step.
	n := tokenrow.FillPage + 5
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		if i == n-1 {
			name = "Nightly Backup"
		}
		if _, err := w.ExecContext(ctx, `INSERT INTO tokens (id, prefix, name, subject, tags, created_at, status, version, hash, series_id, expires_at)
			VALUES (?, 'lk', ?, 'team-ops', '["eu-west"]', ?, 'active', 1, x'00', ?, ?)`,
			fmt.Sprintf("OldToken%08d", i), name, int64(1764590400000000+i), fmt.Sprintf("OldToken%08d", i), int64(1764590400000000-i)); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("migrating: %v", err)
	}
	defer db.Close()
	storetest.CheckMigratedSearch(t, db, n)
}

// Every listing the dashboard offers is a range of an index, read in
// the listing's order and stopped at the page's end: the plan's access to
// tokens is the one named (the table's own b-tree is the index on seq;
// a page after a cursor in another order is two seeks, the cursor's tie
// and beyond it),
// and nothing is sorted but a search's matches in another order than
// seq's (by their keys alone, then the page's rows read whole). A count reads an index, never the table.
func TestTokenListPlans(t *testing.T) {
	t.Parallel()
	db := openTemp(t)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name   string
		f      latchkey.TokenFilter
		access string
		sorts  bool
	}{
		{"newest", latchkey.TokenFilter{}, "SCAN tokens", false},
		{"oldest", latchkey.TokenFilter{Order: "asc"}, "SCAN tokens", false},
		{"newest, next page", latchkey.TokenFilter{Cursor: latchkey.EncodeCursor(9)}, "SEARCH tokens USING INTEGER PRIMARY KEY (rowid<?)", false},
		{"expires", latchkey.TokenFilter{Sort: latchkey.SortExpires}, "SCAN tokens USING INDEX tokens_expires", false},
		{"expires, next page", latchkey.TokenFilter{Sort: latchkey.SortExpires, Cursor: latchkey.EncodeListCursor(latchkey.SortExpires, false, 5, 9)},
			"SEARCH tokens USING INDEX tokens_expires (<expr>=? AND seq>?) + SEARCH tokens USING INDEX tokens_expires (<expr>>?)", false},
		{"expires last", latchkey.TokenFilter{Sort: latchkey.SortExpires, Order: "desc"}, "SCAN tokens USING INDEX tokens_expires", false},
		{"last used", latchkey.TokenFilter{Sort: latchkey.SortLastUsed}, "SCAN tokens USING INDEX tokens_last_used", false},
		{"last used, next page", latchkey.TokenFilter{Sort: latchkey.SortLastUsed, Cursor: latchkey.EncodeListCursor(latchkey.SortLastUsed, true, 5, 9)},
			"SEARCH tokens USING INDEX tokens_last_used (<expr>=? AND seq<?) + SEARCH tokens USING INDEX tokens_last_used (<expr><?)", false},
		{"least recently used", latchkey.TokenFilter{Sort: latchkey.SortLastUsed, Order: "asc"}, "SCAN tokens USING INDEX tokens_last_used", false},
		{"search", latchkey.TokenFilter{Search: "billing prod"}, "SEARCH tokens USING INTEGER PRIMARY KEY (rowid=?)", false},
		{"search by expiry", latchkey.TokenFilter{Search: "billing", Sort: latchkey.SortExpires},
			"SEARCH tokens USING INTEGER PRIMARY KEY (rowid=?) + SEARCH tokens USING INTEGER PRIMARY KEY (rowid=?)", true},
		{"expires within", latchkey.TokenFilter{ExpiresBefore: now.Add(time.Hour), Now: now, Sort: latchkey.SortExpires},
			"SEARCH tokens USING INDEX tokens_expires (<expr>>? AND <expr><?)", false},
		{"unused for", latchkey.TokenFilter{UnusedBefore: now, Sort: latchkey.SortLastUsed}, "SEARCH tokens USING INDEX tokens_last_used (<expr><?)", false},
		{"never used", latchkey.TokenFilter{NeverUsed: true}, "SEARCH tokens USING INDEX tokens_last_used (<expr>=?)", false},
		{"subject", latchkey.TokenFilter{Subject: "svc"}, "SEARCH tokens USING INDEX tokens_subject (subject=?)", false},
		{"keyspace", latchkey.TokenFilter{Keyspace: "acme"}, "SEARCH tokens USING INDEX tokens_keyspace (keyspace=?)", false},
	} {
		l, err := tokenrow.NewListing(c.f)
		if err != nil {
			t.Fatal(err)
		}
		var args []any
		q, err := l.Page(dialect(&args))
		if err != nil {
			t.Fatal(err)
		}
		plan := explain(t, db, q, args)
		t.Logf("%s:\n%s", c.name, plan)
		if access := tokensAccess(plan); access != c.access {
			t.Errorf("%s reads tokens by %q, want %q", c.name, access, c.access)
		}
		if sorts := strings.Contains(plan, "TEMP B-TREE"); sorts != c.sorts {
			t.Errorf("%s sorts: %v, want %v:\n%s", c.name, sorts, c.sorts, plan)
		}
		args = nil
		plan = explain(t, db, l.Count(dialect(&args)), args)
		for _, step := range strings.Split(tokensAccess(plan), " + ") {
			if step == "SCAN tokens" {
				t.Errorf("%s counts by reading the table:\n%s", c.name, plan)
			}
		}
		if c.f.Search != "" && c.f.Sort == "" && strings.Contains(plan, "tokens") {
			t.Errorf("%s, a search alone, counts by reading tokens:\n%s", c.name, plan)
		}
	}
}

// tokensAccess is how a plan reads tokens: its steps on the table, in
// order.
func tokensAccess(plan string) string {
	var steps []string
	for _, line := range strings.Split(plan, "\n") {
		if strings.HasPrefix(line, "SCAN tokens") || strings.HasPrefix(line, "SEARCH tokens") {
			steps = append(steps, line)
		}
	}
	return strings.Join(steps, " + ")
}

func explain(t *testing.T, db *DB, q string, args []any) string {
	t.Helper()
	rows, err := db.r.Query("EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		b.WriteString(detail + "\n")
	}
	return b.String()
}

func openTemp(t *testing.T) *DB {
	t.Helper()
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "latchkey.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
