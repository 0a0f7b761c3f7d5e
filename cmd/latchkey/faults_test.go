package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/detect"
)

// The fault suite (docs/operations.md, "When a dependency is down"): nodes on a
// PostgreSQL server the test starts itself, broken on purpose.

// One process per node name: a second process given a live node's name
// refuses to start (and the first is undisturbed); a crashed node's name
// is taken over once its heartbeat lapses; a node whose name another
// process took stops.
func TestNodeNameHeldOnce(t *testing.T) {
	t.Parallel()
	dsn := pgSchema(t)
	key := strings.Repeat("4b", 32)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(node string) (*daemon, error) {
		return startDaemon(ctx, serveConfig{Database: dsn, ServerKey: key, Listen: "127.0.0.1:0", DataDir: t.TempDir(),
			Node: node, Poll: 200 * time.Millisecond}, logger, io.Discard)
	}
	a, err := start("dup")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown(ctx) })
	root, _ := os.ReadFile(filepath.Join(a.cfg.DataDir, "root-token"))
	ac := &client.Client{BaseURL: "http://" + a.addr, Token: strings.TrimSpace(string(root))}

	began := time.Now()
	if b, err := start("dup"); err == nil {
		b.Shutdown(ctx)
		t.Fatal("a second node named dup started while the first was live")
	} else if !strings.Contains(err.Error(), `another node named "dup" is running`) {
		t.Fatalf("the second node's error: %v", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("refused after %v: a live holder renews within a poll, so the refusal need not wait for the takeover bound", took)
	}
	if _, err := ac.CreateToken(ctx, client.CreateRequest{}); err != nil {
		t.Errorf("the first node after the refused start: %v", err)
	}
	select {
	case <-a.done:
		t.Fatalf("the first node stopped: %v", a.cause())
	default:
	}

	// A crashed node (SIGKILL: no goodbye) gives its name up once its
	// heartbeat is older than the takeover bound (3 s).
	child, _, _ := startChildEnv(t, []string{"LATCHKEY_SERVER_KEY=" + key}, "serve", "--listen", freeAddr(t), "--data-dir", t.TempDir(),
		"--database", dsn, "--node", "crashed", "--poll-interval", "200ms", "--log-level", "warn")
	child.Process.Kill()
	child.Wait()
	began = time.Now()
	c, err := start("crashed")
	if err != nil {
		t.Fatalf("taking over a crashed node's name: %v", err)
	}
	t.Cleanup(func() { c.Shutdown(ctx) })
	took := time.Since(began)
	if took > 5*time.Second {
		t.Errorf("took the crashed node's name over after %v, want within the 3 s bound and a poll", took)
	}
	t.Logf("a crashed node's name taken over after %v", took)

	// A node whose name another process took (it could not renew it, and
	// the other claimed it) stops serving under it.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE nodes SET holder = 'another-process', seen = (extract(epoch from clock_timestamp()) * 1000000)::bigint
		WHERE node = 'crashed'`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
		if err := c.cause(); err == nil || !strings.Contains(err.Error(), `another process now holds the node name "crashed"`) {
			t.Errorf("the node stopped, saying %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a node whose name was taken kept running")
	}
}

// A database outage, seen from three nodes: a token changed just before
// it (and a role) is still served from every node's cache (re-reading the
// change log does not apply those changes again), and admin calls answer 503
// unavailable with Retry-After, which the CLI reports as such.
func TestOutageAfterChange(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own PostgreSQL server")
	}
	t.Parallel()
	pg := privatePostgres(t)
	key := strings.Repeat("5c", 32)
	const poll = 200 * time.Millisecond
	var urls []string
	var root string
	for i := range 3 {
		dir := t.TempDir()
		_, url, _ := startChildEnv(t, []string{"LATCHKEY_SERVER_KEY=" + key}, "serve", "--listen", freeAddr(t), "--data-dir", dir,
			"--database", pg.dsn, "--node", fmt.Sprintf("outage-%d", i), "--poll-interval", poll.String(),
			"--cache-max-staleness", "30s", "--detect=false", "--log-level", "warn")
		urls = append(urls, url)
		if r, err := os.ReadFile(filepath.Join(dir, "root-token")); err == nil {
			root = strings.TrimSpace(string(r))
		}
	}
	cls := make([]*client.Client, len(urls))
	for i, u := range urls {
		cls[i] = &client.Client{BaseURL: u, Token: root}
	}
	before := make([]float64, len(urls))
	for i, u := range urls {
		before[i] = changesTakenIn(t, u)
	}
	tok, err := cls[0].CreateToken(ctx, client.CreateRequest{Scopes: []string{"orders:read"}})
	if err != nil {
		t.Fatal(err)
	}
	name := "changed just before the outage"
	if _, err := cls[1].UpdateToken(ctx, tok.ID, client.UpdateRequest{Name: &name}); err != nil {
		t.Fatal(err)
	}
	// A role changed too: a setting's change drops each node's whole cache
	// once (every token is resolved again against the roles).
	if _, err := cls[2].PutRole(ctx, latchkey.Role{Keyspace: latchkey.DefaultKeyspace, Name: "reader", Scopes: []string{"orders:read"}}); err != nil {
		t.Fatal(err)
	}
	// Every node has been told of the change, then serves the token (and
	// caches it, and the root token it is asked with)...
	for i, u := range urls {
		waitFor(t, func() bool { return changesTakenIn(t, u) >= before[i]+3 })
	}
	for _, c := range cls {
		if v, err := c.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, Scopes: []string{"orders:read"}}); err != nil || !v.Valid {
			t.Fatalf("before the outage: %+v %v", v, err)
		}
	}
	// ...and then polls the change log several times: each read reaches
	// back 5 s, over the change, and must leave the cached entry alone.
	time.Sleep(4 * poll)
	pg.stopMode("immediate")
	for i, c := range cls {
		for range 5 {
			v, err := c.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, Scopes: []string{"orders:read"}})
			if err != nil || !v.Valid {
				t.Fatalf("node %d during the outage: the token changed before it answers %+v, %v; want VALID from the cache", i, v, err)
			}
			time.Sleep(poll)
		}
	}
	// Admin calls need the store: 503, Retry-After, the store named.
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/tokens", `{"scopes":["a:b"]}`}, {"GET", "/v1/tokens", ""}, {"GET", "/v1/tokens/" + tok.ID, ""},
		{"POST", "/v1/tokens/" + tok.ID + "/revoke", ""}, {"GET", "/v1/audit", ""}, {"PUT", "/v1/keyspaces/outage", `{"prefix":"outage"}`},
	} {
		req, _ := http.NewRequest(c.method, urls[2]+c.path, strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer "+root)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), `"code":"unavailable"`) ||
			!strings.Contains(string(b), "store is unavailable") {
			t.Errorf("%s %s during the outage: %d (Retry-After %q) %s; want 503 unavailable with Retry-After", c.method, c.path,
				resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
	}
	code, _, errs := cli(t, urls[2], root, "token", "create", "--scope", "a:b")
	if code != exitUnreachable || !strings.Contains(errs, "the store is unavailable") {
		t.Errorf("the CLI during the outage: exit %d, %q; want exit %d saying the store is unavailable", code, errs, exitUnreachable)
	}
	// The database back: every node writes again.
	pg.start()
	for _, c := range cls {
		waitFor(t, func() bool {
			_, err := c.CreateToken(ctx, client.CreateRequest{})
			return err == nil
		})
	}
}

// A fast attacker spread over three nodes gets exactly the threshold's
// number of guesses answered, sequentially and with 100 in parallel:
// every failure is counted in the shared window (Redis) before it is
// answered, and every attempt past the threshold, on any node, is
// BLOCKED. Once over it, the source's valid tokens are refused on every
// node too.
func TestDetectorExactAcrossNodes(t *testing.T) {
	t.Parallel()
	url, prefix := redisURL(t)
	const threshold = 20
	cls := cluster(t, 3, serveConfig{Redis: url, RedisPrefix: prefix, Poll: 200 * time.Millisecond,
		Detect: detect.Config{SourceFailures: detect.Rule{Count: threshold, Window: time.Minute}, BlockFor: time.Hour}})
	good, err := cls[0].CreateToken(ctx, client.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The guesses' own connections, closed at the end: a connection dialled
	// for a parallel request that another one served stays new, and a
	// server's Shutdown waits 5 s for such connections.
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	for _, c := range cls {
		c.HTTP = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	guess := func(i int, ip string) latchkey.Code {
		v, err := cls[i%3].Verify(ctx, client.VerifyRequest{Token: fmt.Sprintf("lk_guess%08d", i), IP: ip})
		if err != nil {
			t.Error(err)
			return latchkey.Valid // counted as wrong below
		}
		return v.Code
	}
	count := func(codes []latchkey.Code) (answered, blocked int) {
		for _, c := range codes {
			switch c {
			case latchkey.Blocked:
				blocked++
			case latchkey.Malformed, latchkey.NotFound:
				answered++
			default:
				t.Errorf("a guess answered %s", c)
			}
		}
		return
	}
	began := time.Now()
	// Sequential, round robin over the nodes.
	const seq = "203.0.113.81"
	var codes []latchkey.Code
	for i := range 60 {
		codes = append(codes, guess(i, seq))
	}
	if a, b := count(codes); a != threshold || b != 60-threshold {
		t.Errorf("sequential: %d guesses answered and %d BLOCKED, want exactly %d answered", a, b, threshold)
	}
	for i := threshold; i < len(codes); i++ {
		if codes[i] != latchkey.Blocked {
			t.Errorf("sequential guess %d (past the threshold, node %d) answered %s", i, i%3, codes[i])
		}
	}
	// 100 at once, over the three nodes.
	const par = "203.0.113.82"
	pcodes := make([]latchkey.Code, 100)
	var wg sync.WaitGroup
	for i := range pcodes {
		wg.Go(func() { pcodes[i] = guess(i, par) })
	}
	wg.Wait()
	if a, b := count(pcodes); a != threshold || b != 100-threshold {
		t.Errorf("parallel: %d guesses answered and %d BLOCKED, want exactly %d answered", a, b, threshold)
	}
	t.Logf("guesses done after %v", time.Since(began))
	// The blocked source's real token: refused on every node.
	for i, c := range cls {
		waitFor(t, func() bool {
			v, err := c.Verify(ctx, client.VerifyRequest{Token: good.Plaintext, IP: par})
			return err == nil && v.Code == latchkey.Blocked
		})
		_ = i
	}
	t.Logf("blocked everywhere after %v", time.Since(began))
	// Another source is not affected.
	if v, err := cls[1].Verify(ctx, client.VerifyRequest{Token: good.Plaintext, IP: "198.51.100.7"}); err != nil || !v.Valid {
		t.Errorf("an innocent source: %+v %v", v, err)
	}
}
