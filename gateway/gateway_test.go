package gateway_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/gateway"
	"github.com/latchkeyhq/latchkey/identity"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/verify"
)

var ctx = context.Background()

// seen is what the upstream echo server received.
type seen struct {
	Method, Path, Host string
	Header             http.Header
}

// echo answers with what it received, as JSON, and handles the special
// paths used by the pass-through tests.
func echo(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/stream"):
			fl := w.(http.Flusher)
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: %d\n\n", i)
				fl.Flush()
				time.Sleep(100 * time.Millisecond)
			}
			return
		case strings.HasSuffix(r.URL.Path, "/upload"):
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
			return
		case strings.HasSuffix(r.URL.Path, "/download"):
			w.Header().Set("Content-Type", "application/octet-stream")
			buf := make([]byte, 1<<20)
			for range 32 {
				w.Write(buf)
			}
			return
		case strings.HasSuffix(r.URL.Path, "/ws"):
			if r.Header.Get("Upgrade") != "websocket" {
				http.Error(w, "want upgrade", 400)
				return
			}
			conn, brw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Seen-Token-Id: " + r.Header.Get(gateway.HeaderTokenID) + "\r\n\r\n")
			brw.Flush()
			line, _ := brw.ReadString('\n') // echo one line back
			brw.WriteString("echo " + line)
			brw.Flush()
			return
		}
		json.NewEncoder(w).Encode(seen{Method: r.Method, Path: r.URL.Path, Host: r.Host, Header: r.Header})
	}))
	t.Cleanup(srv.Close)
	return srv
}

type env struct {
	gw     *gateway.Gateway
	url    string
	svc    *tokens.Service
	signer *identity.Signer
	up     *httptest.Server
	db     *sqlite.DB
	pipe   *audit.Pipeline
	ver    *verify.Verifier
}

func newEnv(t *testing.T, routes string) *env {
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "g.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key := make([]byte, 32)
	rand.Read(key)
	h, _ := secret.NewHasher(key)
	pipe := &audit.Pipeline{Sink: db}
	pipe.Start()
	t.Cleanup(func() { pipe.Close(ctx) })
	v := verify.New(db, h, pipe, verify.Config{})
	t.Cleanup(func() { v.Close(ctx) })
	signer, _ := identity.NewSigner(key, time.Hour, 0)
	up := echo(t)
	table, err := gateway.ParseConfig([]byte(strings.ReplaceAll(routes, "UPSTREAM", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	auth := &gateway.Authorizer{Verifier: v, Refuser: v, Signer: signer, TrustedProxies: latchkey.TrustedProxies{mustPrefix("10.0.0.0/8")}}
	gw := gateway.New(auth, table, nil)
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return &env{gw: gw, url: srv.URL, svc: &tokens.Service{Store: db, Hasher: h, Invalidate: v.Invalidate}, signer: signer, up: up,
		db: db, pipe: pipe, ver: v}
}

func mustPrefix(s string) netip.Prefix {
	q, err := latchkey.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return q
}

func (e *env) token(t *testing.T, req client.CreateRequest) (string, *latchkey.Token) {
	tok, pt, err := e.svc.Create(ctx, latchkey.Actor{}, req)
	if err != nil {
		t.Fatal(err)
	}
	return pt.Reveal(), tok
}

func (e *env) do(t *testing.T, method, path, tok string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	if tok != "" {
		hdr = append([]string{"Authorization", "Bearer " + tok}, hdr...)
	}
	return send(t, method, e.url+path, hdr...)
}

// send makes one request with headers as name, value pairs ("Host" sets
// the request's host) and reads the answer.
func send(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

const routes = `
token_header: X-API-Key
routes:
  - name: projects
    path: /v1/projects/{id}
    upstream: UPSTREAM
    scopes: ["projects.{id}:read"]
  - name: admin
    host: admin.example.com
    path: /
    methods: [POST]
    upstream: UPSTREAM/base
    scopes: ["admin:write"]
  - name: files
    path: /files
    upstream: UPSTREAM
    strip_prefix: true
    scopes: ["files:read"]
  - name: public
    path: /
    upstream: UPSTREAM
`

func TestGatewayAllowAndIdentity(t *testing.T) {
	e := newEnv(t, routes)
	pt, tok := e.token(t, client.CreateRequest{Subject: "team-a", Scopes: []string{"projects.42:read", "files:read"}})
	resp, body := e.do(t, "GET", "/v1/projects/42/invoices?x=1", pt,
		"X-Latchkey-Subject", "root", "X-Latchkey-Identity", "forged", "X-Forwarded-For", "6.6.6.6")
	if resp.StatusCode != 200 {
		t.Fatalf("allowed request: %d %s", resp.StatusCode, body)
	}
	var s seen
	json.Unmarshal(body, &s)
	if s.Path != "/v1/projects/42/invoices" {
		t.Errorf("upstream path %q", s.Path)
	}
	hd := s.Header
	if hd.Get("Authorization") != "" || hd.Get("X-Api-Key") != "" {
		t.Error("the credential reached the upstream")
	}
	if hd.Get(gateway.HeaderTokenID) != tok.ID || hd.Get(gateway.HeaderSubject) != "team-a" || hd.Get(gateway.HeaderScopes) != "projects.42:read files:read" {
		t.Errorf("identity headers: %v", hd)
	}
	if len(hd.Values(gateway.HeaderSubject)) != 1 {
		t.Errorf("a spoofed subject survived: %v", hd.Values(gateway.HeaderSubject))
	}
	// The upstream can check the JWT: signed, for this route, short-lived.
	c, err := e.signer.Verify(hd.Get(identity.Header), time.Now(), "projects")
	if err != nil || c.Subject != "team-a" || c.TokenID != tok.ID || c.ExpiresAt-c.IssuedAt > 60 {
		t.Errorf("identity JWT: %+v %v", c, err)
	}
	// An untrusted client's X-Forwarded-For is dropped: only the peer.
	if xff := hd.Get("X-Forwarded-For"); xff != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want the peer only", xff)
	}
	// The configured header works too; strip_prefix drops the prefix.
	resp, body = e.do(t, "GET", "/files/a/b.txt", "", "X-API-Key", pt)
	json.Unmarshal(body, &s)
	if resp.StatusCode != 200 || s.Path != "/a/b.txt" || s.Header.Get("X-Api-Key") != "" {
		t.Errorf("X-API-Key with strip_prefix: %d path %q", resp.StatusCode, s.Path)
	}
	// Host and method routing, and the upstream's base path.
	adminPT, _ := e.token(t, client.CreateRequest{Scopes: []string{"admin:write"}})
	resp, body = e.do(t, "POST", "/do", adminPT, "Host", "admin.example.com")
	json.Unmarshal(body, &s)
	if resp.StatusCode != 200 || s.Path != "/base/do" || s.Host != "admin.example.com" {
		t.Errorf("host route: %d %+v", resp.StatusCode, s)
	}
	// JWKS is served by the gateway too.
	resp, body = e.do(t, "GET", "/.well-known/jwks.json", "")
	var set identity.JWKS
	if json.Unmarshal(body, &set); resp.StatusCode != 200 || len(set.Keys) != 3 {
		t.Errorf("jwks: %d %s", resp.StatusCode, body)
	}
}

func TestGatewayDenials(t *testing.T) {
	e := newEnv(t, routes)
	pt, tok := e.token(t, client.CreateRequest{Scopes: []string{"projects.42:read"}, RateLimit: &client.RateRequest{Limit: 2, Window: "1m"}})
	cases := []struct {
		name, path, tok string
		status          int
		challenge       string
	}{
		{"no token", "/v1/projects/42", "", 401, `Bearer realm="latchkey"`},
		{"forged token", "/v1/projects/42", "lk_forged", 401, `error="invalid_token"`},
		{"missing scope", "/v1/projects/43", pt, 403, `error="insufficient_scope"`},
		{"token in the query", "/v1/projects/42?access_token=" + pt, "", 400, ""},
		{"token-shaped query value", "/v1/projects/42?q=" + pt, pt, 400, ""},
		{"a wildcard as a path parameter", "/v1/projects/*", pt, 404, ""},
	}
	for _, c := range cases {
		resp, body := e.do(t, "GET", c.path, c.tok)
		if resp.StatusCode != c.status || !strings.Contains(resp.Header.Get("WWW-Authenticate"), c.challenge) {
			t.Errorf("%s: %d %q %s", c.name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
		if strings.Contains(string(body), "secret") || strings.Contains(string(body), "scope \"") {
			t.Errorf("%s: the body says too much: %s", c.name, body)
		}
	}
	// Rate limit: the two allowed, then 429 with Retry-After.
	e.do(t, "GET", "/v1/projects/42", pt)
	resp, _ := e.do(t, "GET", "/v1/projects/42", pt)
	if resp.StatusCode != 200 {
		t.Fatalf("within the rate: %d", resp.StatusCode)
	}
	resp, _ = e.do(t, "GET", "/v1/projects/42", pt)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "30" {
		t.Errorf("over the rate: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Revoked: refused at once.
	pt2, tok2 := e.token(t, client.CreateRequest{Scopes: []string{"projects.42:read"}})
	if resp, _ := e.do(t, "GET", "/v1/projects/42", pt2); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	e.svc.Revoke(ctx, latchkey.Actor{}, tok2.ID, "")
	if resp, _ := e.do(t, "GET", "/v1/projects/42", pt2); resp.StatusCode != 401 {
		t.Errorf("right after a revoke: %d", resp.StatusCode)
	}
	_ = tok
}

func TestGatewayReload(t *testing.T) {
	e := newEnv(t, routes)
	pt, _ := e.token(t, client.CreateRequest{Scopes: []string{"projects.42:read"}})
	if _, err := gateway.ParseConfig([]byte("routes:\n  - name: x\n    path: nope\n    upstream: http://x")); err == nil {
		t.Error("a path without / was accepted")
	}
	for _, bad := range []string{"routes: []", "nonsense: 1\nroutes:\n  - name: a\n    path: /\n    upstream: http://x",
		"routes:\n  - name: a\n    path: /{x}\n    upstream: http://x\n    scopes: ['a.{y}:read']",
		"routes:\n  - name: a\n    path: /\n    upstream: ftp://x", "routes:\n  - path: /\n    upstream: http://x"} {
		if _, err := gateway.ParseConfig([]byte(bad)); err == nil {
			t.Errorf("accepted: %q", bad)
		}
	}
	next, err := gateway.ParseConfig([]byte(strings.ReplaceAll(`
routes:
  - name: projects
    path: /v1/projects/{id}
    upstream: UPSTREAM
    scopes: ["projects.{id}:write"]
`, "UPSTREAM", e.up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	e.gw.Reload(next)
	if resp, _ := e.do(t, "GET", "/v1/projects/42", pt); resp.StatusCode != 403 {
		t.Errorf("after reload the route needs :write: %d", resp.StatusCode)
	}
}

// Streaming responses, websockets and large bodies pass through untouched.
func TestGatewayPassThrough(t *testing.T) {
	e := newEnv(t, routes)
	pt, tok := e.token(t, client.CreateRequest{Scopes: []string{"files:read"}})
	// Streaming: the first event arrives before the upstream has finished.
	req, _ := http.NewRequest("GET", e.url+"/files/stream", nil)
	req.Header.Set("Authorization", "Bearer "+pt)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	first, _ := br.ReadString('\n')
	if first != "data: 0\n" || time.Since(start) > 250*time.Millisecond {
		t.Errorf("first streamed event %q after %v: the response was buffered", first, time.Since(start))
	}
	rest, _ := io.ReadAll(br)
	resp.Body.Close()
	if !strings.Contains(string(rest), "data: 2") {
		t.Errorf("stream tail %q", rest)
	}
	// Large request body (24 MiB), hashed by the upstream.
	big := make([]byte, 24<<20)
	rand.Read(big)
	req, _ = http.NewRequest("POST", e.url+"/files/upload", strings.NewReader(string(big)))
	req.Header.Set("Authorization", "Bearer "+pt)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d %x", len(big), sha256.Sum256(big)); string(got) != want {
		t.Errorf("upload: upstream saw %q, want %q", got, want)
	}
	// Large response body (32 MiB).
	resp, _ = http.DefaultClient.Do(withAuth(e.url+"/files/download", pt))
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != 32<<20 {
		t.Errorf("download: %d bytes", n)
	}
	// Websocket upgrade: a raw connection, bytes both ways.
	u := strings.TrimPrefix(e.url, "http://")
	conn, err := net.Dial("tcp", u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /files/ws HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", u, pt)
	cr := bufio.NewReader(conn)
	status, _ := cr.ReadString('\n')
	if !strings.Contains(status, "101") {
		t.Fatalf("upgrade answered %q", status)
	}
	var sawID string
	for {
		l, _ := cr.ReadString('\n')
		if v, ok := strings.CutPrefix(l, "X-Seen-Token-Id: "); ok {
			sawID = strings.TrimSpace(v)
		}
		if l == "\r\n" || l == "" {
			break
		}
	}
	fmt.Fprint(conn, "hello over the upgraded connection\n")
	line, _ := cr.ReadString('\n')
	if line != "echo hello over the upgraded connection\n" || sawID != tok.ID {
		t.Errorf("websocket: %q (token id upstream %q)", line, sawID)
	}
}

func withAuth(url, tok string) *http.Request {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	return req
}

// A token pasted into a path never reaches the logs, even when the
// upstream fails and the error quotes the URL.
func TestGatewayLogsNoToken(t *testing.T) {
	e := newEnv(t, routes)
	pt, _ := e.token(t, client.CreateRequest{Scopes: []string{"files:read"}})
	var logs strings.Builder
	var mu sync.Mutex
	e.gw.Logger = slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	e.up.Close() // the upstream is down: the gateway logs the failure
	resp, _ := e.do(t, "GET", "/files/"+pt, pt)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("dead upstream: %d", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "upstream failed") || strings.Contains(logs.String(), pt[20:50]) {
		t.Errorf("logs: %s", logs.String())
	}
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// A token bound to an audience (RFC 8707) passes only routes that name
// that resource; a route naming none (like "public", which asks no
// scope) refuses it: fail closed. Forward auth follows the same rule.
func TestGatewayAudience(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `
routes:
  - name: billing
    path: /billing
    upstream: UPSTREAM
    resource: https://api.example.com/billing
  - name: reports
    path: /reports
    upstream: UPSTREAM
    resource: https://api.example.com/reports
  - name: public
    path: /
    upstream: UPSTREAM
`)
	bound, _ := e.token(t, client.CreateRequest{Subject: "agent", Audience: []string{"https://api.example.com/billing"}})
	free, _ := e.token(t, client.CreateRequest{Subject: "svc"})
	for _, c := range []struct {
		path, tok string
		want      int
	}{
		{"/billing/x", bound, 200},
		{"/reports/x", bound, 403},
		{"/anything", bound, 403},
		{"/reports/x", free, 200},
		{"/anything", free, 200},
	} {
		if resp, body := e.do(t, "GET", c.path, c.tok); resp.StatusCode != c.want {
			t.Errorf("GET %s: %d %s, want %d", c.path, resp.StatusCode, body, c.want)
		}
	}
	fa := httptest.NewServer(&gateway.ForwardAuth{Auth: e.gw.Auth})
	t.Cleanup(fa.Close)
	for _, c := range []struct {
		query string
		want  int
	}{
		{"?resource=" + "https%3A%2F%2Fapi.example.com%2Fbilling", 200},
		{"?resource=" + "https%3A%2F%2Fapi.example.com%2Freports", 403},
		{"", 403},
		{"?resource=not-a-url", 400},
	} {
		if resp, body := send(t, "GET", fa.URL+"/v1/forward-auth"+c.query, "Authorization", "Bearer "+bound); resp.StatusCode != c.want {
			t.Errorf("forward auth %q: %d %s, want %d", c.query, resp.StatusCode, body, c.want)
		}
	}
	if _, err := gateway.ParseConfig([]byte("routes:\n  - name: x\n    path: /\n    upstream: http://127.0.0.1:1\n    resource: api.example.com\n")); err == nil {
		t.Error("a route with a relative resource was accepted")
	}
}
