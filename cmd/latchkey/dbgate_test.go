package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/detect"
	"github.com/latchkeyhq/latchkey/oauth"
)

// dbEnv is a daemon with the database gateway in front of the machine's
// PostgreSQL: two upstream login roles made for the test (read-only and
// read-write on a schema of its own) and a route file mapping
// db.analytics:read and db.analytics:write to them.
type dbEnv struct {
	ts        *testServer
	admin     *client.Client
	dsn       string // the upstream, as postgres
	schema    string
	addr      string // the gateway's
	passwords []string
	cfg       serveConfig
}

func newDBEnv(t *testing.T, extra string) *dbEnv {
	t.Helper()
	return newDBEnvWith(t, extra, serveConfig{})
}

func newDBEnvWith(t *testing.T, extra string, base serveConfig) *dbEnv {
	t.Helper()
	return newDBEnvAt(t, "127.0.0.1:5432", extra, base)
}

// newDBEnvAt is newDBEnvWith with the route's upstream (host:port or a
// Unix socket).
func newDBEnvAt(t *testing.T, upstream, extra string, base serveConfig) *dbEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dsn := testPostgresDSN()
	pc, err := pgx.Connect(ctx, dsn)
	if err != nil {
		requireService(t, "PostgreSQL")
		t.Skipf("PostgreSQL: %v", err)
	}
	defer pc.Close(context.Background())
	b := make([]byte, 5)
	rand.Read(b)
	sfx := hex.EncodeToString(b)
	e := &dbEnv{dsn: dsn, schema: "lkdb_" + sfx}
	ro, rw := "lkdb_ro_"+sfx, "lkdb_rw_"+sfx
	roPW, rwPW := "CANARY-ro-"+sfx, "CANARY-rw-"+sfx
	e.passwords = []string{roPW, rwPW}
	for _, q := range []string{
		"CREATE SCHEMA " + e.schema,
		"CREATE TABLE " + e.schema + ".t (id int primary key, v text)",
		"INSERT INTO " + e.schema + ".t VALUES (1, 'one'), (2, 'two')",
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", ro, roPW),
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", rw, rwPW),
		fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s, %s", e.schema, ro, rw),
		fmt.Sprintf("GRANT SELECT ON ALL TABLES IN SCHEMA %s TO %s", e.schema, ro),
		fmt.Sprintf("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %s TO %s", e.schema, rw),
		fmt.Sprintf("ALTER ROLE %s SET search_path = %s", ro, e.schema),
		fmt.Sprintf("ALTER ROLE %s SET search_path = %s", rw, e.schema),
	} {
		if _, err := pc.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		c.Exec(ctx, fmt.Sprintf("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN ('%s','%s')", ro, rw))
		c.Exec(ctx, "DROP SCHEMA "+e.schema+" CASCADE")
		c.Exec(ctx, "DROP OWNED BY "+ro+", "+rw)
		c.Exec(ctx, "DROP ROLE "+ro)
		c.Exec(ctx, "DROP ROLE "+rw)
	})
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "ro.pw")
	os.WriteFile(pwFile, []byte(roPW+"\n"), 0o600)
	conf := filepath.Join(dir, "db.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`listen: 127.0.0.1:0
databases:
  - name: analytics
    upstream: %s
    database: test
    sslmode: disable
    roles:
      - scope: db.analytics:write
        user: %s
        password_env: LKDB_RW_PASSWORD
      - scope: db.analytics:read
        user: %s
        password_file: %s
%s`, upstream, rw, ro, pwFile, extra)), 0o600)
	env := map[string]string{"LKDB_RW_PASSWORD": rwPW}
	base.DBConfig, base.Getenv = conf, func(k string) string { return env[k] }
	e.cfg = base
	e.ts = startServerWith(t, dir, base)
	e.addr = e.ts.d.dbAddr
	e.admin = e.ts.client(e.ts.root)
	return e
}

func (e *dbEnv) token(t *testing.T, scopes ...string) *client.CreatedToken {
	t.Helper()
	tok, err := e.admin.CreateToken(context.Background(), client.CreateRequest{Subject: "alice", Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (e *dbEnv) connString(user, password string) string {
	host, port, _ := strings.Cut(e.addr, ":")
	return fmt.Sprintf("host=%s port=%s dbname=analytics user=%s password=%s sslmode=disable", host, port, user, password)
}

// psql runs the real psql with sql and returns its output and error.
func (e *dbEnv) psql(t *testing.T, password, sql string) (string, error) {
	t.Helper()
	path, err := exec.LookPath("psql")
	if err != nil {
		requireService(t, "psql")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", e.connString("alice", password), "-c", sql)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The Must-show list's first item, with the real psql and pgx.
func TestDatabaseGateway(t *testing.T) {
	t.Parallel()
	e := newDBEnv(t, "")
	ctx := context.Background()
	read := e.token(t, "db.analytics:read")
	write := e.token(t, "db.analytics:write")

	t.Run("psql read token reads and cannot write", func(t *testing.T) {
		t.Parallel()
		out, err := e.psql(t, read.Plaintext, "SELECT v FROM t WHERE id <= 2 ORDER BY id")
		if err != nil || strings.TrimSpace(out) != "one\ntwo" {
			t.Fatalf("SELECT: %v\n%s", err, out)
		}
		for _, sql := range []string{
			"INSERT INTO t VALUES (10, 'x')",
			"CREATE TABLE " + e.schema + ".t2 (a int)",
			"SET default_transaction_read_only = off; INSERT INTO t VALUES (11, 'x')",
			"BEGIN READ WRITE; INSERT INTO t VALUES (12, 'x'); COMMIT",
		} {
			out, err := e.psql(t, read.Plaintext, sql)
			if err == nil || !strings.Contains(out, "permission denied") {
				t.Errorf("%s: the upstream should refuse it: err %v\n%s", sql, err, out)
			}
		}
	})
	t.Run("psql write token writes", func(t *testing.T) {
		t.Parallel()
		out, err := e.psql(t, write.Plaintext, "INSERT INTO t VALUES (20, 'twenty'); SELECT v FROM t WHERE id = 20")
		if err != nil || !strings.Contains(out, "twenty") {
			t.Fatalf("INSERT: %v\n%s", err, out)
		}
	})
	t.Run("pgx extended protocol, COPY and cancel", func(t *testing.T) {
		t.Parallel()
		c, err := pgx.Connect(ctx, e.connString("bob", write.Plaintext))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var v string
		if err := c.QueryRow(ctx, "SELECT v FROM t WHERE id = $1", 2).Scan(&v); err != nil || v != "two" {
			t.Fatalf("extended query: %q %v", v, err)
		}
		rows := [][]any{{100, "a"}, {101, "b"}, {102, "c"}}
		n, err := c.CopyFrom(ctx, pgx.Identifier{"t"}, []string{"id", "v"}, pgx.CopyFromRows(rows))
		if err != nil || n != 3 {
			t.Fatalf("COPY FROM: %d %v", n, err)
		}
		var buf bytes.Buffer
		if _, err := c.PgConn().CopyTo(ctx, &buf, "COPY (SELECT id FROM t WHERE id >= 100 ORDER BY id) TO STDOUT"); err != nil ||
			buf.String() != "100\n101\n102\n" {
			t.Fatalf("COPY TO: %q %v", buf.String(), err)
		}
		// A cancel request goes to the gateway, which sends it on to the
		// upstream with the upstream's own key.
		go func() {
			time.Sleep(200 * time.Millisecond) // the statement is running upstream by then
			c.PgConn().CancelRequest(ctx)
		}()
		start := time.Now()
		_, err = c.Exec(ctx, "SELECT pg_sleep(20)")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57014" {
			t.Fatalf("cancelled statement: %v", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("the cancel took %v", d)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		t.Parallel()
		revoked := e.token(t, "db.analytics:read")
		if _, err := e.admin.RevokeToken(ctx, revoked.ID, "test"); err != nil {
			t.Fatal(err)
		}
		other := e.token(t, "api:read")
		forged := forgeToken(t) // a valid checksum; no such token
		for _, c := range []struct {
			name, password, state, reason string
		}{
			{"wrong", "lk_nonsense", "28P01", ""},
			{"forged", forged, "28P01", ""},
			{"revoked", revoked.Plaintext, "28P01", "revoked"},
			{"no db scope", other.Plaintext, "28000", "missing_scope"},
		} {
			_, err := pgconn.Connect(ctx, e.connString("mallory", c.password))
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != c.state {
				t.Errorf("%s: %v, want SQLSTATE %s", c.name, err, c.state)
			}
			if strings.Contains(fmt.Sprint(err), "lkdb_") {
				t.Errorf("%s: the refusal names an upstream role: %v", c.name, err)
			}
		}
		e.ts.flush(t)
		evs := e.audit(t, latchkey.AuditFilter{Action: latchkey.ActionDBConnect})
		forgedID := strings.Split(forged, "_")[1][:16]
		want := map[string]string{revoked.ID: "REVOKED", other.ID: "INSUFFICIENT_SCOPE", forgedID: "NOT_FOUND"}
		for id, outcome := range want {
			found := false
			for _, ev := range evs {
				found = found || (ev.TokenID == id && ev.Outcome == outcome && ev.Reason != "" && ev.ClientIP == "127.0.0.1")
			}
			if !found {
				t.Errorf("no %s db.connect record with its reason for %s in %v", outcome, id, evs)
			}
		}
	})
}

func (e *dbEnv) audit(t *testing.T, f latchkey.AuditFilter) []latchkey.AuditEvent {
	t.Helper()
	f.Ascending, f.Limit = true, 1000
	page, err := e.ts.d.db.ListAudit(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	return page.Events
}

// Every statement of a scripted session is on record in order, with the
// token and the source; the upstream passwords appear nowhere.
func TestDatabaseGatewayAuditsStatementsInOrder(t *testing.T) {
	t.Parallel()
	e := newDBEnv(t, `  - name: broken
    upstream: 127.0.0.1:5432
    database: test
    sslmode: disable
    roles:
      - scope: db.broken:read
        user: lkdb_no_such_role
        password: CANARY-broken-upstream
`)
	e.passwords = append(e.passwords, "CANARY-broken-upstream")
	ctx := context.Background()
	tok := e.token(t, "db.analytics:write")
	pasted := e.token(t, "db.analytics:read") // pasted into SQL by mistake
	c, err := pgx.Connect(ctx, e.connString("carol", tok.Plaintext))
	if err != nil {
		t.Fatal(err)
	}
	script := []string{
		"SELECT 1",
		"SELECT v FROM t WHERE id = $1",
		"INSERT INTO t VALUES (30, '" + pasted.Plaintext + "')",
		"UPDATE t SET v = 'x' WHERE id = $1",
		"DELETE FROM t WHERE id = 30",
	}
	for i, q := range script {
		args := []any{}
		if strings.Contains(q, "$1") {
			args = append(args, i)
		}
		if i%2 == 0 {
			_, err = c.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol)
		} else {
			_, err = c.Exec(ctx, q, args...)
		}
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// An upstream that refuses the login: its error is logged, never the
	// password, and the client hears only that the session could not open.
	broken := e.token(t, "db.broken:read")
	bc := strings.Replace(e.connString("carol", broken.Plaintext), "dbname=analytics", "dbname=broken", 1)
	_, err = pgconn.Connect(ctx, bc)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "08006" || strings.Contains(pe.Message, "lkdb_") {
		t.Fatalf("a login the upstream refuses: %v", err)
	}
	if !strings.Contains(e.ts.out.String(), "the upstream refused") {
		t.Fatalf("the upstream's refusal is not in the log:\n%s", e.ts.out.String())
	}
	c.Close(ctx)
	waitFor(t, func() bool { return e.ts.d.sessions.Len() == 0 })
	e.ts.flush(t)
	evs := e.audit(t, latchkey.AuditFilter{TokenID: tok.ID, Action: latchkey.ActionDBStatement})
	if len(evs) < len(script) {
		t.Fatalf("%d statement records, want %d: %v", len(evs), len(script), evs)
	}
	var got []string
	for i, ev := range evs {
		var d struct {
			N         int64  `json:"n"`
			Statement string `json:"statement"`
			Session   string `json:"session"`
		}
		json.Unmarshal(ev.Detail, &d)
		if ev.ClientIP != "127.0.0.1" || ev.Subject != "alice" || ev.Kind != latchkey.KindSession {
			t.Errorf("record %d: %+v", i, ev)
		}
		if d.N != int64(i+1) {
			t.Errorf("record %d has n %d: out of order", i, d.N)
		}
		got = append(got, d.Statement)
	}
	// pgx may add statements of its own (none here); ours are in order.
	j := 0
	for _, s := range got {
		if j < len(script) && strings.Contains(s, strings.Fields(script[j])[0]) {
			j++
		}
	}
	if j != len(script) {
		t.Errorf("statements out of order or missing:\n%s", strings.Join(got, "\n"))
	}
	if strings.Contains(strings.Join(got, "\n"), pasted.Plaintext[10:]) {
		t.Errorf("a token-shaped string in a statement was not redacted:\n%s", strings.Join(got, "\n"))
	}
	if end := e.audit(t, latchkey.AuditFilter{TokenID: tok.ID, Action: latchkey.ActionDBSessionEnd}); len(end) != 1 || end[0].Reason != "client_closed" {
		t.Errorf("session end records: %+v", end)
	}
	e.checkCanary(t)
}

// checkCanary greps every output for the upstream passwords: logs,
// the whole audit log, metrics.
func (e *dbEnv) checkCanary(t *testing.T) {
	t.Helper()
	all := e.audit(t, latchkey.AuditFilter{})
	b, _ := json.Marshal(all)
	resp, err := http.Get(e.ts.url + "/metrics")
	var metrics []byte
	if err == nil {
		metrics, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	for _, pw := range e.passwords {
		for name, out := range map[string]string{"logs": e.ts.out.String(), "audit": string(b), "metrics": string(metrics)} {
			if strings.Contains(out, pw) || strings.Contains(out, strings.ToLower(pw)) {
				t.Errorf("an upstream password is in the %s", name)
			}
		}
	}
}

// A revoke ends an open psql session: psql is told why.
func TestDatabaseGatewayRevokeEndsPsqlSession(t *testing.T) {
	t.Parallel()
	e := newDBEnv(t, "")
	tok := e.token(t, "db.analytics:read")
	p := e.interactivePsql(t, tok.Plaintext)
	p.run(t, "before")
	if _, err := e.admin.RevokeToken(context.Background(), tok.ID, "leaked"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return e.ts.d.sessions.Len() == 0 })
	p.endedWith(t, "the latchkey token was revoked")
	e.ts.flush(t)
	end := e.audit(t, latchkey.AuditFilter{TokenID: tok.ID, Action: latchkey.ActionDBSessionEnd})
	if len(end) != 1 || end[0].Reason != "revoked" || end[0].Actor != "" {
		t.Fatalf("session end records: %+v", end)
	}
}

// psqlSession is the real psql, reading statements from a pipe.
type psqlSession struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *syncBuffer
}

func (e *dbEnv) interactivePsql(t *testing.T, password string) *psqlSession {
	t.Helper()
	path, err := exec.LookPath("psql")
	if err != nil {
		requireService(t, "psql")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	p := &psqlSession{cmd: exec.CommandContext(ctx, path, "-X", "-A", "-t", e.connString("dave", password)), out: &syncBuffer{}}
	p.stdin, _ = p.cmd.StdinPipe()
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return p
}

// run selects a marker and waits for psql to print it.
func (p *psqlSession) run(t *testing.T, marker string) {
	t.Helper()
	io.WriteString(p.stdin, "SELECT '"+marker+"';\n")
	waitFor(t, func() bool { return strings.Contains(p.out.String(), marker) })
}

// endedWith checks that psql was told why its session ended, and that a
// statement sent after the end never ran.
func (p *psqlSession) endedWith(t *testing.T, why string) {
	t.Helper()
	io.WriteString(p.stdin, "SELECT 'after';\n")
	p.stdin.Close()
	err := p.cmd.Wait()
	if out := p.out.String(); err == nil || strings.Contains(out, "after") || !strings.Contains(out, why) {
		t.Fatalf("psql after the end: %v\n%s", err, out)
	}
}

// A route whose upstream is PostgreSQL's Unix socket (a local upstream
// without the TCP stack): the same roles, the same refusals.
func TestDatabaseGatewayUnixSocketUpstream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := pgx.Connect(ctx, testPostgresDSN())
	if err != nil {
		requireService(t, "PostgreSQL")
		t.Skipf("PostgreSQL: %v", err)
	}
	var dirs string
	err = pc.QueryRow(ctx, "SHOW unix_socket_directories").Scan(&dirs)
	pc.Close(ctx)
	dir, _, _ := strings.Cut(dirs, ",")
	if _, serr := os.Stat(filepath.Join(dir, ".s.PGSQL.5432")); err != nil || dir == "" || serr != nil {
		requireService(t, "PostgreSQL's Unix socket (unix_socket_directories "+dirs+")")
		t.Skip("no Unix socket")
	}
	e := newDBEnvAt(t, filepath.Join(dir, ".s.PGSQL.5432"), "", serveConfig{})
	read := e.token(t, "db.analytics:read")
	if out, err := e.psql(t, read.Plaintext, "SELECT v FROM t WHERE id = 1"); err != nil || strings.TrimSpace(out) != "one" {
		t.Fatalf("select over the socket: %v %s", err, out)
	}
	// The upstream session came over the socket: it has no client address.
	if out, err := e.psql(t, read.Plaintext, "SELECT client_addr IS NULL FROM pg_stat_activity WHERE pid = pg_backend_pid()"); err != nil || strings.TrimSpace(out) != "t" {
		t.Fatalf("the upstream session's transport: %v %q", err, out)
	}
	if out, err := e.psql(t, read.Plaintext, "INSERT INTO t VALUES (9, 'nine')"); err == nil || !strings.Contains(out, "permission denied") {
		t.Fatalf("a read token's insert over the socket: %v %s", err, out)
	}
	write := e.token(t, "db.analytics:write")
	if out, err := e.psql(t, write.Plaintext, "INSERT INTO t VALUES (9, 'nine') RETURNING v"); err != nil || !strings.Contains(out, "nine") {
		t.Fatalf("a write token's insert over the socket: %v %s", err, out)
	}

	// Cancels reach the upstream over the socket too: the client's own,
	// and the one an ended session sends for its running statement.
	c, err := pgx.Connect(context.Background(), e.connString("x", read.Plaintext))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	cancelled := make(chan error, 1)
	time.AfterFunc(200*time.Millisecond, func() { cancelled <- c.PgConn().CancelRequest(context.Background()) })
	var pe *pgconn.PgError
	if _, err := c.Exec(context.Background(), "SELECT pg_sleep(20)"); !errors.As(err, &pe) || pe.Code != "57014" {
		t.Fatalf("a cancelled statement over the socket: %v", err)
	}
	// PostgreSQL signals the backend twice for one cancel request (its
	// pid, then its process group), and the second signal can land after
	// the first has ended the statement: sent before the request has
	// finished, the next statement could be cancelled too. The request
	// finishes (the server closes its connection, and the gateway passes
	// that on) only once both are sent.
	if err := <-cancelled; err != nil {
		t.Fatalf("the cancel request: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), "SELECT pg_sleep(21) -- lk-unix-end")
		done <- err
	}()
	// One watching connection, not one a poll: under the race detector and
	// a loaded CI machine, a connection every 10 ms was the slow part.
	watch, err := pgx.Connect(context.Background(), testPostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	running := func() bool {
		var n int
		watch.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%lk-unix-end'").Scan(&n)
		return n == 1
	}
	deadline := time.Now().Add(30 * time.Second)
	for !running() {
		select {
		case err := <-done:
			t.Fatalf("the statement to be ended returned first: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the statement never showed as running upstream")
		}
		time.Sleep(20 * time.Millisecond) // polling PostgreSQL's view, not letting time pass
	}
	l, err := e.admin.ListSessions(context.Background(), read.ID)
	if err != nil || len(l.Sessions) != 1 {
		t.Fatalf("the session: %+v %v", l, err)
	}
	if err := e.admin.EndSession(context.Background(), l.Sessions[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.As(err, &pe) || pe.Code != "57P01" {
		t.Fatalf("the ended session's statement: %v", err)
	}
	waitFor(t, func() bool { return !running() })
}

// Item 6 over the API: the open session is listed with its statements;
// an administrator ends it; psql is told so; the end record names the
// administrator; the token itself still opens sessions. A reader lists
// but cannot end.
func TestDatabaseGatewaySessionsAPI(t *testing.T) {
	t.Parallel()
	e := newDBEnv(t, "")
	ctx := context.Background()
	tok := e.token(t, "db.analytics:read")
	p := e.interactivePsql(t, tok.Plaintext)
	for _, m := range []string{"one", "two", "three"} {
		p.run(t, m)
	}
	l, err := e.admin.ListSessions(ctx, tok.ID)
	if err != nil || len(l.Sessions) != 1 {
		t.Fatalf("list: %+v %v", l, err)
	}
	s := l.Sessions[0]
	if s.Door != "db" || s.Resource != "analytics" || !strings.HasPrefix(s.Role, "lkdb_ro_") || s.Subject != "alice" ||
		s.ClientIP != "127.0.0.1" || s.Statements < 3 || s.Node != e.ts.d.node || time.Since(s.Started) > time.Minute {
		t.Fatalf("listed session: %+v", s)
	}
	reader := e.token(t, latchkey.ScopeAuditRead)
	if err := e.ts.client(reader.Plaintext).EndSession(ctx, s.ID); latchkey.ErrorCode(err) != latchkey.EPermissionDenied {
		t.Fatalf("a reader's end: %v", err)
	}
	// The CLI lists it and ends it.
	if code, out, errs := cli(t, e.ts.url, e.ts.root, "sessions", "list", "--token", tok.ID); code != 0 ||
		!strings.Contains(out, s.ID) || !strings.Contains(out, s.Role) || !strings.Contains(out, "STATEMENTS") {
		t.Fatalf("sessions list: %d %q %q", code, out, errs)
	}
	if code, out, errs := cli(t, e.ts.url, e.ts.root, "sessions", "end", s.ID); code != 0 || !strings.Contains(out, "ended session "+s.ID) {
		t.Fatalf("sessions end: %d %q %q", code, out, errs)
	}
	p.endedWith(t, "an administrator ended the session")
	if code, _, errs := cli(t, e.ts.url, e.ts.root, "sessions", "end", s.ID); code != exitAPIError || !strings.Contains(errs, "no such session") {
		t.Fatalf("sessions end, again: %d %q", code, errs)
	}
	if l, _ := e.admin.ListSessions(ctx, ""); len(l.Sessions) != 0 {
		t.Fatalf("after the end: %+v", l)
	}
	if err := e.admin.EndSession(ctx, s.ID); latchkey.ErrorCode(err) != latchkey.ENotFound {
		t.Fatalf("ending it again: %v", err)
	}
	if out, err := e.psql(t, tok.Plaintext, "SELECT 'still works'"); err != nil || !strings.Contains(out, "still works") {
		t.Fatalf("the token after its session was ended: %v %s", err, out)
	}
	e.ts.flush(t)
	end := e.audit(t, latchkey.AuditFilter{TokenID: tok.ID, Action: latchkey.ActionDBSessionEnd})
	var admin []latchkey.AuditEvent
	for _, ev := range end {
		if ev.Reason == "ended_by_admin" {
			admin = append(admin, ev)
		}
	}
	if len(admin) != 1 || admin[0].Actor != e.ts.root[3:19] || admin[0].RequestID != s.ID {
		t.Fatalf("session end records: %+v", end)
	}
	e.checkCanary(t)
}

// revokeLatency opens a session with a fresh token through addr, revokes
// the token through admin, and returns how long after the revoke's answer
// the client was told the session ended.
func revokeLatency(t *testing.T, e *dbEnv, addr string, admin *client.Client) time.Duration {
	t.Helper()
	ctx := context.Background()
	tok := e.token(t, "db.analytics:read")
	host, port, _ := strings.Cut(addr, ":")
	pc, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%s dbname=analytics user=x password=%s sslmode=disable", host, port, tok.Plaintext))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(ctx)
	ended := make(chan time.Time, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := pc.WaitForNotification(wctx)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "57P01" {
			ended <- time.Now()
		}
		close(ended)
	}()
	if _, err := admin.RevokeToken(ctx, tok.ID, "trial"); err != nil {
		t.Fatal(err)
	}
	answered := time.Now()
	at, ok := <-ended
	if !ok {
		t.Fatal("the session was not ended with 57P01 within 10s of the revoke")
	}
	return max(0, at.Sub(answered))
}

func quantiles(ds []time.Duration) (p50, p99 time.Duration) {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2], ds[(len(ds)*99+99)/100-1]
}

// Revoke to termination on one node, 50 trials. The figure goes to the
// log (docs/benchmarks.md); the test asserts that every session ends.
func TestDatabaseGatewayRevokeLatency(t *testing.T) {
	t.Parallel()
	e := newDBEnv(t, "")
	var ds []time.Duration
	for range 50 {
		ds = append(ds, revokeLatency(t, e, e.addr, e.admin))
	}
	p50, p99 := quantiles(ds)
	t.Logf("revoke → session terminated, one node (SQLite), 50 trials: p50 %v, p99 %v", p50, p99)
}

// Revoke to termination across two nodes on PostgreSQL: the session is on
// node B, the revoke is made on node A.
func TestDatabaseGatewayRevokeAcrossNodes(t *testing.T) {
	t.Parallel()
	dsn := pgSchema(t)
	e := newDBEnvWith(t, "", serveConfig{Database: dsn, ServerKey: strings.Repeat("5c", 32), Poll: 200 * time.Millisecond})
	b := startServerWith(t, t.TempDir(), e.cfg)
	waitFor(t, func() bool { return follower(b.d).Listening() })
	var ds []time.Duration
	for range 50 {
		ds = append(ds, revokeLatency(t, e, b.d.dbAddr, e.admin))
	}
	p50, p99 := quantiles(ds)
	t.Logf("revoke on node A → session on node B terminated (PostgreSQL), 50 trials: p50 %v, p99 %v", p50, p99)
}

// Item 5: the detector and the token's limits apply to the door. Failed
// passwords count toward the source's block (the test's daemon trusts no
// proxy, so 127.0.0.1 is a blockable source); the rate limit applies to
// new sessions and the usage limit counts sessions, not statements.
func TestDatabaseGatewayLimitsAndDetector(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	connect := func(e *dbEnv, password string) error {
		pc, err := pgconn.Connect(ctx, e.connString("eve", password))
		if err == nil {
			_, err = pc.Exec(ctx, "SELECT 1; SELECT 2; SELECT 3").ReadAll()
			pc.Close(ctx)
		}
		return err
	}
	state := func(err error) string {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return pe.Code
		}
		return fmt.Sprint(err)
	}

	t.Run("limits", func(t *testing.T) {
		t.Parallel()
		e := newDBEnv(t, "")
		used, err := e.admin.CreateToken(ctx, client.CreateRequest{Scopes: []string{"db.analytics:read"}, MaxUses: 2})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if err := connect(e, used.Plaintext); err != nil {
				t.Fatalf("session %d of a 2-use token: %v", i+1, err)
			}
		}
		if got := state(connect(e, used.Plaintext)); got != "28P01" {
			t.Fatalf("third session of a 2-use token: %s, want 28P01 (USAGE_EXCEEDED)", got)
		}
		rated, err := e.admin.CreateToken(ctx, client.CreateRequest{Scopes: []string{"db.analytics:read"},
			RateLimit: &client.RateRequest{Limit: 1, Window: "1h"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := connect(e, rated.Plaintext); err != nil {
			t.Fatal(err)
		}
		if got := state(connect(e, rated.Plaintext)); got != "53300" {
			t.Fatalf("second session within a 1/1h rate: %s, want 53300", got)
		}
	})
	t.Run("failed passwords block the source", func(t *testing.T) {
		t.Parallel()
		e := newDBEnvWith(t, "", serveConfig{Detect: detect.Config{SourceFailures: detect.Rule{Count: 5, Window: time.Minute}}})
		good := e.token(t, "db.analytics:read")
		if err := connect(e, good.Plaintext); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			if got := state(connect(e, forgeToken(t))); got != "28P01" {
				t.Fatalf("a forged token: %s", got)
			}
		}
		waitFor(t, func() bool { return state(connect(e, good.Plaintext)) == "28000" })
		// The block holds in memory at once; its record is written by the
		// detector's responder on its own goroutine, a moment later.
		waitFor(t, func() bool {
			e.ts.flush(t)
			return len(e.audit(t, latchkey.AuditFilter{Action: latchkey.ActionSourceBlocked})) > 0
		})
	})
}

// Item 6 in the browser: the Sessions view lists an open psql session
// with its token, subject, source, database, role and statements; its End
// button (after the confirmation) ends it, psql is told, and the view
// moves it to the ended list with the administrator named.
func TestDashboardEndsDatabaseSession(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	e := newDBEnv(t, "")
	tok := e.token(t, "db.analytics:read")
	p := e.interactivePsql(t, tok.Plaintext)
	p.run(t, "hello")
	ts := e.ts
	b.do(t, "sign in", chromedp.Navigate(ts.url+"/ui/"), chromedp.WaitVisible("#token"),
		chromedp.SendKeys("#token", ts.root), chromedp.Click("#signin button[type=submit]"), chromedp.WaitVisible("#stream-status.live"))
	b.do(t, "the sessions view", chromedp.Click(`nav a[data-view="sessions"]`), chromedp.WaitVisible("#sessions tr[data-session]"))
	row := b.eval(t, `document.querySelector('#sessions tr[data-session]').innerText`)
	for _, want := range []string{tok.ID, "alice", "127.0.0.1", "analytics", "lkdb_ro_", ts.d.node} {
		if !strings.Contains(row, want) {
			t.Errorf("the session's row %q lacks %q", row, want)
		}
	}
	p.run(t, "again")
	b.waitFor(t, "the statement count to follow", `/\t2\t/.test(document.querySelector('#sessions tr[data-session]').innerText)`, 5*time.Second)
	b.screenshot(t, "sessions")
	b.do(t, "a phone-sized screen", chromedp.EmulateViewport(390, 844))
	b.waitFor(t, "no sideways overflow on a phone", `document.documentElement.scrollWidth <= window.innerWidth`, 2*time.Second)
	b.screenshot(t, "sessions-phone")
	b.do(t, "back to a laptop screen", chromedp.EmulateViewport(1280, 1000))
	b.do(t, "end it", chromedp.Click(`#sessions button[data-action="end-session"]`), chromedp.WaitVisible("dialog.confirm button[data-confirm]"),
		chromedp.Click("dialog.confirm button[data-confirm]"))
	b.waitFor(t, "the row gone", `document.querySelector('#sessions tr[data-session]') === null`, 5*time.Second)
	b.waitFor(t, "the end listed", fmt.Sprintf(`(document.querySelector('#ended')?.innerText || '').includes('ended_by_admin') && document.querySelector('#ended').innerText.includes(%q)`, ts.root[3:19]), 5*time.Second)
	p.endedWith(t, "an administrator ended the session")
	for _, pr := range b.problems() {
		t.Error(pr)
	}
}

// A database that names its RFC 8707 resource opens to tokens bound to
// it (those the OAuth authorization server issues for it), and to no
// token bound elsewhere; an OAuth request may name it.
func TestDatabaseGatewayAudience(t *testing.T) {
	t.Parallel()
	const res = "https://db.example.com/analytics"
	api := freeAddr(t)
	e := newDBEnvWith(t, "    resource: "+res+"\n", serveConfig{Listen: api, OAuthIssuer: "http://" + api})
	ctx := context.Background()
	bound, err := e.admin.CreateToken(ctx, client.CreateRequest{Subject: "agent", Scopes: []string{"db.analytics:read"}, Audience: []string{res}})
	if err != nil {
		t.Fatal(err)
	}
	elsewhere, err := e.admin.CreateToken(ctx, client.CreateRequest{Subject: "agent", Scopes: []string{"db.analytics:read"}, Audience: []string{"https://db.example.com/other"}})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := e.psql(t, bound.Plaintext, "SELECT v FROM t WHERE id = 1"); err != nil || strings.TrimSpace(out) != "one" {
		t.Errorf("a token bound to the database's resource: %v %q", err, out)
	}
	if out, err := e.psql(t, elsewhere.Plaintext, "SELECT 1"); err == nil {
		t.Errorf("a token bound to another resource opened the database: %q", out)
	}
	e.ts.flush(t)
	got := e.audit(t, latchkey.AuditFilter{TokenID: elsewhere.ID, Action: latchkey.ActionDBConnect})
	if len(got) == 0 || got[0].Reason != "audience_mismatch" {
		t.Errorf("the refusal's record: %+v, want reason audience_mismatch", got)
	}
	// The database is a resource the authorization server issues for.
	id, _ := (&oauthEnv{mcpEnv: &mcpEnv{ts: e.ts}, issuer: "http://" + api}).register(t, map[string]any{"redirect_uris": []string{"http://127.0.0.1:9/cb"}, "token_endpoint_auth_method": "none"})
	_, c := pkce("database-")
	q := url.Values{"response_type": {"code"}, "client_id": {id}, "redirect_uri": {"http://127.0.0.1:9/cb"}, "state": {"s"},
		"code_challenge": {c}, "code_challenge_method": {"S256"}, "resource": {res}, "scope": {"db.analytics:read"}}
	resp, err := noRedirect.Get("http://" + api + oauth.PathAuthorize + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != 303 || !strings.Contains(loc, "/ui/#/consent/") {
		t.Errorf("authorizing for the database: %d to %q, want the consent page", resp.StatusCode, loc)
	}
}
