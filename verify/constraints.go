package verify

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/ratelimit"
)

// constraints is what a token needs checked beyond status, expiry and
// scopes. It is built when the token is loaded; tokens without any of it
// have none, and their verification skips this part with one nil check.
type constraints struct {
	notBefore int64 // Unix nanoseconds, 0: unset
	idle      int64 // idle timeout in nanoseconds, 0: none
	idleFrom  int64 // creation or not_before, whichever is later: idle counts from here until a use
	cidrs     []netip.Prefix
	methods   []string
	paths     []string
	audience  []string
	limiters  []*limiterRef // the token's series first, then inherited ones
	budget    []string      // series whose budgets a use spends; nil: unlimited
	exhausted atomic.Bool   // a budget was found spent: no need to ask the store again
	ancestors []key         // noted as used with the token (idle expiry of the lineage)
	noteEvery int64         // how stale the noted last use may get
}

// limiterRef holds a rate limiter, replaced if its table swept it.
type limiterRef struct {
	series string
	rate   latchkey.RateLimit
	shared string // the key of the shared state (Config.Shared)
	l      atomic.Pointer[ratelimit.Limiter]
}

func (r *limiterRef) get(t *ratelimit.Table) *ratelimit.Limiter {
	if l := r.l.Load(); l != nil {
		return l
	}
	l := t.Get(r.series, r.rate)
	r.l.Store(l)
	return l
}

// allow spends one verification from every limiter, own first. It reports
// the status of the tightest one. A refusal by a later limiter leaves
// earlier ones spent: the error is on the strict side. With a shared
// limiter the counts are the cluster's; when it fails, the node's own
// (or an error, with SharedFailClosed).
func (v *Verifier) allow(ctx context.Context, c *constraints, now int64, spend bool) (bool, latchkey.RateStatus, error) {
	var out latchkey.RateStatus
	for i, ref := range c.limiters {
		var ok bool
		var st latchkey.RateStatus
		shared := false
		if sh := v.cfg.Shared; sh != nil {
			var err error
			ok, st, err = sh.Allow(ctx, ref.shared, ref.rate, spend)
			if err == nil {
				shared = true
			} else {
				v.sharedFailures.Add(1)
				if v.cfg.SharedFailClosed {
					return false, st, fmt.Errorf("verify: shared rate limit: %w", err)
				}
			}
		}
		if !shared {
			ok, st = ref.local(v.cfg.Limits, now, spend)
		}
		if !ok {
			return false, st, nil
		}
		if i == 0 || st.Remaining < out.Remaining {
			out = st
		}
	}
	return true, out, nil
}

// local spends from (or looks at) the node's own limiter.
func (ref *limiterRef) local(t *ratelimit.Table, now int64, spend bool) (ok bool, st latchkey.RateStatus) {
	l := ref.get(t)
	for {
		var gone bool
		if spend {
			ok, st, gone = l.Allow(now)
		} else {
			ok, gone = l.Peek(now)
		}
		if !gone {
			return ok, st
		}
		ref.l.Store(nil)
		l = ref.get(t)
	}
}

func (v *Verifier) limiterRef(series string, r latchkey.RateLimit) *limiterRef {
	ref := &limiterRef{series: series, rate: r}
	if v.cfg.Shared != nil {
		ref.shared = v.cfg.Shared.RateKey(series, r)
	}
	return ref
}

// newConstraints builds the constraint block of t, or returns nil when t
// has nothing that needs it.
func (v *Verifier) newConstraints(t *latchkey.Token) *constraints {
	c := t.Constraints
	var ident *latchkey.Identity
	if v.cfg.Tenancy != nil && t.Subject != "" {
		ident, _ = v.cfg.Tenancy.Identity(latchkey.KeyspaceOf(t.Keyspace), t.Subject)
	}
	if c.IsZero() && t.NotBefore.IsZero() && len(t.Inherited) == 0 && len(t.Ancestors) == 0 && ident == nil {
		return nil
	}
	cs := &constraints{notBefore: unixNano(t.NotBefore), idle: int64(c.IdleTimeout), noteEvery: int64(v.cfg.TouchInterval)}
	cs.idleFrom = max(unixNano(t.CreatedAt), cs.notBefore)
	for _, s := range c.AllowedCIDRs {
		if p, err := latchkey.ParseCIDR(s); err == nil {
			cs.cidrs = append(cs.cidrs, p)
		} else {
			// A stored network that no longer parses must not widen the
			// token: an unmatchable prefix refuses every address.
			cs.cidrs = append(cs.cidrs, netip.Prefix{})
		}
	}
	cs.methods, cs.paths, cs.audience = c.AllowedMethods, c.AllowedPaths, c.Audience
	if c.RateLimit != nil {
		cs.limiters = append(cs.limiters, v.limiterRef(t.Series(), *c.RateLimit))
	}
	if c.MaxUses > 0 {
		cs.budget = append(cs.budget, t.Series())
	}
	for _, in := range t.Inherited {
		if in.RateLimit != nil {
			cs.limiters = append(cs.limiters, v.limiterRef(in.SeriesID, *in.RateLimit))
		}
		if in.MaxUses > 0 {
			cs.budget = append(cs.budget, in.SeriesID)
		}
	}
	if ident != nil {
		// The subject's limits, shared by all its tokens.
		if ident.RateLimit != nil {
			cs.limiters = append(cs.limiters, v.limiterRef(ident.BudgetKey(), *ident.RateLimit))
		}
		if ident.MaxUses > 0 {
			cs.budget = append(cs.budget, ident.BudgetKey())
		}
	}
	for _, id := range t.Ancestors {
		cs.ancestors = append(cs.ancestors, keyOf(id))
	}
	// Idle expiry reads the noted last use, so note it to the second for
	// tokens (or lineages) that can idle out.
	if cs.idle > 0 || len(cs.ancestors) > 0 {
		cs.noteEvery = min(cs.noteEvery, int64(idleNoteEvery))
	}
	return cs
}

// check applies the constraints of step 6 (docs/architecture.md §2): client network,
// then method and path binding. It returns a refusal code and reason, or
// Valid.
func (c *constraints) check(req *latchkey.VerifyRequest) (latchkey.Code, string) {
	if len(c.cidrs) > 0 {
		if req.ClientIP == "" {
			return latchkey.IPNotAllowed, "no_client_ip"
		}
		a, err := netip.ParseAddr(req.ClientIP)
		if err != nil {
			return latchkey.IPNotAllowed, "bad_client_ip"
		}
		a = a.Unmap()
		ok := false
		for _, p := range c.cidrs {
			if p.Contains(a) {
				ok = true
				break
			}
		}
		if !ok {
			return latchkey.IPNotAllowed, "ip_not_allowed"
		}
	}
	// An audience binds the token to its resources everywhere, latchkey's
	// own API included: a token delegated to an agent for one MCP server
	// is not an admin credential, whatever scopes it holds.
	if len(c.audience) > 0 && !req.AnyResource {
		if req.Resource == "" {
			return latchkey.Forbidden, "resource_unknown"
		}
		ok := false
		for _, a := range c.audience {
			if a == req.Resource {
				ok = true
				break
			}
		}
		if !ok {
			return latchkey.Forbidden, "audience_mismatch"
		}
	}
	if req.APICall {
		return latchkey.Valid, ""
	}
	if len(c.methods) > 0 {
		if req.Method == "" {
			return latchkey.Forbidden, "method_unknown"
		}
		ok := false
		for _, m := range c.methods {
			if strings.EqualFold(m, req.Method) {
				ok = true
				break
			}
		}
		if !ok {
			return latchkey.Forbidden, "method_not_allowed"
		}
	}
	if len(c.paths) > 0 {
		if req.Path == "" {
			return latchkey.Forbidden, "path_unknown"
		}
		if !latchkey.CanonicalPath(req.Path) {
			return latchkey.Forbidden, "path_not_canonical"
		}
		ok := false
		for _, p := range c.paths {
			if latchkey.MatchPath(p, req.Path) {
				ok = true
				break
			}
		}
		if !ok {
			return latchkey.Forbidden, "path_not_allowed"
		}
	}
	return latchkey.Valid, ""
}
