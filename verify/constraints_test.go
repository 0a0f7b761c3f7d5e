package verify

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/ratelimit"
)

func (f *fixture) check(t testing.TB, req *latchkey.VerifyRequest) latchkey.Decision {
	t.Helper()
	d, err := f.v.Verify(context.Background(), req)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return d
}

func cons(c latchkey.Constraints) func(*latchkey.Token) {
	return func(t *latchkey.Token) {
		n, err := c.Normalize()
		if err != nil {
			panic(err)
		}
		t.Constraints = n
	}
}

// Each constraint, and their order (docs/architecture.md §2: network, then method
// and path, then scopes, then rate and usage). Every refusal reaches the
// audit log with its reason.
func TestConstraints(t *testing.T) {
	f := newFixture(t)
	net := cons(latchkey.Constraints{AllowedCIDRs: []string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.7"}})
	meth := cons(latchkey.Constraints{AllowedMethods: []string{"get", "HEAD"}})
	path := cons(latchkey.Constraints{AllowedPaths: []string{"/v1/invoices", "/v1/projects/*/files/**", "/v1/users/*"}})
	all := cons(latchkey.Constraints{AllowedCIDRs: []string{"10.0.0.0/8"}, AllowedMethods: []string{"GET"}, AllowedPaths: []string{"/v1/**"}})
	aud := cons(latchkey.Constraints{Audience: []string{"https://mcp.example.com/mcp/files", "https://api.example.com"}})

	cases := []struct {
		name   string
		mut    func(*latchkey.Token)
		req    latchkey.VerifyRequest
		code   latchkey.Code
		reason string
	}{
		{"cidr v4 inside", net, latchkey.VerifyRequest{ClientIP: "10.1.2.3"}, latchkey.Valid, ""},
		{"cidr v4 outside", net, latchkey.VerifyRequest{ClientIP: "11.0.0.1"}, latchkey.IPNotAllowed, "ip_not_allowed"},
		{"cidr single address", net, latchkey.VerifyRequest{ClientIP: "192.0.2.7"}, latchkey.Valid, ""},
		{"cidr single address neighbour", net, latchkey.VerifyRequest{ClientIP: "192.0.2.8"}, latchkey.IPNotAllowed, "ip_not_allowed"},
		{"cidr v6 inside", net, latchkey.VerifyRequest{ClientIP: "2001:db8:1::5"}, latchkey.Valid, ""},
		{"cidr v6 outside", net, latchkey.VerifyRequest{ClientIP: "2001:db9::1"}, latchkey.IPNotAllowed, "ip_not_allowed"},
		{"cidr v4-mapped v6", net, latchkey.VerifyRequest{ClientIP: "::ffff:10.9.9.9"}, latchkey.Valid, ""},
		{"cidr no client ip", net, latchkey.VerifyRequest{}, latchkey.IPNotAllowed, "no_client_ip"},
		{"cidr garbage ip", net, latchkey.VerifyRequest{ClientIP: "10.0.0.1.evil"}, latchkey.IPNotAllowed, "bad_client_ip"},
		{"method allowed", meth, latchkey.VerifyRequest{Method: "GET"}, latchkey.Valid, ""},
		{"method case-insensitive", meth, latchkey.VerifyRequest{Method: "head"}, latchkey.Valid, ""},
		{"method refused", meth, latchkey.VerifyRequest{Method: "DELETE"}, latchkey.Forbidden, "method_not_allowed"},
		{"method unknown", meth, latchkey.VerifyRequest{}, latchkey.Forbidden, "method_unknown"},
		{"path exact", path, latchkey.VerifyRequest{Path: "/v1/invoices"}, latchkey.Valid, ""},
		{"path exact, trailing slash differs", path, latchkey.VerifyRequest{Path: "/v1/invoices/"}, latchkey.Forbidden, "path_not_allowed"},
		{"path below exact", path, latchkey.VerifyRequest{Path: "/v1/invoices/7"}, latchkey.Forbidden, "path_not_allowed"},
		{"path one-segment wildcard", path, latchkey.VerifyRequest{Path: "/v1/users/ana"}, latchkey.Valid, ""},
		{"path wildcard is one segment", path, latchkey.VerifyRequest{Path: "/v1/users/ana/keys"}, latchkey.Forbidden, "path_not_allowed"},
		{"path wildcard needs a segment", path, latchkey.VerifyRequest{Path: "/v1/users/"}, latchkey.Forbidden, "path_not_allowed"},
		{"path double star root", path, latchkey.VerifyRequest{Path: "/v1/projects/42/files"}, latchkey.Valid, ""},
		{"path double star deep", path, latchkey.VerifyRequest{Path: "/v1/projects/42/files/a/b.txt"}, latchkey.Valid, ""},
		{"path dot-dot escape", path, latchkey.VerifyRequest{Path: "/v1/projects/42/files/../../secrets"}, latchkey.Forbidden, "path_not_canonical"},
		{"path double slash", path, latchkey.VerifyRequest{Path: "/v1//invoices"}, latchkey.Forbidden, "path_not_canonical"},
		{"path relative", path, latchkey.VerifyRequest{Path: "v1/invoices"}, latchkey.Forbidden, "path_not_canonical"},
		{"path unknown", path, latchkey.VerifyRequest{}, latchkey.Forbidden, "path_unknown"},
		{"path case-sensitive", path, latchkey.VerifyRequest{Path: "/V1/invoices"}, latchkey.Forbidden, "path_not_allowed"},
		{"api call: bindings describe the resource server", meth, latchkey.VerifyRequest{APICall: true, Method: "DELETE"}, latchkey.Valid, ""},
		{"api call: network still applies", net, latchkey.VerifyRequest{APICall: true, ClientIP: "11.0.0.1"}, latchkey.IPNotAllowed, "ip_not_allowed"},
		{"audience: its resource", aud, latchkey.VerifyRequest{Resource: "https://mcp.example.com/mcp/files"}, latchkey.Valid, ""},
		{"audience: its other resource", aud, latchkey.VerifyRequest{Resource: "https://api.example.com"}, latchkey.Valid, ""},
		{"audience: another resource", aud, latchkey.VerifyRequest{Resource: "https://mcp.example.com/mcp/mail"}, latchkey.Forbidden, "audience_mismatch"},
		{"audience: compared byte for byte", aud, latchkey.VerifyRequest{Resource: "https://MCP.example.com/mcp/files"}, latchkey.Forbidden, "audience_mismatch"},
		{"audience: a door naming no resource", aud, latchkey.VerifyRequest{}, latchkey.Forbidden, "resource_unknown"},
		{"audience: latchkey's own API is not its resource", aud, latchkey.VerifyRequest{APICall: true}, latchkey.Forbidden, "resource_unknown"},
		{"audience: introspection asks about any resource", aud, latchkey.VerifyRequest{AnyResource: true}, latchkey.Valid, ""},
		{"all pass", all, latchkey.VerifyRequest{ClientIP: "10.0.0.1", Method: "GET", Path: "/v1/x"}, latchkey.Valid, ""},
		{"network checked before method", all, latchkey.VerifyRequest{ClientIP: "8.8.8.8", Method: "POST", Path: "/x"}, latchkey.IPNotAllowed, "ip_not_allowed"},
		{"method checked before scope", all, latchkey.VerifyRequest{ClientIP: "10.0.0.1", Method: "POST", Path: "/v1/x", Scopes: []string{"nope:read"}}, latchkey.Forbidden, "method_not_allowed"},
		{"scope after constraints", all, latchkey.VerifyRequest{ClientIP: "10.0.0.1", Method: "GET", Path: "/v1/x", Scopes: []string{"nope:read"}}, latchkey.InsufficientScope, "missing_scope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pt, tok := f.issue(t, c.mut)
			req := c.req
			req.Token = pt
			d := f.check(t, &req)
			if d.Code != c.code || d.Reason != c.reason {
				t.Fatalf("got %s/%q, want %s/%q", d.Code, d.Reason, c.code, c.reason)
			}
			ev := f.rec.last()
			if ev.TokenID != tok.ID || ev.Outcome != c.code.String() || ev.Reason != c.reason {
				t.Errorf("audit record %s %s/%q, want %s %s/%q", ev.TokenID, ev.Outcome, ev.Reason, tok.ID, c.code, c.reason)
			}
		})
	}
}

// Every time rule, with an injected clock: TTL, not_before, idle expiry,
// the end of a rotation's grace period. (The maximum lifetime is a rule
// at creation: tokens.TestPolicy.)
func TestTimeRules(t *testing.T) {
	t.Run("ttl", func(t *testing.T) {
		f := newFixture(t)
		pt, _ := f.issue(t, func(tk *latchkey.Token) { tk.ExpiresAt = f.now.Add(time.Hour) })
		f.advance(time.Hour - time.Nanosecond)
		if d := f.verify(t, pt); d.Code != latchkey.Valid {
			t.Fatalf("1ns before expiry: %s", d.Code)
		}
		f.advance(time.Nanosecond)
		if d := f.verify(t, pt); d.Code != latchkey.Expired || d.Reason != "expired" {
			t.Fatalf("at expiry: %s/%s, want EXPIRED/expired", d.Code, d.Reason)
		}
		if ev := f.rec.last(); ev.Outcome != "EXPIRED" || ev.Reason != "expired" {
			t.Errorf("audit: %s/%s", ev.Outcome, ev.Reason)
		}
	})
	t.Run("not_before", func(t *testing.T) {
		f := newFixture(t)
		pt, _ := f.issue(t, func(tk *latchkey.Token) { tk.NotBefore = f.now.Add(time.Hour) })
		f.advance(time.Hour - time.Nanosecond)
		if d := f.verify(t, pt); d.Code != latchkey.NotYetValid || d.Reason != "not_yet_valid" {
			t.Fatalf("before not_before: %s/%s", d.Code, d.Reason)
		}
		if ev := f.rec.last(); ev.Outcome != "NOT_YET_VALID" {
			t.Errorf("audit: %s", ev.Outcome)
		}
		f.advance(time.Nanosecond)
		if d := f.verify(t, pt); d.Code != latchkey.Valid {
			t.Fatalf("at not_before: %s", d.Code)
		}
	})
	t.Run("idle", func(t *testing.T) {
		f := newFixture(t)
		idle := cons(latchkey.Constraints{IdleTimeout: latchkey.Duration(time.Hour)})
		unused, unusedTok := f.issue(t, idle)
		used, _ := f.issue(t, idle)
		// Used every 50 minutes: never idle, however long.
		for range 5 {
			f.advance(50 * time.Minute)
			if d := f.verify(t, used); d.Code != latchkey.Valid {
				t.Fatalf("used within the idle timeout: %s/%s", d.Code, d.Reason)
			}
		}
		// Never used since creation, 250 minutes ago.
		if d := f.verify(t, unused); d.Code != latchkey.Expired || d.Reason != "idle" {
			t.Fatalf("unused for 4h with a 1h idle timeout: %s/%s, want EXPIRED/idle", d.Code, d.Reason)
		}
		if ev := f.rec.lastFor(unusedTok.ID); ev.Outcome != "EXPIRED" || ev.Reason != "idle" {
			t.Errorf("audit: %s/%s", ev.Outcome, ev.Reason)
		}
		// One hour (plus the second uses are noted to) after the last use.
		f.advance(time.Hour + time.Second)
		if d := f.verify(t, used); d.Code != latchkey.Expired || d.Reason != "idle" {
			t.Fatalf("idle for an hour after its last use: %s/%s, want EXPIRED/idle", d.Code, d.Reason)
		}
		// A refused attempt is not a use: it stays expired.
		f.advance(time.Minute)
		if d := f.verify(t, used); d.Code != latchkey.Expired {
			t.Fatalf("an idle-expired token came back: %s", d.Code)
		}
	})
	t.Run("idle survives reload before write-behind", func(t *testing.T) {
		f := newFixture(t)
		pt, tok := f.issue(t, cons(latchkey.Constraints{IdleTimeout: latchkey.Duration(time.Hour)}))
		f.advance(50 * time.Minute)
		f.verify(t, pt) // noted in memory, not written yet
		f.v.Invalidate(tok.ID)
		f.advance(50 * time.Minute)
		if d := f.verify(t, pt); d.Code != latchkey.Valid {
			t.Fatalf("a reload lost the unwritten last use: %s/%s", d.Code, d.Reason)
		}
	})
	t.Run("end of grace", func(t *testing.T) {
		f := newFixture(t)
		// The state a rotation with a 24h grace leaves the old token in.
		pt, _ := f.issue(t, func(tk *latchkey.Token) {
			tk.SuccessorID, tk.RotatedAt = "Succ000000000000", f.now
			tk.ExpiresAt = f.now.Add(24 * time.Hour)
		})
		f.advance(24*time.Hour - time.Nanosecond)
		if d := f.verify(t, pt); d.Code != latchkey.Valid {
			t.Fatalf("within grace: %s", d.Code)
		}
		f.advance(time.Nanosecond)
		if d := f.verify(t, pt); d.Code != latchkey.Expired || d.Reason != "rotated" {
			t.Fatalf("after grace: %s/%s, want EXPIRED/rotated", d.Code, d.Reason)
		}
		if ev := f.rec.last(); ev.Reason != "rotated" {
			t.Errorf("audit reason %q", ev.Reason)
		}
	})
	t.Run("rotation due", func(t *testing.T) {
		f := newFixture(t)
		f.v = New(f.loader, f.hasher, f.rec.p, Config{Now: f.clock, RotationAge: 90 * 24 * time.Hour})
		pt, _ := f.issue(t)
		rotated, _ := f.issue(t, func(tk *latchkey.Token) { tk.SuccessorID = "Succ000000000000" })
		if d := f.verify(t, pt); d.Warnings != 0 {
			t.Fatalf("a new token warns: %v", d.Warnings.Strings())
		}
		f.advance(90 * 24 * time.Hour)
		d := f.verify(t, pt)
		if d.Code != latchkey.Valid || !slices.Equal(d.Warnings.Strings(), []string{"rotation_due"}) {
			t.Fatalf("90 days old: %s %v, want VALID with rotation_due", d.Code, d.Warnings.Strings())
		}
		if d := f.verify(t, rotated); d.Warnings != 0 {
			t.Errorf("a token already rotated warns: %v", d.Warnings.Strings())
		}
	})
}

func TestSuspendedReasons(t *testing.T) {
	f := newFixture(t)
	own, tok := f.issue(t, func(tk *latchkey.Token) { tk.Status = latchkey.StatusSuspended })
	tok.SuspendedVia = tok.ID
	cascaded, _ := f.issue(t, func(tk *latchkey.Token) { tk.Status, tk.SuspendedVia = latchkey.StatusSuspended, "Anc0000000000000" })
	if d := f.verify(t, own); d.Code != latchkey.Suspended || d.Reason != "suspended" {
		t.Errorf("suspended: %s/%s", d.Code, d.Reason)
	}
	if d := f.verify(t, cascaded); d.Code != latchkey.Suspended || d.Reason != "ancestor_suspended" {
		t.Errorf("suspended through an ancestor: %s/%s", d.Code, d.Reason)
	}
}

func TestRateLimit(t *testing.T) {
	f := newFixture(t)
	pt, tok := f.issue(t, cons(latchkey.Constraints{RateLimit: &latchkey.RateLimit{Limit: 3, Window: latchkey.Duration(time.Minute)}}))
	for i := range 3 {
		d := f.verify(t, pt)
		if d.Code != latchkey.Valid || d.Rate.Limit != 3 || d.Rate.Remaining != int64(2-i) {
			t.Fatalf("request %d: %s limit %d remaining %d", i+1, d.Code, d.Rate.Limit, d.Rate.Remaining)
		}
	}
	d := f.verify(t, pt)
	if d.Code != latchkey.RateLimited || d.Reason != "rate_limited" || d.Rate.Remaining != 0 || d.Rate.RetryAfter != 20*time.Second {
		t.Fatalf("4th: %s/%s remaining %d retry %v; want RATE_LIMITED, 0, 20s", d.Code, d.Reason, d.Rate.Remaining, d.Rate.RetryAfter)
	}
	if want := f.now.Add(time.Minute).UnixNano(); d.Rate.Reset != want {
		t.Errorf("reset %v after now, want 1m", time.Duration(d.Rate.Reset-f.now.UnixNano()))
	}
	if ev := f.rec.last(); ev.Outcome != "RATE_LIMITED" || ev.Reason != "rate_limited" {
		t.Errorf("audit: %s/%s", ev.Outcome, ev.Reason)
	}
	// A cache reload (any change to the token) does not reset the rate.
	f.v.Invalidate(tok.ID)
	if d := f.verify(t, pt); d.Code != latchkey.RateLimited {
		t.Fatalf("after a reload: %s; the limiter must survive it", d.Code)
	}
	f.advance(20 * time.Second)
	if d := f.verify(t, pt); d.Code != latchkey.Valid || d.Rate.Remaining != 0 {
		t.Fatalf("after retry_after: %s remaining %d", d.Code, d.Rate.Remaining)
	}
	// A successor in the same series shares the limiter.
	succ, _ := f.issue(t, cons(latchkey.Constraints{RateLimit: &latchkey.RateLimit{Limit: 3, Window: latchkey.Duration(time.Minute)}}),
		func(tk *latchkey.Token) { tk.SeriesID = tok.ID })
	if d := f.verify(t, succ); d.Code != latchkey.RateLimited {
		t.Errorf("a rotation successor got a fresh rate: %s", d.Code)
	}
}

// A limiter swept from the table while an entry still holds it is replaced
// without losing the check.
func TestRateLimiterSwept(t *testing.T) {
	f := newFixture(t)
	tab := ratelimit.NewTable(func() int64 { return f.clock().UnixNano() })
	f.v = New(f.loader, f.hasher, f.rec.p, Config{Now: f.clock, Limits: tab})
	pt, _ := f.issue(t, cons(latchkey.Constraints{RateLimit: &latchkey.RateLimit{Limit: 1, Window: latchkey.Duration(time.Minute)}}))
	f.verify(t, pt)
	f.advance(2 * time.Minute)
	tab.Sweep(f.clock().UnixNano())
	if d := f.verify(t, pt); d.Code != latchkey.Valid {
		t.Fatalf("after the limiter was swept: %s", d.Code)
	}
	if d := f.verify(t, pt); d.Code != latchkey.RateLimited {
		t.Fatalf("the replacement limiter does not limit: %s", d.Code)
	}
}

func TestUsageLimit(t *testing.T) {
	f := newFixture(t)
	pt, tok := f.issue(t, cons(latchkey.Constraints{MaxUses: 2}))
	for want := int64(1); want >= 0; want-- {
		if d := f.verify(t, pt); d.Code != latchkey.Valid || d.Remaining != want {
			t.Fatalf("%s remaining %d, want VALID %d", d.Code, d.Remaining, want)
		}
	}
	if d := f.verify(t, pt); d.Code != latchkey.UsageExceeded || d.Reason != "usage_exceeded" {
		t.Fatalf("third use: %s/%s", d.Code, d.Reason)
	}
	if ev := f.rec.last(); ev.Outcome != "USAGE_EXCEEDED" || ev.Reason != "usage_exceeded" {
		t.Errorf("audit: %s/%s", ev.Outcome, ev.Reason)
	}
	if tok := f.loader.toks[tok.ID]; tok.Uses != 2 {
		t.Errorf("store counted %d uses, want 2 (refusals spend nothing)", tok.Uses)
	}
	// Refusals before step 8 spend nothing either.
	pt2, tok2 := f.issue(t, cons(latchkey.Constraints{MaxUses: 5}))
	f.verify(t, pt2, "nope:read")
	if f.loader.toks[tok2.ID].Uses != 0 {
		t.Error("an INSUFFICIENT_SCOPE attempt spent a use")
	}
	if d := f.verify(t, pt2); d.Remaining != 4 {
		t.Errorf("remaining %d, want 4", d.Remaining)
	}
	if d := f.verify(t, mustIssue(t, f)); d.Remaining != -1 {
		t.Errorf("unlimited token: remaining %d, want -1", d.Remaining)
	}
}

func mustIssue(t *testing.T, f *fixture) string {
	pt, _ := f.issue(t)
	return pt
}

// last_used_at is written behind: coalesced to one write per token per
// interval, and a stuck store never blocks a verification.
func TestLastUsedWriteBehind(t *testing.T) {
	f := newFixture(t)
	f.v = New(f.loader, f.hasher, f.rec.p, Config{Now: f.clock, TouchInterval: time.Minute})
	t.Cleanup(func() { f.v.Close(context.Background()) })
	a, ta := f.issue(t)
	b, tb := f.issue(t)
	for range 100 {
		f.verify(t, a)
		f.verify(t, b)
	}
	f.advance(30 * time.Second)
	f.verify(t, a) // within the interval: not noted again
	if err := f.v.FlushUsage(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(f.loader.touches); n != 2 {
		t.Fatalf("200 verifications of 2 tokens wrote %d last-use records, want 2", n)
	}
	want := map[string]bool{ta.ID: true, tb.ID: true}
	for _, u := range f.loader.touches {
		if !want[u.ID] || !u.At.Equal(f.now.Add(-30*time.Second)) {
			t.Errorf("touch %+v", u)
		}
	}
	// A store that hangs on the write does not hold up verification.
	f.loader.touchGate = make(chan struct{})
	f.advance(time.Minute)
	f.verify(t, a)
	flushed := make(chan error)
	go func() { flushed <- f.v.FlushUsage(context.Background()) }()
	done := make(chan struct{})
	go func() {
		for range 1000 {
			f.verify(t, b)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("verifications blocked behind a hung last-use write")
	}
	close(f.loader.touchGate)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
}

// The write-behind flusher stops on Close and writes what is pending.
func TestCloseFlushesUsage(t *testing.T) {
	f := newFixture(t)
	f.v = New(f.loader, f.hasher, f.rec.p, Config{Now: f.clock, TouchInterval: time.Hour})
	pt, tok := f.issue(t)
	f.verify(t, pt)
	if err := f.v.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f.loader.touches) != 1 || f.loader.touches[0].ID != tok.ID {
		t.Fatalf("Close wrote %+v, want the one pending use", f.loader.touches)
	}
}

// Exact usage under concurrency is the store's job (storetest
// ConsumeUseExact); here many verifiers share one in-memory budget.
func TestUsageConcurrentVerifiers(t *testing.T) {
	f := newFixture(t)
	pt, _ := f.issue(t, cons(latchkey.Constraints{MaxUses: 30}))
	var mu sync.Mutex
	codes := map[latchkey.Code]int{}
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			d := f.verify(t, pt)
			mu.Lock()
			codes[d.Code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[latchkey.Valid] != 30 || codes[latchkey.UsageExceeded] != 70 {
		t.Errorf("100 concurrent verifiers of a 30-use token: %v", codes)
	}
}

// fakeShared is a shared limiter under the test's control: it counts
// spends per key, or fails.
type fakeShared struct {
	mu    sync.Mutex
	spent map[string]int64
	fail  bool
}

func (s *fakeShared) RateKey(series string, r latchkey.RateLimit) string { return series }

func (s *fakeShared) Allow(_ context.Context, key string, r latchkey.RateLimit, spend bool) (bool, latchkey.RateStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return false, latchkey.RateStatus{}, errors.New("shared limiter down")
	}
	if s.spent[key] >= r.Limit {
		return false, latchkey.RateStatus{Limit: r.Limit, RetryAfter: time.Second}, nil
	}
	if spend {
		s.spent[key]++
	}
	return true, latchkey.RateStatus{Limit: r.Limit, Remaining: r.Limit - s.spent[key]}, nil
}

// With a shared limiter, its counts decide; when it fails, the node counts
// alone (default) or the verification fails (SharedFailClosed). Tokens
// without a rate limit never ask it.
func TestSharedRateLimitPolicy(t *testing.T) {
	for _, closed := range []bool{false, true} {
		sh := &fakeShared{spent: map[string]int64{}}
		f := newFixture(t)
		f.v = New(f.loader, f.hasher, f.rec.p, Config{Now: f.clock, Node: "n1", Shared: sh, SharedFailClosed: closed})
		rl := cons(latchkey.Constraints{RateLimit: &latchkey.RateLimit{Limit: 3, Window: latchkey.Duration(time.Minute)}})
		pt, tok := f.issue(t, rl)
		// Another node spent two of the three.
		sh.spent[tok.ID] = 2
		if d := f.verify(t, pt); d.Code != latchkey.Valid || d.Rate.Remaining != 0 {
			t.Fatalf("closed=%v: %s remaining %d", closed, d.Code, d.Rate.Remaining)
		}
		if d := f.verify(t, pt); d.Code != latchkey.RateLimited {
			t.Fatalf("closed=%v: the cluster's limit is spent, got %s", closed, d.Code)
		}
		plain, _ := f.issue(t)
		sh.fail = true
		if d := f.verify(t, plain); d.Code != latchkey.Valid {
			t.Errorf("closed=%v: a token without a rate limit, limiter down: %s", closed, d.Code)
		}
		fresh, _ := f.issue(t, rl)
		d, err := f.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: fresh})
		if closed {
			if err == nil {
				t.Errorf("fail closed, limiter down: %s with no error; want an error (503)", d.Code)
			}
		} else {
			// Node-local: the local limiter counts 3, then refuses.
			for i := range 4 {
				if i > 0 {
					d, err = f.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: fresh})
				}
				want := latchkey.Valid
				if i == 3 {
					want = latchkey.RateLimited
				}
				if err != nil || d.Code != want {
					t.Errorf("fallback, request %d: %s %v, want %s", i+1, d.Code, err, want)
				}
			}
		}
		if f.v.Stats().SharedFailures == 0 {
			t.Errorf("closed=%v: limiter failures not counted", closed)
		}
	}
}
