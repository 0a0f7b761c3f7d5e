package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/webhook"
)

// fakeClock is the access requests' clock in a test: it moves when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// accessEnv is a server with a keyspace whose policy lets prod writes be
// requested with two approvals (4 h at most) and staging anything with
// one; a requester (alice, who may approve requests herself), two
// approvers (bob and carol), and webhooks collected.
type accessEnv struct {
	ts                *testServer
	clock             *fakeClock
	alice, bob, carol string
	aliceApprover     string // another token of alice's, with the approve scope
	mu                sync.Mutex
	hooks             map[string]int
}

func newAccessEnv(t *testing.T) *accessEnv {
	t.Helper()
	e := &accessEnv{clock: &fakeClock{t: time.Now()}, hooks: map[string]int{}}
	secretKey := "a-webhook-secret-of-enough-length"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if webhook.Verify([]byte(secretKey), r.Header.Get(webhook.SignatureHeader), body, time.Now(), time.Minute) != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var ev webhook.Event
		json.Unmarshal(body, &ev)
		e.mu.Lock()
		e.hooks[ev.Type]++
		e.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	e.ts = startServerWith(t, t.TempDir(), serveConfig{Webhooks: []string{srv.URL}, WebhookSecret: secretKey})
	e.ts.d.ten.Now = e.clock.Now
	policy := `{"max_lifetime":"30d","requests":[
	  {"scopes":["prod.*:write"],"approvals":2,"max_ttl":"4h"},
	  {"scopes":["staging.*:*"],"approvals":1,"max_ttl":"1d"}]}`
	pf := filepath.Join(t.TempDir(), "policy.json")
	os.WriteFile(pf, []byte(policy), 0o600)
	if code, out, errs := cli(t, e.ts.url, e.ts.root, "keyspace", "create", "prod", "--prefix", "prod", "--policy", pf); code != 0 {
		t.Fatalf("keyspace create: %d %s %s", code, out, errs)
	}
	rc := e.ts.client(e.ts.root)
	mk := func(subject string, scopes ...string) string {
		tok, err := rc.CreateToken(ctx, client.CreateRequest{Keyspace: "prod", Subject: subject, Scopes: scopes, TTL: "7d"})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Plaintext
	}
	approve := latchkey.KeyspaceScope("prod", latchkey.PermApprove)
	e.alice = mk("alice", approve, "prod.orders:read")
	e.aliceApprover = mk("alice", approve)
	e.bob, e.carol = mk("bob", approve), mk("carol", approve)
	return e
}

var (
	requestIDRe = regexp.MustCompile(`(?m)^request\s+([0-9A-Za-z]{16})$`)
	claimRe     = regexp.MustCompile(`(?m)^claim code\s+(lkclaim_[0-9a-f]{32})$`)
)

// request makes an access request as alice through the CLI.
func (e *accessEnv) request(t *testing.T, scope, ttl, reason string) (id, code string) {
	t.Helper()
	rc, out, errs := cli(t, e.ts.url, e.alice, "token", "request", "--scope", scope, "--ttl", ttl, "--reason", reason)
	if rc != 0 {
		t.Fatalf("token request: %d %s %s", rc, out, errs)
	}
	m, c := requestIDRe.FindStringSubmatch(out), claimRe.FindStringSubmatch(out)
	if m == nil || c == nil {
		t.Fatalf("token request printed %q", out)
	}
	return m[1], c[1]
}

func (e *accessEnv) hooked(typ string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hooks[typ]
}

// An access request through the CLI: approved by two approvers and
// claimed once; the requester cannot approve it; a denied one and an
// expired one cannot be claimed.
func TestAccessRequestCLI(t *testing.T) {
	t.Parallel()
	e := newAccessEnv(t)
	u := e.ts.url
	id, code := e.request(t, "prod.orders:write", "8h", "incident 4411")

	// The requester, with either of her tokens, cannot approve her own.
	for _, tok := range []string{e.alice, e.aliceApprover} {
		if rc, _, errs := cli(t, u, tok, "request", "approve", id); rc != exitAPIError || !strings.Contains(errs, "your own") {
			t.Errorf("the requester approving her own request: %d %s", rc, errs)
		}
	}
	// Approvers see it pending.
	rc, out, _ := cli(t, u, e.bob, "request", "list", "--status", "pending")
	if rc != 0 || !strings.Contains(out, id) || !strings.Contains(out, "0/2") || !strings.Contains(out, "incident 4411") {
		t.Errorf("request list for an approver: %d %s", rc, out)
	}
	// Not claimable before it is approved.
	if rc, _, errs := cli(t, u, "", "request", "claim", id, "--code", code); rc != exitAPIError || !strings.Contains(errs, "not approved yet") {
		t.Errorf("claim of a pending request: %d %s", rc, errs)
	}
	if rc, out, errs := cli(t, u, e.bob, "request", "approve", id, "--comment", "ok for the incident"); rc != 0 || !strings.Contains(out, "1 of 2") {
		t.Fatalf("bob approves: %d %s %s", rc, out, errs)
	}
	if rc, _, errs := cli(t, u, e.bob, "request", "approve", id); rc != exitAPIError || !strings.Contains(errs, "already approved") {
		t.Errorf("bob approving twice: %d %s", rc, errs)
	}
	if rc, out, errs := cli(t, u, e.carol, "request", "approve", id); rc != 0 || !strings.Contains(out, "approved") {
		t.Fatalf("carol approves: %d %s %s", rc, out, errs)
	}
	// A wrong code is refused; the right one collects the token, once.
	if rc, _, errs := cli(t, u, "", "request", "claim", id, "--code", "lkclaim_"+strings.Repeat("0", 32)); rc != exitAPIError || !strings.Contains(errs, "wrong claim code") {
		t.Errorf("claim with a wrong code: %d %s", rc, errs)
	}
	rc, out, errs := cli(t, u, "", "request", "claim", id, "--code", code, "--quiet")
	if rc != 0 || !strings.HasPrefix(out, "prod_") {
		t.Fatalf("claim: %d %q %s", rc, out, errs)
	}
	tok := strings.TrimSpace(out)
	rcl := e.ts.client(e.ts.root)
	v, err := rcl.Verify(ctx, client.VerifyRequest{Token: tok, Keyspace: "prod", Scopes: []string{"prod.orders:write"}})
	if err != nil || !v.Valid || v.Subject != "alice" || v.ExpiresAt == nil || v.ExpiresAt.After(time.Now().Add(4*time.Hour+time.Minute)) {
		t.Errorf("the claimed token: %+v %v (want VALID for alice, expiring within the policy's 4h, not the 8h asked)", v, err)
	}
	if rc, _, errs := cli(t, u, "", "request", "claim", id, "--code", code); rc != exitAPIError || !strings.Contains(errs, "already claimed") {
		t.Errorf("a second claim: %d %s", rc, errs)
	}
	if rc, out, _ := cli(t, u, e.bob, "request", "show", id); rc != 0 || !strings.Contains(out, "claimed") || !strings.Contains(out, "approved") {
		t.Errorf("request show after the claim: %d %s", rc, out)
	}

	// Denied by one approver: over, and not claimable.
	id2, code2 := e.request(t, "prod.orders:write", "1h", "just looking")
	if rc, out, errs := cli(t, u, e.bob, "request", "deny", id2, "--comment", "no"); rc != 0 || !strings.Contains(out, "denied") {
		t.Fatalf("bob denies: %d %s %s", rc, out, errs)
	}
	if rc, _, errs := cli(t, u, e.carol, "request", "approve", id2); rc != exitAPIError || !strings.Contains(errs, "already denied") {
		t.Errorf("approving a denied request: %d %s", rc, errs)
	}
	if rc, _, errs := cli(t, u, "", "request", "claim", id2, "--code", code2); rc != exitAPIError || !strings.Contains(errs, "was denied") {
		t.Errorf("claim of a denied request: %d %s", rc, errs)
	}

	// Nobody decides in time: expired, neither approvable nor claimable.
	id3, code3 := e.request(t, "prod.orders:write", "1h", "late")
	e.clock.Add(25 * time.Hour)
	if rc, _, errs := cli(t, u, e.bob, "request", "approve", id3); rc != exitAPIError || !strings.Contains(errs, "expired") {
		t.Errorf("approving an expired request: %d %s", rc, errs)
	}
	if rc, _, errs := cli(t, u, "", "request", "claim", id3, "--code", code3); rc != exitAPIError || !strings.Contains(errs, "expired") {
		t.Errorf("claim of an expired request: %d %s", rc, errs)
	}
	// Approved but not collected within the claim window (1h): expired.
	id4, code4 := e.request(t, "staging.db:read", "1h", "staging check")
	if rc, out, errs := cli(t, u, e.bob, "request", "approve", id4); rc != 0 || !strings.Contains(out, "approved") {
		t.Fatalf("one approval for staging: %d %s %s", rc, out, errs)
	}
	e.clock.Add(2 * time.Hour)
	if rc, _, errs := cli(t, u, "", "request", "claim", id4, "--code", code4); rc != exitAPIError || !strings.Contains(errs, "expired") {
		t.Errorf("claim after the claim window: %d %s", rc, errs)
	}
	// A scope no rule covers cannot be requested.
	if rc, _, errs := cli(t, u, e.alice, "token", "request", "--scope", "billing:write", "--ttl", "1h", "--reason", "x"); rc != exitUsage || !strings.Contains(errs, "cannot be requested") {
		t.Errorf("requesting an unrequestable scope: %d %s", rc, errs)
	}

	// Every step is audited and sent as a webhook.
	e.ts.flush(t)
	evs, err := rcl.ListAudit(ctx, latchkey.AuditFilter{Keyspace: "prod", Kind: latchkey.KindAdmin, Limit: 200})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, ev := range evs.Events {
		count[ev.Action+"/"+ev.Outcome]++
	}
	for action, want := range map[string]int{"access.request/OK": 4, "access.approve/OK": 3, "access.deny/OK": 1, "access.claim/OK": 1, "access.claim/REFUSED": 6} {
		if count[action] != want {
			t.Errorf("audit: %d %s records, want %d (all: %v)", count[action], action, want, count)
		}
	}
	// Claim codes and the claimed token are secrets: in no log line, audit
	// record or metric.
	all, _ := rcl.ListAudit(ctx, latchkey.AuditFilter{Limit: 1000})
	raw, _ := json.Marshal(all)
	_, metrics := call(t, "GET", u+"/metrics", "", nil)
	for _, s := range []string{code, code2, code3, code4, tok} {
		for where, text := range map[string]string{"logs": e.ts.out.String(), "audit": string(raw), "metrics": metrics} {
			if strings.Contains(text, s) {
				t.Errorf("a secret (%s…) is in the %s", s[:12], where)
			}
		}
	}
	waitFor(t, func() bool {
		return e.hooked("access.requested") == 4 && e.hooked("access.approved") == 3 && e.hooked("access.denied") == 1 && e.hooked("access.claimed") >= 1
	})
}

// The same in headless Chromium: two approvers approve in the dashboard
// (each signed in with their own token), one denies another request, the
// requester sees no approve button on her own request, and collects the
// token with her claim code in the page.
func TestAccessRequestInBrowser(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	e := newAccessEnv(t)
	u := e.ts.url
	opened := false
	signIn := func(who, tok string) {
		if !opened {
			b.do(t, "open the dashboard", chromedp.Navigate(u+"/ui/#/requests"), chromedp.WaitVisible("#token"))
			opened = true
		} else {
			b.do(t, "sign out", chromedp.Click("#signout"), chromedp.WaitVisible("#token"))
		}
		b.do(t, "sign in as "+who, chromedp.SendKeys("#token", tok), chromedp.Click("#signin button[type=submit]"),
			chromedp.WaitVisible("#nav"))
		b.eval(t, `(location.hash = '#/requests', 'ok')`)
		b.do(t, "open the requests as "+who, chromedp.WaitVisible("#pending"))
	}
	row := func(id string) string { return `document.querySelector('#pending tr[data-request="` + id + `"]')` }

	// Alice asks in the page and gets her claim code once.
	signIn("alice", e.alice)
	b.do(t, "fill the request form",
		chromedp.SendKeys("#r-scopes", "prod.orders:write"), chromedp.SendKeys("#r-ttl", "2h"),
		chromedp.SendKeys("#r-reason", "incident 4411"), chromedp.Click("#request-form button[type=submit]"),
		chromedp.WaitVisible("#claim-code"))
	code := b.eval(t, `document.querySelector('#claim-code').value`)
	heading := b.eval(t, `document.querySelector('#shown-box h2').textContent`)
	m := regexp.MustCompile(`Request ([0-9A-Za-z]{16})`).FindStringSubmatch(heading)
	if m == nil || !strings.HasPrefix(code, "lkclaim_") {
		t.Fatalf("after the request: %q, code %q", heading, code)
	}
	id := m[1]
	b.waitFor(t, "her request in the pending list", row(id)+` !== null`, 3*time.Second)
	if v := b.eval(t, `String(`+row(id)+`.querySelector('[data-action=approve-request]') === null)`); v != "true" {
		t.Error("the requester is offered an Approve button on her own request")
	}
	b.screenshot(t, "access-1-requested")

	// Bob, then Carol, approve in the dashboard; the request shows live.
	for i, a := range []struct{ who, tok string }{{"bob", e.bob}, {"carol", e.carol}} {
		signIn(a.who, a.tok)
		b.waitFor(t, a.who+" sees the request", row(id)+` !== null && `+row(id)+`.textContent.includes('incident 4411')`, 3*time.Second)
		b.do(t, a.who+" approves", chromedp.Click(`#pending tr[data-request="`+id+`"] [data-action=approve-request]`))
		if i == 0 {
			b.waitFor(t, "one approval", row(id)+`?.textContent.includes('1 / 2')`, 3*time.Second)
		}
	}
	b.waitFor(t, "the request approved", `[...document.querySelectorAll('#decided tr')].some(tr => tr.dataset.request === '`+id+`' && tr.textContent.includes('approved'))`, 3*time.Second)
	b.screenshot(t, "access-2-approved")

	// A second request, denied by one approver in the page.
	id2, code2 := e.request(t, "prod.orders:write", "1h", "second look")
	b.waitFor(t, "the second request appears live", row(id2)+` !== null`, 3*time.Second)
	b.do(t, "carol denies", chromedp.Click(`#pending tr[data-request="`+id2+`"] [data-action=deny-request]`))
	b.do(t, "confirm the denial", chromedp.WaitVisible("dialog[open] button.danger"), chromedp.Click("dialog[open] button.danger"))
	b.waitFor(t, "the request denied", `[...document.querySelectorAll('#decided tr')].some(tr => tr.dataset.request === '`+id2+`' && tr.textContent.includes('denied'))`, 3*time.Second)

	// Alice collects the approved one with her code, in the page, once.
	signIn("alice", e.alice)
	b.do(t, "claim", chromedp.SetValue("#c-request", id), chromedp.SetValue("#c-code", code), chromedp.Click("#claim-form button[type=submit]"),
		chromedp.WaitVisible("#plaintext"))
	tok := b.eval(t, `document.querySelector('#plaintext').value`)
	if v, err := e.ts.client(e.ts.root).Verify(ctx, client.VerifyRequest{Token: tok, Keyspace: "prod", Scopes: []string{"prod.orders:write"}}); err != nil || !v.Valid {
		t.Errorf("the token claimed in the page: %+v %v", v, err)
	}
	b.do(t, "claim again", chromedp.SetValue("#c-request", id), chromedp.SetValue("#c-code", code), chromedp.Click("#claim-form button[type=submit]"))
	b.waitFor(t, "the second claim refused", `document.querySelector('#requests-msg').textContent.includes('already claimed')`, 3*time.Second)
	b.do(t, "claim the denied one", chromedp.SetValue("#c-request", id2), chromedp.SetValue("#c-code", code2), chromedp.Click("#claim-form button[type=submit]"))
	b.waitFor(t, "the denied claim refused", `document.querySelector('#requests-msg').textContent.includes('was denied')`, 3*time.Second)
	b.screenshot(t, "access-3-claimed")
	if p := b.problems(); len(p) > 0 {
		for _, x := range p {
			if !strings.Contains(x, "status of 409") && !strings.Contains(x, "status of 403") {
				t.Errorf("page problem: %s", x)
			}
		}
	}
}
