package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

// call sends one API request with a bearer token and returns the status
// and body.
func call(t *testing.T, method, url, tok string, body any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
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

// tenants makes keyspaces acme and beta on the server at url (as root),
// an administrator of acme (a default-keyspace token holding
// latchkey:keyspaces.acme:admin), and a token in each keyspace.
type tenants struct {
	url, root      string
	acmeAdmin      string
	acmeTok, betaT *client.CreatedToken
}

func makeTenants(t *testing.T, url, root string) *tenants {
	t.Helper()
	rc := &client.Client{BaseURL: url, Token: root}
	for _, k := range []latchkey.Keyspace{{Name: "acme", Prefix: "acme_live"}, {Name: "beta", Prefix: "beta_live"}} {
		if _, err := rc.PutKeyspace(ctx, k); err != nil {
			t.Fatalf("create keyspace %s: %v", k.Name, err)
		}
	}
	adm, err := rc.CreateToken(ctx, client.CreateRequest{Name: "acme admin", Subject: "acme-ops", Scopes: []string{latchkey.KeyspaceScope("acme", "admin")}})
	if err != nil {
		t.Fatal(err)
	}
	tn := &tenants{url: url, root: root, acmeAdmin: adm.Plaintext}
	ac := &client.Client{BaseURL: url, Token: adm.Plaintext}
	if tn.acmeTok, err = ac.CreateToken(ctx, client.CreateRequest{Keyspace: "acme", Subject: "acme-cust", Scopes: []string{"orders:read"}}); err != nil {
		t.Fatalf("the acme admin issues in acme: %v", err)
	}
	if !strings.HasPrefix(tn.acmeTok.Plaintext, "acme_live_") || tn.acmeTok.Keyspace != "acme" {
		t.Fatalf("an acme token is %s… in %q", tn.acmeTok.Plaintext[:10], tn.acmeTok.Keyspace)
	}
	if tn.betaT, err = rc.CreateToken(ctx, client.CreateRequest{Keyspace: "beta", Subject: "beta-cust", Scopes: []string{"orders:read"}, Tags: []string{"t"}}); err != nil {
		t.Fatal(err)
	}
	return tn
}

// An administrator of one keyspace is refused everything about another:
// every admin endpoint, on both stores. The same calls on its own
// keyspace succeed, so the refusals are not an accident of the setup.
func TestKeyspaceIsolation(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, t.TempDir())
		isolation(t, makeTenants(t, ts.url, ts.root), ts.url, ts.root, func() { ts.flush(t) })
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		cls := cluster(t, 2, serveConfig{Poll: 200 * time.Millisecond})
		// Set up on one node, attack through the other.
		tn := makeTenants(t, cls[0].BaseURL, cls[0].Token)
		isolation(t, tn, cls[1].BaseURL, cls[1].Token, func() {})
	})
}

func isolation(t *testing.T, tn *tenants, url, root string, flush func()) {
	adm := tn.acmeAdmin
	beta, acme := tn.betaT.ID, tn.acmeTok.ID
	// Verifications of both tokens, so the audit log has records of each.
	for _, pt := range []string{tn.betaT.Plaintext, tn.acmeTok.Plaintext} {
		ks := strings.SplitN(pt, "_live_", 2)[0] // acme_live_… is acme's
		if v, err := (&client.Client{BaseURL: url, Token: root}).Verify(ctx, client.VerifyRequest{Token: pt, Keyspace: ks}); err != nil || !v.Valid {
			t.Fatalf("root verifies its %s token in its keyspace: %+v %v", ks, v, err)
		}
	}
	flush()
	refused := []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"show", "GET", "/v1/tokens/" + beta, nil, 404},
		{"update", "PATCH", "/v1/tokens/" + beta, map[string]any{"name": "x"}, 404},
		{"revoke", "POST", "/v1/tokens/" + beta + "/revoke", nil, 404},
		{"suspend", "POST", "/v1/tokens/" + beta + "/suspend", nil, 404},
		{"resume", "POST", "/v1/tokens/" + beta + "/resume", nil, 404},
		{"rotate", "POST", "/v1/tokens/" + beta + "/rotate", nil, 404},
		{"derive", "POST", "/v1/tokens/" + beta + "/derive", map[string]any{"scopes": []string{"orders:read"}}, 404},
		{"list", "GET", "/v1/tokens?keyspace=beta", nil, 403},
		{"create", "POST", "/v1/tokens", map[string]any{"keyspace": "beta", "scopes": []string{"orders:read"}}, 403},
		{"bulk revoke", "POST", "/v1/revocations", map[string]any{"keyspace": "beta", "tag": "t"}, 403},
		{"audit", "GET", "/v1/audit?keyspace=beta", nil, 403},
		{"stream", "GET", "/v1/audit/stream?keyspace=beta", nil, 403},
		{"verify in beta", "POST", "/v1/verify", map[string]any{"token": tn.betaT.Plaintext, "keyspace": "beta"}, 403},
		{"settings", "GET", "/v1/keyspaces/beta", nil, 404},
		{"change settings", "PUT", "/v1/keyspaces/beta", map[string]any{"prefix": "beta_live"}, 404},
		{"delete keyspace", "DELETE", "/v1/keyspaces/beta", nil, 403},
		{"create keyspace", "PUT", "/v1/keyspaces/gamma", map[string]any{"prefix": "gamma"}, 404},
		{"roles", "GET", "/v1/keyspaces/beta/roles", nil, 404},
		{"role", "GET", "/v1/keyspaces/beta/roles/r", nil, 404},
		{"set role", "PUT", "/v1/keyspaces/beta/roles/r", map[string]any{"scopes": []string{"orders:*"}}, 404},
		{"delete role", "DELETE", "/v1/keyspaces/beta/roles/r", nil, 404},
		{"identities", "GET", "/v1/keyspaces/beta/identities", nil, 404},
		{"set identity", "PUT", "/v1/keyspaces/beta/identities/beta-cust", map[string]any{"max_uses": 1}, 404},
		{"blocks", "GET", "/v1/blocks", nil, 403},
		{"unblock", "DELETE", "/v1/blocks/192.0.2.1", nil, 403},
		{"sessions", "GET", "/v1/sessions", nil, 403},
		{"audit chain", "GET", "/v1/audit/verify", nil, 403},
		{"audit summary", "GET", "/v1/audit/summary", nil, 403},
		{"held calls", "GET", "/v1/mcp/holds", nil, 403},
		{"oauth clients", "GET", "/v1/oauth/clients", nil, 403},
	}
	for _, c := range refused {
		status, body := call(t, c.method, url+c.path, adm, c.body)
		if status != c.want {
			t.Errorf("acme's admin: %s (%s %s) = %d %s, want %d", c.name, c.method, c.path, status, body, c.want)
		}
	}
	// Nothing of beta's changed.
	rc := &client.Client{BaseURL: url, Token: root}
	if got, err := rc.GetToken(ctx, beta); err != nil || got.Status != latchkey.StatusActive || got.Name != "" {
		t.Errorf("beta's token after the attempts: %+v %v", got, err)
	}
	// Bulk revocation and listing without a keyspace are acme's only.
	status, body := call(t, "POST", url+"/v1/revocations", adm, map[string]any{"subject": "beta-cust"})
	if status != 200 || !strings.Contains(body, `"revoked":0`) {
		t.Errorf("a bulk revocation by beta's subject from acme's admin = %d %s", status, body)
	}
	ac := &client.Client{BaseURL: url, Token: adm}
	list, err := ac.ListTokens(ctx, latchkey.TokenFilter{})
	if err != nil || len(list.Tokens) != 1 || list.Tokens[0].ID != acme {
		t.Errorf("acme's admin lists %v, %v; want acme's one token", list, err)
	}
	// Searching and counting do not reach across either: beta's token, by
	// its id, its subject or its tag, is neither found nor counted (a
	// search alone is counted from the search index, which every keyspace
	// shares), in any order.
	for _, f := range []latchkey.TokenFilter{{Search: beta}, {Search: "beta cust"}, {Search: "t", Sort: latchkey.SortExpires}, {Search: "cust"}} {
		f.Count = true
		list, err := ac.ListTokens(ctx, f)
		if err != nil {
			t.Fatalf("acme's admin searches %q: %v", f.Search, err)
		}
		for _, tk := range list.Tokens {
			if tk.ID == beta {
				t.Errorf("acme's admin finds beta's token searching %q", f.Search)
			}
		}
		if want := int64(len(list.Tokens)); list.Total == nil || *list.Total != want {
			t.Errorf("acme's admin searching %q counts %v, sees %d", f.Search, list.Total, want)
		}
	}
	evs, err := ac.ListAudit(ctx, latchkey.AuditFilter{})
	if err != nil || len(evs.Events) == 0 {
		t.Fatalf("acme's admin reads no audit records: %v", err)
	}
	for _, ev := range evs.Events {
		if ev.TokenID == beta {
			t.Errorf("acme's admin sees beta's record %+v", ev)
		}
		if ev.TokenID != acme && ev.Subject != latchkey.KeyspaceSubject("acme") {
			t.Errorf("acme's admin sees a record that is not acme's: %+v", ev)
		}
	}
	// A verification through acme's admin is acme's: beta's token does not
	// exist there, and the record says why.
	v, err := ac.Verify(ctx, client.VerifyRequest{Token: tn.betaT.Plaintext})
	if err != nil || v.Code != latchkey.NotFound {
		t.Errorf("acme's admin verifying beta's token = %+v %v, want NOT_FOUND", v, err)
	}
	// The default door knows neither: NOT_FOUND, keyspace_mismatch in the log.
	if v, err := rc.Verify(ctx, client.VerifyRequest{Token: tn.acmeTok.Plaintext}); err != nil || v.Code != latchkey.NotFound {
		t.Errorf("an acme token at the default keyspace's door = %+v %v, want NOT_FOUND", v, err)
	}
	if v, err := rc.Verify(ctx, client.VerifyRequest{Token: tn.acmeTok.Plaintext, Keyspace: "beta"}); err != nil || v.Code != latchkey.NotFound {
		t.Errorf("an acme token at beta's door = %+v %v, want NOT_FOUND", v, err)
	}
	flush()
	waitFor(t, func() bool {
		evs, err := rc.ListAudit(ctx, latchkey.AuditFilter{TokenID: acme, Outcome: "NOT_FOUND"})
		if err != nil {
			return false
		}
		n := 0
		for _, e := range evs.Events {
			if e.Reason == "keyspace_mismatch" {
				n++
			}
		}
		return n >= 2
	})
	// The audit stream of acme's admin carries acme's records only.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(sctx, "GET", url+"/v1/audit/stream", nil)
	req.Header.Set("Authorization", "Bearer "+adm)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("acme's admin opens the stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	go func() {
		time.Sleep(200 * time.Millisecond)
		rc.Verify(ctx, client.VerifyRequest{Token: tn.betaT.Plaintext, Keyspace: "beta"})
		rc.Verify(ctx, client.VerifyRequest{Token: tn.acmeTok.Plaintext, Keyspace: "acme"})
	}()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev latchkey.AuditEvent
		json.Unmarshal([]byte(line), &ev)
		if ev.TokenID == beta {
			t.Fatalf("acme's admin's stream carried beta's record %+v", ev)
		}
		if ev.TokenID == acme && ev.Kind == latchkey.KindVerify {
			break // acme's came; beta's, made first, did not
		}
	}
	if sctx.Err() != nil {
		t.Error("acme's record never came on its admin's stream")
	}
	// Its own keyspace answers: the refusals above were not an accident.
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/tokens/" + acme}, {"GET", "/v1/keyspaces/acme"}, {"GET", "/v1/keyspaces/acme/roles"},
		{"GET", "/v1/audit?keyspace=acme"}, {"GET", "/v1/tokens?keyspace=acme"},
	} {
		if status, body := call(t, c.method, url+c.path, adm, nil); status != 200 {
			t.Errorf("acme's admin on acme: %s %s = %d %s", c.method, c.path, status, body)
		}
	}
	if status, body := call(t, "PUT", url+"/v1/keyspaces/acme/roles/reader", adm, map[string]any{"scopes": []string{"orders:read"}}); status != 200 {
		t.Errorf("acme's admin sets an acme role: %d %s", status, body)
	}
	// A token of acme itself holding latchkey's global scopes is confined
	// to acme as well.
	inner, err := ac.CreateToken(ctx, client.CreateRequest{Keyspace: "acme", Scopes: []string{latchkey.KeyspaceScope("acme", "tokens:read")}})
	if err != nil {
		t.Fatal(err)
	}
	if status, _ := call(t, "GET", url+"/v1/tokens/"+beta, inner.Plaintext, nil); status != 404 {
		t.Errorf("an acme token reading beta's token = %d, want 404", status)
	}
	if _, err := ac.CreateToken(ctx, client.CreateRequest{Keyspace: "acme", Scopes: []string{latchkey.AdminScope}}); err == nil {
		t.Error("acme's admin minted latchkey:admin")
	}
	if _, err := ac.CreateToken(ctx, client.CreateRequest{Keyspace: "acme", Scopes: []string{latchkey.KeyspaceScope("beta", "admin")}}); err == nil {
		t.Error("acme's admin minted an acme token holding beta's admin scope")
	}
}

// A role change reaches a token on another node within the revocation
// bound: the token's scopes follow the role at its next verification.
func TestRoleChangeAcrossNodes(t *testing.T) {
	t.Parallel()
	cls := cluster(t, 2, serveConfig{Poll: 200 * time.Millisecond})
	a, b := cls[0], cls[1]
	if _, err := a.PutKeyspace(ctx, latchkey.Keyspace{Name: "acme", Prefix: "acme"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutRole(ctx, latchkey.Role{Keyspace: "acme", Name: "billing-reader", Scopes: []string{"invoices:read"}}); err != nil {
		t.Fatal(err)
	}
	tok, err := a.CreateToken(ctx, client.CreateRequest{Keyspace: "acme", Roles: []string{"billing-reader"}})
	if err != nil {
		t.Fatal(err)
	}
	check := func(scope string) latchkey.Code {
		v, err := b.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, Keyspace: "acme", Scopes: []string{scope}})
		if err != nil {
			t.Fatal(err)
		}
		return v.Code
	}
	var lags []time.Duration
	scopes := []string{"invoices:read", "customers:read"}
	for i := 0; i < 10; i++ {
		have, next := scopes[i%2], scopes[(i+1)%2]
		waitFor(t, func() bool { return check(have) == latchkey.Valid }) // cached on node b
		start := time.Now()
		if _, err := a.PutRole(ctx, latchkey.Role{Keyspace: "acme", Name: "billing-reader", Scopes: []string{next}}); err != nil {
			t.Fatal(err)
		}
		for check(next) != latchkey.Valid || check(have) != latchkey.InsufficientScope {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("node b still serves the old role 5s after the change")
			}
			time.Sleep(2 * time.Millisecond)
		}
		lags = append(lags, time.Since(start))
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	t.Logf("role change seen on the other node: median %v, max %v over %d changes (bound: notification, else the %v poll)",
		lags[len(lags)/2], lags[len(lags)-1], len(lags), 200*time.Millisecond)
	// The change is audited with who made it, before and after.
	evs, err := a.ListAudit(ctx, latchkey.AuditFilter{Action: latchkey.ActionRolePut})
	if err != nil || len(evs.Events) < 10 || evs.Events[0].Actor == "" || !strings.Contains(string(evs.Events[0].Detail), "previous_scopes") {
		t.Errorf("role changes in the audit log: %+v %v", evs, err)
	}
}

// Four tokens of one subject share its identity's limit across two nodes:
// 1,000 concurrent attempts against a limit of 100 make exactly 100 VALID.
func TestIdentitySharedLimitExact(t *testing.T) {
	t.Parallel()
	url, prefix := redisURL(t)
	cls := cluster(t, 2, serveConfig{Redis: url, RedisPrefix: prefix, Poll: 200 * time.Millisecond})
	a := cls[0]
	if _, err := a.PutKeyspace(ctx, latchkey.Keyspace{Name: "shop", Prefix: "shop"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutIdentity(ctx, latchkey.Identity{Keyspace: "shop", Subject: "customer-42",
		RateLimit: &latchkey.RateLimit{Limit: 100, Window: latchkey.Duration(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	var toks []string
	for i := 0; i < 4; i++ {
		tok, err := a.CreateToken(ctx, client.CreateRequest{Keyspace: "shop", Subject: "customer-42", Scopes: []string{"orders:read"}})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok.Plaintext)
	}
	// Another subject's token is not held back by customer-42's limit.
	other, err := a.CreateToken(ctx, client.CreateRequest{Keyspace: "shop", Subject: "customer-7"})
	if err != nil {
		t.Fatal(err)
	}
	var valid, limited atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			v, err := cls[i%2].Verify(ctx, client.VerifyRequest{Token: toks[i%4], Keyspace: "shop"})
			switch {
			case err != nil:
				t.Error(err)
			case v.Valid:
				valid.Add(1)
			case v.Code == latchkey.RateLimited:
				limited.Add(1)
			default:
				t.Errorf("attempt %d: %s", i, v.Code)
			}
		}(i)
	}
	wg.Wait()
	if valid.Load() != 100 || limited.Load() != 900 {
		t.Errorf("1,000 attempts with 4 tokens on 2 nodes against a shared 100: %d VALID, %d RATE_LIMITED; want exactly 100 and 900",
			valid.Load(), limited.Load())
	}
	if v, err := cls[1].Verify(ctx, client.VerifyRequest{Token: other.Plaintext, Keyspace: "shop"}); err != nil || !v.Valid {
		t.Errorf("another subject's token: %+v %v", v, err)
	}
}

// The usage budget of an identity is shared too, and exact on one node.
func TestIdentitySharedBudget(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	rc := ts.client(ts.root)
	if _, err := rc.PutIdentity(ctx, latchkey.Identity{Subject: "cust", MaxUses: 7}); err != nil {
		t.Fatal(err)
	}
	var toks []string
	for i := 0; i < 3; i++ {
		tok, err := rc.CreateToken(ctx, client.CreateRequest{Subject: "cust"})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok.Plaintext)
	}
	valid := 0
	for i := 0; i < 12; i++ {
		v, err := rc.Verify(ctx, client.VerifyRequest{Token: toks[i%3]})
		if err != nil {
			t.Fatal(err)
		}
		if v.Valid {
			valid++
		} else if v.Code != latchkey.UsageExceeded {
			t.Fatalf("attempt %d: %s", i, v.Code)
		}
	}
	if valid != 7 {
		t.Errorf("three tokens of a subject with a budget of 7: %d VALID", valid)
	}
	list, err := rc.ListIdentities(ctx, latchkey.DefaultKeyspace)
	if err != nil || len(list.Identities) != 1 || list.Identities[0].Uses != 7 {
		t.Errorf("identity list: %+v %v", list, err)
	}
	code, out, _ := cli(t, ts.url, ts.root, "identity", "list")
	if code != 0 || !strings.Contains(out, "cust") || !strings.Contains(out, "7") {
		t.Errorf("identity list: %d %s", code, out)
	}
}

// A data directory made by latchkey before keyspaces (commit bda6435,
// testdata/upgrade-main) opens under this version: its tokens verify as
// before, sit in the default keyspace, and its audit chain still holds.
func TestUpgradeFromMain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, f := range []string{"latchkey.db", "server.key"} {
		b, err := os.ReadFile(filepath.Join("testdata", "upgrade-main", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(filepath.Join("testdata", "upgrade-main", "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var enc map[string]string
	if err := json.Unmarshal(raw, &enc); err != nil {
		t.Fatal(err)
	}
	tok := map[string]string{}
	for k, v := range enc {
		if b, err := base64.StdEncoding.DecodeString(v); err == nil {
			tok[k] = string(b)
		}
	}
	// The root token's file, as the old server left it.
	if err := os.WriteFile(filepath.Join(dir, "root-token"), []byte(tok["root"]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startServerWith(t, dir, serveConfig{Listen: "127.0.0.1:0"})
	rc := ts.client(tok["root"])
	for _, c := range []struct {
		name  string
		scope string
		want  latchkey.Code
	}{{"plain", "invoices:read", latchkey.Valid}, {"limited", "deploy:prod", latchkey.Valid}, {"derived", "deploy:staging", latchkey.Valid},
		{"revoked", "", latchkey.Revoked}, {"plain", "deploy:prod", latchkey.InsufficientScope}} {
		req := client.VerifyRequest{Token: tok[c.name]}
		if c.scope != "" {
			req.Scopes = []string{c.scope}
		}
		v, err := rc.Verify(ctx, req)
		if err != nil || v.Code != c.want {
			t.Errorf("%s token (%s) after the upgrade: %+v %v, want %s", c.name, c.scope, v, err, c.want)
		}
	}
	list, err := rc.ListTokens(ctx, latchkey.TokenFilter{})
	if err != nil || len(list.Tokens) != 5 {
		t.Fatalf("tokens after the upgrade: %v %v", list, err)
	}
	for _, tk := range list.Tokens {
		if tk.Keyspace != latchkey.DefaultKeyspace {
			t.Errorf("token %s is in %q after the upgrade, want the default keyspace", tk.ID, tk.Keyspace)
		}
	}
	// The limited token's budget and lineage survived: it spent 2 of 500
	// before (its own and its child's verification), 2 above and 1 now.
	if v, _ := rc.Verify(ctx, client.VerifyRequest{Token: tok["limited"]}); v.Remaining == nil || *v.Remaining != 495 {
		t.Errorf("the limited token's budget after the upgrade: %+v", v)
	}
	if rep, err := rc.VerifyAudit(ctx); err != nil || !rep.OK {
		t.Errorf("audit chain after the upgrade: %+v %v", rep, err)
	}
	if list, _ := rc.ListTokens(ctx, latchkey.TokenFilter{Keyspace: latchkey.DefaultKeyspace}); len(list.Tokens) != 5 {
		t.Errorf("the default keyspace lists %d tokens, want 5", len(list.Tokens))
	}
}
