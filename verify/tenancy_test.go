package verify

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// tenancyFake is a Tenancy whose roles and identities a test changes.
type tenancyFake struct {
	mu     sync.Mutex
	roles  map[string][]string
	idents map[string]*latchkey.Identity
	rotate map[string]time.Duration
}

func (f *tenancyFake) RoleScopes(ks, role string) ([]string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.roles[ks+"/"+role]
	return s, ok
}

func (f *tenancyFake) Identity(ks, subject string) (*latchkey.Identity, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.idents[ks+"/"+subject]
	return id, ok
}

func (f *tenancyFake) RotateAfter(ks string) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rotate[ks]
}

func newTenantFixture(t *testing.T) (*fixture, *tenancyFake) {
	f := newFixture(t)
	tf := &tenancyFake{roles: map[string][]string{}, idents: map[string]*latchkey.Identity{}, rotate: map[string]time.Duration{}}
	f.v = New(f.loader, f.hasher, f.rec.p, Config{Now: f.clock, Node: "n1", Tenancy: tf})
	return f, tf
}

func (f *fixture) verifyAt(t *testing.T, tok, ks string, scopes ...string) latchkey.Decision {
	t.Helper()
	d, err := f.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: tok, Scopes: scopes, Keyspace: ks})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A token of another keyspace does not exist at a door: NOT_FOUND, with
// the real reason in the audit record. API calls accept every keyspace.
func TestKeyspaceMismatch(t *testing.T) {
	t.Parallel()
	f, _ := newTenantFixture(t)
	acme, _ := f.issue(t, func(tk *latchkey.Token) { tk.Keyspace = "acme" })
	old, _ := f.issue(t) // stored before keyspaces: ""
	for _, c := range []struct {
		tok, ks string
		want    latchkey.Code
	}{
		{acme, "acme", latchkey.Valid}, {acme, "", latchkey.NotFound}, {acme, latchkey.DefaultKeyspace, latchkey.NotFound}, {acme, "beta", latchkey.NotFound},
		{old, "", latchkey.Valid}, {old, latchkey.DefaultKeyspace, latchkey.Valid}, {old, "acme", latchkey.NotFound},
	} {
		d := f.verifyAt(t, c.tok, c.ks)
		if d.Code != c.want {
			t.Errorf("a token at keyspace %q: %s, want %s", c.ks, d.Code, c.want)
		}
		if c.want == latchkey.NotFound && (d.Reason != "keyspace_mismatch" || d.Found || d.Subject != "" || d.Scopes != nil) {
			t.Errorf("a mismatch says more than NOT_FOUND: %+v", d)
		}
	}
	d, _ := f.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: acme, APICall: true})
	if d.Code != latchkey.Valid || d.Keyspace != "acme" {
		t.Errorf("an API call with an acme token: %+v", d)
	}
	f.rec.p.Flush(context.Background())
	if ev := f.rec.last(); ev.Reason != "" && ev.Outcome == "NOT_FOUND" && ev.Reason != "keyspace_mismatch" {
		t.Errorf("audit reason %q", ev.Reason)
	}
}

// Roles resolve at load; Retenant makes the next verification see a
// change, and a load in flight when it happens is not cached.
func TestRolesResolved(t *testing.T) {
	t.Parallel()
	f, tf := newTenantFixture(t)
	tf.roles["acme/reader"] = []string{"invoices:read"}
	tok, _ := f.issue(t, func(tk *latchkey.Token) {
		tk.Keyspace, tk.Scopes, tk.Roles = "acme", []string{"own:read"}, []string{"reader", "gone"}
	})
	if d := f.verifyAt(t, tok, "acme", "invoices:read", "own:read"); d.Code != latchkey.Valid {
		t.Fatalf("role scope and own scope: %s", d.Code)
	}
	tf.mu.Lock()
	tf.roles["acme/reader"] = []string{"customers:read"}
	tf.mu.Unlock()
	if d := f.verifyAt(t, tok, "acme", "invoices:read"); d.Code != latchkey.Valid {
		t.Fatalf("before Retenant the cached resolution stands (until its staleness bound): %s", d.Code)
	}
	f.v.Retenant()
	if d := f.verifyAt(t, tok, "acme", "invoices:read"); d.Code != latchkey.InsufficientScope {
		t.Errorf("after the role lost invoices:read: %s", d.Code)
	}
	if d := f.verifyAt(t, tok, "acme", "customers:read"); d.Code != latchkey.Valid {
		t.Errorf("after the role gained customers:read: %s", d.Code)
	}
	// A role of another keyspace with the same name grants nothing.
	tf.roles["beta/admin"] = []string{"*"}
	other, _ := f.issue(t, func(tk *latchkey.Token) { tk.Keyspace, tk.Roles = "acme", []string{"admin"} })
	if d := f.verifyAt(t, other, "acme", "x:y"); d.Code != latchkey.InsufficientScope {
		t.Errorf("another keyspace's role resolved: %s", d.Code)
	}
	// A load in flight across a Retenant is not cached.
	f.loader.gate = make(chan struct{})
	fresh, _ := f.issue(t, func(tk *latchkey.Token) { tk.Keyspace, tk.Roles = "acme", []string{"reader"} })
	done := make(chan latchkey.Decision)
	go func() { done <- f.verifyAt(t, fresh, "acme", "customers:read") }()
	time.Sleep(10 * time.Millisecond) // let the load start (it waits on the gate)
	f.v.Retenant()
	close(f.loader.gate)
	<-done
	f.loader.gate = nil
	n := f.loader.loads.Load()
	f.verifyAt(t, fresh, "acme", "customers:read")
	if f.loader.loads.Load() != n+1 {
		t.Error("an entry loaded across a Retenant was cached")
	}
}

// An identity's rate limit and budget are shared by all its tokens.
func TestIdentityLimits(t *testing.T) {
	t.Parallel()
	f, tf := newTenantFixture(t)
	tf.idents["shop/cust"] = &latchkey.Identity{Keyspace: "shop", Subject: "cust", RateLimit: &latchkey.RateLimit{Limit: 5, Window: latchkey.Duration(time.Minute)}}
	var toks []string
	for range 3 {
		tok, _ := f.issue(t, func(tk *latchkey.Token) { tk.Keyspace, tk.Subject = "shop", "cust" })
		toks = append(toks, tok)
	}
	stranger, _ := f.issue(t, func(tk *latchkey.Token) { tk.Keyspace, tk.Subject = "shop", "other" })
	valid := 0
	for i := range 12 {
		if f.verifyAt(t, toks[i%3], "shop").Code == latchkey.Valid {
			valid++
		}
	}
	if valid != 5 {
		t.Errorf("three tokens of one identity limited to 5: %d VALID", valid)
	}
	if d := f.verifyAt(t, stranger, "shop"); d.Code != latchkey.Valid {
		t.Errorf("another subject is limited too: %s", d.Code)
	}
	// The budget names the identity's key for the store to spend.
	tf.idents["shop/cust"] = &latchkey.Identity{Keyspace: "shop", Subject: "cust", MaxUses: 3}
	f.v.Retenant()
	e := f.v.newEntry(f.loader.toks[mustID(toks[0])], 0)
	if e.info.cons == nil || len(e.info.cons.budget) != 1 || e.info.cons.budget[0] != latchkey.BudgetPrefix+"shop/cust" {
		t.Errorf("the identity's budget is not spent by its tokens: %+v", e.info.cons)
	}
}

func mustID(tok string) string { return tok[3:19] }
