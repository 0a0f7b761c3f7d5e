package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/oauth"
)

// oauthEnv is the MCP gateway's environment with the authorization
// server on the API (issuer = the API's URL) and the gateway's public
// URL set, so that its servers are resources tokens can be issued for.
type oauthEnv struct {
	*mcpEnv
	issuer   string
	resource string // the gh server's resource indicator
	clock    atomic.Int64
}

func newOAuthEnv(t *testing.T) *oauthEnv {
	t.Helper()
	return newOAuthEnvWith(t, serveConfig{})
}

func newOAuthEnvWith(t *testing.T, base serveConfig) *oauthEnv {
	t.Helper()
	api, gw := freeAddr(t), freeAddr(t)
	base.Listen, base.GatewayListen, base.OAuthIssuer = api, gw, "http://"+api
	e := &oauthEnv{mcpEnv: newMCPEnvWith(t, "  public_url: http://"+gw, base), issuer: "http://" + api, resource: "http://" + gw + "/mcp/gh"}
	// The server's clock, moved by tests (codes expire in 60 s).
	e.ts.d.oauth.Now = func() time.Time { return time.Now().Add(time.Duration(e.clock.Load())) }
	return e
}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// form posts a form to the issuer's path, with Basic credentials when
// user is set, and decodes the JSON answer.
func (e *oauthEnv) form(t *testing.T, path string, v url.Values, user, pass string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.issuer+path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	body, _ := io.ReadAll(res.Body)
	if len(body) == 0 && res.StatusCode == 200 {
		return res.StatusCode, map[string]any{}
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("POST %s: %d %q is not JSON", path, res.StatusCode, body)
	}
	return res.StatusCode, out
}

// register registers a client (RFC 7591) and returns its id and secret.
func (e *oauthEnv) register(t *testing.T, meta map[string]any) (string, string) {
	t.Helper()
	b, _ := json.Marshal(meta)
	res, err := http.Post(e.issuer+oauth.PathRegister, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	json.NewDecoder(res.Body).Decode(&out)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("register: %d %v", res.StatusCode, out)
	}
	sec, _ := out["client_secret"].(string)
	return out["client_id"].(string), sec
}

func (e *oauthEnv) publicClient(t *testing.T, redirect string) string {
	id, _ := e.register(t, map[string]any{"client_name": "test agent", "redirect_uris": []string{redirect}, "token_endpoint_auth_method": "none"})
	return id
}

// pkce returns a verifier and its S256 challenge.
func pkce(seed string) (string, string) {
	v := strings.Repeat(seed, 1+43/len(seed))[:43]
	sum := sha256.Sum256([]byte(v))
	return v, base64.RawURLEncoding.EncodeToString(sum[:])
}

// authorizeURL is an authorization request for client.
func (e *oauthEnv) authorizeURL(clientID, redirect, challenge, scope string, extra url.Values) string {
	q := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect}, "state": {"st-1"},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"}, "resource": {e.resource}}
	if scope != "" {
		q.Set("scope", scope)
	}
	for k, v := range extra {
		if v == nil {
			q.Del(k)
		} else {
			q[k] = v
		}
	}
	return e.issuer + oauth.PathAuthorize + "?" + q.Encode()
}

// consent plays the person's browser through the dashboard's consent API:
// it follows the authorization URL to the consent page, signs in with
// person and answers. It returns where the browser is sent.
func (e *oauthEnv) consent(t *testing.T, authURL, person string, d client.OAuthDecision) *url.URL {
	t.Helper()
	id := e.requestID(t, authURL)
	cookie, csrf := e.signInConsent(t, person)
	status, out := e.decide(t, cookie, csrf, id, d)
	if status != 200 {
		t.Fatalf("decide: %d", status)
	}
	return out
}

// requestID follows an authorization URL to the consent page and returns
// the pending request's id.
func (e *oauthEnv) requestID(t *testing.T, authURL string) string {
	t.Helper()
	res, err := noRedirect.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	loc, _ := url.Parse(res.Header.Get("Location"))
	if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc.Fragment, "/consent/") {
		t.Fatalf("authorize: %d to %v, want 303 to the consent page", res.StatusCode, loc)
	}
	return strings.TrimPrefix(loc.Fragment, "/consent/")
}

// decide answers request id on the node at e.issuer, in the session
// (cookie, csrf), and returns the status and where the browser goes.
func (e *oauthEnv) decide(t *testing.T, cookie, csrf, id string, d client.OAuthDecision) (int, *url.URL) {
	t.Helper()
	b, _ := json.Marshal(d)
	req, _ := http.NewRequest("POST", e.issuer+"/ui/api/oauth/requests/"+id, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Cookie", cookie)
	req.Header.Set("X-CSRF-Token", csrf)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out client.OAuthDecided
	json.NewDecoder(res.Body).Decode(&out)
	u, _ := url.Parse(out.RedirectTo)
	return res.StatusCode, u
}

func (e *oauthEnv) signInConsent(t *testing.T, person string) (cookie, csrf string) {
	t.Helper()
	b, _ := json.Marshal(client.SignInRequest{Token: person, Purpose: "consent"})
	res, err := http.Post(e.issuer+"/ui/api/session", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var info client.SessionInfo
	json.NewDecoder(res.Body).Decode(&info)
	if res.StatusCode != 200 {
		t.Fatalf("consent sign-in: %d", res.StatusCode)
	}
	return strings.Split(res.Header.Get("Set-Cookie"), ";")[0], info.CSRFToken
}

// codePair runs the whole code flow for a fresh public client and
// returns the token answer.
func (e *oauthEnv) codePair(t *testing.T, person, scope string) (clientID string, answer map[string]any) {
	t.Helper()
	redirect := "http://127.0.0.1:9/cb"
	clientID = e.publicClient(t, redirect)
	v, c := pkce("verifier-")
	back := e.consent(t, e.authorizeURL(clientID, redirect, c, scope, nil), person, client.OAuthDecision{Approve: true})
	status, out := e.form(t, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
		"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {v}, "resource": {e.resource}}, "", "")
	if status != 200 {
		t.Fatalf("token: %d %v", status, out)
	}
	return clientID, out
}

// verifyAt asks latchkey about a token presented at resource.
func (e *oauthEnv) verifyAt(t *testing.T, tok, resource string, scopes ...string) *client.VerifyResponse {
	t.Helper()
	r, err := e.admin.Verify(context.Background(), client.VerifyRequest{Token: tok, Resource: resource, Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// recorded finds audit records of action whose reason is reason.
func (e *oauthEnv) recorded(t *testing.T, action, reason string) []latchkey.AuditEvent {
	t.Helper()
	e.ts.flush(t)
	list, err := e.admin.ListAudit(context.Background(), latchkey.AuditFilter{Action: action, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	var out []latchkey.AuditEvent
	for _, ev := range list.Events {
		if reason == "" || ev.Reason == reason {
			out = append(out, ev)
		}
	}
	return out
}

func (e *oauthEnv) person(t *testing.T, scopes ...string) *client.CreatedToken {
	t.Helper()
	tok, err := e.admin.CreateToken(context.Background(), client.CreateRequest{Name: "ana's token", Subject: "ana", Scopes: scopes, TTL: "30d"})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestOAuthMetadata(t *testing.T) {
	t.Parallel()
	e := newOAuthEnv(t)
	for _, path := range []string{oauth.PathMetadata, oauth.PathOpenIDMetadata} {
		res, err := http.Get(e.issuer + path)
		if err != nil {
			t.Fatal(err)
		}
		var m oauth.Metadata
		json.NewDecoder(res.Body).Decode(&m)
		res.Body.Close()
		if m.Issuer != e.issuer || m.TokenEndpoint != e.issuer+"/oauth2/token" || m.AuthorizationEndpoint != e.issuer+"/oauth2/authorize" ||
			m.RegistrationEndpoint != e.issuer+"/oauth2/register" || m.IntrospectionEndpoint != e.issuer+"/oauth2/introspect" {
			t.Errorf("%s: endpoints %+v", path, m)
		}
		if !slices.Equal(m.CodeChallengeMethodsSupported, []string{"S256"}) || !slices.Contains(m.GrantTypesSupported, oauth.GrantTokenExchange) ||
			slices.Contains(m.GrantTypesSupported, "implicit") || slices.Contains(m.GrantTypesSupported, "password") ||
			!slices.Contains(m.TokenEndpointAuthMethodsSupported, "client_secret_basic") || !slices.Contains(m.ScopesSupported, "mcp.gh.tools.*:call") ||
			!m.ClientIDMetadataDocumentSupported {
			t.Errorf("%s: %+v", path, m)
		}
	}
	// The MCP gateway's protected resource metadata names this server.
	res, err := http.Get(strings.Replace(e.resource, "/mcp/gh", "/.well-known/oauth-protected-resource/mcp/gh", 1))
	if err != nil {
		t.Fatal(err)
	}
	var prm struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
	}
	json.NewDecoder(res.Body).Decode(&prm)
	res.Body.Close()
	if prm.Resource != e.resource || !slices.Equal(prm.AuthorizationServers, []string{e.issuer}) {
		t.Errorf("protected resource metadata %+v", prm)
	}
}

// The Must-show's first item: golang.org/x/oauth2 doing authorization
// code + PKCE, with the person consenting in headless Chromium. The token
// is a child of the person's, narrowed to what they kept, bound to the
// resource; revoking the person's token revokes it at once.
func TestOAuthCodeFlowInBrowser(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	e := newOAuthEnv(t)
	person := e.person(t, "mcp.gh.tools.echo:call", "mcp.gh.tools.search:call")
	codes := make(chan url.Values, 1)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case codes <- r.URL.Query():
		default:
		}
		io.WriteString(w, "<!doctype html><title>done</title><p id=done>You may close this window.</p>")
	}))
	t.Cleanup(cb.Close)
	redirect := cb.URL + "/callback"
	clientID := e.publicClient(t, redirect)
	conf := &oauth2.Config{ClientID: clientID, RedirectURL: redirect,
		Endpoint: oauth2.Endpoint{AuthURL: e.issuer + oauth.PathAuthorize, TokenURL: e.issuer + oauth.PathToken, AuthStyle: oauth2.AuthStyleInParams},
		Scopes:   []string{"mcp.gh.tools.echo:call", "mcp.gh.tools.search:call", "mcp.gh.tools.delete_repo:call"}}
	verifier := oauth2.GenerateVerifier()
	resource := oauth2.SetAuthURLParam("resource", e.resource)
	authURL := conf.AuthCodeURL("state-xyz", oauth2.S256ChallengeOption(verifier), resource)

	b.do(t, "open the authorization URL", chromedp.Navigate(authURL), chromedp.WaitVisible("#token"))
	if title := b.eval(t, `document.querySelector('#signin h1').innerText`); !strings.Contains(title, "authorization request") {
		t.Errorf("sign-in page title %q", title)
	}
	b.do(t, "sign in with the person's token", chromedp.SendKeys("#token", person.Plaintext), chromedp.Click("#signin button[type=submit]"),
		chromedp.WaitVisible("#consent"))
	page := b.eval(t, `document.querySelector('#consent').innerText`)
	for _, want := range []string{"test agent", e.resource, "mcp.gh.tools.delete_repo:call", "127.0.0.1"} {
		if !strings.Contains(page, want) {
			t.Errorf("the consent page lacks %q:\n%s", want, page)
		}
	}
	if dis := b.eval(t, `String(document.querySelector('input[value="mcp.gh.tools.delete_repo:call"]').disabled)`); dis != "true" {
		t.Errorf("a scope the person does not hold can be approved (disabled=%s)", dis)
	}
	b.screenshot(t, "oauth-consent")
	b.do(t, "narrow and approve", chromedp.Click(`input[value="mcp.gh.tools.search:call"]`), chromedp.Click("#consent-approve"))
	var q url.Values
	select {
	case q = <-codes:
	case <-time.After(15 * time.Second):
		t.Fatal("the browser never reached the client's redirect URI")
	}
	if q.Get("state") != "state-xyz" || q.Get("iss") != e.issuer || q.Get("code") == "" {
		t.Fatalf("the redirect carried %v", q)
	}
	for _, pr := range b.problems() {
		t.Error(pr)
	}
	ctx := context.Background()
	tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier), resource)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if tok.RefreshToken == "" || tok.TokenType != "Bearer" || time.Until(tok.Expiry) > time.Hour+time.Minute || time.Until(tok.Expiry) < 50*time.Minute {
		t.Errorf("token answer %+v", tok)
	}
	vr := e.verifyAt(t, tok.AccessToken, e.resource)
	if !vr.Valid || !slices.Equal(vr.Scopes, []string{"mcp.gh.tools.echo:call"}) || vr.Subject != "ana" {
		t.Fatalf("the access token verifies as %+v", vr)
	}
	child, err := e.admin.GetToken(ctx, vr.TokenID)
	if err != nil {
		t.Fatal(err)
	}
	if child.ParentID != person.ID || !slices.Equal(child.Audience, []string{e.resource}) || !strings.Contains(string(child.Meta), clientID) {
		t.Errorf("the access token: parent %s audience %v meta %s; want parent %s, audience %s, the client in meta", child.ParentID, child.Audience, child.Meta, person.ID, e.resource)
	}
	// Bound to its resource: nowhere else, not at the API either.
	if r := e.verifyAt(t, tok.AccessToken, ""); r.Valid || r.Code != latchkey.Forbidden {
		t.Errorf("without its resource: %+v, want FORBIDDEN", r)
	}
	if _, err := (&client.Client{BaseURL: e.issuer, Token: tok.AccessToken}).ListTokens(ctx, latchkey.TokenFilter{}); err == nil {
		t.Error("the delegated token called the admin API")
	}
	// It works at the MCP gateway, for what was kept only.
	cs := e.connect(t, "gh", tok.AccessToken)
	if names := toolNames(t, cs); !slices.Equal(names, []string{"echo"}) {
		t.Errorf("tools = %v, want [echo]", names)
	}
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "delegated"}}); err != nil || text(res) != "delegated" {
		t.Fatalf("echo: %v %v", res, err)
	}
	// The refresh goes through x/oauth2's token source.
	old := *tok
	tok.Expiry = time.Now().Add(-time.Minute)
	fresh, err := conf.TokenSource(ctx, tok).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if fresh.AccessToken == old.AccessToken || fresh.RefreshToken == old.RefreshToken {
		t.Error("the refresh did not replace both tokens")
	}
	// Revoking the person's token revokes the agent's at once.
	if _, err := e.admin.RevokeToken(ctx, person.ID, "person left"); err != nil {
		t.Fatal(err)
	}
	for _, at := range []string{old.AccessToken, fresh.AccessToken} {
		if r := e.verifyAt(t, at, e.resource); r.Code != latchkey.Revoked {
			t.Errorf("after revoking the person's token, the agent's is %s", r.Code)
		}
	}
	// And the agent's open MCP session ends with it.
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "after"}}); err == nil {
		t.Error("the agent's MCP session outlived the person's token")
	}
	if recs := e.recorded(t, latchkey.ActionOAuthConsent, ""); len(recs) != 1 || recs[0].Actor != person.ID {
		t.Errorf("consent records %+v, want one by the person", recs)
	}
	// An administrator sees the client on the Agents page and revokes it.
	// (The person's session ended with their token.)
	b.do(t, "the dashboard asks to sign in again", chromedp.Navigate(e.issuer+"/ui/#/live"), chromedp.WaitVisible("#token"))
	b.do(t, "an administrator signs in", chromedp.SendKeys("#token", e.ts.root), chromedp.Click("#signin button[type=submit]"),
		chromedp.WaitVisible("#stream-status"), chromedp.Navigate(e.issuer+"/ui/#/agents"), chromedp.WaitVisible("#oauth-clients tr[data-client]"))
	if row := b.eval(t, `document.querySelector('#oauth-clients tr[data-client]').innerText`); !strings.Contains(row, clientID) || !strings.Contains(row, "test agent") {
		t.Errorf("the clients table shows %q", row)
	}
	b.do(t, "revoke the client", chromedp.Click(`#oauth-clients button[data-action="revoke-client"]`), chromedp.WaitVisible("dialog.confirm button[data-confirm]"),
		chromedp.Click("dialog.confirm button[data-confirm]"))
	b.waitFor(t, "the client shown revoked", `(document.querySelector('#oauth-clients')?.innerText || '').includes('revoked')`, 5*time.Second)
	b.screenshot(t, "oauth-clients")
	if len(e.recorded(t, latchkey.ActionOAuthClientRevoke, "")) != 1 {
		t.Error("the dashboard's revocation of the client is not on record")
	}
	for _, pr := range b.problems() {
		t.Error(pr)
	}
}

// Refresh tokens are replaced on every use; a replaced one presented
// again revokes the whole grant (and the detector sees a revoked token
// reused).
func TestOAuthRefreshReuseRevokesGrant(t *testing.T) {
	t.Parallel()
	e := newOAuthEnv(t)
	person := e.person(t, "mcp.gh.tools.*:call")
	clientID, first := e.codePair(t, person.Plaintext, "mcp.gh.tools.echo:call")
	refresh := func(rt string) (int, map[string]any) {
		return e.form(t, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {clientID}}, "", "")
	}
	// A refresh token is not an access token.
	if r := e.verifyAt(t, first["refresh_token"].(string), e.resource); r.Valid {
		t.Fatal("the refresh token opened the resource")
	}
	status, second := refresh(first["refresh_token"].(string))
	if status != 200 {
		t.Fatalf("refresh: %d %v", status, second)
	}
	if r := e.verifyAt(t, second["access_token"].(string), e.resource); !r.Valid {
		t.Fatalf("the refreshed access token: %+v", r)
	}
	status, out := refresh(first["refresh_token"].(string))
	if status != 400 || out["error"] != "invalid_grant" {
		t.Fatalf("a reused refresh token: %d %v, want 400 invalid_grant", status, out)
	}
	for _, k := range []string{"access_token", "refresh_token"} {
		for _, ans := range []map[string]any{first, second} {
			if r := e.verifyAt(t, ans[k].(string), e.resource); r.Code != latchkey.Revoked && r.Code != latchkey.Forbidden {
				t.Errorf("after the reuse, %s is %s", k, r.Code)
			}
		}
	}
	if r := e.verifyAt(t, second["access_token"].(string), e.resource); r.Code != latchkey.Revoked {
		t.Errorf("the grant's newest access token is %s, want REVOKED", r.Code)
	}
	if len(e.recorded(t, latchkey.ActionOAuthReuse, "refresh_token_reused")) != 1 {
		t.Error("the reuse is not on record")
	}
	if len(e.recorded(t, latchkey.ActionOAuthToken, "refresh_reused")) != 1 {
		t.Error("the refused refresh is not on record")
	}
	waitFor(t, func() bool { return len(e.recorded(t, latchkey.ActionTokenReuse, "")) > 0 })
}

// RFC 6749 §4.1.2: a code used twice fails and revokes what it issued.
func TestOAuthCodeReuse(t *testing.T) {
	t.Parallel()
	e := newOAuthEnv(t)
	person := e.person(t, "mcp.gh.tools.echo:call")
	redirect := "http://127.0.0.1:9/cb"
	clientID := e.publicClient(t, redirect)
	v, c := pkce("reuse-")
	back := e.consent(t, e.authorizeURL(clientID, redirect, c, "", nil), person.Plaintext, client.OAuthDecision{Approve: true})
	req := url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")}, "redirect_uri": {redirect},
		"client_id": {clientID}, "code_verifier": {v}}
	status, first := e.form(t, oauth.PathToken, req, "", "")
	if status != 200 {
		t.Fatalf("first use: %d %v", status, first)
	}
	status, out := e.form(t, oauth.PathToken, req, "", "")
	if status != 400 || out["error"] != "invalid_grant" {
		t.Fatalf("second use: %d %v, want invalid_grant", status, out)
	}
	if r := e.verifyAt(t, first["access_token"].(string), e.resource); r.Code != latchkey.Revoked {
		t.Errorf("the first use's access token is %s after the code's reuse, want REVOKED", r.Code)
	}
	if len(e.recorded(t, latchkey.ActionOAuthReuse, "code_reused")) != 1 || len(e.recorded(t, latchkey.ActionOAuthToken, "code_reused")) != 1 {
		t.Error("the code's reuse is not on record")
	}
}

// Every refusal the issue names, with the standard error, and on record.
func TestOAuthRefusals(t *testing.T) {
	t.Parallel()
	e := newOAuthEnv(t)
	person := e.person(t, "mcp.gh.tools.echo:call")
	redirect := "http://127.0.0.1:9/cb"
	clientID := e.publicClient(t, redirect)
	v, c := pkce("refusals-")

	// Refusals shown on latchkey's own page: the redirect URI is not
	// trusted yet, so nothing is sent to it.
	tlsDoc := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"client_id":"https://%s/client.json","client_name":"inside","redirect_uris":["%s"]}`, r.Host, redirect)
	}))
	t.Cleanup(tlsDoc.Close)
	private := tlsDoc.URL + "/client.json"
	pages := []struct {
		name, url, code, reason string
	}{
		{"wrong redirect URI", e.authorizeURL(clientID, "http://127.0.0.1:9/cb/evil", c, "", nil), "invalid_request", "redirect_uri_mismatch"},
		{"redirect URI by prefix", e.authorizeURL(clientID, "http://127.0.0.1:9/c", c, "", nil), "invalid_request", "redirect_uri_mismatch"},
		{"unknown client", e.authorizeURL("lkc_nobody", redirect, c, "", nil), "invalid_client", "unknown_client"},
		{"CIMD document on a private address", e.authorizeURL(private, redirect, c, "", nil), "invalid_client", "unknown_client"},
	}
	for _, p := range pages {
		res, err := noRedirect.Get(p.url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 400 && res.StatusCode != 401 || res.Header.Get("Location") != "" || !strings.Contains(string(body), p.code) {
			t.Errorf("%s: %d Location=%q %q, want an error page with %s", p.name, res.StatusCode, res.Header.Get("Location"), body, p.code)
		}
		if p.name == "CIMD document on a private address" && !strings.Contains(string(body), "private") {
			t.Errorf("%s: the page does not say why: %s", p.name, body)
		}
	}
	// Refusals sent back to the client, with its state.
	back := []struct {
		name  string
		extra url.Values
		code  string
	}{
		{"missing PKCE", url.Values{"code_challenge": nil, "code_challenge_method": nil}, "invalid_request"},
		{"plain PKCE", url.Values{"code_challenge_method": {"plain"}, "code_challenge": {v}}, "invalid_request"},
		{"no state", url.Values{"state": nil}, "invalid_request"},
		{"implicit", url.Values{"response_type": {"token"}}, "unsupported_response_type"},
		{"no resource", url.Values{"resource": nil}, "invalid_target"},
		{"a resource latchkey does not serve", url.Values{"resource": {"https://elsewhere.example/mcp"}}, "invalid_target"},
		{"latchkey's own scopes", url.Values{"scope": {"latchkey:admin"}}, "invalid_scope"},
	}
	for _, bc := range back {
		res, err := noRedirect.Get(e.authorizeURL(clientID, redirect, c, "", bc.extra))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		loc, _ := url.Parse(res.Header.Get("Location"))
		if res.StatusCode != 303 || !strings.HasPrefix(loc.String(), redirect) || loc.Query().Get("error") != bc.code {
			t.Errorf("%s: %d to %v, want a redirect with error=%s", bc.name, res.StatusCode, loc, bc.code)
		}
		if bc.name != "no state" && loc.Query().Get("state") != "st-1" {
			t.Errorf("%s: the state was not returned", bc.name)
		}
	}
	// Refusals at the token endpoint.
	code := func() string {
		return e.consent(t, e.authorizeURL(clientID, redirect, c, "", nil), person.Plaintext, client.OAuthDecision{Approve: true}).Query().Get("code")
	}
	tokenReq := func(mod url.Values) url.Values {
		q := url.Values{"grant_type": {"authorization_code"}, "code": {code()}, "redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {v}}
		for k, vs := range mod {
			q[k] = vs
		}
		return q
	}
	tokens := []struct {
		name, code, reason string
		req                func() url.Values
	}{
		{"wrong code_verifier", "invalid_grant", "pkce_mismatch", func() url.Values { w, _ := pkce("other-"); return tokenReq(url.Values{"code_verifier": {w}}) }},
		{"no code_verifier", "invalid_grant", "no_verifier", func() url.Values { return tokenReq(url.Values{"code_verifier": {""}}) }},
		{"redirect URI differs", "invalid_grant", "redirect_uri_mismatch", func() url.Values { return tokenReq(url.Values{"redirect_uri": {redirect + "x"}}) }},
		{"resource mismatch", "invalid_target", "resource_mismatch", func() url.Values {
			return tokenReq(url.Values{"resource": {strings.Replace(e.resource, "/gh", "/local", 1)}})
		}},
		{"expired code", "invalid_grant", "code_expired", func() url.Values {
			q := tokenReq(nil)
			e.clock.Add(int64(61 * time.Second))
			return q
		}},
		{"password grant", "unsupported_grant_type", "unsupported_grant_type", func() url.Values {
			return url.Values{"grant_type": {"password"}, "client_id": {clientID}, "username": {"ana"}, "password": {"x"}}
		}},
		{"another client", "invalid_grant", "client_mismatch", func() url.Values {
			other := e.publicClient(t, redirect)
			return tokenReq(url.Values{"client_id": {other}})
		}},
		{"a confidential client without its secret", "invalid_client", "client_auth", func() url.Values {
			id, _ := e.register(t, map[string]any{"redirect_uris": []string{redirect}})
			return url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "resource": {e.resource}}
		}},
	}
	for _, tc := range tokens {
		status, out := e.form(t, oauth.PathToken, tc.req(), "", "")
		if status < 400 || out["error"] != tc.code {
			t.Errorf("%s: %d %v, want %s", tc.name, status, out, tc.code)
		}
		if len(e.recorded(t, latchkey.ActionOAuthToken, tc.reason)) == 0 {
			t.Errorf("%s: no oauth.token record with reason %s", tc.name, tc.reason)
		}
	}
	e.clock.Store(0)
	for _, reason := range []string{"redirect_uri_mismatch", "unknown_client", "no_pkce", "pkce_method", "resource", "no_state", "scope"} {
		if len(e.recorded(t, latchkey.ActionOAuthAuthorize, reason)) == 0 {
			t.Errorf("no oauth.authorize record with reason %s", reason)
		}
	}
	// A denial goes back as access_denied, and is on record.
	denied := e.consent(t, e.authorizeURL(clientID, redirect, c, "", nil), person.Plaintext, client.OAuthDecision{Approve: false})
	if denied.Query().Get("error") != "access_denied" || denied.Query().Get("state") != "st-1" {
		t.Errorf("denial: %v", denied)
	}
	if recs := e.recorded(t, latchkey.ActionOAuthDeny, ""); len(recs) != 1 || recs[0].Actor != person.ID {
		t.Errorf("denial records %+v", recs)
	}
	// Registration refuses what OAuth 2.1 forbids.
	for name, meta := range map[string]string{
		"implicit grant":      `{"redirect_uris":["https://app.example/cb"],"grant_types":["implicit"]}`,
		"http redirect":       `{"redirect_uris":["http://app.example/cb"]}`,
		"fragment":            `{"redirect_uris":["https://app.example/cb#x"]}`,
		"javascript redirect": `{"redirect_uris":["javascript:alert(1)"]}`,
		"no redirect":         `{"client_name":"x"}`,
		"not JSON":            `{"redirect_uris":`,
	} {
		res, err := http.Post(e.issuer+oauth.PathRegister, "application/json", strings.NewReader(meta))
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		json.NewDecoder(res.Body).Decode(&out)
		res.Body.Close()
		if res.StatusCode != 400 || (out["error"] != "invalid_client_metadata" && out["error"] != "invalid_redirect_uri") {
			t.Errorf("register %s: %d %v", name, res.StatusCode, out)
		}
	}
}

// A Client ID Metadata Document client: fetched over TLS (here from
// loopback, which the test allows), then listed and revocable.
func TestOAuthClientMetadataDocument(t *testing.T) {
	t.Parallel()
	e := newOAuthEnv(t)
	redirect := "http://127.0.0.1:9/cb"
	var fetches atomic.Int32
	doc := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"client_id":"https://%s/client.json","client_name":"Doc Agent","redirect_uris":["%s"],"token_endpoint_auth_method":"none","software_id":"ignored"}`, r.Host, redirect)
	}))
	t.Cleanup(doc.Close)
	pool := x509.NewCertPool()
	pool.AddCert(doc.Certificate())
	e.ts.d.oauth.Metadata = &oauth.Fetcher{AllowPrivate: true, RootCAs: pool}
	clientID := doc.URL + "/client.json"
	person := e.person(t, "mcp.gh.tools.echo:call")
	v, c := pkce("document-")
	back := e.consent(t, e.authorizeURL(clientID, redirect, c, "mcp.gh.tools.echo:call", nil), person.Plaintext, client.OAuthDecision{Approve: true})
	status, out := e.form(t, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
		"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {v}}, "", "")
	if status != 200 {
		t.Fatalf("token: %d %v", status, out)
	}
	list, err := e.admin.ListOAuthClients(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Clients) != 1 || list.Clients[0].ClientID != clientID || list.Clients[0].Kind != oauth.KindDocument || list.Clients[0].ClientName != "Doc Agent" {
		t.Fatalf("clients %+v", list.Clients)
	}
	if code, out, errs := cli(t, e.ts.url, e.ts.root, "oauth", "clients"); code != 0 || !strings.Contains(out, clientID) || !strings.Contains(out, "metadata_document") {
		t.Errorf("latchkey oauth clients: %d %q %q", code, out, errs)
	}
	code, outJSON, errs := cli(t, e.ts.url, e.ts.root, "oauth", "revoke", clientID, "--json")
	var revoked client.OAuthClientRevoked
	if code != 0 || json.Unmarshal([]byte(outJSON), &revoked) != nil {
		t.Fatalf("latchkey oauth revoke: %d %q %q", code, outJSON, errs)
	}
	if revoked.TokensRevoked != 2 {
		t.Errorf("revoking the client revoked %d tokens, want its access and refresh tokens", revoked.TokensRevoked)
	}
	if r := e.verifyAt(t, out["access_token"].(string), e.resource); r.Code != latchkey.Revoked {
		t.Errorf("the revoked client's access token is %s", r.Code)
	}
	res, err := noRedirect.Get(e.authorizeURL(clientID, redirect, c, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 && res.StatusCode != 400 || res.Header.Get("Location") != "" {
		t.Errorf("a revoked client authorizing: %d", res.StatusCode)
	}
	if len(e.recorded(t, latchkey.ActionOAuthClientRevoke, "")) != 1 {
		t.Error("the client's revocation is not on record")
	}
}

// Client credentials with x/oauth2's clientcredentials, in both client
// authentication styles; the client secret is a latchkey token.
func TestOAuthClientCredentials(t *testing.T) {
	t.Parallel()
	e := newOAuthEnv(t)
	machine := e.token(t, "mcp.gh.tools.echo:call", "mcp.gh.tools.search:call")
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams} {
		cc := &clientcredentials.Config{ClientID: machine.ID, ClientSecret: machine.Plaintext, TokenURL: e.issuer + oauth.PathToken,
			Scopes: []string{"mcp.gh.tools.echo:call"}, EndpointParams: url.Values{"resource": {e.resource}}, AuthStyle: style}
		tok, err := cc.Token(context.Background())
		if err != nil {
			t.Fatalf("style %d: %v", style, err)
		}
		vr := e.verifyAt(t, tok.AccessToken, e.resource)
		if !vr.Valid || !slices.Equal(vr.Scopes, []string{"mcp.gh.tools.echo:call"}) {
			t.Fatalf("style %d: %+v", style, vr)
		}
		child, _ := e.admin.GetToken(context.Background(), vr.TokenID)
		if child.ParentID != machine.ID {
			t.Errorf("the client-credentials token's parent is %q, want the client's token", child.ParentID)
		}
		if code, out, _ := cli(t, e.ts.url, e.ts.root, "token", "show", vr.TokenID); code != 0 || !strings.Contains(out, "audience") || !strings.Contains(out, e.resource) {
			t.Errorf("latchkey token show does not show the audience: %q", out)
		}
		cs := e.connect(t, "gh", tok.AccessToken)
		if res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "machine"}}); err != nil || text(res) != "machine" {
			t.Errorf("echo: %v %v", res, err)
		}
	}
	// A wrong secret is invalid_client, 401 with the Basic challenge.
	wrong := machine.Plaintext[:len(machine.Plaintext)-1] + "x"
	if wrong == machine.Plaintext { // one secret in 62 ends in x already
		wrong = machine.Plaintext[:len(machine.Plaintext)-1] + "y"
	}
	status, out := e.form(t, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}, "resource": {e.resource}}, machine.ID, wrong)
	if status != 401 || out["error"] != "invalid_client" {
		t.Errorf("a wrong secret: %d %v", status, out)
	}
	// Asking for more than the client holds gives nothing more.
	status, out = e.form(t, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}, "resource": {e.resource}, "scope": {"mcp.gh.tools.delete_repo:call"}}, machine.ID, machine.Plaintext)
	if status != 400 || out["error"] != "invalid_scope" {
		t.Errorf("a scope the client lacks: %d %v", status, out)
	}
}

// RFC 8693: an agent hands a sub-agent a narrower token; the act chain
// is in the child's metadata and the child is revoked with the parent.
func TestOAuthTokenExchange(t *testing.T) {
	t.Parallel()
	e := newOAuthEnv(t)
	person := e.person(t, "mcp.gh.tools.echo:call", "mcp.gh.tools.search:call")
	_, pair := e.codePair(t, person.Plaintext, "mcp.gh.tools.echo:call mcp.gh.tools.search:call")
	agentTok := pair["access_token"].(string)
	sub := e.token(t, "mcp.gh.tools.noop:call") // the sub-agent's own credential, as actor
	status, out := e.form(t, oauth.PathToken, url.Values{"grant_type": {oauth.GrantTokenExchange}, "subject_token": {agentTok},
		"subject_token_type": {oauth.TokenTypeAccess}, "actor_token": {sub.Plaintext}, "actor_token_type": {oauth.TokenTypeAccess},
		"resource": {e.resource}, "scope": {"mcp.gh.tools.search:call"}}, "", "")
	if status != 200 || out["issued_token_type"] != oauth.TokenTypeAccess {
		t.Fatalf("exchange: %d %v", status, out)
	}
	vr := e.verifyAt(t, out["access_token"].(string), e.resource)
	if !vr.Valid || !slices.Equal(vr.Scopes, []string{"mcp.gh.tools.search:call"}) || vr.Subject != "ana" {
		t.Fatalf("the exchanged token: %+v", vr)
	}
	agent := e.verifyAt(t, agentTok, e.resource)
	child, _ := e.admin.GetToken(context.Background(), vr.TokenID)
	if child.ParentID != agent.TokenID || !strings.Contains(string(child.Meta), `"act":{`) || !strings.Contains(string(child.Meta), sub.ID) {
		t.Errorf("the exchanged token: parent %s (want %s), meta %s", child.ParentID, agent.TokenID, child.Meta)
	}
	exchanged := out["access_token"].(string)
	// Broader than the subject token: refused.
	status, out = e.form(t, oauth.PathToken, url.Values{"grant_type": {oauth.GrantTokenExchange}, "subject_token": {agentTok},
		"subject_token_type": {oauth.TokenTypeAccess}, "resource": {strings.Replace(e.resource, "/gh", "/local", 1)}}, "", "")
	if status != 400 {
		t.Errorf("exchange for a resource outside the subject token's audience: %d %v", status, out)
	}
	if _, err := e.admin.RevokeToken(context.Background(), person.ID, "gone"); err != nil {
		t.Fatal(err)
	}
	if r := e.verifyAt(t, exchanged, e.resource); r.Code != latchkey.Revoked {
		t.Errorf("the sub-agent's token is %s after the person's revocation, want REVOKED", r.Code)
	}
}

// The agent's scopes never exceed the parent's, nor what was asked or
// approved: random requests through the whole flow.
func TestOAuthScopesNeverExceedParent(t *testing.T) {
	t.Parallel()
	e := newOAuthEnv(t)
	pool := []string{"mcp.gh.tools.echo:call", "mcp.gh.tools.search:call", "mcp.gh.tools.*:call", "mcp.gh.resources:read",
		"mcp.gh.prompts:get", "mcp.*.tools.echo:call", "mcp.gh.tools.noop:call", "mcp.local.tools.echo:call"}
	redirect := "http://127.0.0.1:9/cb"
	clientID := e.publicClient(t, redirect)
	rnd := uint64(0x9e3779b97f4a7c15)
	pick := func() []string {
		var out []string
		for _, s := range pool {
			rnd ^= rnd << 13
			rnd ^= rnd >> 7
			rnd ^= rnd << 17
			if rnd%3 == 0 {
				out = append(out, s)
			}
		}
		if len(out) == 0 {
			out = pool[:1]
		}
		return out
	}
	n := 60
	if testing.Short() {
		n = 15
	}
	issued := 0
	for i := range n {
		parentScopes, asked, approved := pick(), pick(), pick()
		parent := e.person(t, parentScopes...)
		v, c := pkce(fmt.Sprintf("prop-%d-", i))
		id := e.requestID(t, e.authorizeURL(clientID, redirect, c, strings.Join(asked, " "), nil))
		cookie, csrf := e.signInConsent(t, parent.Plaintext)
		status, back := e.decide(t, cookie, csrf, id, client.OAuthDecision{Approve: true, Scopes: approved})
		if status == 400 {
			continue // nothing in common to delegate: refused, nothing issued
		}
		status, out := e.form(t, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
			"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {v}}, "", "")
		if status != 200 {
			t.Fatalf("case %d: token %d %v", i, status, out)
		}
		issued++
		got := strings.Fields(out["scope"].(string))
		for _, s := range got {
			if !latchkey.ScopesCover(parentScopes, s) || !latchkey.ScopesCover(asked, s) || !latchkey.ScopesCover(approved, s) {
				t.Errorf("case %d: parent %v asked %v approved %v: issued %q, beyond one of them", i, parentScopes, asked, approved, s)
			}
		}
		for _, s := range pool {
			if latchkey.ScopesCover(parentScopes, s) && latchkey.ScopesCover(asked, s) && latchkey.ScopesCover(approved, s) && !latchkey.ScopesCover(got, s) {
				t.Errorf("case %d: parent %v asked %v approved %v: %q is in all three but not issued (%v)", i, parentScopes, asked, approved, s, got)
			}
		}
	}
	if issued < n/4 {
		t.Errorf("only %d of %d random cases issued a token: the property was barely exercised", issued, n)
	}
}

func nodeClients(t *testing.T) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		requireService(t, "node")
		t.Skip("node is not installed")
	}
	dir, _ = filepath.Abs("../../mcpgate/testdata/tsclient")
	var installErr error
	tsOnce.Do(func() { installErr = npmCI(dir) })
	if installErr != nil {
		requireService(t, "the npm registry")
		t.Skip(installErr)
	}
	return node, dir
}

// runOAuthScript runs mcpgate/testdata/tsclient/oauth.mjs and returns
// what it printed.
func runOAuthScript(t *testing.T, node, dir string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{"oauth.mjs"}, args...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node oauth.mjs %s: %v\n%s\n%s", args[0], err, out, stderr.String())
	}
	return out
}

// The TypeScript MCP SDK's own OAuth client: discovery from the gateway's
// 401, dynamic registration, code + PKCE, a tool call with the token.
func TestOAuthTypeScriptMCPClient(t *testing.T) {
	t.Parallel()
	node, dir := nodeClients(t)
	e := newOAuthEnv(t)
	person := e.person(t, "mcp.gh.tools.echo:call")
	out := runOAuthScript(t, node, dir, "mcp", e.resource, person.Plaintext)
	var got struct {
		Registered  string   `json:"registered"`
		Iss         string   `json:"iss"`
		Tools       []string `json:"tools"`
		Echo        string   `json:"echo"`
		AccessToken string   `json:"access_token"`
		Refresh     bool     `json:"refresh"`
		Consent     struct {
			Resources []string `json:"resources"`
		} `json:"consent"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &got); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if !strings.HasPrefix(got.Registered, "lkc_") || got.Iss != e.issuer || !slices.Equal(got.Consent.Resources, []string{e.resource}) ||
		!slices.Equal(got.Tools, []string{"echo"}) || got.Echo != "via oauth" || !got.Refresh {
		t.Errorf("the TypeScript SDK saw %+v", got)
	}
	if r := e.verifyAt(t, got.AccessToken, e.resource); !r.Valid || r.Subject != "ana" {
		t.Errorf("its token: %+v", r)
	}
	if len(e.recorded(t, latchkey.ActionOAuthRegister, "")) != 1 {
		t.Error("the registration is not on record")
	}
}

// openid-client (npm) introspects and revokes with client_secret_basic:
// the resource server's client secret is its latchkey token.
func TestOAuthOpenIDClientIntrospectRevoke(t *testing.T) {
	t.Parallel()
	node, dir := nodeClients(t)
	e := newOAuthEnv(t)
	person := e.person(t, "mcp.gh.tools.echo:call")
	_, pair := e.codePair(t, person.Plaintext, "mcp.gh.tools.echo:call")
	rs := e.token(t, latchkey.ScopeVerify)
	out := runOAuthScript(t, node, dir, "oidc", e.issuer, rs.ID, rs.Plaintext, pair["access_token"].(string))
	ctx := context.Background()
	var got struct {
		Before struct {
			Active   bool     `json:"active"`
			Scope    string   `json:"scope"`
			Sub      string   `json:"sub"`
			Aud      []string `json:"aud"`
			ClientID string   `json:"client_id"`
		} `json:"before"`
		After struct {
			Active bool `json:"active"`
		} `json:"after"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &got); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if !got.Before.Active || got.Before.Scope != "mcp.gh.tools.echo:call" || got.Before.Sub != "ana" || !slices.Equal(got.Before.Aud, []string{e.resource}) ||
		!strings.HasPrefix(got.Before.ClientID, "lkc_") || got.After.Active {
		t.Errorf("openid-client saw %s", out)
	}
	// Without client authentication, introspection is refused in RFC 6749 §5.2 form.
	status, body := e.form(t, oauth.PathIntrospect, url.Values{"token": {rs.Plaintext}}, "", "")
	if status != 401 || body["error"] != "invalid_client" {
		t.Errorf("unauthenticated introspection: %d %v", status, body)
	}
	status, body = e.form(t, oauth.PathIntrospect, url.Values{"token": {rs.Plaintext}}, rs.ID, "lk_wrong")
	if status != 401 || body["error"] != "invalid_client" {
		t.Errorf("introspection with a wrong secret: %d %v", status, body)
	}
	// A CIDR-bound token, with the end client's address passed on.
	bound, err := e.admin.CreateToken(ctx, client.CreateRequest{Subject: "svc", Scopes: []string{"x:read"}, AllowedCIDRs: []string{"10.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{"10.1.2.3": true, "192.0.2.1": false} {
		_, body := e.form(t, oauth.PathIntrospect, url.Values{"token": {bound.Plaintext}, "client_ip": {ip}}, rs.ID, rs.Plaintext)
		if body["active"] != want {
			t.Errorf("introspecting a 10/8 token for %s: %v", ip, body)
		}
	}
}

// No secret of the OAuth flows (the person's token, codes, verifiers,
// access and refresh tokens, client secrets) appears in any log line,
// audit record, error body or data file, including canaries pasted into
// every parameter the authorization server reads.
func TestOAuthCanaryNeverLeaks(t *testing.T) {
	t.Parallel()
	e := newOAuthEnv(t)
	ctx := context.Background()
	person := e.person(t, "mcp.gh.tools.echo:call")
	canary := e.person(t, "x:read").Plaintext
	secrets := []string{person.Plaintext, canary}
	redirect := "http://127.0.0.1:9/cb"
	clientID := e.publicClient(t, redirect)
	v, c := pkce("canary-")
	back := e.consent(t, e.authorizeURL(clientID, redirect, c, "", nil), person.Plaintext, client.OAuthDecision{Approve: true})
	code := back.Query().Get("code")
	_, pair := e.form(t, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
		"client_id": {clientID}, "code_verifier": {v}}, "", "")
	access, refresh := pair["access_token"].(string), pair["refresh_token"].(string)
	_, pair2 := e.form(t, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "client_id": {clientID}}, "", "")
	var bodies []string
	add := func(_ int, m map[string]any) { b, _ := json.Marshal(m); bodies = append(bodies, string(b)) }
	add(e.form(t, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "client_id": {clientID}}, "", "")) // reuse
	confID, confSecret := e.register(t, map[string]any{"redirect_uris": []string{redirect}, "client_name": "confidential"})
	secrets = append(secrets, code, v, access, refresh, pair2["access_token"].(string), pair2["refresh_token"].(string), confSecret)
	// Canaries in every parameter.
	for _, q := range []url.Values{
		{"grant_type": {canary}}, {"grant_type": {"authorization_code"}, "code": {canary}, "client_id": {clientID}},
		{"grant_type": {"refresh_token"}, "refresh_token": {canary}, "client_id": {clientID}},
		{"grant_type": {"client_credentials"}, "client_id": {canary}, "client_secret": {canary}, "resource": {e.resource}},
		{"grant_type": {oauth.GrantTokenExchange}, "subject_token": {canary}, "subject_token_type": {oauth.TokenTypeAccess}, "resource": {"https://" + canary + ".example/x"}},
		{"grant_type": {"client_credentials"}, "resource": {e.resource}, "scope": {canary}},
	} {
		add(e.form(t, oauth.PathToken, q, "", ""))
	}
	add(e.form(t, oauth.PathToken, url.Values{"grant_type": {"client_credentials"}}, confID, canary))
	add(e.form(t, oauth.PathIntrospect, url.Values{"token": {canary}}, canary, canary))
	add(e.form(t, oauth.PathRevoke, url.Values{"token": {canary}, "client_id": {canary}}, "", ""))
	for _, extra := range []url.Values{{"scope": {canary}}, {"state": {canary}}, {"resource": {"https://x.example/" + canary}}, {"redirect_uri": {redirect + "?" + canary}},
		{"client_id": {canary}}, {"client_id": {"https://" + canary + ".invalid/c.json"}}} {
		res, err := noRedirect.Get(e.authorizeURL(clientID, redirect, c, "", extra))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		// The client's own redirect may carry what it sent; latchkey's page and records may not.
		bodies = append(bodies, string(b))
	}
	for _, meta := range []string{`{"redirect_uris":["https://a.example/cb"],"client_name":"` + canary + `"}`, `{"redirect_uris":["https://a.example/` + canary + `"]}`} {
		res, err := http.Post(e.issuer+oauth.PathRegister, "application/json", strings.NewReader(meta))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		bodies = append(bodies, string(b))
	}
	e.ts.flush(t)
	page, err := e.admin.ListAudit(ctx, latchkey.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	auditJSON, _ := json.Marshal(page)
	settings, _ := e.ts.d.db.SettingsWithPrefix(ctx, "oauth.")
	settingsJSON, _ := json.Marshal(settings)
	if !strings.Contains(string(auditJSON), latchkey.ActionOAuthToken) || !strings.Contains(string(settingsJSON), "oauth.code/") || len(bodies) < 15 {
		t.Fatalf("the flows did not run as planned: %d answers, settings %.200s", len(bodies), settingsJSON)
	}
	e.ts.stop(t)
	files, _ := filepath.Glob(filepath.Join(e.ts.dir, "*"))
	for i, s := range secrets {
		where := map[string]string{"audit records": string(auditJSON), "the OAuth settings": string(settingsJSON), "logs": e.ts.out.String()}
		for j, b := range bodies {
			where[fmt.Sprintf("answer %d", j)] = b
		}
		for _, f := range files {
			if filepath.Base(f) == "root-token" || filepath.Base(f) == "routes.yaml" {
				continue
			}
			b, _ := os.ReadFile(f)
			where["data file "+filepath.Base(f)] = string(b)
		}
		for name, text := range where {
			if strings.Contains(text, s) {
				t.Errorf("secret %d (%.8s…) appears in %s", i, s, name)
			}
		}
	}
}

// The attacker who reads our docs: a page on another site posting an
// approval, a request answered twice, a guessed request id, a refresh
// token used as an access token or exchanged, a client lying about its
// redirect. Each is refused and changes nothing.
func TestOAuthConsentAttacks(t *testing.T) {
	t.Parallel()
	e := newOAuthEnv(t)
	person := e.person(t, "mcp.gh.tools.echo:call")
	redirect := "http://127.0.0.1:9/cb"
	clientID := e.publicClient(t, redirect)
	_, c := pkce("attack-")
	res, err := noRedirect.Get(e.authorizeURL(clientID, redirect, c, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	loc, _ := url.Parse(res.Header.Get("Location"))
	id := strings.TrimPrefix(loc.Fragment, "/consent/")
	cookie, csrf := e.signInConsent(t, person.Plaintext)
	decide := func(hdr map[string]string, body string) int {
		req, _ := http.NewRequest("POST", e.issuer+"/ui/api/oauth/requests/"+id, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	approve := `{"approve":true}`
	for name, hdr := range map[string]map[string]string{
		"no session":         {"X-CSRF-Token": csrf},
		"no CSRF token":      {"Cookie": cookie},
		"wrong CSRF token":   {"Cookie": cookie, "X-CSRF-Token": strings.Repeat("0", len(csrf))},
		"another site":       {"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": "https://evil.example"},
		"a bearer token too": {"Authorization": "Bearer " + person.Plaintext},
	} {
		if code := decide(hdr, approve); code != 401 && code != 403 {
			t.Errorf("%s: %d, want 401 or 403", name, code)
		}
	}
	if code := decide(map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf}, `{"approve":true,"extra":1}`); code != 400 {
		t.Errorf("an unknown field: %d, want 400", code)
	}
	ok := map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf}
	if code := decide(ok, approve); code != 200 {
		t.Fatalf("the real approval: %d", code)
	}
	if code := decide(ok, approve); code != 404 && code != 409 {
		t.Errorf("answering twice: %d, want 404 or 409", code)
	}
	id = "AAAAAAAAAAAAAAAAAAAAAA"
	if code := decide(ok, approve); code != 404 {
		t.Errorf("a guessed request id: %d, want 404", code)
	}
	// The consent page's frame and script rules are the dashboard's.
	res, err = http.Get(e.issuer + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("the consent page's CSP %q does not forbid framing", csp)
	}
	// Tokens of a grant used where they do not belong.
	_, pair := e.codePair(t, person.Plaintext, "mcp.gh.tools.echo:call")
	rt := pair["refresh_token"].(string)
	status, out := e.form(t, oauth.PathToken, url.Values{"grant_type": {oauth.GrantTokenExchange}, "subject_token": {rt},
		"subject_token_type": {oauth.TokenTypeAccess}, "resource": {e.resource}}, "", "")
	if status != 400 || out["error"] != "invalid_grant" {
		t.Errorf("exchanging a refresh token: %d %v", status, out)
	}
	rawReq, _ := http.NewRequest("POST", e.gw+"/mcp/gh", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`))
	rawReq.Header.Set("Authorization", "Bearer "+rt)
	rawReq.Header.Set("Content-Type", "application/json")
	rawReq.Header.Set("Accept", "application/json, text/event-stream")
	res, err = http.DefaultClient.Do(rawReq)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 403 && res.StatusCode != 401 {
		t.Errorf("a refresh token at the MCP gateway: %d", res.StatusCode)
	}
	// The access token cannot refresh, nor authenticate a client.
	status, out = e.form(t, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {pair["access_token"].(string)}, "client_id": {clientID}}, "", "")
	if status != 400 || out["error"] != "invalid_grant" {
		t.Errorf("refreshing with an access token: %d %v", status, out)
	}
	// A client registering someone else's redirect URI still cannot use
	// another client's code.
	thief := e.publicClient(t, redirect)
	v2, c2 := pkce("victim-")
	back := e.consent(t, e.authorizeURL(clientID, redirect, c2, "", nil), person.Plaintext, client.OAuthDecision{Approve: true})
	status, out = e.form(t, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
		"redirect_uri": {redirect}, "client_id": {thief}, "code_verifier": {v2}}, "", "")
	if status != 400 || out["error"] != "invalid_grant" {
		t.Errorf("a code redeemed by another client: %d %v", status, out)
	}
}

// Two refreshes racing with one refresh token: one wins, and the other
// is a reuse, which revokes the grant (OAuth 2.1 §4.3.1: the server
// cannot tell a retry from a thief).
func TestOAuthConcurrentRefresh(t *testing.T) {
	t.Parallel()
	e := newOAuthEnv(t)
	person := e.person(t, "mcp.gh.tools.echo:call")
	clientID, pair := e.codePair(t, person.Plaintext, "mcp.gh.tools.echo:call")
	rt := pair["refresh_token"].(string)
	const n = 8
	codes := make(chan int, n)
	for range n {
		go func() {
			q := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {clientID}}
			req, _ := http.NewRequest("POST", e.issuer+oauth.PathToken, strings.NewReader(q.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			res.Body.Close()
			codes <- res.StatusCode
		}()
	}
	won := 0
	for range n {
		switch c := <-codes; c {
		case 200:
			won++
		case 400:
		default:
			t.Errorf("a racing refresh answered %d", c)
		}
	}
	if won > 1 {
		t.Errorf("%d refreshes won with one refresh token", won)
	}
	if r := e.verifyAt(t, pair["access_token"].(string), e.resource); r.Code != latchkey.Revoked && won < n {
		t.Errorf("after the race, the grant's first access token is %s, want REVOKED", r.Code)
	}
}

// Every step on any node: on PostgreSQL, the request is made on node A,
// answered on node B, the code redeemed on A, refreshed on B, and the
// replaced refresh token reused on A revokes the grant on both.
func TestOAuthAcrossNodes(t *testing.T) {
	t.Parallel()
	dsn := pgSchema(t)
	e := newOAuthEnvWith(t, serveConfig{Database: dsn, ServerKey: strings.Repeat("6d", 32), Poll: 200 * time.Millisecond})
	cfgB := e.cfg
	cfgB.Listen, cfgB.GatewayListen = "", "127.0.0.1:0"
	nodeB := startServerWith(t, t.TempDir(), cfgB)
	waitFor(t, func() bool { return follower(nodeB.d).Listening() })
	a, b := e.issuer, nodeB.url
	person := e.person(t, "mcp.gh.tools.echo:call")
	redirect := "http://127.0.0.1:9/cb"
	clientID := e.publicClient(t, redirect)
	v, c := pkce("nodes-")
	id := e.requestID(t, e.authorizeURL(clientID, redirect, c, "", nil)) // node A
	e.issuer = b                                                         // node B answers it
	cookie, csrf := e.signInConsent(t, person.Plaintext)
	status, back := e.decide(t, cookie, csrf, id, client.OAuthDecision{Approve: true})
	if status != 200 {
		t.Fatalf("consent on node B: %d", status)
	}
	e.issuer = a
	status, pair := e.form(t, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
		"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {v}}, "", "")
	if status != 200 {
		t.Fatalf("the code on node A: %d %v", status, pair)
	}
	e.issuer = b
	status, again := e.form(t, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
		"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {v}}, "", "")
	if status != 400 || again["error"] != "invalid_grant" {
		t.Fatalf("the same code on node B: %d %v, want invalid_grant", status, again)
	}
	if r := e.verifyAt(t, pair["access_token"].(string), e.resource); r.Code != latchkey.Revoked {
		t.Errorf("after the code's reuse on node B, its token is %s on node A", r.Code)
	}
	// Another grant, refreshed across nodes.
	e.issuer = a
	cid, pair := e.codePair(t, person.Plaintext, "")
	refresh := func(node, rt string) (int, map[string]any) {
		e.issuer = node
		defer func() { e.issuer = a }()
		return e.form(t, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {cid}}, "", "")
	}
	status, second := refresh(b, pair["refresh_token"].(string))
	if status != 200 {
		t.Fatalf("refresh on node B: %d %v", status, second)
	}
	status, out := refresh(a, pair["refresh_token"].(string))
	if status != 400 || out["error"] != "invalid_grant" {
		t.Fatalf("the replaced refresh token on node A: %d %v", status, out)
	}
	bClient := &client.Client{BaseURL: b, Token: e.ts.root}
	deadline := time.Now().Add(2 * time.Second)
	for {
		r, err := bClient.Verify(context.Background(), client.VerifyRequest{Token: second["access_token"].(string), Resource: e.resource})
		if err != nil {
			t.Fatal(err)
		}
		if r.Code == latchkey.Revoked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node B still says %s for the revoked grant's token", r.Code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkOAuthIssue: issuing a short-lived child token for a machine
// client through the token endpoint (client_credentials: client
// authentication, scope intersection, derive, audit) against the same
// derive through the admin API (POST /v1/tokens/{id}/derive with the
// token itself), in the same run; docs/benchmarks.md gives the ratio.
func BenchmarkOAuthIssue(b *testing.B) {
	api, gw := freeAddrB(b), freeAddrB(b)
	dir := b.TempDir()
	conf := filepath.Join(dir, "routes.yaml")
	os.WriteFile(conf, []byte("mcp:\n  public_url: http://"+gw+"\n  servers:\n    - name: gh\n      url: http://127.0.0.1:1/mcp\n"), 0o600)
	out := &syncBuffer{}
	d, err := startDaemon(context.Background(), serveConfig{Listen: api, DataDir: dir, GatewayConfig: conf, GatewayListen: gw, OAuthIssuer: "http://" + api},
		slog.New(slog.NewTextHandler(out, nil)), out)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Shutdown(ctx)
	})
	rootB, _ := os.ReadFile(filepath.Join(dir, "root-token"))
	admin := &client.Client{BaseURL: "http://" + api, Token: strings.TrimSpace(string(rootB))}
	machine, err := admin.CreateToken(context.Background(), client.CreateRequest{Subject: "svc", Scopes: []string{"mcp.gh.tools.echo:call"}})
	if err != nil {
		b.Fatal(err)
	}
	resource := "http://" + gw + "/mcp/gh"
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	b.Run("derive-api", func(b *testing.B) {
		self := &client.Client{BaseURL: "http://" + api, Token: machine.Plaintext, HTTP: hc}
		for b.Loop() {
			if _, err := self.DeriveToken(context.Background(), machine.ID, client.CreateRequest{TTL: "1h", Audience: []string{resource}}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
	})
	b.Run("client-credentials", func(b *testing.B) {
		form := url.Values{"grant_type": {"client_credentials"}, "resource": {resource}}.Encode()
		for b.Loop() {
			req, _ := http.NewRequest("POST", "http://"+api+oauth.PathToken, strings.NewReader(form))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(machine.ID, machine.Plaintext)
			res, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Fatalf("token endpoint: %d", res.StatusCode)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
	})
}

// latchkey token create --audience binds a token to a resource; a bad one
// is refused with the field named.
func TestTokenCreateAudienceCLI(t *testing.T) {
	t.Parallel()
	ts := startServerWith(t, t.TempDir(), serveConfig{})
	code, out, errs := cli(t, ts.url, ts.root, "token", "create", "--scope", "a:read", "--audience", "https://api.example.com/a", "--json")
	var created client.CreatedToken
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil {
		t.Fatalf("token create --audience: %d %q %q", code, out, errs)
	}
	tok, err := ts.client(ts.root).GetToken(context.Background(), created.ID)
	if err != nil || !slices.Equal(tok.Audience, []string{"https://api.example.com/a"}) {
		t.Errorf("the token's audience: %v %v", tok, err)
	}
	if code, _, errs := cli(t, ts.url, ts.root, "token", "create", "--scope", "a:read", "--audience", "api.example.com"); code == 0 || !strings.Contains(errs, "absolute URL") {
		t.Errorf("a relative audience: %d %q", code, errs)
	}
}
