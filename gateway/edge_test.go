package gateway_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/gateway"
	"github.com/latchkeyhq/latchkey/identity"
)

// The attacker's view of the edge: every request below is one a client
// can send through a proxy configured as the README says, and each must
// be refused (and recorded), never delivered.

const faRoutes = `
token_header: X-API-Key
routes:
  - name: projects
    path: /v1/projects/{id}
    methods: [GET]
    upstream: UPSTREAM
    scopes: ["projects.{id}:read"]
  - name: admin
    host: admin.example.com
    path: /
    upstream: UPSTREAM
    scopes: ["admin:all"]
  - name: public
    path: /public
    upstream: UPSTREAM
`

// forwardAuth serves forward auth for e's routes, trusting loopback peers
// as the proxy (the default of serve).
func forwardAuth(t *testing.T, e *env) string {
	auth := &gateway.Authorizer{Verifier: e.ver, Refuser: e.ver, Signer: e.signer, TrustedProxies: latchkey.LoopbackProxies}
	srv := httptest.NewServer(&gateway.ForwardAuth{Auth: auth, Table: e.gw.Table})
	t.Cleanup(srv.Close)
	return srv.URL
}

func ask(t *testing.T, url, method string, hdr ...string) *http.Response {
	t.Helper()
	resp, _ := send(t, method, url, hdr...)
	return resp
}

func TestForwardAuthFamilies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faRoutes)
	fa := forwardAuth(t, e)
	pt, tok := e.token(t, client.CreateRequest{Subject: "svc", Scopes: []string{"projects.42:read", "x:y"}})
	bearer := "Bearer " + pt
	nginx := func(method, uri string) []string {
		return []string{"Authorization", bearer, "X-Original-Method", method, "X-Original-URI", uri, "X-Original-Host", "api.example.com"}
	}
	fwd := func(method, uri string) []string {
		return []string{"Authorization", bearer, "X-Forwarded-Method", method, "X-Forwarded-Uri", uri, "X-Forwarded-Host", "api.example.com"}
	}
	// Allowed: nginx, Traefik/Caddy and Envoy forms, scopes from the route.
	r := ask(t, fa+"/v1/forward-auth", "GET", nginx("GET", "/v1/projects/42/x")...)
	if r.StatusCode != 200 || r.Header.Get(gateway.HeaderTokenID) != tok.ID || r.Header.Get(identity.Header) == "" {
		t.Errorf("nginx form: %d %v", r.StatusCode, r.Header)
	}
	if r := ask(t, fa+"/v1/forward-auth", "GET", fwd("GET", "/v1/projects/42/x?a=1")...); r.StatusCode != 200 {
		t.Errorf("forwarded form: %d", r.StatusCode)
	}
	if r := ask(t, fa+"/v1/forward-auth/v1/projects/42/y", "GET", "Authorization", bearer); r.StatusCode != 200 {
		t.Errorf("envoy form: %d", r.StatusCode)
	}
	// ?scope= on the endpoint adds to the route's scopes.
	if r := ask(t, fa+"/v1/forward-auth?scope=x:y", "GET", nginx("GET", "/v1/projects/42")...); r.StatusCode != 200 {
		t.Errorf("route + held ?scope=: %d", r.StatusCode)
	}
	if r := ask(t, fa+"/v1/forward-auth?scope=x:z", "GET", nginx("GET", "/v1/projects/42")...); r.StatusCode != 403 {
		t.Errorf("route + unheld ?scope= must need both: %d", r.StatusCode)
	}

	cases := []struct {
		name   string
		url    string
		method string
		hdr    []string
		status int
	}{
		// Item 1: what the gateway would not route is not allowed.
		{"no route", "/v1/forward-auth", "GET", nginx("GET", "/not/routed"), 403},
		{"method not routed", "/v1/forward-auth", "GET", nginx("DELETE", "/v1/projects/42"), 403},
		{"envoy, method not routed", "/v1/forward-auth/v1/projects/42", "DELETE", []string{"Authorization", bearer}, 403},
		{"envoy, no route", "/v1/forward-auth/admin/users", "DELETE", []string{"Authorization", bearer}, 403},
		{"missing scope via route", "/v1/forward-auth", "GET", nginx("GET", "/v1/projects/43/x"), 403},
		// Item 2: in Envoy's form the query is the client's: it names no scope.
		{"envoy ?scope= from the client", "/v1/forward-auth/v1/projects/43?scope=x:y", "GET", []string{"Authorization", bearer}, 403},
		{"envoy ?scope= for a host route", "/v1/forward-auth/anything?scope=x:y", "GET", []string{"Authorization", bearer, "Host", "admin.example.com"}, 403},
		// Item 3: one family, believed only from a trusted proxy.
		{"both families", "/v1/forward-auth", "DELETE", append(nginx("GET", "/v1/projects/42"), "X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/v1/projects/42"), 400},
		{"client's X-Forwarded-* beside nginx's", "/v1/forward-auth", "GET", append(nginx("DELETE", "/v1/projects/43/x"), "X-Forwarded-Uri", "/v1/projects/42/x"), 400},
		{"family with an appended path", "/v1/forward-auth/v1/projects/42", "GET", nginx("GET", "/v1/projects/42"), 400},
		{"family without a method", "/v1/forward-auth", "GET", []string{"Authorization", bearer, "X-Original-URI", "/v1/projects/42", "X-Original-Host", "a"}, 400},
		{"family without a host, routed", "/v1/forward-auth", "GET", []string{"Authorization", bearer, "X-Original-Method", "GET", "X-Original-URI", "/v1/projects/42"}, 400},
		{"nothing described, routed", "/v1/forward-auth", "GET", []string{"Authorization", bearer}, 400},
		{"header sent twice", "/v1/forward-auth", "GET", append(nginx("GET", "/v1/projects/42"), "X-Original-URI", "/v1/projects/42"), 400},
		// Item 4: canonical paths only, hosts with a trailing dot are the host.
		{"dot segments", "/v1/forward-auth", "GET", nginx("GET", "/v1/projects/42/../43"), 400},
		{"encoded dot segments", "/v1/forward-auth", "GET", nginx("GET", "/v1/projects/42/%2e%2e/43"), 400},
		{"mixed-case encoded dots", "/v1/forward-auth", "GET", nginx("GET", "/v1/projects/42/.%2E/43"), 400},
		{"encoded slash", "/v1/forward-auth", "GET", nginx("GET", "/v1/projects/42%2F..%2F43"), 400},
		{"tomcat ..;", "/v1/forward-auth", "GET", nginx("GET", "/v1/projects/42/..;/43"), 400},
		{"empty segment", "/v1/forward-auth", "GET", nginx("GET", "/v1/projects//42"), 400},
		{"backslash", "/v1/forward-auth", "GET", nginx("GET", `/v1/projects/42\..\43`), 400},
		{"envoy dot segments", "/v1/forward-auth/v1/projects/42/%2e%2e/43", "GET", []string{"Authorization", bearer}, 400},
		{"trailing-dot host", "/v1/forward-auth", "GET", []string{"Authorization", bearer, "X-Original-Method", "GET", "X-Original-URI", "/anything", "X-Original-Host", "admin.example.com."}, 403},
		{"two trailing dots", "/v1/forward-auth", "GET", []string{"Authorization", bearer, "X-Original-Method", "GET", "X-Original-URI", "/anything", "X-Original-Host", "admin.example.com.."}, 400},
		{"method override", "/v1/forward-auth", "GET", append(nginx("GET", "/v1/projects/42"), "X-HTTP-Method-Override", "DELETE"), 400},
		{"method override, underscores", "/v1/forward-auth", "GET", append(nginx("GET", "/v1/projects/42"), "X_Method_Override", "DELETE"), 400},
		// Identity headers a client sent reach forward auth: refused.
		{"client identity header", "/v1/forward-auth", "GET", append(nginx("GET", "/v1/projects/42"), "X-Latchkey-Scopes", "*"), 400},
		{"client identity header, underscores", "/v1/forward-auth", "GET", append(nginx("GET", "/v1/projects/42"), "X_Latchkey_Subject", "root"), 400},
		// Item 12: no credential, and no token in ?scope=.
		{"token as ?scope=", "/v1/forward-auth?scope=" + pt, "GET", nginx("GET", "/v1/projects/42"), 400},
		{"token in the original query", "/v1/forward-auth", "GET", nginx("GET", "/v1/projects/42?token="+pt), 400},
		{"no token", "/v1/forward-auth", "GET", nginx("GET", "/v1/projects/42")[2:], 401},
	}
	for _, c := range cases {
		if r := ask(t, fa+c.url, c.method, c.hdr...); r.StatusCode != c.status {
			t.Errorf("%s: HTTP %d, want %d", c.name, r.StatusCode, c.status)
		}
	}
	// The trailing dot is the same host: the host route applies.
	adminPT, _ := e.token(t, client.CreateRequest{Scopes: []string{"admin:all"}})
	if r := ask(t, fa+"/v1/forward-auth", "GET", "Authorization", "Bearer "+adminPT, "X-Original-Method", "GET", "X-Original-URI", "/anything", "X-Original-Host", "Admin.Example.COM.:443"); r.StatusCode != 200 {
		t.Errorf("admin token on the admin host with a trailing dot: %d", r.StatusCode)
	}
}

// Original-request headers from a peer that is not a trusted proxy are
// refused: anyone could write them.
func TestForwardAuthUntrustedPeer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faRoutes)
	// e.gw.Auth trusts 10.0.0.0/8 only; the test client is 127.0.0.1.
	srv := httptest.NewServer(&gateway.ForwardAuth{Auth: e.gw.Auth, Table: e.gw.Table})
	t.Cleanup(srv.Close)
	pt, _ := e.token(t, client.CreateRequest{Scopes: []string{"projects.42:read"}})
	for _, fam := range [][]string{
		{"X-Original-Method", "GET", "X-Original-URI", "/v1/projects/42", "X-Original-Host", "h"},
		{"X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/v1/projects/42", "X-Forwarded-Host", "h"},
	} {
		if r := ask(t, srv.URL+"/v1/forward-auth", "GET", append([]string{"Authorization", "Bearer " + pt}, fam...)...); r.StatusCode != 400 {
			t.Errorf("%s from an untrusted peer: %d", fam[0], r.StatusCode)
		}
	}
}

// Without a route file, ?scope= names the scopes and the original request
// may be left undescribed (authentication only).
func TestForwardAuthWithoutRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faRoutes)
	auth := &gateway.Authorizer{Verifier: e.ver, Refuser: e.ver, TrustedProxies: latchkey.LoopbackProxies}
	srv := httptest.NewServer(&gateway.ForwardAuth{Auth: auth})
	t.Cleanup(srv.Close)
	pt, _ := e.token(t, client.CreateRequest{Scopes: []string{"x:y"}})
	b := "Bearer " + pt
	if r := ask(t, srv.URL+"/v1/forward-auth?scope=x:y", "POST", "Authorization", b, "X-Forwarded-Method", "DELETE", "X-Forwarded-Uri", "/anything"); r.StatusCode != 200 {
		t.Errorf("scope param: %d", r.StatusCode)
	}
	if r := ask(t, srv.URL+"/v1/forward-auth?scope=x:z", "GET", "Authorization", b); r.StatusCode != 403 {
		t.Errorf("scope param, not held: %d", r.StatusCode)
	}
	if r := ask(t, srv.URL+"/v1/forward-auth?scope=x:", "GET", "Authorization", b); r.StatusCode != 400 {
		t.Errorf("invalid scope param: %d", r.StatusCode)
	}
}

// Item 4 on the gateway: dot segments, encoded separators and the rest are
// refused before any route matches, whatever the token holds; the
// upstream receives exactly the path that was authorised.
func TestGatewayCanonicalPaths(t *testing.T) {
	t.Parallel()
	e := newEnv(t, routes)
	pt, _ := e.token(t, client.CreateRequest{Scopes: []string{"projects.42:read"}})
	for _, p := range []string{
		"/v1/projects/42/../43", "/v1/projects/42/%2e%2e/43", "/v1/projects/42/.%2E/43", "/v1/projects/42%2F..%2F43",
		"/v1/projects/42/..;/43", "/v1/projects/42;x=1", "/v1/projects//42", "/v1/projects/42/./x", "/v1/projects/42/%5c..%5c43",
		"/v1/projects/42/%00", "/v1/projects/42/%252e%252e/43", "/v1/projects/42/%zz",
	} {
		resp, body := rawRequest(t, e.url, "GET "+p+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+pt+"\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != 400 {
			t.Errorf("GET %s: %d %s, want 400", p, resp.StatusCode, body)
		}
	}
	// An escaped ordinary character is fine, and goes upstream decoded.
	resp, body := e.do(t, "GET", "/v1/projects/42/%41bc", pt)
	var s seen
	json.Unmarshal(body, &s)
	if resp.StatusCode != 200 || s.Path != "/v1/projects/42/Abc" {
		t.Errorf("escaped letter: %d %q", resp.StatusCode, s.Path)
	}
	// A trailing dot does not escape the host's route to the catch-all.
	if resp, _ := e.do(t, "POST", "/do", pt, "Host", "admin.example.com."); resp.StatusCode != 403 {
		t.Errorf("trailing-dot host: %d, want 403 (the admin route applies)", resp.StatusCode)
	}
	if resp, _ := e.do(t, "GET", "/x", pt, "Host", "admin..example.com"); resp.StatusCode != 400 {
		t.Errorf("empty host label: %d", resp.StatusCode)
	}
	// Method override headers are refused.
	for _, h := range []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X_HTTP_Method_Override"} {
		if resp, _ := e.do(t, "GET", "/v1/projects/42", pt, h, "DELETE"); resp.StatusCode != 400 {
			t.Errorf("%s: %d", h, resp.StatusCode)
		}
	}
}

// Identity headers spelled with "_" are stripped like their "-" forms,
// and so is the configured token header.
func TestGatewayStripsUnderscoreIdentity(t *testing.T) {
	t.Parallel()
	e := newEnv(t, routes)
	pt, _ := e.token(t, client.CreateRequest{Subject: "team-a", Scopes: []string{"projects.42:read"}})
	resp, body := rawRequest(t, e.url, "GET /v1/projects/42 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+pt+
		"\r\nX_Latchkey_Subject: root\r\nx_latchkey_scopes: *\r\nX_API_Key: "+pt+"\r\nX-Latchkey-Role: admin\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var s seen
	json.Unmarshal([]byte(body), &s)
	for k := range s.Header {
		n := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
		if n == "x-api-key" || (strings.HasPrefix(n, "x-latchkey-") && n != "x-latchkey-token-id" && n != "x-latchkey-subject" &&
			n != "x-latchkey-scopes" && n != "x-latchkey-identity") || k != http.CanonicalHeaderKey(k) && strings.HasPrefix(n, "x-latchkey-") {
			t.Errorf("a client header reached the upstream: %s: %v", k, s.Header[k])
		}
	}
	if s.Header.Get("X-Latchkey-Subject") != "team-a" || s.Header.Get("X-Latchkey-Scopes") != "projects.42:read" {
		t.Errorf("identity: %v", s.Header)
	}
}

// rawRequest sends a request exactly as written (Go's client would clean
// or escape the path) and reads the answer.
func rawRequest(t *testing.T, base, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// Item 9: requests refused before a decision are on record, sampled per
// source with the count they stand for, and not counted toward a block.
func TestEdgeRefusalsOnRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t, routes)
	pt, _ := e.token(t, client.CreateRequest{Scopes: []string{"projects.42:read"}})
	e.do(t, "GET", "/v1/projects/42", "")                // no credential
	e.do(t, "GET", "/v1/projects/42?access_token=x", pt) // credential in the URL
	rawRequest(t, e.url, "GET /v1/projects/42/../43 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	for range 50 { // a flood of one kind: one record, then counts
		e.do(t, "GET", "/v1/projects/42", "")
	}
	e.ver.Close(ctx) // writes the counts still pending
	e.pipe.Flush(ctx)
	page, err := e.db.ListAudit(ctx, latchkey.AuditFilter{Outcome: latchkey.OutcomeRefused, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	total := map[string]int{}
	records := map[string]int{}
	for _, ev := range page.Events {
		var d struct{ Count int }
		json.Unmarshal(ev.Detail, &d)
		if ev.Action != "gateway" || ev.ClientIP != "127.0.0.1" || d.Count < 1 {
			t.Errorf("record %+v", ev)
		}
		total[ev.Reason] += d.Count
		records[ev.Reason]++
	}
	if total[edge.ReasonNoCredential] != 51 || total[edge.ReasonCredentialInQuery] != 1 || total[edge.ReasonNonCanonical] != 1 {
		t.Errorf("refusals counted %v", total)
	}
	if records[edge.ReasonNoCredential] > 3 {
		t.Errorf("a flood of %d refusals took %d records", 51, records[edge.ReasonNoCredential])
	}
}

// Item 12: the request id kept in the audit record is short and plain; a
// token pasted into it, or junk, is replaced.
func TestGatewayRequestID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, routes)
	pt, tok := e.token(t, client.CreateRequest{Scopes: []string{"projects.42:read"}})
	truncated := pt[:len(pt)-5]
	for _, id := range []string{pt, truncated, strings.Repeat("a", 8025), "ok-id.1"} {
		e.do(t, "GET", "/v1/projects/42", pt, "X-Request-Id", id)
	}
	e.pipe.Flush(ctx)
	page, _ := e.db.ListAudit(ctx, latchkey.AuditFilter{TokenID: tok.ID, Kind: latchkey.KindVerify, Limit: 10, Ascending: true})
	if len(page.Events) != 4 {
		t.Fatalf("%d records", len(page.Events))
	}
	// Records of one millisecond may come back in any order, so count
	// rather than index.
	plain := 0
	for i, ev := range page.Events {
		if len(ev.RequestID) > 64 || strings.Contains(ev.RequestID, truncated[:30]) {
			t.Errorf("record %d keeps request id %.80q", i, ev.RequestID)
		}
		if ev.RequestID == "ok-id.1" {
			plain++
		}
	}
	if plain != 1 {
		t.Errorf("the plain request id was kept %d times in %d records, want once", plain, len(page.Events))
	}
}

// Item 10: a body that never comes, or comes a byte at a time, cannot hold
// a gateway connection past the route's body_timeout.
func TestGatewaySlowBody(t *testing.T) {
	t.Parallel()
	up := echo(t)
	e := newEnv(t, routes)
	table, err := gateway.ParseConfig([]byte("routes:\n  - name: up\n    path: /\n    upstream: " + up.URL + "/upload\n    body_timeout: 300ms\n    max_body_bytes: 1KiB\n"))
	if err != nil {
		t.Fatal(err)
	}
	gw := gateway.New(e.gw.Auth, table, nil)
	srv := httptest.NewUnstartedServer(gw)
	srv.Config = edge.NewServer(gw, edge.Limits{ReadTimeout: -1, WriteTimeout: -1}, nil)
	srv.Start()
	t.Cleanup(srv.Close)
	pt, _ := e.token(t, client.CreateRequest{Scopes: []string{"x:y"}})
	for _, trickle := range []bool{false, true} {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n", pt)
		start := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			if !trickle {
				return
			}
			for i := 0; i < 100; i++ {
				if _, err := c.Write([]byte("a")); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c) // returns when the gateway closes the connection
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("trickle=%v: the connection was held %v", trickle, d)
		}
		c.Close()
		<-done
	}
	// Over max_body_bytes: 413 before anything is sent upstream.
	req, _ := http.NewRequest("POST", srv.URL+"/upload", strings.NewReader(strings.Repeat("a", 2000)))
	req.Header.Set("Authorization", "Bearer "+pt)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("oversized body: %d", resp.StatusCode)
	}
}

// The route matcher, on what the edge lets through: a match's literal
// segments are the path's, its parameters fill scopes only as plain
// segments, and what goes upstream is still canonical.
func FuzzRouteLookup(f *testing.F) {
	table, err := gateway.ParseConfig([]byte(strings.ReplaceAll(faRoutes, "UPSTREAM", "http://127.0.0.1:9") +
		"  - name: files\n    path: /files/{bucket}\n    strip_prefix: true\n    upstream: http://127.0.0.1:9/base\n    scopes: [\"files.{bucket}:read\"]\n"))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][3]string{{"api.example.com", "GET", "/v1/projects/42/x"}, {"admin.example.com.", "POST", "/"},
		{"x", "GET", "/files/b/c/d"}, {"x", "GET", "/v1/projects/%2A"}, {"x", "GET", "/public/../v1"}} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, host, method, escaped string) {
		path, ok := edge.CanonicalPath(escaped)
		if !ok {
			return
		}
		h, ok := edge.CanonicalHost(host)
		if !ok {
			return
		}
		m, ok := table.Lookup(h, method, path)
		if !ok {
			return
		}
		scopes, ok := m.Scopes()
		if !ok {
			return
		}
		for _, sc := range scopes {
			if err := latchkey.ValidateScope(sc); err != nil || strings.Contains(sc, "{") {
				t.Fatalf("%s %s: route %s gives scope %q (%v)", method, path, m.Route.Name, sc, err)
			}
		}
		if len(m.Route.Methods) > 0 && !contains(m.Route.Methods, method) {
			t.Fatalf("%s %s matched route %s, which does not take %s", method, path, m.Route.Name, method)
		}
		if m.Route.Host != "" && m.Route.Host != h {
			t.Fatalf("host %q matched route %s for %s", h, m.Route.Name, m.Route.Host)
		}
		if up := gateway.UpstreamPath(&m, path); !latchkey.CanonicalPath(up) {
			t.Fatalf("%s goes upstream as %q", path, up)
		}
	})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
