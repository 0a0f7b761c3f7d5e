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

// Editing, deleting or forging a chunk directly in the database file
// breaks the audit chain there, and VerifyChain names the chunk's records.
func TestAuditChainDetectsTampering(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "latchkey.db")
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for b := range 5 { // five chunks: records 1-10, 11-20, ... 41-50
		var evs []latchkey.AuditEvent
		for i := range 10 {
			evs = append(evs, latchkey.AuditEvent{Time: time.Now(), Node: "n1", Kind: latchkey.KindVerify, Action: latchkey.ActionVerify,
				TokenID: "abcdefghijklmnop", Outcome: []string{"VALID", "NOT_FOUND"}[(b*10+i)%2], ClientIP: "10.0.0.1"})
		}
		if err := db.AppendAudit(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := audit.VerifyChain(ctx, db); err != nil || !r.OK || r.Checked != 50 {
		t.Fatalf("before tampering: %+v %v", r, err)
	}
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	broken := func(what string, seq, last int64) {
		t.Helper()
		r, err := audit.VerifyChain(ctx, db)
		if err != nil || r.OK || r.Broken == nil || r.Broken.Seq != seq || r.Broken.LastSeq != last || r.Broken.Node != "n1" {
			t.Fatalf("%s: %+v %+v %v, want broken in %d-%d", what, r, r.Broken, err, seq, last)
		}
	}
	var orig []byte
	if err := raw.QueryRow(`SELECT recs FROM audit_chunks WHERE last_seq = 20`).Scan(&orig); err != nil {
		t.Fatal(err)
	}
	// Someone turns the failed attempts of records 11-20 into successes
	// (the length byte, len+1, goes with the word, so the chunk still decodes).
	if _, err := raw.Exec(`UPDATE audit_chunks SET recs = CAST(replace(recs, unhex('0a') || 'NOT_FOUND', unhex('06') || 'VALID') AS BLOB) WHERE last_seq = 20`); err != nil {
		t.Fatal(err)
	}
	page, err := db.ListAudit(ctx, latchkey.AuditFilter{Outcome: "NOT_FOUND", Limit: 100})
	if err != nil || len(page.Events) != 20 {
		t.Fatalf("the edit did not take: %d refusals left, %v", len(page.Events), err)
	}
	broken("after editing records 11-20", 11, 20)
	if s := audit.Summary(mustVerify(t, db)); !strings.Contains(s, "BROKEN in records 11-20") {
		t.Errorf("summary %q", s)
	}
	// Put it back: intact again.
	raw.Exec(`UPDATE audit_chunks SET recs = ? WHERE last_seq = 20`, orig)
	if r, _ := audit.VerifyChain(ctx, db); !r.OK {
		t.Fatalf("after restoring records 11-20: %+v", r.Broken)
	}
	// A chunk cut short does not decode; one forged whole does not follow.
	raw.Exec(`UPDATE audit_chunks SET recs = substr(recs, 1, 7) WHERE last_seq = 20`)
	broken("after truncating records 11-20", 11, 20)
	raw.Exec(`UPDATE audit_chunks SET recs = ? WHERE last_seq = 20`, orig)
	raw.Exec(`UPDATE audit_chunks SET prev = zeroblob(32) WHERE last_seq = 20`)
	broken("after re-linking records 11-20 to the start", 11, 20)
	raw.Exec(`UPDATE audit_chunks SET prev = (SELECT hash FROM audit_chunks WHERE last_seq = 10) WHERE last_seq = 20`)
	// Deleting a chunk breaks the next one's link.
	raw.Exec(`DELETE FROM audit_chunks WHERE last_seq = 30`)
	broken("after deleting records 21-30", 31, 40)
	// Recomputing a later chunk's hash does not hide the first break.
	raw.Exec(`UPDATE audit_chunks SET hash = zeroblob(32) WHERE last_seq = 50`)
	broken("the first break is still reported first", 31, 40)
}

func mustVerify(t *testing.T, db *sqlite.DB) latchkey.ChainReport {
	t.Helper()
	r, err := audit.VerifyChain(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return r
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
