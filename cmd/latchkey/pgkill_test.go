package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/latchkeyhq/latchkey/client"
)

// crash stops the server the way a crash does (immediate: no checkpoint,
// recovery replays the WAL on the next start).
func (s *pgServer) crash() { s.stopMode("immediate") }

// 16 issuers create tokens through one node on PostgreSQL while the
// database is killed (immediate stop, then recovery) and then the node
// itself is killed (SIGKILL). Every token whose creation was acknowledged
// is in the database afterwards, with its audit record: latchkey answers
// only after the commit, and a crash on either side loses nothing it
// acknowledged.
func TestPostgresKillDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own PostgreSQL server")
	}
	pg := privatePostgres(t)
	t.Setenv("LATCHKEY_SERVER_KEY", strings.Repeat("6d", 32))
	dir := t.TempDir()
	cmd, url, logs := startChildArgs(t, "serve", "--listen", freeAddr(t), "--data-dir", dir, "--database", pg.dsn,
		"--node", "kill-node", "--detect=false", "--log-level", "warn")
	r, err := os.ReadFile(filepath.Join(dir, "root-token"))
	if err != nil {
		t.Fatal(err)
	}
	cl := &client.Client{BaseURL: url, Token: strings.TrimSpace(string(r))}
	var (
		mu     sync.Mutex
		acked  []string
		failed atomic.Int64
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	for w := range 16 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				tok, err := cl.CreateToken(ctx, client.CreateRequest{Name: fmt.Sprintf("w%d-%d", w, i)})
				if err != nil {
					failed.Add(1)
					time.Sleep(5 * time.Millisecond) // the database is down: do not spin
					continue
				}
				mu.Lock()
				acked = append(acked, tok.ID)
				mu.Unlock()
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	waitFor(t, func() bool { return count() >= 300 })
	pg.crash()
	during := count()
	waitFor(t, func() bool { return failed.Load() > 0 })
	pg.start()
	waitFor(t, func() bool { return count() >= during+300 })
	// Now the node dies mid-flight, requests in the air.
	cmd.Process.Kill()
	cmd.Wait()
	stop.Store(true)
	wg.Wait()
	t.Logf("%d creations acknowledged, %d failed while something was down", len(acked), failed.Load())

	conn, err := pgx.Connect(ctx, pg.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var have, recorded int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM tokens WHERE id = ANY($1)`, acked).Scan(&have); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(DISTINCT token_id) FROM audit_events WHERE action = 'token.create' AND token_id = ANY($1)`, acked).Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if have != len(acked) || recorded != len(acked) {
		t.Fatalf("of %d acknowledged tokens, %d are in the database and %d have their audit record\n%s", len(acked), have, recorded, logs.String())
	}
}
