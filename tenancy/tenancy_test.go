package tenancy

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/sqlite"
)

var ctx = context.Background()

// issuer counts the tokens it issues.
type issuer struct {
	n    atomic.Int32
	last client.CreateRequest
	mu   sync.Mutex
}

func (i *issuer) Create(_ context.Context, a latchkey.Actor, req client.CreateRequest) (*latchkey.Token, secret.Plaintext, error) {
	i.n.Add(1)
	i.mu.Lock()
	i.last = req
	i.mu.Unlock()
	return &latchkey.Token{ID: "IssuedTokenId000", Keyspace: req.Keyspace, Subject: req.Subject}, secret.Plaintext{}, nil
}

type env struct {
	s       *Service
	clock   time.Time
	mu      sync.Mutex
	changed atomic.Int32
	iss     *issuer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db, err := sqlite.Open(ctx, t.TempDir()+"/t.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &env{clock: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC), iss: &issuer{}}
	e.s = &Service{Store: db, Registry: &Registry{}, Tokens: e.iss, Changed: func() { e.changed.Add(1) },
		Now: func() time.Time { e.mu.Lock(); defer e.mu.Unlock(); return e.clock }}
	return e
}

func (e *env) advance(d time.Duration) { e.mu.Lock(); e.clock = e.clock.Add(d); e.mu.Unlock() }

func actor(id, subject, ks string, scopes ...string) latchkey.Actor {
	return latchkey.Actor{TokenID: id, Subject: subject, Keyspace: ks, Scopes: scopes}
}

var root = actor("RootTokenId00000", "root", latchkey.DefaultKeyspace, latchkey.AdminScope)

func (e *env) keyspace(t *testing.T, p latchkey.KeyspacePolicy) {
	t.Helper()
	if _, _, err := e.s.PutKeyspace(ctx, root, latchkey.Keyspace{Name: "prod", Prefix: "prod", Policy: p}); err != nil {
		t.Fatal(err)
	}
}

func TestKeyspaceRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.keyspace(t, latchkey.KeyspacePolicy{})
	if e.changed.Load() != 1 {
		t.Errorf("Changed called %d times after one change", e.changed.Load())
	}
	if k, ok := e.s.Registry.Keyspace("prod"); !ok || k.Prefix != "prod" || k.CreatedBy != root.TokenID {
		t.Errorf("registry after the change: %+v %v", k, ok)
	}
	admin := actor("KsAdminTokenId00", "ops", latchkey.DefaultKeyspace, latchkey.KeyspaceScope("prod", "admin"))
	for name, c := range map[string]struct {
		a latchkey.Actor
		k latchkey.Keyspace
	}{
		"prefix changed":           {root, latchkey.Keyspace{Name: "prod", Prefix: "prod_v2"}},
		"prefix taken":             {root, latchkey.Keyspace{Name: "other", Prefix: "prod"}},
		"bad name":                 {root, latchkey.Keyspace{Name: "Prod", Prefix: "x"}},
		"bad prefix":               {root, latchkey.Keyspace{Name: "x", Prefix: "X_1"}},
		"default with a prefix":    {root, latchkey.Keyspace{Name: latchkey.DefaultKeyspace, Prefix: "lk"}},
		"keyspace admin creates":   {admin, latchkey.Keyspace{Name: "new", Prefix: "new"}},
		"negative ttl":             {root, latchkey.Keyspace{Name: "x", Prefix: "x", Policy: latchkey.KeyspacePolicy{DefaultTTL: -1}}},
		"default ttl over maximum": {root, latchkey.Keyspace{Name: "x", Prefix: "x", Policy: latchkey.KeyspacePolicy{DefaultTTL: latchkey.Duration(2 * time.Hour), MaxLifetime: latchkey.Duration(time.Hour)}}},
		"rule without approvals":   {root, latchkey.Keyspace{Name: "x", Prefix: "x", Policy: latchkey.KeyspacePolicy{Requests: []latchkey.ApprovalRule{{Scopes: []string{"a:b"}, MaxTTL: 1}}}}},
		"rule without max_ttl":     {root, latchkey.Keyspace{Name: "x", Prefix: "x", Policy: latchkey.KeyspacePolicy{Requests: []latchkey.ApprovalRule{{Scopes: []string{"a:b"}, Approvals: 1}}}}},
		"rule for latchkey scopes": {root, latchkey.Keyspace{Name: "x", Prefix: "x", Policy: latchkey.KeyspacePolicy{Requests: []latchkey.ApprovalRule{{Scopes: []string{"latchkey:admin"}, Approvals: 1, MaxTTL: 1}}}}},
		"eleven approvals":         {root, latchkey.Keyspace{Name: "x", Prefix: "x", Policy: latchkey.KeyspacePolicy{Requests: []latchkey.ApprovalRule{{Scopes: []string{"a:b"}, Approvals: 11, MaxTTL: 1}}}}},
	} {
		if _, _, err := e.s.PutKeyspace(ctx, c.a, c.k); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The keyspace's admin changes its policy.
	if _, created, err := e.s.PutKeyspace(ctx, admin, latchkey.Keyspace{Name: "prod", Prefix: "prod", Description: "shop"}); err != nil || created {
		t.Errorf("the keyspace admin updating its policy: %v %v", created, err)
	}
	if err := e.s.DeleteKeyspace(ctx, root, latchkey.DefaultKeyspace); err == nil {
		t.Error("the default keyspace was deleted")
	}
	if _, err := e.s.PutRole(ctx, admin, latchkey.Role{Keyspace: "prod", Name: "r", Scopes: []string{"orders:read"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.s.DeleteKeyspace(ctx, root, "prod"); err == nil || latchkey.ErrorCode(err) != latchkey.EConflict {
		t.Errorf("deleting a keyspace with a role: %v", err)
	}
}

func TestRoles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.keyspace(t, latchkey.KeyspacePolicy{})
	admin := actor("KsAdminTokenId00", "ops", latchkey.DefaultKeyspace, latchkey.KeyspaceScope("prod", "admin"))
	r, err := e.s.PutRole(ctx, admin, latchkey.Role{Keyspace: "prod", Name: "billing-reader", Scopes: []string{"invoices:read", "customers:read", "invoices:read"}})
	if err != nil || r.Version != 1 || len(r.Scopes) != 2 {
		t.Fatalf("PutRole = %+v %v", r, err)
	}
	r, _ = e.s.PutRole(ctx, admin, latchkey.Role{Keyspace: "prod", Name: "billing-reader", Scopes: []string{"invoices:read"}})
	if sc, ok := e.s.Registry.RoleScopes("prod", "billing-reader"); !ok || len(sc) != 1 || r.Version != 2 {
		t.Errorf("after the change: %v %v (version %d)", sc, ok, r.Version)
	}
	for name, sc := range map[string][]string{
		"empty":             nil,
		"latchkey's global": {latchkey.ScopeTokensWrite},
		"another keyspace":  {latchkey.KeyspaceScope("beta", "admin")},
		"malformed":         {"bad scope"},
		"a token":           {"lk_0123456789abcdef_0123456789012345678901234567890123456789012abcdef"},
	} {
		if _, err := e.s.PutRole(ctx, admin, latchkey.Role{Keyspace: "prod", Name: "x", Scopes: sc}); err == nil {
			t.Errorf("a role holding %s was accepted", name)
		}
	}
	if _, err := e.s.PutRole(ctx, admin, latchkey.Role{Keyspace: "prod", Name: "ops", Scopes: []string{latchkey.KeyspaceScope("prod", "tokens:read")}}); err != nil {
		t.Errorf("a role holding its keyspace's own admin scope: %v", err)
	}
	if err := e.s.DeleteRole(ctx, admin, "prod", "billing-reader"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.s.Registry.RoleScopes("prod", "billing-reader"); ok {
		t.Error("a deleted role still resolves")
	}
	// Each change is audited with who made it.
	page, _ := e.s.Store.(latchkey.Store).ListAudit(ctx, latchkey.AuditFilter{Keyspace: "prod"})
	n := 0
	for _, ev := range page.Events {
		if strings.HasPrefix(ev.Action, "role.") {
			n++
			if ev.Actor != admin.TokenID {
				t.Errorf("role change recorded as by %q", ev.Actor)
			}
		}
	}
	if n != 4 {
		t.Errorf("%d role records, want 4 (two puts, one put of ops, one delete)", n)
	}
}

func TestRequestRules(t *testing.T) {
	t.Parallel()
	p := &latchkey.KeyspacePolicy{Requests: []latchkey.ApprovalRule{
		{Scopes: []string{"prod.*:write"}, Approvals: 2, MaxTTL: latchkey.Duration(4 * time.Hour)},
		{Scopes: []string{"prod.*:*"}, Approvals: 1, MaxTTL: latchkey.Duration(8 * time.Hour)},
		{Scopes: []string{"staging.*:*"}, Approvals: 1, MaxTTL: latchkey.Duration(24 * time.Hour)},
	}}
	for _, c := range []struct {
		scopes []string
		need   int
		ttl    time.Duration
		ok     bool
	}{
		{[]string{"prod.orders:write"}, 2, 4 * time.Hour, true},
		{[]string{"prod.orders:read"}, 1, 8 * time.Hour, true},
		{[]string{"staging.db:read", "prod.orders:read"}, 1, 8 * time.Hour, true},
		{[]string{"staging.db:read", "prod.orders:write"}, 2, 4 * time.Hour, true},
		{[]string{"billing:read"}, 0, 0, false},
		{[]string{"prod.orders:write", "billing:read"}, 0, 0, false},
	} {
		need, ttl, err := rulesFor(p, c.scopes)
		if (err == nil) != c.ok || need != c.need || ttl != c.ttl {
			t.Errorf("rulesFor(%v) = %d %v %v; want %d %v ok=%v", c.scopes, need, ttl, err, c.need, c.ttl, c.ok)
		}
	}
}

func (e *env) prodRequests(t *testing.T) {
	e.keyspace(t, latchkey.KeyspacePolicy{Requests: []latchkey.ApprovalRule{
		{Scopes: []string{"prod.*:write"}, Approvals: 2, MaxTTL: latchkey.Duration(4 * time.Hour)}}})
}

var (
	alice = actor("AliceTokenId0000", "alice", "prod")
	bob   = actor("BobTokenId000000", "bob", "prod", latchkey.ScopeApprove)
	carol = actor("CarolTokenId0000", "carol", latchkey.DefaultKeyspace, latchkey.KeyspaceScope("prod", "approve"))
	dave  = actor("DaveTokenId00000", "dave", latchkey.DefaultKeyspace, latchkey.KeyspaceScope("beta", "approve"))
)

func TestRequestLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.prodRequests(t)
	for name, nr := range map[string]client.NewAccessRequest{
		"no reason":       {Scopes: []string{"prod.x:write"}, TTL: "1h"},
		"no ttl":          {Scopes: []string{"prod.x:write"}, Reason: "r"},
		"bad ttl":         {Scopes: []string{"prod.x:write"}, TTL: "-1h", Reason: "r"},
		"no scopes":       {TTL: "1h", Reason: "r"},
		"another space":   {Keyspace: "beta", Scopes: []string{"prod.x:write"}, TTL: "1h", Reason: "r"},
		"control chars":   {Scopes: []string{"prod.x:write"}, TTL: "1h", Reason: "a\x1b[2Jb"},
		"unrequestable":   {Scopes: []string{"billing:write"}, TTL: "1h", Reason: "r"},
		"malformed scope": {Scopes: []string{"prod x"}, TTL: "1h", Reason: "r"},
	} {
		if _, _, err := e.s.Request(ctx, alice, nr); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	q, code, err := e.s.Request(ctx, alice, client.NewAccessRequest{Scopes: []string{"prod.orders:write"}, TTL: "10h", Reason: "incident 4411"})
	if err != nil || !strings.HasPrefix(code, ClaimPrefix) || q.TTL != latchkey.Duration(4*time.Hour) || q.Needed != 2 || q.Keyspace != "prod" {
		t.Fatalf("Request = %+v %q %v", q, code, err)
	}
	// The claim code is kept only as a hash.
	raw, _, _ := e.s.Store.GetSetting(ctx, requestKey(q.ID))
	if strings.Contains(raw, code) || !strings.Contains(raw, claimHash(code)) {
		t.Errorf("the stored request holds the claim code: %s", raw)
	}
	if _, err := e.s.Approve(ctx, dave, q.ID, ""); latchkey.ErrorCode(err) != latchkey.ENotFound {
		t.Errorf("another keyspace's approver: %v, want not found", err)
	}
	if _, err := e.s.Approve(ctx, actor("AliceOtherToken0", "alice", "prod", latchkey.ScopeApprove), q.ID, ""); err == nil {
		t.Error("the requester's other token approved her request")
	}
	// Two approvers at once: both count.
	var wg sync.WaitGroup
	for _, a := range []latchkey.Actor{bob, carol} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.s.Approve(ctx, a, q.ID, ""); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, _ := e.s.GetRequest(ctx, q.ID)
	if got.Status != latchkey.RequestApproved || len(got.Approvals) != 2 || !got.ClaimBy.Equal(e.clock.Add(DefaultClaimTTL)) {
		t.Fatalf("after two concurrent approvals: %+v", got)
	}
	// Ten claims at once with the code: one token.
	var ok atomic.Int32
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := e.s.Claim(ctx, latchkey.Actor{}, q.ID, code); err == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || e.iss.n.Load() != 1 {
		t.Errorf("ten concurrent claims: %d succeeded, %d tokens issued; want one", ok.Load(), e.iss.n.Load())
	}
	if e.iss.last.TTL != "4h" || e.iss.last.Subject != "alice" || e.iss.last.Keyspace != "prod" {
		t.Errorf("issued %+v", e.iss.last)
	}
	got, _ = e.s.GetRequest(ctx, q.ID)
	if got.Status != latchkey.RequestClaimed || got.TokenID != "IssuedTokenId000" {
		t.Errorf("after the claim: %+v", got)
	}
	// Expiry by the clock: pending past its deadline.
	q2, code2, _ := e.s.Request(ctx, alice, client.NewAccessRequest{Scopes: []string{"prod.x:write"}, TTL: "1h", Reason: "r"})
	e.advance(DefaultRequestTTL)
	if got, _ := e.s.GetRequest(ctx, q2.ID); got.Status != latchkey.RequestExpired {
		t.Errorf("a request past its deadline is %s", got.Status)
	}
	if _, err := e.s.Approve(ctx, bob, q2.ID, ""); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("approving an expired request: %v", err)
	}
	if _, _, err := e.s.Claim(ctx, latchkey.Actor{}, q2.ID, code2); err == nil {
		t.Error("an expired request was claimed")
	}
	// Lists: approvers see their keyspace's, a stranger nothing.
	all, _ := e.s.Requests(ctx, func(r *latchkey.AccessRequest) bool { return carol.Reach(latchkey.PermApprove).Has(r.Keyspace) }, "")
	none, _ := e.s.Requests(ctx, func(r *latchkey.AccessRequest) bool { return dave.Reach(latchkey.PermApprove).Has(r.Keyspace) }, "")
	if len(all) != 2 || len(none) != 0 {
		t.Errorf("visible requests: approver %d, stranger %d", len(all), len(none))
	}
	// Pruning keeps recent requests, drops old decided ones.
	e.advance(48 * time.Hour)
	if err := e.s.Prune(ctx, e.s.Store.(latchkey.Store).DeleteSetting); err != nil {
		t.Fatal(err)
	}
	left, _ := e.s.Store.SettingsWithPrefix(ctx, requestPrefix)
	if len(left) != 0 {
		t.Errorf("%d requests left after pruning", len(left))
	}
	var stored stored
	json.Unmarshal([]byte(raw), &stored)
	if stored.ClaimHash == "" {
		t.Error("the claim hash is not stored")
	}
}
