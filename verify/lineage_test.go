package verify

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/tokens"
)

// stack is the real thing on SQLite: store, token service and verifier
// sharing one injected clock.
type stack struct {
	db  *sqlite.DB
	svc *tokens.Service
	v   *Verifier
	rec *recorder
	mu  sync.Mutex
	now time.Time
}

func newStack(t testing.TB) *stack {
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h, _ := secret.NewHasher(make([]byte, 32))
	s := &stack{db: db, rec: newRecorder(t), now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	s.v = New(db, h, s.rec.p, Config{Now: s.clock})
	t.Cleanup(func() { s.v.Close(context.Background()) })
	s.svc = &tokens.Service{Store: db, Hasher: h, Now: s.clock, Invalidate: s.v.Invalidate, FlushUsage: s.v.FlushUsage}
	return s
}

func (s *stack) clock() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

func (s *stack) advance(d time.Duration) {
	s.mu.Lock()
	s.now = s.now.Add(d)
	s.mu.Unlock()
}

var admin = latchkey.Actor{TokenID: "Admin00000000000", Scopes: []string{latchkey.AdminScope}}

// max_uses is exact under 100 concurrent verifiers on the real store.
func TestMaxUsesExactUnderConcurrency(t *testing.T) {
	s := newStack(t)
	_, pt, err := s.svc.Create(context.Background(), admin, client.CreateRequest{Scopes: []string{"a:read"}, MaxUses: 40})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	codes := map[latchkey.Code]int{}
	var remaining []int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			d, err := s.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: pt.Reveal(), Scopes: []string{"a:read"}})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			codes[d.Code]++
			if d.Valid() {
				remaining = append(remaining, d.Remaining)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[latchkey.Valid] != 40 || codes[latchkey.UsageExceeded] != 60 {
		t.Fatalf("100 concurrent verifiers of a 40-use token: %v, want 40 VALID and 60 USAGE_EXCEEDED", codes)
	}
	slices.Sort(remaining)
	for i, r := range remaining {
		if r != int64(i) {
			t.Fatalf("remaining values %v, want each of 0..39 once", remaining)
		}
	}
	if d, _ := s.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: pt.Reveal()}); d.Code != latchkey.UsageExceeded {
		t.Errorf("afterwards: %s", d.Code)
	}
}

// A derived token spends its parent's budget and rate, so many children
// together never exceed the parent.
func TestChildrenShareParentLimits(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	parent, _, err := s.svc.Create(ctx, admin, client.CreateRequest{Scopes: []string{"a:read"}, MaxUses: 5,
		RateLimit: &client.RateRequest{Limit: 100, Window: "1s"}})
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for range 3 {
		_, pt, err := s.svc.Derive(ctx, admin, parent.ID, client.CreateRequest{})
		if err != nil {
			t.Fatal(err)
		}
		kids = append(kids, pt.Reveal())
	}
	valid := 0
	for range 3 {
		for _, k := range kids {
			if d, _ := s.v.Verify(ctx, &latchkey.VerifyRequest{Token: k}); d.Valid() {
				valid++
			}
		}
	}
	if valid != 5 {
		t.Errorf("3 children of a 5-use parent, 9 attempts: %d VALID, want 5", valid)
	}
}

// The property of attenuation: a derived token never verifies for
// anything its parent would refuse. Random parents, random derivations
// (refused ones included), random requests at random times.
func TestDerivedNeverExceedsParent(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, uint64(time.Now().UnixNano())))
	seed := rng.Uint64()
	rng = mrand.New(mrand.NewPCG(seed, 7))
	t.Logf("seed %d", seed)
	s := newStack(t)
	ctx := context.Background()

	scopes := []string{"*", "billing.*:read", "billing.eu:read", "billing.eu:*", "invoices:read", "invoices:write", "projects.42:*", "projects.*:read"}
	cidrs := []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "192.0.2.7", "2001:db8::/32", "2001:db8:1::/48"}
	methods := []string{"GET", "POST", "DELETE", "HEAD"}
	paths := []string{"/v1/**", "/v1/projects/*/files/**", "/v1/projects/42/files/**", "/v1/projects/42/files/a", "/v1/invoices", "/v1/*"}
	ips := []string{"10.1.2.3", "10.9.9.9", "192.0.2.7", "192.0.2.8", "2001:db8:1::9", "2001:db8:2::9", "8.8.8.8", ""}
	reqPaths := []string{"/v1/projects/42/files/a", "/v1/projects/43/files/b/c", "/v1/invoices", "/v1/x", "/v2/x", "/v1/projects/42/files/../../x", ""}
	reqScopes := []string{"billing.eu:read", "billing.us:read", "invoices:read", "invoices:write", "projects.42:write", "projects.7:read", "x:y"}

	pick := func(list []string, p float64) []string {
		var out []string
		for _, v := range list {
			if rng.Float64() < p {
				out = append(out, v)
			}
		}
		return out
	}
	randomRequest := func(narrow bool) client.CreateRequest {
		var r client.CreateRequest
		p := 0.35
		if narrow {
			p = 0.2
		}
		r.Scopes = pick(scopes, p)
		if rng.IntN(2) == 0 {
			r.AllowedCIDRs = pick(cidrs, p)
		}
		if rng.IntN(2) == 0 {
			r.AllowedMethods = pick(methods, 0.5)
		}
		if rng.IntN(2) == 0 {
			r.AllowedPaths = pick(paths, p)
		}
		if rng.IntN(3) == 0 {
			r.RateLimit = &client.RateRequest{Limit: int64(1 + rng.IntN(5)), Window: []string{"1s", "10s", "1m"}[rng.IntN(3)]}
		}
		if rng.IntN(3) == 0 {
			r.MaxUses = int64(1 + rng.IntN(8))
		}
		if rng.IntN(3) == 0 {
			r.IdleTimeout = []string{"1m", "5m", "1h"}[rng.IntN(3)]
		}
		if rng.IntN(2) == 0 {
			r.TTL = []string{"30s", "2m", "10m", "1h"}[rng.IntN(4)]
		}
		if rng.IntN(4) == 0 {
			nb := s.clock().Add(time.Duration(rng.IntN(120)) * time.Second)
			r.NotBefore = &nb
		}
		return r
	}

	children, refusedDerive := 0, 0
	checked, childValid := 0, 0
	for round := 0; round < 200; round++ {
		preq := randomRequest(false)
		if len(preq.Scopes) == 0 {
			preq.Scopes = []string{"*"}
		}
		parent, ppt, err := s.svc.Create(ctx, admin, preq)
		if err != nil {
			continue // an invalid random combination (e.g. not_before after expiry)
		}
		type kid struct{ pt string }
		var kids []kid
		for range 4 {
			creq := randomRequest(true)
			_, cpt, err := s.svc.Derive(ctx, latchkey.Actor{TokenID: parent.ID, Scopes: parent.Scopes}, parent.ID, creq)
			if err != nil {
				refusedDerive++
				continue
			}
			children++
			kids = append(kids, kid{cpt.Reveal()})
		}
		if len(kids) == 0 {
			continue
		}
		for range 40 {
			s.advance(time.Duration(rng.IntN(40)) * time.Second)
			k := kids[rng.IntN(len(kids))]
			req := latchkey.VerifyRequest{ClientIP: ips[rng.IntN(len(ips))], Method: methods[rng.IntN(len(methods))], Path: reqPaths[rng.IntN(len(reqPaths))]}
			if rng.IntN(4) == 0 {
				req.Method = ""
			}
			req.Scopes = pick(reqScopes, 0.25)
			if rng.IntN(3) == 0 { // the parent is in use too, spending its budget and rate
				use := req
				use.Token = ppt.Reveal()
				if _, err := s.v.Verify(ctx, &use); err != nil {
					t.Fatal(err)
				}
			}
			now := s.clock().UnixNano()
			// The parent's decision first, spending nothing.
			var pd latchkey.Decision
			preq := req
			preq.Token = ppt.Reveal()
			if err := s.v.decide(ctx, &preq, now, &pd, false); err != nil {
				t.Fatal(err)
			}
			creqq := req
			creqq.Token = k.pt
			cd, err := s.v.Verify(ctx, &creqq)
			if err != nil {
				t.Fatal(err)
			}
			checked++
			if cd.Valid() {
				childValid++
			}
			if cd.Valid() && !pd.Valid() {
				t.Fatalf("seed %d: child VALID where the parent answers %s/%s\nparent %+v\nrequest %+v", seed, pd.Code, pd.Reason,
					fmt.Sprintf("%+v", parent.Constraints), req)
			}
		}
	}
	t.Logf("%d children derived, %d derivations refused, %d requests compared, %d child VALID", children, refusedDerive, checked, childValid)
	if children < 60 || refusedDerive < 60 || checked < 2000 || childValid < 60 {
		t.Errorf("the random walk is too narrow to mean anything: %d children, %d refusals, %d checks, %d VALID", children, refusedDerive, checked, childValid)
	}
}

// A child that has not idled out is still refused once an ancestor has
// (here: the child's not_before pushed its own idle clock past the
// parent's), and the refusal is audited as ancestor_idle.
func TestAncestorIdle(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	parent, _, err := s.svc.Create(ctx, admin, client.CreateRequest{Scopes: []string{"a:read"}, IdleTimeout: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	nb := s.clock().Add(50 * time.Minute)
	child, pt, err := s.svc.Derive(ctx, admin, parent.ID, client.CreateRequest{NotBefore: &nb})
	if err != nil {
		t.Fatal(err)
	}
	s.advance(55 * time.Minute)
	if d, _ := s.v.Verify(ctx, &latchkey.VerifyRequest{Token: pt.Reveal()}); d.Code != latchkey.Valid {
		t.Fatalf("within both idle windows: %s/%s", d.Code, d.Reason)
	}
	// That use kept the parent alive too: 1h after it, both have idled.
	s.advance(59 * time.Minute)
	if d, _ := s.v.Verify(ctx, &latchkey.VerifyRequest{Token: pt.Reveal()}); d.Code != latchkey.Valid {
		t.Fatalf("59m after the last use: %s/%s", d.Code, d.Reason)
	}
	// Another child, never used, with a late not_before: its own clock is
	// fresh, its parent's is not.
	nb2 := s.clock().Add(30 * time.Minute)
	_, pt2, err := s.svc.Derive(ctx, admin, parent.ID, client.CreateRequest{NotBefore: &nb2})
	if err != nil {
		t.Fatal(err)
	}
	s.advance(70 * time.Minute) // the parent was last used 70m ago (at the derivation)
	d, _ := s.v.Verify(ctx, &latchkey.VerifyRequest{Token: pt2.Reveal()})
	if d.Code != latchkey.Expired || d.Reason != "ancestor_idle" {
		t.Fatalf("child of an idle parent: %s/%s, want EXPIRED/ancestor_idle", d.Code, d.Reason)
	}
	if ev := s.rec.last(); ev.Outcome != "EXPIRED" || ev.Reason != "ancestor_idle" {
		t.Errorf("audit: %s/%s", ev.Outcome, ev.Reason)
	}
	_ = child
}
