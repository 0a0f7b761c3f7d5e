package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

// Three nodes on one PostgreSQL database. A revocation asked with
// wait=all on A answers once B and C have evicted the token: asked at
// once after the answer, both refuse it, with no poll to wait for. A
// bulk revocation and a suspension do the same. A node whose notification
// connection is cut does not confirm and is named; a node shut down is no
// longer asked.
func TestClusterRevocationReceipt(t *testing.T) {
	t.Parallel()
	dsn := pgSchema(t)
	key := strings.Repeat("5c", 32)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the nodes' warnings:\n%s", logs.String())
		}
	})
	var nodes []*daemon
	var dirs []string
	for _, name := range []string{"rcpt-a", "rcpt-b", "rcpt-c"} {
		dir := t.TempDir()
		d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir, Database: dsn, ServerKey: key, Poll: 200 * time.Millisecond, Node: name}, logger, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Shutdown(ctx) })
		nodes, dirs = append(nodes, d), append(dirs, dir)
	}
	root := readRoot(t, dirs[0])
	cl := func(i int) *client.Client { return &client.Client{BaseURL: "http://" + nodes[i].addr, Token: root} }
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	live := func() int {
		var n int
		admin.QueryRow(ctx, `SELECT count(*) FROM nodes`).Scan(&n)
		return n
	}
	waitFor(t, func() bool {
		return follower(nodes[0]).Listening() && follower(nodes[1]).Listening() && follower(nodes[2]).Listening() && live() == 3
	})
	cachedEverywhere := func(subject string) *client.CreatedToken {
		t.Helper()
		tok, err := cl(0).CreateToken(ctx, client.CreateRequest{Subject: subject})
		if err != nil {
			t.Fatal(err)
		}
		for i := range nodes {
			if v, _ := cl(i).Verify(ctx, client.VerifyRequest{Token: tok.Plaintext}); !v.Valid {
				t.Fatalf("node %d: %s", i, v.Code)
			}
		}
		return tok
	}
	refusedNow := func(tok string, want latchkey.Code) {
		t.Helper()
		for i := range nodes {
			if v, err := cl(i).Verify(ctx, client.VerifyRequest{Token: tok}); err != nil || v.Code != want {
				t.Errorf("node %d right after the receipt: %v %v, want %s", i, v, err, want)
			}
		}
	}
	var took []float64
	for range 20 {
		tok := cachedEverywhere("alice")
		res, err := cl(0).RevokeTokenWait(ctx, tok.ID, "receipt", client.Wait{Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if r := res.Receipt; res.Status != latchkey.StatusRevoked || r.Nodes != 3 || r.Confirmed != 3 || r.TimedOut || len(r.Missing) != 0 {
			t.Fatalf("receipt: %+v", r)
		}
		took = append(took, res.Receipt.TookMS)
		refusedNow(tok.Plaintext, latchkey.Revoked)
	}
	t.Logf("receipts across 3 nodes took (ms): %v", took)
	tok := cachedEverywhere("bob")
	if res, err := cl(1).SuspendTokenWait(ctx, tok.ID, "receipt", client.Wait{}); err != nil || res.Receipt.Confirmed != 3 {
		t.Fatalf("suspend with a receipt (from B): %+v %v", res, err)
	}
	refusedNow(tok.Plaintext, latchkey.Suspended)
	bulk := cachedEverywhere("carol")
	if res, err := cl(2).RevokeWait(ctx, client.RevocationRequest{Subject: "carol"}, client.Wait{}); err != nil || res.Revoked != 1 || res.Receipt == nil || res.Receipt.Confirmed != 3 {
		t.Fatalf("bulk revocation with a receipt (from C): %+v %v", res, err)
	}
	refusedNow(bulk.Plaintext, latchkey.Revoked)

	// B's notification connection is cut: B does not hear the request, and
	// is named.
	var killed bool
	if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`,
		follower(nodes[1]).AppName()).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend: %v %v", killed, err)
	}
	tok = cachedEverywhere("dave")
	res, err := cl(0).RevokeTokenWait(ctx, tok.ID, "receipt", client.Wait{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Receipt; r.Nodes != 3 || r.Confirmed != 2 || !r.TimedOut || len(r.Missing) != 1 || r.Missing[0] != "rcpt-b" {
		t.Errorf("with B cut off: %+v", r)
	}
	// The CLI says so, and exits 1. (B is cut off again first: its
	// listener may have come back meanwhile.)
	erin := cachedEverywhere("erin")
	waitFor(t, func() bool { return follower(nodes[1]).Listening() })
	if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`,
		follower(nodes[1]).AppName()).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend: %v %v", killed, err)
	}
	code, out, _ := cli(t, "http://"+nodes[0].addr, root, "token", "revoke", erin.ID, "--wait", "--wait-timeout", "50ms")
	if code != exitRefused || !strings.Contains(out, "2 of 3 node(s) confirmed") || !strings.Contains(out, "not confirmed: rcpt-b") {
		t.Errorf("CLI with B cut off: exit %d %q", code, out)
	}
	waitFor(t, func() bool { return follower(nodes[1]).Listening() })

	// C shuts down: it leaves the live nodes, and is not waited for.
	if err := nodes[2].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return live() == 2 })
	tok = cachedEverywhere2(t, cl, "frank")
	res, err = cl(0).RevokeTokenWait(ctx, tok.ID, "receipt", client.Wait{})
	if err != nil || res.Receipt.Nodes != 2 || res.Receipt.Confirmed != 2 {
		t.Fatalf("after C shut down: %+v %v", res, err)
	}
	code, out, errs := cli(t, "http://"+nodes[0].addr, root, "token", "revoke", cachedEverywhere2(t, cl, "gina").ID, "--wait")
	if code != exitOK || !strings.Contains(out, "2 of 2 node(s) confirmed") {
		t.Errorf("CLI: exit %d %q %s", code, out, errs)
	}
	// The dashboard's list: A's receipts, newest first.
	rs, err := cl(0).Receipts(ctx)
	if err != nil || len(rs) < 3 || rs[0].Nodes != 2 || rs[0].Action != latchkey.ActionTokenRevoke {
		t.Errorf("receipts on A: %+v %v", rs, err)
	}
}

// cachedEverywhere2 makes a token on A and caches it on A and B (C is down).
func cachedEverywhere2(t *testing.T, cl func(int) *client.Client, subject string) *client.CreatedToken {
	t.Helper()
	tok, err := cl(0).CreateToken(ctx, client.CreateRequest{Subject: subject})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if v, _ := cl(i).Verify(ctx, client.VerifyRequest{Token: tok.Plaintext}); !v.Valid {
			t.Fatalf("node %d: %s", i, v.Code)
		}
	}
	return tok
}

// On one node (SQLite) a receipt is that node's own eviction: --wait
// answers at once with 1 of 1, for revoke, suspend and bulk revoke;
// --wait-timeout without --wait, or beyond the bound, is a usage error
// that changes nothing.
func TestCLIReceiptOneNode(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	c := ts.client(ts.root)
	mk := func(subject string) string {
		tok, err := c.CreateToken(ctx, client.CreateRequest{Subject: subject})
		if err != nil {
			t.Fatal(err)
		}
		return tok.ID
	}
	id := mk("alice")
	for _, args := range [][]string{{"--wait-timeout", "1s"}, {"--wait", "--wait-timeout", "31s"}, {"--wait", "--wait-timeout", "-1s"}} {
		if code, _, errs := cli(t, ts.url, ts.root, append([]string{"token", "revoke", id}, args...)...); code != exitUsage {
			t.Errorf("%v: exit %d %s", args, code, errs)
		}
	}
	if tok, _ := c.GetToken(ctx, id); tok.Status != latchkey.StatusActive {
		t.Fatalf("a refused command changed the token: %s", tok.Status)
	}
	for _, cmd := range [][]string{
		{"token", "revoke", id, "--wait"},
		{"token", "suspend", mk("bob"), "--wait", "--wait-timeout", "2s"},
		{"token", "revoke", "--subject", "carol", "--yes", "--wait"},
	} {
		if cmd[2] == "--subject" {
			mk("carol")
		}
		code, out, errs := cli(t, ts.url, ts.root, cmd...)
		if code != exitOK || !strings.Contains(out, "; 1 of 1 node(s) confirmed in ") {
			t.Errorf("%v: exit %d %q %s", cmd, code, out, errs)
		}
	}
	code, out, _ := cli(t, ts.url, ts.root, "token", "revoke", mk("dave"), "--wait", "--json")
	var res client.TokenReceipt
	if code != exitOK || json.Unmarshal([]byte(out), &res) != nil || res.Status != latchkey.StatusRevoked || res.Receipt.Nodes != 1 || res.Receipt.Confirmed != 1 {
		t.Errorf("--json: exit %d %s", code, out)
	}
}
