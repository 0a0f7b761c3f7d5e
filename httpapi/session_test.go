package httpapi_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/httpapi"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/ui"
)

// uiEnv is an API server with the dashboard on.
type uiEnv struct {
	*apiEnv
	srv *httptest.Server
}

func newUIServer(t *testing.T, tls bool, ttl time.Duration) *uiEnv {
	t.Helper()
	api, e := wire(t, nil, tokens.Policy{})
	key := make([]byte, 32)
	rand.Read(key)
	api.UI, api.SessionKey, api.Sessions, api.SessionTTL = ui.Handler(), key, e.db, ttl
	api.Activity = &audit.Activity{}
	var srv *httptest.Server
	if tls {
		srv = httptest.NewTLSServer(api.Handler())
	} else {
		srv = httptest.NewServer(api.Handler())
	}
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return &uiEnv{apiEnv: e, srv: srv}
}

// call sends a request with an optional session cookie and CSRF token.
func (e *uiEnv) call(t *testing.T, method, path, cookie, csrf, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: httpapi.SessionCookie, Value: cookie})
	}
	if csrf != "" {
		req.Header.Set(httpapi.CSRFHeader, csrf)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// signIn returns the session cookie's value and the CSRF token.
func (e *uiEnv) signIn(t *testing.T, tok string) (string, client.SessionInfo, *http.Cookie) {
	t.Helper()
	resp, body := e.call(t, "POST", httpapi.UISessionPath, "", "", `{"token":"`+tok+`"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d %s", resp.StatusCode, body)
	}
	var info client.SessionInfo
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Cookies() {
		if c.Name == httpapi.SessionCookie {
			return c.Value, info, c
		}
	}
	t.Fatal("no session cookie")
	return "", info, nil
}

// uiPath fills a relayed route's wildcards.
func uiPath(p string) string {
	p = strings.ReplaceAll(p, "{id}", "AAAAAAAAAAAAAAAA")
	return strings.ReplaceAll(p, "{source...}", "192.0.2.1")
}

// Every dashboard data call answers 401 without a session, and every
// state change answers 403 without the CSRF token (and with a wrong
// one), before anything changes.
func TestUIRoutesNeedSessionAndCSRF(t *testing.T) {
	e := newUIServer(t, false, 0)
	cookie, info, _ := e.signIn(t, e.root)
	n, changes := 0, 0
	for _, rt := range httpapi.UIRoutes() {
		if rt.Path == httpapi.UISessionPath {
			continue
		}
		n++
		p := uiPath(rt.Path)
		for _, bad := range []string{"", "not-a-sealed-cookie", cookie[:len(cookie)-4] + "AAAA"} {
			if resp, body := e.call(t, rt.Method, p, bad, info.CSRFToken, `{}`); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s with cookie %q: %d %s, want 401", rt.Method, p, bad, resp.StatusCode, body)
			}
		}
		if rt.Method == "GET" {
			continue
		}
		changes++
		for _, csrf := range []string{"", strings.Repeat("0", 64), info.CSRFToken[:63]} {
			if resp, body := e.call(t, rt.Method, p, cookie, csrf, `{}`); resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s %s with CSRF %q: %d %s, want 403", rt.Method, p, csrf, resp.StatusCode, body)
			}
		}
		// The right CSRF token from another origin is refused too.
		if resp, _ := e.call(t, rt.Method, p, cookie, info.CSRFToken, `{}`, "Origin", "https://evil.example"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s %s from another origin: %d, want 403", rt.Method, p, resp.StatusCode)
		}
	}
	if n < 15 || changes < 8 {
		t.Errorf("only %d relayed routes (%d changes): the relay lost routes", n, changes)
	}
	// Nothing was created or changed by the refused calls.
	list, err := e.client(e.root).ListTokens(context.Background(), latchkey.TokenFilter{})
	if err != nil || len(list.Tokens) != 1 {
		t.Errorf("tokens after refused calls: %v %d", err, len(list.Tokens))
	}
	// With both, a change goes through and is the signed-in token's.
	resp, body := e.call(t, "POST", "/ui/api/v1/tokens", cookie, info.CSRFToken, `{"name":"from the ui","scopes":["a:read"]}`, "Origin", e.url)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create with session and CSRF: %d %s", resp.StatusCode, body)
	}
	var created client.CreatedToken
	json.Unmarshal([]byte(body), &created)
	if created.CreatedBy != info.TokenID {
		t.Errorf("created_by %q, want the session's token %q", created.CreatedBy, info.TokenID)
	}
}

func TestUISessionCookie(t *testing.T) {
	t.Run("plain HTTP", func(t *testing.T) {
		e := newUIServer(t, false, time.Hour)
		_, info, c := e.signIn(t, e.root)
		if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" || c.Secure {
			t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/ui/, not Secure over plain HTTP", c)
		}
		if c.MaxAge <= 3500 || c.MaxAge > 3600 || time.Until(info.ExpiresAt) > time.Hour {
			t.Errorf("max-age %d, expires %s: want the one-hour TTL", c.MaxAge, info.ExpiresAt)
		}
		if strings.Contains(c.Value, e.root) || strings.Contains(c.Value, e.root[len(e.root)-43:]) {
			t.Error("the cookie holds the token in clear")
		}
	})
	t.Run("TLS", func(t *testing.T) {
		e := newUIServer(t, true, 0)
		_, _, c := e.signIn(t, e.root)
		if !c.Secure || !c.HttpOnly {
			t.Errorf("cookie over TLS %+v: want Secure and HttpOnly", c)
		}
	})
}

func TestUISessionLifecycle(t *testing.T) {
	e := newUIServer(t, false, 0)
	ctx := context.Background()
	admin := e.client(e.root)

	// A token without an admin read scope cannot sign in.
	app, err := admin.CreateToken(ctx, client.CreateRequest{Name: "app", Scopes: []string{"orders:read"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := e.call(t, "POST", httpapi.UISessionPath, "", "", `{"token":"`+app.Plaintext+`"}`); resp.StatusCode != http.StatusForbidden {
		t.Errorf("app token sign-in: %d %s", resp.StatusCode, body)
	}
	e.pipe.Flush(ctx)
	page, err := e.db.ListAudit(ctx, latchkey.AuditFilter{TokenID: app.ID, Action: latchkey.ActionAdminAuth})
	if err != nil || len(page.Events) != 1 || page.Events[0].Outcome != "INSUFFICIENT_SCOPE" || page.Events[0].Path != httpapi.UISessionPath {
		t.Errorf("the refused sign-in on record: %v %+v", err, page.Events)
	}
	for _, bad := range []string{`{"token":"lk_nope"}`, `{"token":""}`, `{}`, `{"token":"x","extra":1}`, `not json`} {
		if resp, _ := e.call(t, "POST", httpapi.UISessionPath, "", "", bad); resp.StatusCode/100 != 4 || resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("sign-in with %s: %d, cookie %q", bad, resp.StatusCode, resp.Header.Get("Set-Cookie"))
		}
	}
	// A sign-in from another site's page is refused.
	if resp, _ := e.call(t, "POST", httpapi.UISessionPath, "", "", `{"token":"`+e.root+`"}`, "Origin", "https://evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin sign-in: %d", resp.StatusCode)
	}

	// A read-only operator token signs in; its session reads but cannot write.
	ro, err := admin.CreateToken(ctx, client.CreateRequest{Name: "viewer", Scopes: []string{latchkey.ScopeTokensRead, latchkey.ScopeAuditRead}})
	if err != nil {
		t.Fatal(err)
	}
	roCookie, roInfo, _ := e.signIn(t, ro.Plaintext)
	if resp, _ := e.call(t, "GET", "/ui/api/v1/tokens", roCookie, "", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("viewer reads: %d", resp.StatusCode)
	}
	if resp, _ := e.call(t, "POST", "/ui/api/v1/tokens", roCookie, roInfo.CSRFToken, `{"name":"x","scopes":["a:read"]}`); resp.StatusCode != http.StatusForbidden {
		t.Errorf("viewer writes: %d, want 403", resp.StatusCode)
	}
	// Revoking the token behind a session ends the session at once.
	if _, err := admin.RevokeToken(ctx, ro.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := e.call(t, "GET", "/ui/api/v1/tokens", roCookie, "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("session of a revoked token: %d, want 401", resp.StatusCode)
	}
	if resp, _ := e.call(t, "GET", httpapi.UISessionPath, roCookie, "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET session of a revoked token: %d, want 401", resp.StatusCode)
	}

	// GET /ui/api/session gives the CSRF token back after a reload.
	cookie, info, _ := e.signIn(t, e.root)
	resp, body := e.call(t, "GET", httpapi.UISessionPath, cookie, "", "")
	var again client.SessionInfo
	json.Unmarshal([]byte(body), &again)
	if resp.StatusCode != http.StatusOK || again.CSRFToken != info.CSRFToken || again.TokenID != info.TokenID {
		t.Errorf("session info: %d %s", resp.StatusCode, body)
	}
	// Sign-out needs the CSRF token, then ends the session for any copy.
	if resp, _ := e.call(t, "DELETE", httpapi.UISessionPath, cookie, "", ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-out without CSRF: %d", resp.StatusCode)
	}
	resp, _ = e.call(t, "DELETE", httpapi.UISessionPath, cookie, info.CSRFToken, "")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("sign-out: %d", resp.StatusCode)
	}
	cleared := false
	for _, c := range resp.Cookies() {
		cleared = cleared || (c.Name == httpapi.SessionCookie && c.MaxAge < 0)
	}
	if !cleared {
		t.Error("sign-out did not clear the cookie")
	}
	if resp, _ := e.call(t, "GET", "/ui/api/v1/tokens", cookie, "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("copied cookie after sign-out: %d", resp.StatusCode)
	}
	// A session signed on another server (another key) is not accepted.
	other := newUIServer(t, false, 0)
	foreign, _, _ := other.signIn(t, other.root)
	if resp, _ := e.call(t, "GET", "/ui/api/v1/tokens", foreign, "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a cookie sealed under another key: %d", resp.StatusCode)
	}
}

// The session never outlives its token.
func TestUISessionBoundByTokenExpiry(t *testing.T) {
	e := newUIServer(t, false, 0)
	exp := time.Now().Add(2 * time.Second)
	tok, err := e.client(e.root).CreateToken(context.Background(), client.CreateRequest{Name: "brief", Scopes: []string{latchkey.AdminScope}, ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	cookie, info, c := e.signIn(t, tok.Plaintext)
	if info.ExpiresAt.After(exp.Add(time.Second)) || c.MaxAge > 2 {
		t.Errorf("session expires %s (max-age %d), token at %s", info.ExpiresAt, c.MaxAge, exp)
	}
	time.Sleep(time.Until(exp) + 1100*time.Millisecond)
	if resp, _ := e.call(t, "GET", "/ui/api/v1/tokens", cookie, "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after the token expired: %d", resp.StatusCode)
	}
}

// The dashboard's pages carry the security headers, and its script is
// served as a module from the binary.
func TestUIFilesAndHeaders(t *testing.T) {
	e := newUIServer(t, false, 0)
	for _, c := range []struct{ method, p string }{{"GET", "/ui/"}, {"GET", "/ui/app.js"}, {"GET", "/ui/style.css"},
		{"GET", httpapi.UISessionPath}, {"GET", "/ui/api/v1/tokens"}, {"PUT", "/ui/api/v1/tokens"}} {
		p := c.p
		resp, body := e.call(t, c.method, p, "", "", "")
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", p, csp)
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("Referrer-Policy") != "no-referrer" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: headers %v", p, h)
		}
		if p == "/ui/" && (!strings.Contains(body, `<script type="module" src="app.js">`) || strings.Contains(body, "<script>")) {
			t.Errorf("index.html: %s", body)
		}
		if p == "/ui/app.js" && !strings.HasPrefix(h.Get("Content-Type"), "text/javascript") {
			t.Errorf("app.js served as %q", h.Get("Content-Type"))
		}
	}
	resp, _ := e.call(t, "GET", "/", "", "", "")
	if resp.Request.URL.Path != "/ui/" {
		t.Errorf("/ leads to %s, want /ui/", resp.Request.URL.Path)
	}
}

// No file of the dashboard writes markup from strings, stores anything
// in web storage, or runs inline script.
func TestUISourcesStayPlain(t *testing.T) {
	files := ui.Files()
	for _, name := range []string{"index.html", "app.js", "api.js", "dom.js", "live.js", "tokens.js", "security.js", "audit.js", "style.css"} {
		b, err := fs.ReadFile(files, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		src := string(b)
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "localStorage", "sessionStorage",
			"eval(", "new Function", "http://", "https://"} {
			if strings.Contains(src, bad) && !(bad == "http://" && strings.Contains(src, "http://www.w3.org/2000/svg")) {
				t.Errorf("%s uses %s", name, bad)
			}
		}
	}
}

// An open audit stream ends once its credential no longer holds: the
// bearer token revoked, or the dashboard session signed out.
func TestStreamEndsWhenCredentialEnds(t *testing.T) {
	defer httpapi.SetStreamRecheck(50 * time.Millisecond)()
	e := newUIServer(t, false, 0)
	ctx := context.Background()
	admin := e.client(e.root)
	open := func(path, bearer, cookie string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", e.url+path, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: httpapi.SessionCookie, Value: cookie})
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("open %s: %v %v", path, err, resp)
		}
		return resp
	}
	// ends reads the stream until it closes, failing after limit.
	ends := func(resp *http.Response, limit time.Duration) string {
		t.Helper()
		done := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(resp.Body)
			done <- string(b)
		}()
		select {
		case b := <-done:
			return b
		case <-time.After(limit):
			resp.Body.Close()
			t.Fatalf("the stream was still open after %s", limit)
			return ""
		}
	}
	watcher, err := admin.CreateToken(ctx, client.CreateRequest{Name: "watcher", Scopes: []string{latchkey.ScopeAuditRead}})
	if err != nil {
		t.Fatal(err)
	}
	stream := open("/v1/audit/stream", watcher.Plaintext, "")
	// Still open while the token holds.
	time.Sleep(200 * time.Millisecond)
	if _, err := admin.RevokeToken(ctx, watcher.ID, "done watching"); err != nil {
		t.Fatal(err)
	}
	if body := ends(stream, 3*time.Second); !strings.Contains(body, "event: end") {
		t.Errorf("the stream ended without saying why: %q", body)
	}

	cookie, info, _ := e.signIn(t, e.root)
	stream = open("/ui/api/v1/audit/stream", "", cookie)
	if resp, _ := e.call(t, "DELETE", httpapi.UISessionPath, cookie, info.CSRFToken, ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("sign-out: %d", resp.StatusCode)
	}
	ends(stream, 3*time.Second)
}

// With the dashboard off (serve --ui=false) nothing of it answers.
func TestUIOff(t *testing.T) {
	e := newServer(t, nil, tokens.Policy{})
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/ui/", ""}, {"GET", "/ui/app.js", ""},
		{"POST", httpapi.UISessionPath, `{"token":"` + e.root + `"}`}, {"GET", "/ui/api/v1/tokens", ""},
	} {
		code, hdr, body := e.do(t, c.method, c.path, "", c.body)
		if code != http.StatusNotFound || hdr.Get("Set-Cookie") != "" {
			t.Errorf("%s %s with the dashboard off: %d %s", c.method, c.path, code, body)
		}
	}
}

// Records of ended sessions are pruned once their cookies have expired.
func TestPruneSessionEnds(t *testing.T) {
	e := newUIServer(t, false, time.Hour)
	ctx := context.Background()
	cookie, info, _ := e.signIn(t, e.root)
	if resp, _ := e.call(t, "DELETE", httpapi.UISessionPath, cookie, info.CSRFToken, ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("sign-out: %d", resp.StatusCode)
	}
	e.db.PutSetting(ctx, "ui_session_end:old", "1000") // expired long ago
	e.db.PutSetting(ctx, "other", "x")
	if n, err := httpapi.PruneSessionEnds(ctx, e.db, time.Now()); err != nil || n != 1 {
		t.Errorf("pruned %d (%v), want only the expired one", n, err)
	}
	// The live one still refuses its cookie.
	if resp, _ := e.call(t, "GET", "/ui/api/v1/tokens", cookie, "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("signed-out cookie after pruning: %d", resp.StatusCode)
	}
	// An hour on, it goes too.
	if n, err := httpapi.PruneSessionEnds(ctx, e.db, time.Now().Add(2*time.Hour)); err != nil || n != 1 {
		t.Errorf("pruned %d (%v) an hour on", n, err)
	}
	if _, ok, _ := e.db.GetSetting(ctx, "other"); !ok {
		t.Error("pruning took an unrelated setting")
	}
}

// Issue 12 item 11: a stream with a backlog, read slowly, still ends soon
// after its token is revoked: the credential is rechecked between pages,
// and no write blocks past the recheck interval.
func TestBackloggedStreamEndsOnRevocation(t *testing.T) {
	defer httpapi.SetStreamRecheck(100 * time.Millisecond)()
	api, e := wire(t, nil, tokens.Policy{})
	// Small socket buffers, so that what is "delivered" is what the
	// server wrote, not what the kernel holds for it.
	srv := httptest.NewUnstartedServer(api.Handler())
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	e.url = srv.URL
	ctx := context.Background()
	admin := e.client(e.root)
	watcher, err := admin.CreateToken(ctx, client.CreateRequest{Name: "watcher", Scopes: []string{latchkey.ScopeAuditRead}})
	if err != nil {
		t.Fatal(err)
	}
	backlog := make([]latchkey.AuditEvent, 20000)
	for i := range backlog {
		backlog[i] = latchkey.AuditEvent{Time: time.Now(), Node: "n", Kind: latchkey.KindVerify, Action: "verify", Outcome: "VALID",
			Path: "/v1/some/longer/path/" + strings.Repeat("x", 200)}
	}
	if err := e.db.AppendAudit(ctx, backlog); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", e.url+"/v1/audit/stream?after=0", nil)
	req.Header.Set("Authorization", "Bearer "+watcher.Plaintext)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(16 << 10)
		}
		return c, err
	}}}
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("open: %v %v", err, resp)
	}
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	read := func() (int, error) {
		time.Sleep(5 * time.Millisecond) // a slow reader: about 800 KB/s of a 6 MB backlog
		return resp.Body.Read(buf)
	}
	for got := 0; got < 100<<10; {
		n, err := read()
		if err != nil {
			t.Fatalf("stream ended early after %d bytes: %v %q", got, err, buf[:n])
		}
		got += n
	}
	if _, err := admin.RevokeToken(ctx, watcher.ID, "done watching"); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	after := 0
	for {
		n, err := read()
		after += n
		if err != nil {
			break
		}
		if time.Since(revoked) > 5*time.Second {
			t.Fatalf("a slow stream still delivers %v after its token was revoked (%d bytes since)", time.Since(revoked), after)
		}
	}
	if after > 2<<20 {
		t.Errorf("%d bytes delivered after the revocation", after)
	}
}

type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		c.(*net.TCPConn).SetWriteBuffer(16 << 10)
	}
	return c, err
}
