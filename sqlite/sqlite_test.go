package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/storetest"
)

func open(t *testing.T) latchkey.Store {
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "latchkey.db"))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestConformance(t *testing.T) { storetest.Run(t, open) }

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "latchkey.db")
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	tok := storetest.NewToken(t)
	if err := db.CreateToken(context.Background(), tok, nil); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = sqlite.Open(context.Background(), path) // migrations run again: must be a no-op
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.GetToken(context.Background(), tok.ID); err != nil {
		t.Errorf("token lost across reopen: %v", err)
	}
}

func TestOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir #1 ?x% y")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "latchkey.db")
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.CreateToken(context.Background(), storetest.NewToken(t), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the database is not at %q: %v", path, err)
	}
}
