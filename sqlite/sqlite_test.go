package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
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

// Editing or deleting one row directly in the database file breaks the
// audit chain at that row, and VerifyChain names it.
func TestAuditChainDetectsTampering(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "latchkey.db")
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var evs []latchkey.AuditEvent
	for i := range 50 {
		evs = append(evs, latchkey.AuditEvent{Time: time.Now(), Node: "n1", Kind: latchkey.KindVerify, Action: latchkey.ActionVerify,
			TokenID: "abcdefghijklmnop", Outcome: []string{"VALID", "NOT_FOUND"}[i%2], ClientIP: "10.0.0.1"})
	}
	if err := db.AppendAudit(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if r, err := audit.VerifyChain(ctx, db); err != nil || !r.OK || r.Checked != 50 {
		t.Fatalf("before tampering: %+v %v", r, err)
	}
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// Someone turns a failed attempt into a success.
	if _, err := raw.Exec(`UPDATE audit_events SET outcome = 'VALID' WHERE seq = 20`); err != nil {
		t.Fatal(err)
	}
	r, err := audit.VerifyChain(ctx, db)
	if err != nil || r.OK || r.Broken == nil || r.Broken.Seq != 20 || r.Broken.Node != "n1" {
		t.Fatalf("after editing record 20: %+v %+v %v", r, r.Broken, err)
	}
	if !strings.Contains(audit.Summary(r), "BROKEN at record 20") {
		t.Errorf("summary %q", audit.Summary(r))
	}
	// Put it back: intact again. Then delete a record: the next one breaks.
	raw.Exec(`UPDATE audit_events SET outcome = 'NOT_FOUND' WHERE seq = 20`)
	if r, _ := audit.VerifyChain(ctx, db); !r.OK {
		t.Fatalf("after restoring record 20: %+v", r.Broken)
	}
	raw.Exec(`DELETE FROM audit_events WHERE seq = 30`)
	if r, _ := audit.VerifyChain(ctx, db); r.OK || r.Broken.Seq != 31 {
		t.Fatalf("after deleting record 30: %+v", r.Broken)
	}
	// Recomputing one hash to match does not help: the next link breaks.
	raw.Exec(`UPDATE audit_events SET outcome = 'VALID', hash = ? WHERE seq = 40`, "00")
	if r, _ := audit.VerifyChain(ctx, db); r.OK || r.Broken.Seq != 31 {
		t.Fatalf("the first break is still reported first: %+v", r.Broken)
	}
}

// A database written before the chain existed is linked on open.
func TestAuditChainBackfill(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "latchkey.db")
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	evs := []latchkey.AuditEvent{{Time: time.Now(), Node: "a", Kind: "verify", Action: "verify", Outcome: "VALID"},
		{Time: time.Now(), Node: "b", Kind: "verify", Action: "verify", Outcome: "VALID"},
		{Time: time.Now(), Node: "a", Kind: "verify", Action: "verify", Outcome: "REVOKED"}}
	db.AppendAudit(ctx, evs)
	db.Close()
	raw, _ := sql.Open("sqlite", "file:"+path)
	raw.Exec(`UPDATE audit_events SET hash = ''`)
	raw.Close()
	db, err = sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if r, err := audit.VerifyChain(ctx, db); err != nil || !r.OK || r.Checked != 3 {
		t.Fatalf("after backfill: %+v %v", r, err)
	}
}

// Concurrent writes are committed in groups; a write that fails (a
// duplicate id) or panics undoes only itself, its panic reaches its own
// caller, and every acknowledged write survives a reopen.
func TestGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "latchkey.db")
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mk := func(id string) *latchkey.Token {
		return &latchkey.Token{ID: id, Prefix: "lk", Subject: "s", Status: latchkey.StatusActive, Version: 1, CreatedAt: time.Now(), Hash: make([]byte, 32)}
	}
	ev := func() *latchkey.AuditEvent {
		return &latchkey.AuditEvent{Time: time.Now(), Node: "n", Kind: latchkey.KindAdmin, Action: "token.created", Outcome: "OK"}
	}
	if err := db.CreateToken(ctx, mk("dupdupdupdupdup0"), ev()); err != nil {
		t.Fatal(err)
	}
	const n = 400
	var wg sync.WaitGroup
	errs := make([]error, n)
	panics := make([]any, n)
	for i := range n {
		wg.Go(func() {
			defer func() { panics[i] = recover() }()
			switch {
			case i%50 == 7:
				db.WriteTx(ctx, func(tx latchkey.Tx) error {
					tx.CreateToken(ctx, mk(fmt.Sprintf("panic%011d", i)), ev()) // undone with the panic
					panic("boom")
				})
			case i%10 == 3:
				errs[i] = db.CreateToken(ctx, mk("dupdupdupdupdup0"), ev())
			default:
				errs[i] = db.CreateToken(ctx, mk(fmt.Sprintf("tok%013d", i)), ev())
			}
		})
	}
	wg.Wait()
	txs, writes := db.WriteStats()
	t.Logf("%d writes in %d transactions", writes, txs)
	if txs >= writes {
		t.Errorf("%d writes took %d transactions: no group commit", writes, txs)
	}
	db.Close()
	db, err = sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := range n {
		switch {
		case i%50 == 7:
			if panics[i] != "boom" {
				t.Errorf("write %d: panic %v did not reach its caller", i, panics[i])
			}
			if _, err := db.GetToken(ctx, fmt.Sprintf("panic%011d", i)); latchkey.ErrorCode(err) != latchkey.ENotFound {
				t.Errorf("a panicking write's token is stored: %v", err)
			}
		case i%10 == 3:
			if errs[i] == nil {
				t.Errorf("write %d: a duplicate id was accepted", i)
			}
		default:
			if errs[i] != nil || panics[i] != nil {
				t.Errorf("write %d: %v %v", i, errs[i], panics[i])
			} else if _, err := db.GetToken(ctx, fmt.Sprintf("tok%013d", i)); err != nil {
				t.Errorf("acknowledged write %d is not stored: %v", i, err)
			}
		}
	}
	if rep, err := audit.VerifyChain(ctx, db); err != nil || !rep.OK {
		t.Errorf("chain after failed writes in groups: %+v %v", rep, err)
	}
}

// Writes racing Close either run or fail with an error; none hangs.
func TestWriteAfterClose(t *testing.T) {
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "latchkey.db"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			tok := &latchkey.Token{ID: fmt.Sprintf("close%011d", i), Prefix: "lk", Status: latchkey.StatusActive, Version: 1, CreatedAt: time.Now(), Hash: make([]byte, 32)}
			db.CreateToken(context.Background(), tok, nil)
		})
	}
	db.Close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a write racing Close never returned")
	}
	if err := db.CreateToken(context.Background(), &latchkey.Token{ID: "afterclose000000"}, nil); err == nil {
		t.Error("a write after Close succeeded")
	}
}
