package tokens_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/verify"
)

// env is the real stack on SQLite with one injected clock.
type env struct {
	t    *testing.T
	db   *sqlite.DB
	svc  *tokens.Service
	v    *verify.Verifier
	pipe *audit.Pipeline
	mu   sync.Mutex
	now  time.Time
}

var ctx = context.Background()

var admin = latchkey.Actor{TokenID: "Admin00000000000", Scopes: []string{latchkey.AdminScope}}

func newEnv(t *testing.T, p tokens.Policy) *env {
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h, _ := secret.NewHasher(make([]byte, 32))
	e := &env{t: t, db: db, now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	pipe := &audit.Pipeline{Sink: db}
	pipe.Start()
	t.Cleanup(func() { pipe.Close(ctx) })
	e.pipe = pipe
	e.v = verify.New(db, h, pipe, verify.Config{Now: e.clock, RotationAge: p.RotationAge})
	t.Cleanup(func() { e.v.Close(ctx) })
	e.svc = &tokens.Service{Store: db, Hasher: h, Now: e.clock, Invalidate: e.v.Invalidate, Policy: p, FlushUsage: e.v.FlushUsage}
	return e
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

func (e *env) create(req client.CreateRequest) (*latchkey.Token, string) {
	e.t.Helper()
	if req.Scopes == nil {
		req.Scopes = []string{"invoices:read"}
	}
	tok, pt, err := e.svc.Create(ctx, admin, req)
	if err != nil {
		e.t.Fatalf("Create: %v", err)
	}
	return tok, pt.Reveal()
}

func (e *env) derive(a latchkey.Actor, parent string, req client.CreateRequest) (*latchkey.Token, string) {
	e.t.Helper()
	tok, pt, err := e.svc.Derive(ctx, a, parent, req)
	if err != nil {
		e.t.Fatalf("Derive: %v", err)
	}
	return tok, pt.Reveal()
}

func (e *env) code(pt string, scopes ...string) latchkey.Code {
	e.t.Helper()
	d, err := e.v.Verify(ctx, &latchkey.VerifyRequest{Token: pt, Scopes: scopes, ClientIP: "10.0.0.1", Method: "GET", Path: "/v1/x"})
	if err != nil {
		e.t.Fatal(err)
	}
	return d.Code
}

func (e *env) get(id string) *latchkey.Token {
	e.t.Helper()
	tok, err := e.db.GetToken(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func wantCode(t *testing.T, err error, code string, contains string) {
	t.Helper()
	if latchkey.ErrorCode(err) != code || !strings.Contains(latchkey.ErrorMessage(err), contains) {
		t.Errorf("error %v, want %s containing %q", err, code, contains)
	}
}

// The expiry policy, with an injected clock.
func TestPolicy(t *testing.T) {
	t.Run("default ttl", func(t *testing.T) {
		e := newEnv(t, tokens.Policy{DefaultTTL: 30 * 24 * time.Hour})
		tok, pt := e.create(client.CreateRequest{})
		if !tok.ExpiresAt.Equal(e.clock().Add(30 * 24 * time.Hour)) {
			t.Fatalf("expires_at %v, want the default TTL from now", tok.ExpiresAt)
		}
		e.advance(30*24*time.Hour - time.Second)
		if c := e.code(pt); c != latchkey.Valid {
			t.Fatalf("before the default TTL: %s", c)
		}
		e.advance(time.Second)
		if c := e.code(pt); c != latchkey.Expired {
			t.Fatalf("at the default TTL: %s", c)
		}
	})
	t.Run("require expiry", func(t *testing.T) {
		e := newEnv(t, tokens.Policy{RequireExpiry: true})
		_, _, err := e.svc.Create(ctx, admin, client.CreateRequest{Scopes: []string{"a:b"}})
		wantCode(t, err, latchkey.EInvalid, "requires every token to expire")
		if _, _, err := e.svc.Create(ctx, admin, client.CreateRequest{Scopes: []string{"a:b"}, TTL: "1h"}); err != nil {
			t.Errorf("with a ttl: %v", err)
		}
	})
	t.Run("max lifetime", func(t *testing.T) {
		e := newEnv(t, tokens.Policy{MaxLifetime: 90 * 24 * time.Hour})
		_, _, err := e.svc.Create(ctx, admin, client.CreateRequest{TTL: "91d"})
		wantCode(t, err, latchkey.EInvalid, "maximum lifetime of 90d")
		at := e.clock().Add(90*24*time.Hour + time.Second)
		_, _, err = e.svc.Create(ctx, admin, client.CreateRequest{ExpiresAt: &at})
		wantCode(t, err, latchkey.EInvalid, "maximum lifetime")
		_, _, err = e.svc.Create(ctx, admin, client.CreateRequest{})
		wantCode(t, err, latchkey.EInvalid, "limits tokens to a lifetime of 90d")
		tok, pt := e.create(client.CreateRequest{TTL: "90d"})
		e.advance(90 * 24 * time.Hour)
		if c := e.code(pt); c != latchkey.Expired {
			t.Errorf("at its maximum lifetime: %s", c)
		}
		// A refused create changes nothing.
		page, _ := e.db.ListTokens(ctx, latchkey.TokenFilter{})
		if len(page.Tokens) != 1 || page.Tokens[0].ID != tok.ID {
			t.Errorf("refused creates left %d tokens", len(page.Tokens))
		}
	})
	t.Run("policy validation", func(t *testing.T) {
		p := tokens.Policy{DefaultTTL: 100 * 24 * time.Hour, MaxLifetime: 90 * 24 * time.Hour}
		if err := p.Validate(); err == nil {
			t.Error("a default TTL above the maximum lifetime passed")
		}
	})
}

func TestCreateConstraintsValidated(t *testing.T) {
	e := newEnv(t, tokens.Policy{})
	bad := []struct {
		req  client.CreateRequest
		want string
	}{
		{client.CreateRequest{AllowedCIDRs: []string{"10.0.0.0/33"}}, "allowed_cidrs"},
		{client.CreateRequest{AllowedCIDRs: []string{"example.com"}}, "allowed_cidrs"},
		{client.CreateRequest{AllowedMethods: []string{"GET /"}}, "allowed_methods"},
		{client.CreateRequest{AllowedPaths: []string{"v1/x"}}, "must start with /"},
		{client.CreateRequest{AllowedPaths: []string{"/v1/**/x"}}, "last segment"},
		{client.CreateRequest{AllowedPaths: []string{"/v1/a*"}}, "whole segment"},
		{client.CreateRequest{AllowedPaths: []string{"/v1/../x"}}, ". or .."},
		{client.CreateRequest{RateLimit: &client.RateRequest{Limit: 0, Window: "1m"}}, "rate_limit.limit"},
		{client.CreateRequest{RateLimit: &client.RateRequest{Limit: 10}}, "rate_limit.window is required"},
		{client.CreateRequest{RateLimit: &client.RateRequest{Limit: 10, Window: "forever"}}, "rate_limit.window"},
		{client.CreateRequest{MaxUses: -1}, "max_uses"},
		{client.CreateRequest{IdleTimeout: "10s"}, "idle_timeout must be at least 1m"},
		{client.CreateRequest{IdleTimeout: "soon"}, "idle_timeout"},
	}
	for _, b := range bad {
		b.req.Scopes = []string{"a:b"}
		_, _, err := e.svc.Create(ctx, admin, b.req)
		wantCode(t, err, latchkey.EInvalid, b.want)
	}
	tok, _ := e.create(client.CreateRequest{AllowedCIDRs: []string{"10.1.2.3/8", "192.0.2.1", "::ffff:10.0.0.0/104"},
		AllowedMethods: []string{"get", "GET"}, RateLimit: &client.RateRequest{Limit: 100, Window: "1m"}})
	if !slices.Equal(tok.AllowedCIDRs, []string{"10.0.0.0/8", "192.0.2.1/32"}) || !slices.Equal(tok.AllowedMethods, []string{"GET"}) {
		t.Errorf("normalised constraints: %v %v", tok.AllowedCIDRs, tok.AllowedMethods)
	}
	b, _ := json.Marshal(tok)
	if !strings.Contains(string(b), `"rate_limit":{"limit":100,"window":"1m"}`) {
		t.Errorf("JSON form: %s", b)
	}
}

func TestRotate(t *testing.T) {
	e := newEnv(t, tokens.Policy{})
	old, oldPT := e.create(client.CreateRequest{Name: "ci", Subject: "svc", Scopes: []string{"invoices:read", "billing.*:read"},
		TTL: "30d", Tags: []string{"ci"}, AllowedCIDRs: []string{"10.0.0.0/8"}, MaxUses: 100})
	e.code(oldPT) // one use
	e.advance(10 * 24 * time.Hour)
	r, err := e.rotate(ctx, admin, old.ID, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	succ, newPT := r.Successor, r.Plaintext.Reveal()
	if newPT == oldPT || succ.ID == old.ID {
		t.Fatal("the successor has the old secret or id")
	}
	if !slices.Equal(succ.Scopes, old.Scopes) || succ.Subject != old.Subject || succ.Name != old.Name ||
		!slices.Equal(succ.Tags, old.Tags) || !slices.Equal(succ.AllowedCIDRs, old.AllowedCIDRs) || succ.MaxUses != old.MaxUses {
		t.Errorf("successor grants differ: %+v", succ)
	}
	if !succ.ExpiresAt.Equal(e.clock().Add(30 * 24 * time.Hour)) {
		t.Errorf("successor expires %v, want a fresh 30 days", succ.ExpiresAt)
	}
	o := e.get(old.ID)
	if o.SuccessorID != succ.ID || e.get(succ.ID).PredecessorID != old.ID {
		t.Error("the tokens are not linked both ways")
	}
	if !o.ExpiresAt.Equal(e.clock().Add(24 * time.Hour)) {
		t.Errorf("old token ends %v, want now+grace", o.ExpiresAt)
	}
	if e.get(succ.ID).Uses != 1 {
		t.Errorf("successor shows %d uses, want the series' 1 (rotation does not refill a budget)", e.get(succ.ID).Uses)
	}
	if c := e.code(oldPT); c != latchkey.Valid {
		t.Fatalf("old token within grace: %s", c)
	}
	if c := e.code(newPT); c != latchkey.Valid {
		t.Fatalf("successor: %s", c)
	}
	e.advance(24 * time.Hour)
	d, _ := e.v.Verify(ctx, &latchkey.VerifyRequest{Token: oldPT, ClientIP: "10.0.0.1"})
	if d.Code != latchkey.Expired || d.Reason != "rotated" {
		t.Fatalf("old token after grace: %s/%s, want EXPIRED/rotated", d.Code, d.Reason)
	}
	if c := e.code(newPT); c != latchkey.Valid {
		t.Fatalf("successor after grace: %s", c)
	}
	// Refusals: already rotated, expired, revoked.
	_, err = e.rotate(ctx, admin, old.ID, 0)
	wantCode(t, err, latchkey.EConflict, "already rotated")
	exp, _ := e.create(client.CreateRequest{TTL: "1h"})
	e.advance(time.Hour)
	_, err = e.rotate(ctx, admin, exp.ID, 0)
	wantCode(t, err, latchkey.EConflict, "expired")
	rev, _ := e.create(client.CreateRequest{})
	e.svc.Revoke(ctx, admin, rev.ID, "")
	_, err = e.rotate(ctx, admin, rev.ID, 0)
	wantCode(t, err, latchkey.EConflict, "revoked")
	if _, err := e.rotate(ctx, admin, succ.ID, -time.Second); latchkey.ErrorCode(err) != latchkey.EInvalid {
		t.Errorf("negative grace: %v", err)
	}
	// The grace never outlives the token's own expiry.
	short, _ := e.create(client.CreateRequest{TTL: "2h"})
	r2, err := e.rotate(ctx, admin, short.ID, 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Old.ExpiresAt.Equal(short.ExpiresAt) {
		t.Errorf("grace past the expiry: old ends %v, want %v", r2.Old.ExpiresAt, short.ExpiresAt)
	}
	// Audit: the rotation on the old token, the creation on the new one.
	evs, _ := e.db.ListAudit(ctx, latchkey.AuditFilter{TokenID: old.ID, Kind: latchkey.KindAdmin})
	if len(evs.Events) == 0 || evs.Events[0].Action != latchkey.ActionTokenRotate || !strings.Contains(string(evs.Events[0].Detail), succ.ID) {
		t.Errorf("audit of the old token: %+v", evs.Events)
	}
}

// Rotating a parent ends its descendants with it.
func TestRotateCutsDescendants(t *testing.T) {
	e := newEnv(t, tokens.Policy{})
	parent, _ := e.create(client.CreateRequest{TTL: "30d"})
	kid, kidPT := e.derive(admin, parent.ID, client.CreateRequest{})
	if _, err := e.rotate(ctx, admin, parent.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := e.get(kid.ID).ExpiresAt; !got.Equal(e.clock().Add(time.Hour)) {
		t.Errorf("child expires %v, want the parent's grace end", got)
	}
	e.advance(time.Hour)
	if c := e.code(kidPT); c != latchkey.Expired {
		t.Errorf("child after the parent's grace: %s", c)
	}
}

// Three generations: revoke, suspend and resume cascade.
func TestCascadeThreeLevels(t *testing.T) {
	e := newEnv(t, tokens.Policy{})
	root, rootPT := e.create(client.CreateRequest{Scopes: []string{"invoices:*"}})
	kid, kidPT := e.derive(admin, root.ID, client.CreateRequest{})
	self := latchkey.Actor{TokenID: kid.ID, Scopes: kid.Scopes}
	grand, grandPT := e.derive(self, kid.ID, client.CreateRequest{Scopes: []string{"invoices:read"}})
	great, greatPT := e.derive(latchkey.Actor{TokenID: grand.ID, Scopes: grand.Scopes}, grand.ID, client.CreateRequest{})
	if !slices.Equal(e.get(great.ID).Ancestors, []string{grand.ID, kid.ID, root.ID}) {
		t.Fatalf("ancestors %v", e.get(great.ID).Ancestors)
	}
	all := []string{rootPT, kidPT, grandPT, greatPT}
	codes := func() []latchkey.Code {
		var out []latchkey.Code
		for _, pt := range all {
			out = append(out, e.code(pt))
		}
		return out
	}
	V, S, R := latchkey.Valid, latchkey.Suspended, latchkey.Revoked
	if got := codes(); !slices.Equal(got, []latchkey.Code{V, V, V, V}) {
		t.Fatalf("before: %v", got)
	}

	// The great-grandchild suspended on its own account.
	if _, err := e.svc.Suspend(ctx, admin, great.ID, "own"); err != nil {
		t.Fatal(err)
	}
	// Suspending the child suspends the grandchild too.
	if _, err := e.svc.Suspend(ctx, admin, kid.ID, "investigating"); err != nil {
		t.Fatal(err)
	}
	if got := codes(); !slices.Equal(got, []latchkey.Code{V, S, S, S}) {
		t.Fatalf("after suspending the child: %v", got)
	}
	_, err := e.svc.Resume(ctx, admin, grand.ID)
	wantCode(t, err, latchkey.EConflict, "resume "+kid.ID)
	if _, err := e.svc.Resume(ctx, admin, kid.ID); err != nil {
		t.Fatal(err)
	}
	if got := codes(); !slices.Equal(got, []latchkey.Code{V, V, V, S}) {
		t.Fatalf("after resuming the child: %v (the separately suspended one stays)", got)
	}
	if g := e.get(great.ID); g.SuspendedReason != "own" || g.SuspendedVia != great.ID {
		t.Errorf("own suspension overwritten: %+v", g)
	}
	_, err = e.svc.Suspend(ctx, admin, great.ID, "")
	wantCode(t, err, latchkey.EConflict, "already suspended")
	_, err = e.svc.Resume(ctx, admin, root.ID)
	wantCode(t, err, latchkey.EConflict, "not suspended")

	// Revoking the root revokes all four; each record names the cascade.
	if _, err := e.svc.Revoke(ctx, admin, root.ID, "leaked"); err != nil {
		t.Fatal(err)
	}
	if got := codes(); !slices.Equal(got, []latchkey.Code{R, R, R, R}) {
		t.Fatalf("after revoking the root: %v", got)
	}
	evs, _ := e.db.ListAudit(ctx, latchkey.AuditFilter{TokenID: great.ID, Kind: latchkey.KindAdmin})
	if len(evs.Events) == 0 || evs.Events[0].Action != latchkey.ActionTokenRevoke || !strings.Contains(string(evs.Events[0].Detail), root.ID) {
		t.Errorf("great-grandchild's revocation record: %+v", evs.Events[0])
	}
	_, err = e.svc.Suspend(ctx, admin, kid.ID, "")
	wantCode(t, err, latchkey.EConflict, "revoked")
	// Every verification refusal is in the audit log with its reason.
	e.v.Verify(ctx, &latchkey.VerifyRequest{Token: greatPT})
	flushAudit(t, e)
	vevs, _ := e.db.ListAudit(ctx, latchkey.AuditFilter{TokenID: great.ID, Kind: latchkey.KindVerify})
	reasons := map[string]bool{}
	for _, ev := range vevs.Events {
		reasons[ev.Outcome+"/"+ev.Reason] = true
	}
	for _, want := range []string{"SUSPENDED/suspended", "REVOKED/revoked", "VALID/"} {
		if !reasons[want] {
			t.Errorf("audit of the great-grandchild lacks %s: %v", want, reasons)
		}
	}
	if !reasons["SUSPENDED/suspended"] {
		return
	}
	gevs, _ := e.db.ListAudit(ctx, latchkey.AuditFilter{TokenID: grand.ID, Kind: latchkey.KindVerify})
	found := false
	for _, ev := range gevs.Events {
		found = found || ev.Reason == "ancestor_suspended"
	}
	if !found {
		t.Error("the grandchild's cascaded suspension is not audited as ancestor_suspended")
	}
}

func flushAudit(t *testing.T, e *env) {
	t.Helper()
	if err := e.pipe.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRevocations(t *testing.T) {
	e := newEnv(t, tokens.Policy{})
	a1, _ := e.create(client.CreateRequest{Subject: "alice", Tags: []string{"ci"}})
	a2, a2PT := e.create(client.CreateRequest{Subject: "alice"})
	a2kid, a2kidPT := e.derive(admin, a2.ID, client.CreateRequest{})
	_, b1PT := e.create(client.CreateRequest{Subject: "bob", Tags: []string{"ci"}, Prefix: "acme"})
	b2, _ := e.create(client.CreateRequest{Subject: "bob"})
	_ = a1

	// A caller that cannot manage one of the matches revokes nothing.
	weak := latchkey.Actor{TokenID: "Weak000000000000", Scopes: []string{latchkey.ScopeTokensWrite, "other:read"}}
	_, err := revokeN(e.svc.RevokeMatching(ctx, weak, latchkey.TokenSelector{Subject: "alice"}, "", latchkey.BulkOptions{}))
	wantCode(t, err, latchkey.EPermissionDenied, "invoices:read")
	if c := e.code(a2PT); c != latchkey.Valid {
		t.Fatalf("a refused bulk revocation changed a token: %s", c)
	}

	n, err := revokeN(e.svc.RevokeMatching(ctx, admin, latchkey.TokenSelector{Subject: "alice"}, "offboarded", latchkey.BulkOptions{}))
	if err != nil || n != 3 {
		t.Fatalf("by subject: %d, %v; want 3 (two tokens and a derived one)", n, err)
	}
	if e.code(a2kidPT) != latchkey.Revoked || e.get(a2kid.ID).RevokedReason != "offboarded" {
		t.Error("the derived token survived its parent's bulk revocation")
	}
	n, _ = revokeN(e.svc.RevokeMatching(ctx, admin, latchkey.TokenSelector{Tag: "ci"}, "", latchkey.BulkOptions{}))
	if n != 1 {
		t.Errorf("by tag: %d, want 1 (a1 already revoked)", n)
	}
	if e.code(b1PT) != latchkey.Revoked {
		t.Error("tag revocation missed b1")
	}
	n, _ = revokeN(e.svc.RevokeMatching(ctx, admin, latchkey.TokenSelector{Prefix: "acme"}, "", latchkey.BulkOptions{}))
	if n != 0 {
		t.Errorf("by prefix again: %d, want 0", n)
	}
	p, _ := e.create(client.CreateRequest{})
	pk1, _ := e.derive(admin, p.ID, client.CreateRequest{})
	e.derive(admin, pk1.ID, client.CreateRequest{})
	n, err = revokeN(e.svc.RevokeMatching(ctx, admin, latchkey.TokenSelector{Parent: p.ID}, "", latchkey.BulkOptions{}))
	if err != nil || n != 2 {
		t.Fatalf("by parent: %d, %v; want 2 descendants", n, err)
	}
	if e.get(p.ID).Status != latchkey.StatusActive {
		t.Error("revoking by parent revoked the parent")
	}
	for _, sel := range []latchkey.TokenSelector{{}, {Subject: "x", Tag: "y"}, {Tag: "bad tag"}, {Prefix: "BAD"}, {Parent: "short"}} {
		if _, err := revokeN(e.svc.RevokeMatching(ctx, admin, sel, "", latchkey.BulkOptions{})); latchkey.ErrorCode(err) != latchkey.EInvalid {
			t.Errorf("selector %+v: %v, want %s", sel, err, latchkey.EInvalid)
		}
	}
	if _, err := revokeN(e.svc.RevokeMatching(ctx, admin, latchkey.TokenSelector{Parent: "0000000000000000"}, "", latchkey.BulkOptions{})); latchkey.ErrorCode(err) != latchkey.ENotFound {
		t.Errorf("unknown parent: %v", err)
	}
	_ = b2
}

// Each dimension of attenuation, refused when broader and inherited when
// unset.
func TestDeriveAttenuation(t *testing.T) {
	e := newEnv(t, tokens.Policy{})
	nb := e.clock().Add(time.Minute)
	parent, _ := e.create(client.CreateRequest{Scopes: []string{"billing.*:read", "invoices:read"}, TTL: "10d", NotBefore: &nb,
		IdleTimeout: "1h", AllowedCIDRs: []string{"10.0.0.0/8"}, AllowedMethods: []string{"GET", "HEAD"},
		AllowedPaths: []string{"/v1/projects/*/files/**"}, RateLimit: &client.RateRequest{Limit: 10, Window: "1m"}, MaxUses: 50})
	later := parent.ExpiresAt.Add(time.Second)
	earlier := nb.Add(-time.Second)
	broader := []struct {
		name string
		req  client.CreateRequest
		want string
	}{
		{"scope", client.CreateRequest{Scopes: []string{"invoices:write"}}, `scope "invoices:write"`},
		{"scope wildcard", client.CreateRequest{Scopes: []string{"billing.*:*"}}, "scope"},
		{"ttl", client.CreateRequest{TTL: "11d"}, "after the parent"},
		{"expires_at", client.CreateRequest{ExpiresAt: &later}, "after the parent"},
		{"not_before", client.CreateRequest{NotBefore: &earlier}, "not_before"},
		{"idle", client.CreateRequest{IdleTimeout: "2h"}, "idle_timeout"},
		{"cidr", client.CreateRequest{AllowedCIDRs: []string{"11.0.0.0/8"}}, "allowed_cidrs"},
		{"cidr wider", client.CreateRequest{AllowedCIDRs: []string{"0.0.0.0/0"}}, "allowed_cidrs"},
		{"method", client.CreateRequest{AllowedMethods: []string{"POST"}}, "allowed_methods"},
		{"path", client.CreateRequest{AllowedPaths: []string{"/v1/**"}}, "allowed_paths"},
		{"path sibling", client.CreateRequest{AllowedPaths: []string{"/v1/users/*"}}, "allowed_paths"},
		{"rate limit", client.CreateRequest{RateLimit: &client.RateRequest{Limit: 11, Window: "1m"}}, "rate_limit"},
		{"rate faster", client.CreateRequest{RateLimit: &client.RateRequest{Limit: 10, Window: "30s"}}, "rate_limit"},
		{"max uses", client.CreateRequest{MaxUses: 51}, "max_uses"},
		{"prefix", client.CreateRequest{Prefix: "other"}, "prefix"},
		{"subject", client.CreateRequest{Subject: "someone-else"}, "subject"},
	}
	for _, b := range broader {
		_, _, err := e.svc.Derive(ctx, admin, parent.ID, b.req)
		if err == nil || !strings.Contains(latchkey.ErrorMessage(err), b.want) {
			t.Errorf("%s: %v, want a refusal about %q", b.name, err, b.want)
		}
	}
	// Narrower in every dimension is fine.
	soon := parent.ExpiresAt.Add(-time.Hour)
	kid, _ := e.derive(admin, parent.ID, client.CreateRequest{Scopes: []string{"billing.eu:read"}, ExpiresAt: &soon, IdleTimeout: "30m",
		AllowedCIDRs: []string{"10.1.0.0/16"}, AllowedMethods: []string{"GET"}, AllowedPaths: []string{"/v1/projects/42/files/**"},
		RateLimit: &client.RateRequest{Limit: 5, Window: "1m"}, MaxUses: 10})
	if kid.MaxUses != 10 || kid.RateLimit.Limit != 5 || kid.ParentID != parent.ID {
		t.Errorf("narrower child: %+v", kid)
	}
	// Unset dimensions are inherited.
	inh, _ := e.derive(admin, parent.ID, client.CreateRequest{})
	if !slices.Equal(inh.Scopes, parent.Scopes) || !inh.ExpiresAt.Equal(parent.ExpiresAt) || !inh.NotBefore.Equal(parent.NotBefore) ||
		inh.IdleTimeout != parent.IdleTimeout || !slices.Equal(inh.AllowedCIDRs, parent.AllowedCIDRs) ||
		!slices.Equal(inh.AllowedMethods, parent.AllowedMethods) || !slices.Equal(inh.AllowedPaths, parent.AllowedPaths) ||
		*inh.RateLimit != *parent.RateLimit || inh.MaxUses != 50 || inh.Subject != parent.Subject {
		t.Errorf("inherited child %+v\nfrom parent %+v", inh, parent)
	}
	// Who may derive: the token itself, or a tokens:write holder covering it.
	reader := latchkey.Actor{TokenID: "Reader0000000000", Scopes: []string{latchkey.ScopeTokensRead, "billing.*:read", "invoices:read"}}
	_, _, err := e.svc.Derive(ctx, reader, parent.ID, client.CreateRequest{})
	wantCode(t, err, latchkey.EPermissionDenied, "tokens:write")
	narrowAdmin := latchkey.Actor{TokenID: "Narrow0000000000", Scopes: []string{latchkey.ScopeTokensWrite, "invoices:read"}}
	_, _, err = e.svc.Derive(ctx, narrowAdmin, parent.ID, client.CreateRequest{})
	wantCode(t, err, latchkey.EPermissionDenied, "billing.*:read")
	if _, _, err := e.svc.Derive(ctx, latchkey.Actor{TokenID: parent.ID, Scopes: parent.Scopes}, parent.ID, client.CreateRequest{}); err != nil {
		t.Errorf("self-derive: %v", err)
	}
	// Not from a suspended, revoked or rotated parent.
	e.svc.Suspend(ctx, admin, parent.ID, "")
	_, _, err = e.svc.Derive(ctx, admin, parent.ID, client.CreateRequest{})
	wantCode(t, err, latchkey.EConflict, "suspended")
}

func TestUpdate(t *testing.T) {
	e := newEnv(t, tokens.Policy{})
	tok, pt := e.create(client.CreateRequest{Name: "a", Scopes: []string{"invoices:*", "billing:read"}})
	name, tags := "renamed", []string{"x", "y"}
	got, err := e.svc.Update(ctx, admin, tok.ID, client.UpdateRequest{Name: &name, Tags: &tags, Meta: json.RawMessage(`{"team":"core"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != name || !slices.Equal(got.Tags, tags) || string(got.Meta) != `{"team":"core"}` || !slices.Equal(got.Scopes, tok.Scopes) {
		t.Errorf("after update: %+v", got)
	}
	narrow := []string{"invoices:read"}
	if _, err := e.svc.Update(ctx, admin, tok.ID, client.UpdateRequest{Scopes: &narrow}); err != nil {
		t.Fatal(err)
	}
	if c := e.code(pt, "billing:read"); c != latchkey.InsufficientScope {
		t.Errorf("a narrowed-away scope still verifies: %s", c)
	}
	wide := []string{"invoices:*"}
	_, err = e.svc.Update(ctx, admin, tok.ID, client.UpdateRequest{Scopes: &wide})
	wantCode(t, err, latchkey.EPermissionDenied, "only be narrowed")
	if s := e.get(tok.ID).Scopes; !slices.Equal(s, narrow) {
		t.Errorf("a refused widening changed scopes to %v", s)
	}
	// Narrowing below what a derived token holds is refused.
	p, _ := e.create(client.CreateRequest{Scopes: []string{"a:read", "b:read"}})
	e.derive(admin, p.ID, client.CreateRequest{Scopes: []string{"b:read"}})
	only := []string{"a:read"}
	_, err = e.svc.Update(ctx, admin, p.ID, client.UpdateRequest{Scopes: &only})
	wantCode(t, err, latchkey.EConflict, "derived token")
	_, err = e.svc.Update(ctx, admin, p.ID, client.UpdateRequest{})
	wantCode(t, err, latchkey.EInvalid, "nothing to change")
	e.svc.Revoke(ctx, admin, p.ID, "")
	_, err = e.svc.Update(ctx, admin, p.ID, client.UpdateRequest{Name: &name})
	wantCode(t, err, latchkey.EConflict, "revoked")
}

func TestRotationDueList(t *testing.T) {
	e := newEnv(t, tokens.Policy{RotationAge: 90 * 24 * time.Hour})
	old, _ := e.create(client.CreateRequest{})
	e.advance(91 * 24 * time.Hour)
	e.create(client.CreateRequest{})
	page, err := e.svc.List(ctx, latchkey.TokenFilter{RotationDue: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Tokens) != 1 || page.Tokens[0].ID != old.ID {
		t.Fatalf("rotation due: %d tokens", len(page.Tokens))
	}
	if _, err := e.rotate(ctx, admin, old.ID, 0); err != nil {
		t.Fatal(err)
	}
	if page, _ := e.svc.List(ctx, latchkey.TokenFilter{RotationDue: true}); len(page.Tokens) != 0 {
		t.Errorf("after rotating: %d due", len(page.Tokens))
	}
	none := newEnv(t, tokens.Policy{})
	_, err = none.svc.List(ctx, latchkey.TokenFilter{RotationDue: true})
	wantCode(t, err, latchkey.EInvalid, "--rotate-after")
}

// Rotation and derivation judge idle expiry on current data: a use the
// verifier holds in memory counts; a token that has idled out is refused.
func TestIdleTokensAndLifecycle(t *testing.T) {
	e := newEnv(t, tokens.Policy{})
	used, usedPT := e.create(client.CreateRequest{IdleTimeout: "1h"})
	idle, _ := e.create(client.CreateRequest{IdleTimeout: "1h"})
	e.advance(50 * time.Minute)
	if c := e.code(usedPT); c != latchkey.Valid {
		t.Fatal(c)
	}
	e.advance(50 * time.Minute) // 100m: idle since creation, or used 50m ago
	if _, err := e.rotate(ctx, admin, used.ID, 0); err != nil {
		t.Errorf("rotating a token used 50m ago (not yet written behind): %v", err)
	}
	_, err := e.rotate(ctx, admin, idle.ID, 0)
	wantCode(t, err, latchkey.EConflict, "unused")
	_, _, err = e.svc.Derive(ctx, admin, idle.ID, client.CreateRequest{})
	wantCode(t, err, latchkey.EConflict, "unused")
}

func revokeN(r client.RevocationResult, err error) (int, error) { return r.Revoked, err }

// rotated is what one rotation returned.
type rotated struct {
	Successor *latchkey.Token
	Plaintext secret.Plaintext
	Old       *latchkey.Token
}

func (e *env) rotate(ctx context.Context, a latchkey.Actor, id string, grace time.Duration) (rotated, error) {
	succ, pt, old, err := e.svc.Rotate(ctx, a, id, grace)
	return rotated{succ, pt, old}, err
}
