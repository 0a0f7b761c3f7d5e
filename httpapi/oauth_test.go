package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/tokens"
)

func form(t *testing.T, e *apiEnv, path, bearer string, v url.Values) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.url+path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// RFC 7662: active tokens get their facts, inactive ones {"active":false}
// only, the caller must authenticate, and looking spends nothing.
func TestIntrospection(t *testing.T) {
	e := newServer(t, nil, tokens.Policy{})
	cl := e.client(e.root)
	tok, _ := cl.CreateToken(context.Background(), client.CreateRequest{Subject: "svc", Scopes: []string{"a:read", "b:write"}, TTL: "1h",
		MaxUses: 1, RateLimit: &client.RateRequest{Limit: 1, Window: "1h"}})
	for range 3 {
		code, body := form(t, e, "/oauth2/introspect", e.root, url.Values{"token": {tok.Plaintext}})
		var in client.Introspection
		json.Unmarshal([]byte(body), &in)
		if code != 200 || !in.Active || in.Scope != "a:read b:write" || in.Subject != "svc" || in.JTI != tok.ID ||
			in.ClientID != tok.ID || in.TokenType != "Bearer" || in.ExpiresAt == 0 || in.IssuedAt == 0 {
			t.Fatalf("active: %d %s", code, body)
		}
	}
	// Three introspections spent neither the one use nor the rate.
	if v, _ := cl.Verify(context.Background(), client.VerifyRequest{Token: tok.Plaintext}); !v.Valid {
		t.Errorf("after introspection the token is %s", v.Code)
	}
	for _, bad := range []string{"lk_forged", tok.Plaintext} { // the second: its one use is now spent
		code, body := form(t, e, "/oauth2/introspect", e.root, url.Values{"token": {bad}})
		if code != 200 || body != `{"active":false}`+"\n" {
			t.Errorf("inactive: %d %q", code, body)
		}
	}
	if code, _ := form(t, e, "/oauth2/introspect", "", url.Values{"token": {tok.Plaintext}}); code != 401 {
		t.Errorf("without authentication: %d", code)
	}
	plain, _ := cl.CreateToken(context.Background(), client.CreateRequest{Scopes: []string{"a:read"}})
	if code, _ := form(t, e, "/oauth2/introspect", plain.Plaintext, url.Values{"token": {tok.Plaintext}}); code != 403 {
		t.Errorf("a caller without latchkey:verify: %d", code)
	}
	if code, _ := form(t, e, "/oauth2/introspect?token="+tok.Plaintext, e.root, url.Values{}); code != 400 {
		t.Errorf("token in the URL: %d", code)
	}
}

// RFC 7009: the holder revokes its token; 200 whatever the token was.
func TestOAuthRevoke(t *testing.T) {
	e := newServer(t, nil, tokens.Policy{})
	cl := e.client(e.root)
	tok, _ := cl.CreateToken(context.Background(), client.CreateRequest{Scopes: []string{"a:read"}})
	child, _ := cl.DeriveToken(context.Background(), tok.ID, client.CreateRequest{})
	if code, _ := form(t, e, "/oauth2/revoke", "", url.Values{"token": {tok.Plaintext}, "token_type_hint": {"access_token"}}); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	for _, pt := range []string{tok.Plaintext, child.Plaintext} {
		if v, _ := cl.Verify(context.Background(), client.VerifyRequest{Token: pt}); v.Code != latchkey.Revoked {
			t.Errorf("after RFC 7009 revocation: %s", v.Code)
		}
	}
	for _, tk := range []string{"lk_forged", tok.Plaintext, tok.Plaintext[:len(tok.Plaintext)-8] + "AAAAAAAA"} {
		if code, _ := form(t, e, "/oauth2/revoke", "", url.Values{"token": {tk}}); code != 200 {
			t.Errorf("revoking %.10s…: %d, want 200", tk, code)
		}
	}
	req, _ := http.NewRequest("POST", e.url+"/oauth2/revoke", strings.NewReader(`{"token":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	if resp, _ := http.DefaultClient.Do(req); resp.StatusCode != 400 {
		t.Errorf("JSON body: %d", resp.StatusCode)
	}
	got, _ := cl.GetToken(context.Background(), tok.ID)
	if got.RevokedBy != tok.ID {
		t.Errorf("revoked by %q, want the token itself", got.RevokedBy)
	}
}
