package security

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/httpapi"
	"github.com/latchkeyhq/latchkey/secret"
)

// Item 10: a body that never comes, or trickles, cannot hold gateway
// connections past the route's body_timeout.
func TestSlowBodiesOnTheGateway(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(&upstream{})
	t.Cleanup(up.Close)
	lk := startLatchkey(t, "routes:\n  - name: up\n    path: /\n    upstream: UPSTREAM\n    body_timeout: 1s\n", up.URL)
	tok, err := lk.client(lk.root).CreateToken(ctx, client.CreateRequest{Scopes: []string{"x:y"}})
	if err != nil {
		t.Fatal(err)
	}
	const conns = 20
	var wg sync.WaitGroup
	held := make(chan time.Duration, 2*conns)
	for i := range 2 * conns {
		wg.Go(func() {
			c, err := net.Dial("tcp", lk.gw)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n", tok.Plaintext)
			start := time.Now()
			if i%2 == 1 { // trickle a byte every 200 ms
				go func() {
					for range 200 {
						if _, err := c.Write([]byte("a")); err != nil {
							return
						}
						time.Sleep(200 * time.Millisecond)
					}
				}()
			}
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			io.Copy(io.Discard, c) // until the gateway closes the connection
			held <- time.Since(start)
		})
	}
	wg.Wait()
	close(held)
	for d := range held {
		if d > 10*time.Second {
			t.Errorf("a slow body held a gateway connection for %v (body_timeout 1s)", d)
		}
	}
}

// Item 8: /oauth2/revoke takes a token without credentials, so its
// failures count toward the source's block like any door's, and the
// flood's records are sampled once it is blocked.
func TestRevokeFloodIsBlocked(t *testing.T) {
	t.Parallel()
	// Loopback is not a trusted proxy here: the test client is a source.
	lk := startLatchkey(t, "", "", "--trusted-proxy", "192.0.2.1")
	form := func(tok string) int {
		resp, err := http.PostForm("http://"+lk.api+"/oauth2/revoke", url.Values{"token": {tok}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 500 {
		if code := form(forgedWithChecksum()); code != 200 {
			t.Fatalf("RFC 7009: HTTP %d, want 200 whatever the token", code)
		}
	}
	c := lk.client(lk.root)
	blocks, err := listBlocks(lk)
	if err != nil || len(blocks) != 1 || blocks[0].Source != "127.0.0.1" {
		t.Fatalf("after 500 forged tokens at /oauth2/revoke: blocks %+v %v", blocks, err)
	}
	// The last sampling window's count is written within two seconds.
	var records, counted int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		page, err := c.ListAudit(ctx, latchkey.AuditFilter{Action: "oauth_revoke", Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		records, counted = len(page.Events), 0
		for _, ev := range page.Events {
			n := 1
			var d struct{ Count int }
			if json.Unmarshal(ev.Detail, &d) == nil && d.Count > 0 {
				n = d.Count
			}
			counted += n
		}
		if counted >= 500 {
			break
		}
	}
	if records > 100 || counted != 500 {
		t.Errorf("500 attempts took %d records standing for %d", records, counted)
	}
}

func listBlocks(lk *server) ([]latchkey.Block, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		bl, err := lk.client(lk.root).ListBlocks(ctx)
		if err != nil || len(bl.Blocks) > 0 || time.Now().After(deadline) {
			if err != nil {
				return nil, err
			}
			return bl.Blocks, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Item 8: a blocked source learns nothing from what it sends: a real
// token without the scope, a real valid token and a forged one get the
// same answer at every door.
func TestBlockedSourceLearnsNothing(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(&upstream{})
	t.Cleanup(up.Close)
	lk := startLatchkey(t, "routes:\n  - name: up\n    path: /\n    upstream: UPSTREAM\n    scopes: [\"x:y\"]\n", up.URL,
		"--trusted-proxy", "192.0.2.1", "--ui=true")
	admin := lk.client(lk.root)
	valid, _ := admin.CreateToken(ctx, client.CreateRequest{Scopes: []string{"x:y", latchkey.ScopeTokensRead, latchkey.ScopeAuditRead, latchkey.ScopeVerify}})
	scopeless, _ := admin.CreateToken(ctx, client.CreateRequest{Scopes: []string{"other:thing"}})
	for range 25 { // get blocked
		(&client.Client{BaseURL: "http://" + lk.api, Token: forgedWithChecksum(), HTTP: http.DefaultClient}).ListTokens(ctx, latchkey.TokenFilter{})
	}
	if bs, _ := listBlocks(lk); len(bs) != 1 {
		t.Fatalf("not blocked: %+v", bs)
	}
	type answer struct {
		code int
		body string
		auth string
	}
	do := func(method, u, tok, body string, hdr ...string) answer {
		req, _ := http.NewRequest(method, u, strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return answer{resp.StatusCode, string(b), resp.Header.Get("WWW-Authenticate")}
	}
	api, gw := "http://"+lk.api, "http://"+lk.gw
	doors := map[string]func(tok string) answer{
		"admin API":    func(tok string) answer { return do("GET", api+"/v1/tokens", tok, "") },
		"verify":       func(tok string) answer { return do("POST", api+"/v1/verify", tok, `{"token":"x"}`) },
		"audit stream": func(tok string) answer { return do("GET", api+"/v1/audit?limit=1", tok, "") },
		"introspect": func(tok string) answer {
			return do("POST", api+"/oauth2/introspect", tok, "token=x", "Content-Type", "application/x-www-form-urlencoded")
		},
		"revoke": func(tok string) answer {
			return do("POST", api+"/oauth2/revoke", "", "token="+tok, "Content-Type", "application/x-www-form-urlencoded")
		},
		"dashboard sign-in": func(tok string) answer {
			return do("POST", api+httpapi.UISessionPath, "", `{"token":"`+tok+`"}`, "Content-Type", "application/json", "Origin", api)
		},
		"gateway":      func(tok string) answer { return do("GET", gw+"/x", tok, "") },
		"forward auth": func(tok string) answer { return do("GET", api+"/v1/forward-auth?scope=x:y", tok, "") },
	}
	strip := func(a answer) answer { // request ids differ; nothing else may
		if i := strings.Index(a.body, `"request_id"`); i >= 0 {
			a.body = a.body[:i]
		}
		return a
	}
	for name, door := range doors {
		forged := strip(door(forgedWithChecksum()))
		for what, tok := range map[string]string{"a valid token": valid.Plaintext, "a token without the scope": scopeless.Plaintext} {
			if got := strip(door(tok)); got != forged {
				t.Errorf("%s: a blocked source tells %s (%+v) from a forged one (%+v)", name, what, got, forged)
			}
		}
	}
	// And the revocation endpoint did not revoke for a blocked source.
	if tk, err := admin.GetToken(ctx, valid.ID); err != nil || tk.Status != latchkey.StatusActive {
		t.Errorf("a blocked source's /oauth2/revoke acted: %+v %v", tk, err)
	}
}

// Item 6: knowing a token's public id is not enough to kill it, even
// with the detector set to revoke on wrong secrets: the root token never,
// an ordinary token only past ten times the block threshold.
func TestWrongSecretsCannotKillAToken(t *testing.T) {
	t.Parallel()
	lk := startLatchkey(t, "", "", "--detect-secret-mismatch-action", "revoke")
	admin := lk.client(lk.root)
	victim, _ := admin.CreateToken(ctx, client.CreateRequest{Subject: "svc", Scopes: []string{"x:y"}})
	rootID := lk.root[3:19]
	guess := func(id, from string) {
		pt, _, _ := secret.GenerateWithID("lk", id, rand.Reader)
		req, _ := http.NewRequest("GET", "http://"+lk.api+"/v1/forward-auth", nil)
		req.Header.Set("Authorization", "Bearer "+pt.Reveal())
		req.Header.Set("X-Forwarded-For", from) // loopback is the trusted proxy
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// The reviewer's attack: 12 forged secrets from 3 addresses.
	for i := range 12 {
		guess(rootID, fmt.Sprintf("203.0.113.%d", i%3))
		guess(victim.ID, fmt.Sprintf("203.0.113.%d", i%3))
	}
	// A wide one: 250 wrong secrets from 25 addresses, each under its block.
	for i := range 250 {
		guess(rootID, fmt.Sprintf("198.51.100.%d", i%25))
	}
	// The detector's worker records its findings: once the alerts for both
	// tokens are there, whatever it did is done.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		alerts, _ := admin.ListAudit(ctx, latchkey.AuditFilter{Action: latchkey.ActionLeakSuspected})
		ids := map[string]bool{}
		for _, ev := range alerts.Events {
			ids[ev.TokenID] = true
			if ev.TokenID == rootID && strings.Contains(string(ev.Detail), "exempt") {
				ids["root exempted"] = true
			}
		}
		if ids["root exempted"] && ids[victim.ID] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leak-suspected alerts for both tokens: %v", ids)
		}
	}
	if _, err := admin.ListTokens(ctx, latchkey.TokenFilter{}); err != nil {
		t.Fatalf("the root token was killed by wrong secrets for its public id: %v", err)
	}
	if tk, _ := admin.GetToken(ctx, victim.ID); tk.Status != latchkey.StatusActive {
		t.Errorf("12 wrong secrets from 3 addresses %s the token", tk.Status)
	}
	// Past 200 wrong secrets from blockable sources, an ordinary token is
	// acted on as configured.
	for i := range 250 {
		guess(victim.ID, fmt.Sprintf("198.51.101.%d", i%25))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		tk, _ := admin.GetToken(ctx, victim.ID)
		if tk.Status == latchkey.StatusRevoked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("250 wrong secrets from 25 sources did not revoke an ordinary token (action revoke): %s", tk.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Item 12 and the quality bar: a canary token, and a truncated copy of it,
// pasted into every part of a request to the gateway and forward auth,
// appears in no log line, audit record or metric.
func TestCanaryNeverLeaks(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(&upstream{})
	t.Cleanup(up.Close)
	lk := startLatchkey(t, "routes:\n  - name: up\n    path: /\n    upstream: UPSTREAM\n", up.URL)
	admin := lk.client(lk.root)
	created, err := admin.CreateToken(ctx, client.CreateRequest{Name: "canary", Scopes: []string{"x:y"}})
	if err != nil {
		t.Fatal(err)
	}
	canary := created.Plaintext
	cut := canary[:len(canary)-5]
	secretPart := canary[len(canary)-49 : len(canary)-10]
	for _, base := range []string{"http://" + lk.gw, "http://" + lk.api + "/v1/forward-auth"} {
		for _, tok := range []string{canary, cut} {
			for _, path := range []string{"/" + tok, "/x?q=" + tok, "/x/" + url.PathEscape(tok) + "/../y"} {
				req, _ := http.NewRequest("GET", base+path, nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("X-Request-Id", tok)
				req.Header.Set("User-Agent", "agent "+tok)
				req.Header.Set("X-Original-URI", path)
				req.Header.Set("X-Original-Method", "GET")
				req.Header.Set("X-Forwarded-Uri", path)
				req.Header.Set("X-Latchkey-Subject", tok)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}
		}
	}
	for _, field := range []string{`{"tags":["` + cut + `"]}`, `{"name":"` + cut + `"}`, `{"subject":"x ` + cut + `"}`} {
		req, _ := http.NewRequest("POST", "http://"+lk.api+"/v1/tokens", strings.NewReader(field))
		req.Header.Set("Authorization", "Bearer "+lk.root)
		resp, _ := http.DefaultClient.Do(req)
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 400 || strings.Contains(string(b), secretPart) {
			t.Errorf("POST /v1/tokens %s: %d %s", field, resp.StatusCode, b)
		}
		resp.Body.Close()
	}
	page, err := admin.ListAudit(ctx, latchkey.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	records, _ := json.Marshal(page.Events)
	resp, err := http.Get("http://" + lk.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for what, text := range map[string]string{"the logs": lk.out.String(), "the audit log": string(records), "the metrics": string(metrics)} {
		if strings.Contains(text, secretPart) {
			i := strings.Index(text, secretPart)
			t.Errorf("the canary's secret is in %s: …%s…", what, text[max(0, i-80):min(len(text), i+80)])
		}
	}
}
