package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
)

// testServer is the whole daemon, in-process on 127.0.0.1:0.
type testServer struct {
	d       *daemon
	dir     string
	out     *syncBuffer // logs and standard error, at debug level
	url     string
	root    string
	stopped bool
}

func startServer(t *testing.T, dir string) *testServer {
	t.Helper()
	return startServerWith(t, dir, serveConfig{})
}

// startServerWith is startServer with more configuration (Listen and
// DataDir are set here). A node joining a PostgreSQL cluster has no
// root-token file: the first node made it.
func startServerWith(t *testing.T, dir string, cfg serveConfig) *testServer {
	t.Helper()
	out := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.DataDir = dir
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Database != "" && cfg.Node == "" {
		// Nodes of one database need a name each (one process per name),
		// and tests start several on one host.
		cfg.Node = "test-" + filepath.Base(dir)
	}
	d, err := startDaemon(context.Background(), cfg, logger, out)
	if err != nil {
		t.Fatalf("startDaemon: %v", err)
	}
	ts := &testServer{d: d, dir: dir, out: out, url: "http://" + d.addr}
	t.Cleanup(func() { ts.stop(t) })
	if root, err := os.ReadFile(filepath.Join(dir, "root-token")); err == nil {
		ts.root = strings.TrimSpace(string(root))
	} else if cfg.Database == "" {
		t.Fatal(err)
	}
	return ts
}

func (ts *testServer) stop(t *testing.T) {
	if ts.stopped {
		return
	}
	ts.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func (ts *testServer) client(tok string) *client.Client {
	return &client.Client{BaseURL: ts.url, Token: tok}
}

func (ts *testServer) flush(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.d.pipe.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// post sends a raw body and returns status and body.
func (ts *testServer) post(t *testing.T, path, tok string, body []byte) (int, string) {
	t.Helper()
	return ts.send(t, "POST", path, tok, body)
}

// get GETs path with tok.
func (ts *testServer) get(t *testing.T, path, tok string) (int, string) {
	t.Helper()
	return ts.send(t, "GET", path, tok, nil)
}

// send makes one request with tok as its bearer (anything but a GET as
// JSON).
func (ts *testServer) send(t *testing.T, method, path, tok string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, ts.url+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	if method != "GET" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var ctx = context.Background()

// runReadmeBlock runs the README's shell block between <!-- name:begin -->
// and <!-- name:end --> verbatim with bash against a fresh daemon, and
// returns the daemon and the block's output.
var readmeMu sync.Mutex

func runReadmeBlock(t *testing.T, name string) (*testServer, []byte) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- " + name + ":begin -->\n```sh\n(.*?)```\n<!-- " + name + ":end -->").FindSubmatch(readme)
	if m == nil {
		t.Fatalf("README.md has no %s block", name)
	}
	dir := t.TempDir()
	ts := startServer(t, dir)
	repo, _ := filepath.Abs("../..")
	bin := filepath.Join(repo, "latchkey")
	// The blocks build ./latchkey at the root and the first to finish
	// removes it: one block at a time.
	readmeMu.Lock()
	t.Cleanup(readmeMu.Unlock)
	_, existed := os.Stat(bin)
	if existed != nil {
		t.Cleanup(func() { os.Remove(bin) })
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", string(m[1]))
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "LATCHKEY_ADDR="+ts.url, "LATCHKEY_DATA_DIR="+dir, "LATCHKEY_TOKEN=")
	out, err := cmd.CombinedOutput()
	t.Logf("%s output:\n%s", name, out)
	if err != nil {
		t.Fatalf("%s failed: %v", name, err)
	}
	return ts, out
}

// TestLifecycleWalkthrough runs the README's lifecycle block verbatim.
func TestLifecycleWalkthrough(t *testing.T) {
	t.Parallel()
	_, out := runReadmeBlock(t, "lifecycle")
	text := string(out)
	for _, want := range []string{"IP_NOT_ALLOWED", "FORBIDDEN", "broader than its parent", "SUSPENDED", "resumed ", "revoked 3 token(s)"} {
		if !strings.Contains(text, want) {
			t.Errorf("lifecycle output lacks %q", want)
		}
	}
	if n := strings.Count(text, "VALID  token="); n != 3 {
		t.Errorf("lifecycle output shows %d VALID verifications, want 3", n)
	}
	if n := strings.Count(text, "refused: exit status"); n != 4 {
		t.Errorf("lifecycle output shows %d refusals, want 4", n)
	}
}

// TestWalkthrough runs the README's five-minute walkthrough verbatim
// against the daemon, then restarts it and checks nothing was lost.
func TestWalkthrough(t *testing.T) {
	t.Parallel()
	ts, out := runReadmeBlock(t, "walkthrough")
	dir := ts.dir
	text := string(out)
	for _, want := range []string{"VALID  token=", "INSUFFICIENT_SCOPE", "MALFORMED", "revoked ", "REVOKED", "bad_checksum", "token.revoke", "walkthrough"} {
		if !strings.Contains(text, want) {
			t.Errorf("walkthrough output lacks %q", want)
		}
	}
	if n := strings.Count(text, "refused: exit status 1"); n != 3 {
		t.Errorf("walkthrough shows %d refusals with exit status 1, want 3", n)
	}

	// Restart: tokens and audit records are still there.
	ts.stop(t)
	ts2 := startServer(t, dir)
	if ts2.root != ts.root {
		t.Error("the root token changed across a restart")
	}
	c := ts2.client(ts2.root)
	list, err := c.ListTokens(ctx, latchkey.TokenFilter{Subject: "team-billing"})
	if err != nil || len(list.Tokens) != 1 || list.Tokens[0].Status != latchkey.StatusRevoked {
		t.Fatalf("after restart: %+v, %v; want the revoked billing token", list, err)
	}
	evs, err := c.ListAudit(ctx, latchkey.AuditFilter{TokenID: list.Tokens[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	var outcomes []string
	for _, e := range evs.Events {
		outcomes = append(outcomes, e.Outcome)
	}
	got := strings.Join(outcomes, " ")
	for _, want := range []string{"VALID", "INSUFFICIENT_SCOPE", "REVOKED", "OK"} {
		if !strings.Contains(got, want) {
			t.Errorf("after restart the token's audit records are %q, missing %s", got, want)
		}
	}
}

// Each kind of refusal gets its own code, and each attempt is in the
// audit log with its client IP and reason.
func TestRefusals(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	c := ts.client(ts.root)
	good, err := c.CreateToken(ctx, client.CreateRequest{Name: "r", Subject: "svc", Scopes: []string{"invoices:read"}})
	if err != nil {
		t.Fatal(err)
	}
	shortLived, err := c.CreateToken(ctx, client.CreateRequest{Scopes: []string{"invoices:read"}, TTL: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	revoked, _ := c.CreateToken(ctx, client.CreateRequest{Scopes: []string{"invoices:read"}})
	if _, err := c.RevokeToken(ctx, revoked.ID, "test"); err != nil {
		t.Fatal(err)
	}
	unknown, _, _ := secret.Generate("lk", strings.NewReader(strings.Repeat("unknown token bytes!", 10)))
	p := good.Plaintext
	oneChar := p[:40] + string(p[40]^1) + p[41:]
	time.Sleep(1100 * time.Millisecond) // let the 1s token expire

	cases := []struct {
		name, token, ip string
		scopes          []string
		code            latchkey.Code
		reason          string
	}{
		{"valid", p, "203.0.113.1", []string{"invoices:read"}, latchkey.Valid, ""},
		{"unknown id", unknown.Reveal(), "203.0.113.2", nil, latchkey.NotFound, "unknown_id"},
		{"one character changed", oneChar, "203.0.113.3", nil, latchkey.Malformed, "bad_checksum"},
		{"revoked", revoked.Plaintext, "203.0.113.4", nil, latchkey.Revoked, "revoked"},
		{"expired", shortLived.Plaintext, "203.0.113.5", nil, latchkey.Expired, "expired"},
		{"missing scope", p, "2001:db8::6", []string{"invoices:write"}, latchkey.InsufficientScope, "missing_scope"},
	}
	for _, tc := range cases {
		res, err := c.Verify(ctx, client.VerifyRequest{Token: tc.token, IP: tc.ip, Scopes: tc.scopes})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if res.Code != tc.code || res.Valid != (tc.code == latchkey.Valid) {
			t.Errorf("%s: code %v valid %v, want %v", tc.name, res.Code, res.Valid, tc.code)
		}
	}
	ts.flush(t)
	page, err := c.ListAudit(ctx, latchkey.AuditFilter{Kind: latchkey.KindVerify, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		found := false
		for _, e := range page.Events {
			if e.ClientIP == tc.ip {
				found = true
				if e.Outcome != tc.code.String() || e.Reason != tc.reason {
					t.Errorf("%s: audit outcome %s reason %q, want %s %q", tc.name, e.Outcome, e.Reason, tc.code, tc.reason)
				}
			}
		}
		if !found {
			t.Errorf("%s: no audit record with client IP %s", tc.name, tc.ip)
		}
	}
	// Filters work over HTTP.
	rv, err := c.ListAudit(ctx, latchkey.AuditFilter{Outcome: "REVOKED"})
	if err != nil || len(rv.Events) != 1 || rv.Events[0].ClientIP != "203.0.113.4" {
		t.Errorf("audit?outcome=REVOKED = %+v, %v", rv, err)
	}
}

// Bad input gets a 400 with a clear message and changes nothing.
func TestBadInput(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	c := ts.client(ts.root)
	count := func() (int, int) {
		ts.flush(t)
		l, err := c.ListTokens(ctx, latchkey.TokenFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		a, err := c.ListAudit(ctx, latchkey.AuditFilter{Kind: latchkey.KindAdmin, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Tokens), len(a.Events)
	}
	toks, evs := count()
	cases := []struct {
		name, body, msg string
	}{
		{"malformed JSON", `{"name": "x",`, "malformed JSON"},
		{"not JSON", `name=x`, "must be a JSON object"},
		{"unknown field", `{"name":"x","admin":true}`, `unknown field "admin"`},
		{"oversized body", `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, "larger than 65536 bytes"},
		{"invalid scope", `{"scopes":["invoices read"]}`, `scope "invoices read"`},
		{"wildcard inside a segment", `{"scopes":["inv*:read"]}`, "whole segment"},
		{"expiry in the past", `{"scopes":["a:b"],"expires_at":"2001-01-01T00:00:00Z"}`, "not in the future"},
		{"ttl and expires_at", `{"ttl":"1h","expires_at":"2099-01-01T00:00:00Z"}`, "not both"},
		{"bad ttl", `{"ttl":"soon"}`, "invalid duration"},
		{"bad time", `{"expires_at":"tomorrow"}`, "RFC 3339"},
		{"meta not an object", `{"meta":[1,2]}`, "meta must be a JSON object"},
		{"two objects", `{} {}`, "single JSON object"},
		{"wrong type", `{"scopes":"a:b"}`, `field "scopes"`},
		{"bad prefix", `{"prefix":"Live"}`, "prefix"},
		{"expiry centuries away", `{"ttl":"100000d"}`, "100 years"},
		{"not_before centuries away", `{"not_before":"2400-01-01T00:00:00Z"}`, "100 years"},
		// Issue 12 item 13: looser JSON than documented.
		{"null body", `null`, "must be a JSON object"},
		{"duplicate field", `{"name":"a","name":"b"}`, `"name" appears twice`},
		{"case-variant field", `{"NAME":"a"}`, `unknown field "NAME"`},
		{"case-variant field, mixed", `{"Scopes":["a:b"]}`, `unknown field "Scopes"`},
		{"invalid UTF-8", "{\"name\":\"a\xff\"}", "not valid UTF-8"},
		{"ESC in a name", `{"name":"\u001b[2J\u001b]0;pwned\u0007"}`, "control characters"},
		{"NUL in a subject", `{"subject":"ci\u0000root"}`, "control characters"},
		{"bidi override in a name", `{"name":"invoice\u202etxt.exe"}`, "control characters"},
		{"truncated token in a tag", `{"tags":["` + ts.root[:len(ts.root)-5] + `"]}`, "token"},
	}
	for _, tc := range cases {
		status, body := ts.post(t, "/v1/tokens", ts.root, []byte(tc.body))
		var eb client.ErrorBody
		if status != 400 || json.Unmarshal([]byte(body), &eb) != nil || eb.Error.Code != latchkey.EInvalid ||
			!strings.Contains(eb.Error.Message, tc.msg) {
			t.Errorf("%s: %d %s; want 400 invalid_argument mentioning %q", tc.name, status, body, tc.msg)
		}
	}
	// Verify and audit endpoints refuse bad input too; a null body is not
	// an empty one.
	for _, tc := range []struct{ path, body string }{
		{"/v1/verify", `null`},
		{"/v1/verify", `{"token":"x","token":"y"}`},
		{"/v1/revocations", `null`},
		{"/v1/tokens/AAAAAAAAAAAAAAAA/revoke", `null`},
		{"/v1/verify", `{"token":"x","ip":"not-an-ip"}`},
		{"/v1/verify", `{"token":"x","scopes":["bad scope"]}`},
		{"/v1/verify", `{"token":"x","extra":1}`},
		{"/v1/verify", `{}`},
	} {
		if status, body := ts.post(t, tc.path, ts.root, []byte(tc.body)); status != 400 {
			t.Errorf("POST %s %s = %d %s, want 400", tc.path, tc.body, status, body)
		}
	}
	for _, q := range []string{"outcome=NOPE", "since=yesterday", "limit=0", "limit=5000", "subjet=x", "cursor=zzz"} {
		req, _ := http.NewRequest("GET", ts.url+"/v1/audit?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+ts.root)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("GET /v1/audit?%s = %d, want 400", q, resp.StatusCode)
		}
	}
	if t2, e2 := count(); t2 != toks || e2 != evs {
		t.Errorf("bad input changed state: tokens %d→%d, admin audit events %d→%d", toks, t2, evs, e2)
	}
}

// A caller grants only what its own token covers.
func TestNoPrivilegeEscalation(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	root := ts.client(ts.root)
	writer, err := root.CreateToken(ctx, client.CreateRequest{Name: "writer", Scopes: []string{latchkey.ScopeTokensWrite, "invoices:*"}})
	if err != nil {
		t.Fatal(err)
	}
	star, _ := root.CreateToken(ctx, client.CreateRequest{Name: "app", Scopes: []string{"*"}})
	w := ts.client(writer.Plaintext)
	for _, scope := range []string{latchkey.AdminScope, latchkey.ScopeAuditRead, latchkey.ScopeTokensRead, "latchkey:*", "*", "billing:read"} {
		_, err := w.CreateToken(ctx, client.CreateRequest{Scopes: []string{scope}})
		if latchkey.ErrorCode(err) != latchkey.EPermissionDenied {
			t.Errorf("a latchkey:tokens:write token minted %q: err %v, want permission_denied", scope, err)
		}
	}
	if _, err := w.CreateToken(ctx, client.CreateRequest{Scopes: []string{"invoices:read", latchkey.ScopeTokensWrite}}); err != nil {
		t.Errorf("minting scopes the caller holds: %v", err)
	}
	// Nor may it revoke a token holding more than it does (the root token),
	// while it may revoke one it could have issued.
	rootID := ts.root[3:19]
	if _, err := w.RevokeToken(ctx, rootID, "coup"); latchkey.ErrorCode(err) != latchkey.EPermissionDenied {
		t.Errorf("a tokens:write token revoked the root token: %v", err)
	}
	mine, _ := w.CreateToken(ctx, client.CreateRequest{Scopes: []string{"invoices:read"}})
	if _, err := w.RevokeToken(ctx, mine.ID, "done"); err != nil {
		t.Errorf("revoking a token the caller could issue: %v", err)
	}
	if _, err := w.ListAudit(ctx, latchkey.AuditFilter{}); latchkey.ErrorCode(err) != latchkey.EPermissionDenied {
		t.Errorf("a tokens:write token read the audit log: %v", err)
	}
	// "*" is an application wildcard, not an admin grant.
	s := ts.client(star.Plaintext)
	if _, err := s.ListTokens(ctx, latchkey.TokenFilter{}); latchkey.ErrorCode(err) != latchkey.EPermissionDenied {
		t.Errorf("a token holding * listed tokens: %v", err)
	}
	if _, err := ts.client("lk_nonsense").ListTokens(ctx, latchkey.TokenFilter{}); latchkey.ErrorCode(err) != latchkey.EUnauthenticated {
		t.Errorf("a garbage token: %v, want unauthenticated", err)
	}
	if _, err := ts.client("").ListTokens(ctx, latchkey.TokenFilter{}); latchkey.ErrorCode(err) != latchkey.EUnauthenticated {
		t.Errorf("no token: %v, want unauthenticated", err)
	}
	// The failed admin authentication is on record.
	ts.flush(t)
	a, _ := root.ListAudit(ctx, latchkey.AuditFilter{Outcome: "MALFORMED"})
	if len(a.Events) == 0 || a.Events[0].Action != latchkey.ActionAdminAuth {
		t.Errorf("failed admin auth not audited: %+v", a.Events)
	}
}

// A created token's plaintext appears nowhere: not in logs, audit rows,
// error bodies or the database files.
func TestCanary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := startServer(t, dir)
	c := ts.client(ts.root)
	created, err := c.CreateToken(ctx, client.CreateRequest{Name: "canary", Subject: "canary", Scopes: []string{"invoices:read"}})
	if err != nil {
		t.Fatal(err)
	}
	canary := created.Plaintext
	secretPart := canary[len(canary)-49 : len(canary)-6]

	var bodies []string
	// Use it every way there is: valid, refused, inside bad requests, as an
	// admin credential, in a URL.
	c.Verify(ctx, client.VerifyRequest{Token: canary, Scopes: []string{"invoices:read"}})
	c.Verify(ctx, client.VerifyRequest{Token: canary, Scopes: []string{"other:scope"}})
	for _, body := range []string{
		`{"token":"` + canary + `","bogus":1}`,
		`{"token":"` + canary + `","scopes":["bad scope"]}`,
		`{"token":"` + canary + `",`,
		`{"token":"` + canary + `","ip":"` + canary + `"}`,
	} {
		_, b := ts.post(t, "/v1/verify", ts.root, []byte(body))
		bodies = append(bodies, b)
	}
	_, b := ts.post(t, "/v1/tokens", canary, []byte(`{"name":"x"}`))
	bodies = append(bodies, b)
	_, b = ts.post(t, "/v1/tokens", ts.root, []byte(`{"name":"`+canary+`x","scopes":["`+canary+`"]}`))
	bodies = append(bodies, b)
	// The lifecycle endpoints: the token deriving from itself, and the
	// canary pasted into every field they take.
	id := created.ID
	for _, call := range []struct{ path, tok, body string }{
		{"/v1/tokens/" + id + "/derive", canary, `{"ttl":"1h"}`},
		{"/v1/tokens/" + id + "/derive", canary, `{"name":"` + canary + `"}`},
		{"/v1/tokens/" + id + "/derive", canary, `{"allowed_paths":["/` + canary + `"],"allowed_cidrs":["` + canary + `"]}`},
		{"/v1/tokens/" + id + "/suspend", ts.root, `{"reason":"` + canary + `"}`},
		{"/v1/tokens/" + id + "/rotate", ts.root, `{"grace":"` + canary + `"}`},
		{"/v1/revocations", ts.root, `{"subject":"` + canary + `"}`},
		{"/v1/revocations", ts.root, `{"tag":"t","reason":"` + canary + `"}`},
	} {
		_, b := ts.post(t, call.path, call.tok, []byte(call.body))
		bodies = append(bodies, b)
	}
	preq, _ := http.NewRequest("PATCH", ts.url+"/v1/tokens/"+id, strings.NewReader(`{"name":"`+canary+`","meta":{"k":"`+canary+`"}}`))
	preq.Header.Set("Authorization", "Bearer "+ts.root)
	if presp, err := http.DefaultClient.Do(preq); err == nil {
		rb, _ := io.ReadAll(presp.Body)
		presp.Body.Close()
		bodies = append(bodies, string(rb))
	}
	// The dashboard: signing in with it (refused: no admin scope), and the
	// canary inside a session's calls.
	for _, body := range []string{`{"token":"` + canary + `"}`, `{"token":"` + canary + `","x":1}`, `{"token":"` + canary} {
		_, b := ts.post(t, "/ui/api/session", "", []byte(body))
		bodies = append(bodies, b)
	}
	_, b = ts.post(t, "/ui/api/v1/tokens", "", []byte(`{"name":"`+canary+`"}`))
	bodies = append(bodies, b)
	if _, err := c.RotateToken(ctx, id, "1h"); err != nil { // the successor's plaintext is meant to be shown, once
		t.Fatal(err)
	}
	if mresp, err := http.Get(ts.url + "/metrics"); err == nil {
		rb, _ := io.ReadAll(mresp.Body)
		mresp.Body.Close()
		bodies = append(bodies, string(rb))
	}
	resp, err := http.Get(ts.url + "/v1/tokens/" + canary + "?token=" + canary)
	if err == nil {
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		bodies = append(bodies, string(rb))
	}
	ts.flush(t)
	page, err := c.ListAudit(ctx, latchkey.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	auditJSON, _ := json.Marshal(page)
	ts.stop(t) // close the database so every page is in the files

	check := func(where, s string) {
		if strings.Contains(s, canary) || strings.Contains(s, secretPart) {
			t.Errorf("the canary token's secret appears in %s", where)
		}
	}
	for i, b := range bodies {
		check("error body "+string(rune('0'+i)), b)
	}
	check("audit rows (API)", string(auditJSON))
	check("logs and standard error", ts.out.String())
	files, _ := os.ReadDir(dir)
	for _, f := range files {
		if f.Name() == "root-token" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		check("data file "+f.Name(), string(data))
		// The secret bytes themselves, not just their text form.
		parts, _ := secret.Parse(canary)
		if bytes.Contains(data, parts.Secret[:]) {
			t.Errorf("the canary's raw secret bytes appear in %s", f.Name())
		}
	}
	if len(files) < 3 {
		t.Errorf("data dir holds %d files; expected the database, key and root token", len(files))
	}
}

func TestCLIHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"serve", "--help"}, {"token", "create", "--help"}, {"verify", "--help"}, {"audit", "tail", "--help"}, {"audit", "summary", "--help"}} {
		var out, errb bytes.Buffer
		if code := run(ctx, args, nil, &out, &errb, func(string) string { return "" }); code != 0 {
			t.Errorf("latchkey %v: exit %d, stderr %s", args, code, errb.String())
		}
		if out.Len()+errb.Len() < 100 {
			t.Errorf("latchkey %v printed almost nothing", args)
		}
	}
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"frobnicate"}, nil, &out, &errb, func(string) string { return "" }); code != exitUsage {
		t.Errorf("unknown command: exit %d, want %d", code, exitUsage)
	}
}

func TestCLIExitCodes(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	env := func(k string) string {
		return map[string]string{"LATCHKEY_ADDR": ts.url, "LATCHKEY_TOKEN": ts.root}[k]
	}
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"token", "create", "--scope", "a:b", "--quiet"}, nil, &out, &errb, env); code != 0 {
		t.Fatalf("token create: exit %d: %s", code, errb.String())
	}
	tok := strings.TrimSpace(out.String())
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"verify", tok, "--scope", "a:b"}, exitOK},
		{[]string{"verify", "--scope", "a:c", tok}, exitRefused},
		{[]string{"verify", "garbage"}, exitRefused},
		{[]string{"verify"}, exitUsage},
		{[]string{"token", "show", "0000000000000000"}, exitAPIError},
		{[]string{"token", "create", "--ttl", "-5m"}, exitUsage}, // the server's invalid_argument is an input error
		{[]string{"token", "list", "--json"}, exitOK},
	} {
		out.Reset()
		errb.Reset()
		if code := run(ctx, tc.args, strings.NewReader(""), &out, &errb, env); code != tc.want {
			t.Errorf("latchkey %v: exit %d, want %d (stderr %s)", tc.args, code, tc.want, errb.String())
		}
	}
	// Reading the token from standard input keeps it out of argv.
	if code := run(ctx, []string{"verify", "-"}, strings.NewReader(tok+"\n"), &out, &errb, env); code != exitOK {
		t.Errorf("verify - : exit %d", code)
	}
	down := func(k string) string {
		return map[string]string{"LATCHKEY_ADDR": "http://127.0.0.1:1", "LATCHKEY_TOKEN": ts.root}[k]
	}
	if code := run(ctx, []string{"token", "list"}, nil, &out, &errb, down); code != exitUnreachable {
		t.Errorf("unreachable server: exit %d, want %d", code, exitUnreachable)
	}
}

func TestWrongServerKeyRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := startServer(t, dir)
	ts.stop(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	other := strings.Repeat("ab", 32)
	_, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir, ServerKey: other}, logger, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("starting with another key: %v, want a refusal", err)
	}
}
