package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/httpapi"
)

// testPostgresDSN is the machine's PostgreSQL, as the superuser
// (LATCHKEY_TEST_POSTGRES overrides it).
func testPostgresDSN() string {
	if dsn := os.Getenv("LATCHKEY_TEST_POSTGRES"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// pgSchema makes a fresh schema on the test PostgreSQL server and returns
// a URL that uses it.
func pgSchema(t *testing.T) string {
	t.Helper()
	return pgSchemaB(t)
}

func pgSchemaB(t testing.TB) string {
	t.Helper()
	dsn := testPostgresDSN()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url, drop, err := tempSchema(cctx, dsn, "lk_test_")
	if err != nil && !errors.Is(err, errNoPostgres) {
		t.Fatal(err)
	}
	if err != nil {
		if tt, ok := t.(*testing.T); ok {
			requireService(tt, "PostgreSQL")
		}
		t.Skipf("PostgreSQL is not available: %v", err)
	}
	t.Cleanup(drop)
	return url
}

// Two nodes on one PostgreSQL database: one root token for both, tokens
// issued on one verify on the other, and a node with another server key
// refuses to start.
func TestPostgresCluster(t *testing.T) {
	t.Parallel()
	dsn := pgSchema(t)
	key := strings.Repeat("4b", 32)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	dirA, dirB := t.TempDir(), t.TempDir()
	a, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dirA, Database: dsn, ServerKey: key, Node: "a"}, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(ctx)
	b, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dirB, Database: dsn, ServerKey: key, Node: "b"}, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(ctx)
	if _, err := os.Stat(filepath.Join(dirB, "root-token")); err == nil {
		t.Error("the second node created a root token too: one per database")
	}
	root := readRoot(t, dirA)
	ca := &client.Client{BaseURL: "http://" + a.addr, Token: root}
	cb := &client.Client{BaseURL: "http://" + b.addr, Token: root}
	tok, err := ca.CreateToken(ctx, client.CreateRequest{Scopes: []string{"a:b"}, MaxUses: 3})
	if err != nil {
		t.Fatal(err)
	}
	// Issued on A, verified on B; the usage budget is shared exactly.
	valid := 0
	for i := range 6 {
		c := []*client.Client{ca, cb}[i%2]
		if v, err := c.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, Scopes: []string{"a:b"}}); err == nil && v.Valid {
			valid++
		}
	}
	if valid != 3 {
		t.Errorf("a 3-use token verified %d times across two nodes", valid)
	}
	// The audit log holds both nodes' records, each chain intact.
	a.pipe.Flush(ctx)
	b.pipe.Flush(ctx)
	rep, err := ca.VerifyAudit(ctx)
	if err != nil || !rep.OK {
		t.Fatalf("chain: %+v %v", rep, err)
	}
	page, _ := cb.ListAudit(ctx, latchkey.AuditFilter{TokenID: tok.ID, Kind: latchkey.KindVerify})
	if len(page.Events) != 6 {
		t.Errorf("%d verification records for the token, want 6", len(page.Events))
	}
	// The dashboard's counts add up both nodes' attempts, whichever node
	// is asked: 3 valid, 3 refused (the spent budget).
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range []*client.Client{ca, cb} {
		for {
			sum, err := c.AuditSummary(ctx)
			if err == nil && sum.Today.Valid >= 3 && sum.Today.Refused >= 3 && len(sum.Nodes) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("summary from one node does not count both: %+v %v", sum, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// A dashboard session made on A works on B (one server key), and
	// signing out on A ends it on B too.
	cookie, csrf := uiSignIn(t, "http://"+a.addr, root)
	if code := uiGet(t, "http://"+b.addr+"/ui/api/v1/tokens", cookie); code != http.StatusOK {
		t.Errorf("A's session on B: %d", code)
	}
	req, _ := http.NewRequest("DELETE", "http://"+a.addr+httpapi.UISessionPath, nil)
	req.AddCookie(&http.Cookie{Name: httpapi.SessionCookie, Value: cookie})
	req.Header.Set(httpapi.CSRFHeader, csrf)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("sign-out on A: %v %v", err, resp)
	}
	if code := uiGet(t, "http://"+b.addr+"/ui/api/v1/tokens", cookie); code != http.StatusUnauthorized {
		t.Errorf("A's session on B after signing out on A: %d", code)
	}
	// A node with another server key refuses to start.
	if _, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Database: dsn, ServerKey: strings.Repeat("5c", 32)}, logger, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "does not match") {
		t.Errorf("a node with another key: %v", err)
	}
}

// Three nodes: a revocation on A is refused on C promptly (notification),
// and a node whose notification connection is killed still converges
// within the poll bound (the change log), then reconnects by itself.
func TestClusterRevocationAndConnectionKill(t *testing.T) {
	t.Parallel()
	dsn := pgSchema(t)
	key := strings.Repeat("4b", 32)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var nodes []*daemon
	var dirs []string
	for i := range 3 {
		dir := t.TempDir()
		d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir, Database: dsn, ServerKey: key, Poll: 200 * time.Millisecond,
			Node: fmt.Sprintf("node-%d", i)}, logger, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Shutdown(ctx) })
		nodes, dirs = append(nodes, d), append(dirs, dir)
	}
	root := readRoot(t, dirs[0])
	cl := func(i int) *client.Client { return &client.Client{BaseURL: "http://" + nodes[i].addr, Token: root} }
	waitFor(t, func() bool { return follower(nodes[1]).Listening() && follower(nodes[2]).Listening() })
	refusedWithin := func(node int, tok string, bound time.Duration) time.Duration {
		start := time.Now()
		for time.Since(start) < bound {
			if v, err := cl(node).Verify(ctx, client.VerifyRequest{Token: tok}); err == nil && v.Code == latchkey.Revoked {
				return time.Since(start)
			}
			time.Sleep(2 * time.Millisecond)
		}
		t.Fatalf("node %d still accepts a token revoked %v ago", node, bound)
		return 0
	}
	tok, _ := cl(0).CreateToken(ctx, client.CreateRequest{})
	for i := range 3 { // cached everywhere
		if v, _ := cl(i).Verify(ctx, client.VerifyRequest{Token: tok.Plaintext}); !v.Valid {
			t.Fatalf("node %d: %s", i, v.Code)
		}
	}
	cl(0).RevokeToken(ctx, tok.ID, "test")
	took := refusedWithin(2, tok.Plaintext, 2*time.Second)
	t.Logf("revoked on A, refused on C after %v", took)

	// A source blocked by A's detector is blocked on C; lifted on C, it is
	// free on A again.
	const attacker = "198.51.100.7"
	for range 20 {
		cl(0).Verify(ctx, client.VerifyRequest{Token: "lk_made_up_token", IP: attacker})
	}
	waitFor(t, func() bool {
		v, err := cl(2).Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, IP: attacker})
		return err == nil && v.Code == latchkey.Blocked
	})
	if v, _ := cl(2).Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, IP: "198.51.100.8"}); v.Code != latchkey.Revoked {
		t.Errorf("another source on C: %s, want REVOKED (not blocked)", v.Code)
	}
	if err := cl(2).RemoveBlock(ctx, attacker); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		v, err := cl(0).Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, IP: attacker})
		return err == nil && v.Code == latchkey.Revoked
	})

	// Kill node B's notification connection.
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var killed bool
	if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`,
		follower(nodes[1]).AppName()).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend: %v %v", killed, err)
	}
	tok2, _ := cl(0).CreateToken(ctx, client.CreateRequest{})
	cl(1).Verify(ctx, client.VerifyRequest{Token: tok2.Plaintext}) // cached on B
	cl(0).RevokeToken(ctx, tok2.ID, "test")
	took = refusedWithin(1, tok2.Plaintext, 3*time.Second) // the poll bound (200ms here) plus a margin
	t.Logf("with its notification connection killed, B refused after %v", took)
	waitFor(t, func() bool { return follower(nodes[1]).Listening() })
	if follower(nodes[1]).FeedStats().Reconnects == 0 {
		t.Error("B did not reconnect its notification connection")
	}
}

// uiSignIn signs in to the dashboard at base and returns the session
// cookie's value and the CSRF token.
func uiSignIn(t *testing.T, base, tok string) (string, string) {
	t.Helper()
	resp, err := http.Post(base+httpapi.UISessionPath, "application/json", strings.NewReader(`{"token":"`+tok+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info client.SessionInfo
	json.NewDecoder(resp.Body).Decode(&info)
	for _, c := range resp.Cookies() {
		if c.Name == httpapi.SessionCookie && resp.StatusCode == http.StatusOK {
			return c.Value, info.CSRFToken
		}
	}
	t.Fatalf("sign-in at %s: %d", base, resp.StatusCode)
	return "", ""
}

// uiGet sends a dashboard data call with the session cookie.
func uiGet(t *testing.T, url, cookie string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.AddCookie(&http.Cookie{Name: httpapi.SessionCookie, Value: cookie})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
