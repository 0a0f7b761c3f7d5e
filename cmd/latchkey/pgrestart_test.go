package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
)

// pgServer is a PostgreSQL server of the test's own, so that stopping and
// restarting it cannot disturb the shared server other tests use.
type pgServer struct {
	t            *testing.T
	bin, data    string
	port         string
	asPostgres   bool   // running as root: the server runs as the postgres user
	netns, host  string // the network namespace it runs in ("": the test's own), the address it listens on
	dsn, logFile string
}

// privatePostgres initialises and starts a throwaway PostgreSQL cluster
// from the installed server binaries, on a free loopback port.
func privatePostgres(t *testing.T) *pgServer {
	t.Helper()
	return privatePostgresIn(t, "", "127.0.0.1")
}

// privatePostgresIn is privatePostgres in network namespace netns (made by
// the caller), listening on host.
func privatePostgresIn(t *testing.T, netns, host string) *pgServer {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			bins = []string{p}
		}
	}
	if len(bins) == 0 {
		requireService(t, "the PostgreSQL server binaries (initdb, pg_ctl)")
	}
	sort.Strings(bins)
	s := &pgServer{t: t, bin: filepath.Dir(bins[len(bins)-1]), asPostgres: os.Geteuid() == 0, netns: netns, host: host}
	// PostgreSQL refuses to run as root; its directory must be reachable by
	// the postgres user, which t.TempDir's 0700 parents are not.
	root, err := os.MkdirTemp("", "latchkey-pg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	s.data, s.logFile = filepath.Join(root, "data"), filepath.Join(root, "log")
	if s.asPostgres {
		if err := exec.Command("chown", "postgres:", root).Run(); err != nil {
			t.Fatalf("chown: %v", err)
		}
	}
	_, port, _ := strings.Cut(freeAddr(t), ":")
	s.port = port
	if out, err := s.run("initdb", "-D", s.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	if host != "127.0.0.1" {
		// initdb trusts loopback only; this server is reached over a link.
		hba, err := os.OpenFile(filepath.Join(s.data, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(hba, "host all all %s/16 trust\n", host)
		hba.Close()
	}
	s.start()
	t.Cleanup(func() { s.run("pg_ctl", "-D", s.data, "-m", "immediate", "-w", "stop") })
	s.dsn = fmt.Sprintf("postgres://postgres@%s:%s/postgres?sslmode=disable", host, port)
	return s
}

func (s *pgServer) run(tool string, args ...string) ([]byte, error) {
	path := filepath.Join(s.bin, tool)
	argv := append([]string{path}, args...)
	if s.asPostgres {
		argv = append([]string{"runuser", "-u", "postgres", "--"}, argv...)
	}
	if s.netns != "" {
		argv = append([]string{"ip", "netns", "exec", s.netns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	return cmd.CombinedOutput()
}

func (s *pgServer) start() {
	s.t.Helper()
	opts := fmt.Sprintf("-p %s -k %s -c listen_addresses=%s -c fsync=off -c max_connections=200", s.port, filepath.Dir(s.data), s.host)
	if out, err := s.run("pg_ctl", "-D", s.data, "-l", s.logFile, "-o", opts, "-w", "start"); err != nil {
		log, _ := os.ReadFile(s.logFile)
		s.t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// stop shuts the server down the way a restart does: connections are
// terminated, in-flight transactions rolled back.
func (s *pgServer) stop() { s.stopMode("fast") }

// stopMode stops the server with pg_ctl's shutdown mode (fast, immediate).
func (s *pgServer) stopMode(mode string) {
	s.t.Helper()
	if out, err := s.run("pg_ctl", "-D", s.data, "-m", mode, "-w", "stop"); err != nil {
		s.t.Fatalf("pg_ctl stop -m %s: %v\n%s", mode, err, out)
	}
}

// PostgreSQL restarted in the middle of a load run on two nodes: no node
// panics or exits, /readyz turns false during the outage, verification
// follows the outage policy (a token cached within the maximum staleness
// is served, an unknown one refused, nothing served past the staleness
// bound), and both nodes recover by themselves: ready again, new tokens
// verify, and revocations propagate once more.
func TestPostgresRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own PostgreSQL server")
	}
	pg := privatePostgres(t)
	key := strings.Repeat("4b", 32)
	t.Setenv("LATCHKEY_SERVER_KEY", key)
	const staleness = 4 * time.Second
	type node struct {
		cmd  *exec.Cmd
		url  string
		logs *syncBuffer
		cl   *client.Client
	}
	var nodes []*node
	var dirs []string
	for i := range 2 {
		dir := t.TempDir()
		cmd, url, logs := startChildArgs(t, "serve", "--listen", freeAddr(t), "--data-dir", dir, "--database", pg.dsn,
			"--node", fmt.Sprintf("node-%d", i), "--poll-interval", "200ms", "--cache-max-staleness", staleness.String(),
			"--audit-queue-size", "1000000", "--detect=false", "--log-level", "warn")
		nodes, dirs = append(nodes, &node{cmd: cmd, url: url, logs: logs}), append(dirs, dir)
	}
	var root string
	for _, d := range dirs {
		if r, err := os.ReadFile(filepath.Join(d, "root-token")); err == nil {
			root = strings.TrimSpace(string(r))
		}
	}
	for _, n := range nodes {
		n.cl = &client.Client{BaseURL: n.url, Token: root}
	}
	a, b := nodes[0].cl, nodes[1].cl
	loadTok, err := a.CreateToken(ctx, client.CreateRequest{Scopes: []string{"a:b"}})
	if err != nil {
		t.Fatal(err)
	}
	unknownOnB, err := a.CreateToken(ctx, client.CreateRequest{}) // never verified on B
	if err != nil {
		t.Fatal(err)
	}

	// The load run: both nodes verify continuously until the end.
	var valid, unavailable, other atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			c := nodes[w%2].cl
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, err := c.Verify(ctx, client.VerifyRequest{Token: loadTok.Plaintext, Scopes: []string{"a:b"}})
				switch {
				case err == nil && v.Valid:
					valid.Add(1)
				case latchkey.ErrorCode(err) == latchkey.EUnavailable || strings.Contains(fmt.Sprint(err), "503"):
					unavailable.Add(1)
				default:
					other.Add(1)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(500 * time.Millisecond)

	// A token cached on B just before the outage. Each creation on A is
	// announced to B, which drops the id from its cache: B must have had
	// all three announcements before it loads them, or one arriving late
	// would drop a token this test counts on being cached.
	seenBefore := changesTakenIn(t, nodes[1].url)
	fresh, err := a.CreateToken(ctx, client.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// B's own caller, loaded into B's cache with it: the outage checks
	// below then test the token asked about, not the caller's credentials.
	checker, err := a.CreateToken(ctx, client.CreateRequest{Scopes: []string{latchkey.ScopeVerify}})
	if err != nil {
		t.Fatal(err)
	}
	bc := &client.Client{BaseURL: nodes[1].url, Token: checker.Plaintext}
	budget, err := a.CreateToken(ctx, client.CreateRequest{MaxUses: 100})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return changesTakenIn(t, nodes[1].url) >= seenBefore+3 })
	for _, tok := range []string{budget.Plaintext, fresh.Plaintext} {
		if v, err := bc.Verify(ctx, client.VerifyRequest{Token: tok}); err != nil || !v.Valid {
			t.Fatalf("B: %+v %v", v, err)
		}
	}
	cachedAt := time.Now()
	pg.stop()
	down := time.Now()
	t.Logf("PostgreSQL stopped %v after the token was cached", down.Sub(cachedAt))

	ready := func(n *node) int {
		resp, err := http.Get(n.url + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i, n := range nodes {
		waitFor(t, func() bool { return ready(n) == http.StatusServiceUnavailable })
		t.Logf("node %d: /readyz 503 %v into the outage", i, time.Since(down).Round(time.Millisecond))
	}
	// Within the staleness bound, the cached token is served...
	if time.Since(cachedAt) < staleness-time.Second {
		if v, err := bc.Verify(ctx, client.VerifyRequest{Token: fresh.Plaintext}); err != nil || !v.Valid {
			t.Errorf("a token cached %v ago, during the outage: %+v %v (want VALID: within the maximum staleness)", time.Since(cachedAt), v, err)
		}
		// ...but not one with a usage limit, whose count lives in the
		// database: usage limits fail closed...
		if v, err := bc.Verify(ctx, client.VerifyRequest{Token: budget.Plaintext}); latchkey.ErrorCode(err) != latchkey.EUnavailable {
			t.Errorf("a usage-limited token cached on B, during the outage: %+v %v (want 503: usage limits fail closed)", v, err)
		}
		// ...an unknown one is refused (503, not VALID and not NOT_FOUND)...
		if v, err := bc.Verify(ctx, client.VerifyRequest{Token: unknownOnB.Plaintext}); latchkey.ErrorCode(err) != latchkey.EUnavailable ||
			!strings.Contains(latchkey.ErrorMessage(err), "cannot verify right now") {
			t.Errorf("a token B never loaded, during the outage: %+v %v (want 503 unavailable)", v, err)
		}
	} else {
		t.Logf("the outage took too long to begin to check the cached case (%v)", time.Since(cachedAt))
	}
	// ...and nothing is served past the bound.
	time.Sleep(time.Until(cachedAt.Add(staleness + 500*time.Millisecond)))
	if v, err := bc.Verify(ctx, client.VerifyRequest{Token: fresh.Plaintext}); latchkey.ErrorCode(err) != latchkey.EUnavailable {
		t.Errorf("a token cached %v ago (max staleness %v), during the outage: %+v %v (want 503)", time.Since(cachedAt), staleness, v, err)
	}
	outage := time.Since(down)
	pg.start()
	up := time.Now()
	t.Logf("PostgreSQL back after an outage of %v", outage.Round(time.Millisecond))

	listening := func(n *node) bool {
		resp, err := http.Get(n.url + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "\nlatchkey_cluster_listening 1\n")
	}
	for i, n := range nodes {
		waitFor(t, func() bool { return ready(n) == http.StatusOK })
		t.Logf("node %d: ready again %v after PostgreSQL", i, time.Since(up).Round(time.Millisecond))
		waitFor(t, func() bool { return listening(n) })
		t.Logf("node %d: listening for changes again %v after PostgreSQL", i, time.Since(up).Round(time.Millisecond))
	}
	// Recovered: writes work, a new token verifies on the other node, and
	// a revocation reaches the other node again.
	var tok *client.CreatedToken
	waitFor(t, func() bool {
		tok, err = a.CreateToken(ctx, client.CreateRequest{})
		return err == nil
	})
	waitFor(t, func() bool {
		v, err := b.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext})
		return err == nil && v.Valid
	})
	if _, err := a.RevokeToken(ctx, tok.ID, "test"); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	waitFor(t, func() bool {
		v, err := b.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext})
		return err == nil && v.Code == latchkey.Revoked
	})
	t.Logf("after recovery, a revocation on A was refused on B after %v", time.Since(revoked).Round(time.Microsecond))
	waitFor(t, func() bool {
		v, err := b.Verify(ctx, client.VerifyRequest{Token: loadTok.Plaintext, Scopes: []string{"a:b"}})
		return err == nil && v.Valid
	})
	before := valid.Load()
	time.Sleep(300 * time.Millisecond)
	if valid.Load() == before {
		t.Error("the load run is not being served after recovery")
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close
	t.Logf("load run: %d valid, %d unavailable (503), %d other", valid.Load(), unavailable.Load(), other.Load())
	if other.Load() != 0 {
		t.Errorf("%d verifications answered neither VALID nor 503", other.Load())
	}

	// The records of the outage reached the store, each node's chain intact.
	if rep, err := a.VerifyAudit(ctx); err != nil || !rep.OK {
		t.Errorf("audit chains after the outage: %+v %v", rep, err)
	}
	admin, err := pgx.Connect(ctx, pg.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, n := range nodes {
		if err := n.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		n.cmd.Wait()
		if code := n.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("node exited with %d after SIGINT:\n%s", code, n.logs.String())
		}
		if out := n.logs.String(); strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
			t.Errorf("node panicked:\n%s", out)
		}
	}
	// Every answer of the load run has its record: VALID ones under the
	// token, refusals for want of the store under the token or, when the
	// caller's own credentials could not be read, under the caller.
	rp, err := secret.Parse(root)
	if err != nil {
		t.Fatal(err)
	}
	rootID := rp.ID
	var okRecords, errRecords int64
	if err := admin.QueryRow(ctx, `SELECT count(*) FILTER (WHERE outcome = 'VALID' AND token_id = $1),
		count(*) FILTER (WHERE outcome = 'ERROR' AND token_id IN ($1, $2)) FROM audit_events WHERE kind = 'verify'`,
		loadTok.ID, rootID).Scan(&okRecords, &errRecords); err != nil {
		t.Fatal(err)
	}
	t.Logf("records: %d VALID, %d refused for want of the store", okRecords, errRecords)
	if okRecords < valid.Load() || errRecords < unavailable.Load() {
		t.Errorf("%d VALID and %d ERROR records for %d valid and %d unavailable answers: records were lost in the outage",
			okRecords, errRecords, valid.Load(), unavailable.Load())
	}
}

// changesTakenIn is the number of changes made on other nodes that the
// node at url has taken in (latchkey_cluster_changes_total, every via).
func changesTakenIn(t *testing.T, url string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "latchkey_cluster_changes_total{") {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			sum += v
		}
	}
	return sum
}
