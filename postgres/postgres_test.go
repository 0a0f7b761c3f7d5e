package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/postgres"
	"github.com/latchkeyhq/latchkey/storetest"
)

// testDSN is the test server: LATCHKEY_TEST_POSTGRES, or the local one
// CI starts (trust authentication, database test).
func testDSN() string {
	if v := os.Getenv("LATCHKEY_TEST_POSTGRES"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

func requireService(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("LATCHKEY_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("%s is required (LATCHKEY_REQUIRE_INTEGRATION=1) but not available: %v", what, err)
	}
	t.Skipf("%s is not available (%v); skipping (set LATCHKEY_REQUIRE_INTEGRATION=1 to make this a failure)", what, err)
}

// open returns a store in a fresh schema of its own, dropped afterwards.
func open(t *testing.T) latchkey.Store {
	t.Helper()
	db, _ := openSchema(t)
	return db
}

// openSchema is open, with the URL of the schema (for a second,
// raw connection), the store closed at the end of the test.
func openSchema(t testing.TB) (*postgres.DB, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dsn := schemaDSN(t)
	db, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, dsn
}

// schemaDSN makes a fresh schema, dropped afterwards, and returns a URL
// that uses it.
func schemaDSN(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, testDSN())
	if err != nil {
		requireService(t, "PostgreSQL", err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	schema := "lk_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	admin.Close(ctx)
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), testDSN())
		if err == nil {
			c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			c.Close(context.Background())
		}
	})
	cfg, _ := pgx.ParseConfig(testDSN())
	dsn := testDSN()
	if cfg != nil {
		sep := "?"
		if containsQuery(dsn) {
			sep = "&"
		}
		dsn += sep + "search_path=" + schema
	}
	return dsn
}

func containsQuery(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '?' {
			return true
		}
	}
	return false
}

// The same conformance suite as SQLite, unchanged.
func TestConformance(t *testing.T) { storetest.Run(t, open) }
