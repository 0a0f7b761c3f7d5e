package tokens

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
)

// MaxDepth bounds how many ancestors a derived token may have.
const MaxDepth = 8

// MaxGrace bounds a rotation's grace period.
const MaxGrace = 366 * 24 * time.Hour

// grantsDetail is the audit detail of a new token: what it may do.
func grantsDetail(t *latchkey.Token, extra map[string]any) map[string]any {
	d := map[string]any{
		"name": t.Name, "scopes": t.Scopes, "tags": t.Tags, "prefix": t.Prefix,
		"expires_at": optTime(t.ExpiresAt), "not_before": optTime(t.NotBefore),
	}
	if !t.Constraints.IsZero() {
		d["constraints"] = t.Constraints
	}
	maps(d, extra)
	return d
}

func maps(dst, src map[string]any) {
	for k, v := range src {
		dst[k] = v
	}
}

func checkReason(reason string) error {
	if len(reason) > MaxReasonLen {
		return latchkey.Errorf(latchkey.EInvalid, "reason is longer than %d bytes", MaxReasonLen)
	}
	if secret.LooksLikeToken(reason) {
		return latchkey.Errorf(latchkey.EInvalid, "reason must not contain a token")
	}
	return PlainText("reason", reason)
}

// expiredAt reports whether t has stopped working by time (its expiry, or
// idle expiry judged by the stored last use), and why.
func expiredAt(t *latchkey.Token, now time.Time) (bool, string) {
	if !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt) {
		if t.SuccessorID != "" {
			return true, "its rotation grace period has ended"
		}
		return true, "it has expired"
	}
	if idle := time.Duration(t.IdleTimeout); idle > 0 {
		from := t.CreatedAt
		for _, u := range []time.Time{t.NotBefore, t.LastUsedAt} {
			if u.After(from) {
				from = u
			}
		}
		if !now.Before(from.Add(idle)) {
			return true, "it has expired after going unused for its idle timeout"
		}
	}
	return false, ""
}

// flushUsage writes pending last-use times. A failure is not fatal: the
// idle check then errs on the side of refusing.
func (s *Service) flushUsage(ctx context.Context) {
	if s.FlushUsage != nil {
		s.FlushUsage(ctx)
	}
}

// usable refuses to act on a token that no longer works (for rotate and
// derive).
func usable(t *latchkey.Token, now time.Time, verb string) error {
	switch t.Status {
	case latchkey.StatusRevoked:
		return latchkey.Errorf(latchkey.EConflict, "token %s is revoked; a revoked token cannot be %s", t.ID, verb)
	case latchkey.StatusSuspended:
		return latchkey.Errorf(latchkey.EConflict, "token %s is suspended; resume it before it can be %s", t.ID, verb)
	}
	if gone, why := expiredAt(t, now); gone {
		return latchkey.Errorf(latchkey.EConflict, "token %s cannot be %s: %s", t.ID, verb, why)
	}
	return nil
}

// apply runs fn in a write transaction and then invalidates every token
// fn reported as changed.
func (s *Service) apply(ctx context.Context, fn func(tx latchkey.Tx, changed func(id string)) error) error {
	var ids []string
	err := s.Store.WriteTx(ctx, func(tx latchkey.Tx) error {
		ids = ids[:0] // the store may run fn again
		return fn(tx, func(id string) { ids = append(ids, id) })
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		s.invalidate(id)
	}
	return nil
}

// lineage reads token id and every descendant, id first.
func lineage(ctx context.Context, tx latchkey.Tx, id string) ([]*latchkey.Token, error) {
	toks, err := tx.SelectTokens(ctx, latchkey.TokenSelector{IDs: []string{id}, Descendants: true})
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 || toks[0].ID != id {
		return nil, latchkey.ErrNotFound
	}
	return toks, nil
}

// Revoke revokes a token for good, and every token derived from it.
// Revoking a revoked token is EConflict.
func (s *Service) Revoke(ctx context.Context, a latchkey.Actor, id, reason string) (*latchkey.Token, error) {
	if err := checkReason(reason); err != nil {
		return nil, err
	}
	return s.changeLineage(ctx, id, func(t0 *latchkey.Token) error {
		if t0.Status == latchkey.StatusRevoked {
			return latchkey.Errorf(latchkey.EConflict, "token %s is already revoked", id)
		}
		return nil
	}, func(tx latchkey.Tx, toks []*latchkey.Token, now time.Time, changed func(string)) error {
		_, err := s.revokeAll(ctx, tx, a, toks, id, reason, now, changed)
		return err
	})
}

// changeLineage loads token id with its descendants (locked, id first)
// and, when check accepts id's token, hands them to change, all in one
// transaction. It returns id's token as changed.
func (s *Service) changeLineage(ctx context.Context, id string, check func(t0 *latchkey.Token) error,
	change func(tx latchkey.Tx, toks []*latchkey.Token, now time.Time, changed func(string)) error) (*latchkey.Token, error) {
	now := s.now()
	var out *latchkey.Token
	err := s.apply(ctx, func(tx latchkey.Tx, changed func(string)) error {
		toks, err := lineage(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := check(toks[0]); err != nil {
			return err
		}
		out = toks[0]
		return change(tx, toks, now, changed)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// cascadeDetail is the audit detail of a change to t made because root
// was changed: nil for root itself.
func cascadeDetail(t *latchkey.Token, root string) map[string]any {
	if t.ID == root {
		return nil
	}
	return map[string]any{"cascade_from": root}
}

// revokeAll revokes every token in toks that is not revoked yet. Tokens
// revoked because an ancestor was are marked with cascade_from. The
// caller must be able to manage every one of them, or nothing changes.
func (s *Service) revokeAll(ctx context.Context, tx latchkey.Tx, a latchkey.Actor, toks []*latchkey.Token, root, reason string, now time.Time, changed func(string)) (int, error) {
	n := 0
	for _, t := range toks {
		if t.Status == latchkey.StatusRevoked {
			continue
		}
		if err := canManage(a, t); err != nil {
			return 0, err
		}
		t.Status = latchkey.StatusRevoked
		t.RevokedAt, t.RevokedBy, t.RevokedReason = now, createdBy(a), reason
		var detail map[string]any
		if root != "" && t.ID != root && slices.Contains(t.Ancestors, root) {
			detail = map[string]any{"cascade_from": root}
		}
		ev := s.event(a, latchkey.ActionTokenRevoke, t, now, detail)
		ev.Reason = reason
		if err := tx.UpdateToken(ctx, t, ev); err != nil {
			return 0, err
		}
		changed(t.ID)
		n++
	}
	return n, nil
}

// RevokeMatching revokes, in one transaction, every token sel picks and
// all their descendants (POST /v1/revocations), except the caller's own
// token unless opt.IncludeSelf. It returns how many were revoked; tokens
// already revoked are not counted. If the caller may not manage one of
// them, nothing is revoked.
func (s *Service) RevokeMatching(ctx context.Context, a latchkey.Actor, sel latchkey.TokenSelector, reason string, opt latchkey.BulkOptions) (client.RevocationResult, error) {
	res := client.RevocationResult{DryRun: opt.DryRun}
	if err := checkReason(reason); err != nil {
		return res, err
	}
	set := 0
	for _, v := range []string{sel.Subject, sel.Tag, sel.Prefix, sel.Parent} {
		if v != "" {
			set++
		}
	}
	if set != 1 || len(sel.IDs) > 0 {
		return res, latchkey.Errorf(latchkey.EInvalid, "give exactly one of subject, tag, prefix or parent")
	}
	if sel.Tag != "" {
		if err := ValidateTag(sel.Tag); err != nil {
			return res, err
		}
	}
	if sel.Prefix != "" && !secret.ValidPrefix(sel.Prefix) {
		return res, latchkey.Errorf(latchkey.EInvalid, "prefix %q is not a valid token prefix", sel.Prefix)
	}
	if sel.Parent != "" && len(sel.Parent) != secret.IDLen {
		return res, latchkey.Errorf(latchkey.EInvalid, "parent must be a token id")
	}
	sel.Descendants = true
	now := s.now()
	err := s.apply(ctx, func(tx latchkey.Tx, changed func(string)) error {
		if sel.Parent != "" {
			if _, err := tx.GetToken(ctx, sel.Parent); err != nil {
				return err
			}
		}
		toks, err := tx.SelectTokens(ctx, sel)
		if err != nil {
			return err
		}
		if !opt.IncludeSelf && a.TokenID != "" {
			toks, res.Spared, err = spareSelf(ctx, tx, a.TokenID, toks)
			if err != nil {
				return err
			}
		}
		if opt.DryRun {
			for _, t := range toks {
				if t.Status == latchkey.StatusRevoked {
					continue
				}
				if err := canManage(a, t); err != nil {
					return err
				}
				res.Revoked++
			}
			return nil
		}
		res.Revoked, err = s.revokeAll(ctx, tx, a, toks, sel.Parent, reason, now, changed)
		return err
	})
	if err != nil {
		res.Revoked = 0
	}
	return res, err
}

// spareSelf removes from toks the caller's token self and its ancestors
// (revoking one of them would revoke self), returning the ids removed
// that were not revoked already.
func spareSelf(ctx context.Context, tx latchkey.Tx, self string, toks []*latchkey.Token) ([]*latchkey.Token, []string, error) {
	me, err := tx.GetToken(ctx, self)
	if latchkey.ErrorCode(err) == latchkey.ENotFound {
		return toks, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var spared []string
	kept := toks[:0:0]
	for _, t := range toks {
		if t.ID == me.ID || slices.Contains(me.Ancestors, t.ID) {
			if t.Status != latchkey.StatusRevoked {
				spared = append(spared, t.ID)
			}
			continue
		}
		kept = append(kept, t)
	}
	return kept, spared, nil
}

// Suspend suspends a token and every active token derived from it. It is
// reversible (Resume); a suspended token answers SUSPENDED.
func (s *Service) Suspend(ctx context.Context, a latchkey.Actor, id, reason string) (*latchkey.Token, error) {
	if err := checkReason(reason); err != nil {
		return nil, err
	}
	return s.changeLineage(ctx, id, func(t0 *latchkey.Token) error {
		switch t0.Status {
		case latchkey.StatusRevoked:
			return latchkey.Errorf(latchkey.EConflict, "token %s is revoked; revocation is final", id)
		case latchkey.StatusSuspended:
			return latchkey.Errorf(latchkey.EConflict, "token %s is already suspended", id)
		}
		return nil
	}, func(tx latchkey.Tx, toks []*latchkey.Token, now time.Time, changed func(string)) error {
		for _, t := range toks {
			if t.Status != latchkey.StatusActive {
				continue // already suspended on its own account, or revoked
			}
			if err := canManage(a, t); err != nil {
				return err
			}
			t.Status = latchkey.StatusSuspended
			t.SuspendedAt, t.SuspendedBy, t.SuspendedReason, t.SuspendedVia = now, createdBy(a), reason, id
			ev := s.event(a, latchkey.ActionTokenSuspend, t, now, cascadeDetail(t, id))
			ev.Reason = reason
			if err := tx.UpdateToken(ctx, t, ev); err != nil {
				return err
			}
			changed(t.ID)
		}
		return nil
	})
}

// Resume lifts a suspension, with every descendant that was suspended
// because this token was.
func (s *Service) Resume(ctx context.Context, a latchkey.Actor, id string) (*latchkey.Token, error) {
	return s.changeLineage(ctx, id, func(t0 *latchkey.Token) error {
		if t0.Status != latchkey.StatusSuspended {
			return latchkey.Errorf(latchkey.EConflict, "token %s is %s, not suspended", id, t0.Status)
		}
		if v := t0.SuspendedVia; v != "" && v != id {
			return latchkey.Errorf(latchkey.EConflict, "token %s is suspended because its ancestor %s is; resume %s", id, v, v)
		}
		return nil
	}, func(tx latchkey.Tx, toks []*latchkey.Token, now time.Time, changed func(string)) error {
		for _, t := range toks {
			if t.Status != latchkey.StatusSuspended || (t.ID != id && t.SuspendedVia != id) {
				continue
			}
			if err := canManage(a, t); err != nil {
				return err
			}
			t.Status = latchkey.StatusActive
			t.SuspendedAt, t.SuspendedBy, t.SuspendedReason, t.SuspendedVia = time.Time{}, "", "", ""
			if err := tx.UpdateToken(ctx, t, s.event(a, latchkey.ActionTokenResume, t, now, cascadeDetail(t, id))); err != nil {
				return err
			}
			changed(t.ID)
		}
		return nil
	})
}

// Derive mints a child of token parentID whose every grant is within the
// parent's: scopes covered by the parent's, expiry no later, not_before
// no earlier, constraints at least as strict (Constraints.Narrows). Unset
// fields are inherited. The caller is the parent itself (presenting its
// own plaintext) or a token holding latchkey:tokens:write that covers the
// parent's scopes. The child spends the parent's usage budget and rate
// limit as well as its own.
func (s *Service) Derive(ctx context.Context, a latchkey.Actor, parentID string, req client.CreateRequest) (*latchkey.Token, secret.Plaintext, error) {
	self := a.TokenID != "" && a.TokenID == parentID
	if !self && a.TokenID != "" && !latchkey.ScopesCover(a.Scopes, latchkey.ScopeTokensWrite) {
		return nil, secret.Plaintext{}, latchkey.Errorf(latchkey.EPermissionDenied, "only the token itself or a token with %s may derive from it", latchkey.ScopeTokensWrite)
	}
	return s.derive(ctx, a, parentID, req, self, false)
}

// derive issues a child of parentID. issued says the child is a token
// that its parent, a non-admin token, created through POST /v1/tokens
// (Create): it may name its own subject and prefix, and is recorded as
// token.create.
func (s *Service) derive(ctx context.Context, a latchkey.Actor, parentID string, req client.CreateRequest, self, issued bool) (*latchkey.Token, secret.Plaintext, error) {
	s.flushUsage(ctx)
	now := s.now()
	if !issued {
		// A derived token stays in its parent's keyspace (which never
		// changes, so reading it outside the transaction is safe).
		p0, err := s.Store.GetToken(ctx, parentID)
		if err != nil {
			return nil, secret.Plaintext{}, err
		}
		if req.Keyspace != "" && req.Keyspace != latchkey.KeyspaceOf(p0.Keyspace) {
			return nil, secret.Plaintext{}, latchkey.Errorf(latchkey.EInvalid, "a derived token stays in its parent's keyspace (%s)", latchkey.KeyspaceOf(p0.Keyspace))
		}
		req.Keyspace = latchkey.KeyspaceOf(p0.Keyspace)
		if req.Roles == nil {
			req.Roles = p0.Roles
		}
	}
	// Validate the request's own fields as for a new token; grants are
	// judged against the parent below, not against the caller.
	cons, err := requestConstraints(&req)
	if err != nil {
		return nil, secret.Plaintext{}, err
	}
	base, err := s.fields(latchkey.Actor{}, req, now)
	if err != nil {
		return nil, secret.Plaintext{}, err
	}
	expires, notBefore, err := requestedTimes(req, now)
	if err != nil {
		return nil, secret.Plaintext{}, err
	}
	var child *latchkey.Token
	var pt secret.Plaintext
	var parent *latchkey.Token
	err = s.apply(ctx, func(tx latchkey.Tx, changed func(string)) error {
		p, err := tx.GetToken(ctx, parentID)
		if err != nil {
			return err
		}
		parent = p
		if !self && !issued {
			if err := canManage(a, p); err != nil {
				return err
			}
		}
		verb := "derived from"
		if issued {
			verb = "used to create tokens"
		}
		if err := usable(p, now, verb); err != nil {
			return err
		}
		if p.SuccessorID != "" {
			return latchkey.Errorf(latchkey.EConflict, "token %s was rotated; derive from its successor %s", p.ID, p.SuccessorID)
		}
		if len(p.Ancestors) >= MaxDepth {
			return latchkey.Errorf(latchkey.EInvalid, "token %s is already %d derivations deep; at most %d are allowed", p.ID, len(p.Ancestors), MaxDepth)
		}
		c, err := s.narrow(p, base, cons, expires, notBefore, req, now, issued)
		if err != nil {
			return err
		}
		plain, parts, err := secret.Generate(c.Prefix, s.rand())
		if err != nil {
			return fmt.Errorf("tokens: generate: %w", err)
		}
		c.ID, c.Hash = parts.ID, s.Hasher.Sum(parts.ID, &parts.Secret)
		c.CreatedBy = createdBy(a)
		action := latchkey.ActionTokenDerive
		if issued {
			action = latchkey.ActionTokenCreate
		}
		ev := s.event(a, action, c, now, grantsDetail(c, map[string]any{"parent_id": p.ID}))
		if err := tx.CreateToken(ctx, c, ev); err != nil {
			return err
		}
		changed(c.ID)
		child, pt = c, plain
		return nil
	})
	if err != nil {
		return nil, secret.Plaintext{}, err
	}
	// Deriving counts as using the lineage, so that an ancestor does not
	// idle out while its descendants are in use (idle expiry is written
	// behind; see verify).
	uses := []latchkey.TokenUse{{ID: parent.ID, At: now}}
	for _, id := range parent.Ancestors {
		uses = append(uses, latchkey.TokenUse{ID: id, At: now})
	}
	if err := s.Store.TouchTokens(ctx, uses); err == nil {
		for _, u := range uses {
			s.invalidate(u.ID)
		}
	}
	return child, pt, nil
}

// narrow builds the child of p from the validated request, inheriting
// what is unset, and refuses anything broader than p. An issued child
// (see derive) may name its own subject and prefix.
func (s *Service) narrow(p, base *latchkey.Token, cons latchkey.Constraints, expires, notBefore time.Time, req client.CreateRequest, now time.Time, issued bool) (*latchkey.Token, error) {
	broader := func(format string, args ...any) error {
		if issued {
			return latchkey.Errorf(latchkey.EPermissionDenied, "a token created by a non-admin token cannot be looser than its creator: "+format, args...)
		}
		return latchkey.Errorf(latchkey.EPermissionDenied, "a derived token cannot be broader than its parent: "+format, args...)
	}
	c := &latchkey.Token{
		Prefix: p.Prefix, Name: base.Name, Subject: p.Subject, Scopes: base.Scopes, Tags: base.Tags, Meta: base.Meta,
		Keyspace: base.Keyspace, Roles: base.Roles,
		CreatedAt: now, Status: latchkey.StatusActive, Version: 1, ParentID: p.ID,
		Ancestors: append([]string{p.ID}, p.Ancestors...),
	}
	for _, r := range c.Roles {
		if !slices.Contains(p.Roles, r) {
			return nil, broader("role %q is not held by the parent", r)
		}
	}
	if err := inheritGrants(p, s.EffectiveScopes(p), base, c, req, issued, broader); err != nil {
		return nil, err
	}
	if err := s.narrowTimes(p, c, expires, notBefore, now, broader); err != nil {
		return nil, err
	}
	remaining := p.MaxUses - p.Uses
	merged := p.Constraints.Inherit(cons, remaining)
	if err := p.Constraints.Narrows(merged, remaining); err != nil {
		return nil, broader("%s", latchkey.ErrorMessage(err))
	}
	c.Constraints = merged
	// The child also spends from the parent's limits, and from whatever
	// the parent inherited.
	if p.RateLimit != nil || p.MaxUses > 0 {
		in := latchkey.Inherited{SeriesID: p.Series(), MaxUses: p.MaxUses}
		if p.RateLimit != nil {
			r := *p.RateLimit
			in.RateLimit = &r
		}
		c.Inherited = append(c.Inherited, in)
	}
	c.Inherited = append(c.Inherited, p.Inherited...)
	return c, nil
}

// inheritGrants gives child c its identity and grants: a derived token
// keeps its parent's prefix and subject and inherits what the request
// leaves unset; an issued one (created by a non-admin token) is the
// request's own. Either way its scopes are within the parent's.
func inheritGrants(p *latchkey.Token, pScopes []string, base, c *latchkey.Token, req client.CreateRequest, issued bool, broader func(string, ...any) error) error {
	switch {
	case issued:
		c.Prefix, c.Subject = base.Prefix, base.Subject
	case req.Prefix != "" && req.Prefix != p.Prefix:
		return latchkey.Errorf(latchkey.EInvalid, "a derived token keeps its parent's prefix (%s)", p.Prefix)
	case req.Subject != "" && req.Subject != p.Subject:
		return latchkey.Errorf(latchkey.EInvalid, "a derived token keeps its parent's subject (%q)", p.Subject)
	}
	if !issued {
		if req.Name == "" {
			c.Name = p.Name
		}
		if len(req.Scopes) == 0 {
			c.Scopes = slices.Clone(p.Scopes)
		}
		if len(req.Tags) == 0 {
			c.Tags = slices.Clone(p.Tags)
		}
		if len(req.Meta) == 0 {
			c.Meta = p.Meta
		}
	}
	for _, sc := range c.Scopes {
		if !latchkey.ScopesCover(pScopes, sc) {
			return broader("scope %q is not covered by the parent's scopes", sc)
		}
	}
	return nil
}

// narrowTimes sets c's expiry and not_before: within the parent's, and
// inherited when not given, under the server's policy.
func (s *Service) narrowTimes(p, c *latchkey.Token, expires, notBefore, now time.Time, broader func(string, ...any) error) error {
	switch {
	case expires.IsZero():
		c.ExpiresAt = p.ExpiresAt
	case !p.ExpiresAt.IsZero() && expires.After(p.ExpiresAt):
		return broader("it would expire at %s, after the parent (%s)", expires.Format(time.RFC3339), p.ExpiresAt.Format(time.RFC3339))
	default:
		c.ExpiresAt = expires
	}
	if c.ExpiresAt.IsZero() {
		if s.Policy.DefaultTTL > 0 {
			c.ExpiresAt = now.Add(s.Policy.DefaultTTL)
		} else if s.Policy.RequireExpiry || s.Policy.MaxLifetime > 0 {
			return latchkey.Errorf(latchkey.EInvalid, "this server requires every token to expire: give ttl or expires_at")
		}
	}
	if m := s.Policy.MaxLifetime; m > 0 && c.ExpiresAt.Sub(now) > m {
		return latchkey.Errorf(latchkey.EInvalid, "the token would live more than this server's maximum lifetime of %s", latchkey.Duration(m))
	}
	switch {
	case notBefore.IsZero():
		c.NotBefore = p.NotBefore
	case notBefore.Before(p.NotBefore):
		return broader("not_before %s is earlier than the parent's (%s)", notBefore.Format(time.RFC3339), p.NotBefore.Format(time.RFC3339))
	default:
		c.NotBefore = notBefore
	}
	if !c.NotBefore.IsZero() && !c.ExpiresAt.IsZero() && !c.NotBefore.Before(c.ExpiresAt) {
		return latchkey.Errorf(latchkey.EInvalid, "not_before must be earlier than the expiry")
	}
	return nil
}

// Update changes a token's name, meta or tags, or narrows its scopes.
// Scopes can never be widened in place: that needs a new token.
func (s *Service) Update(ctx context.Context, a latchkey.Actor, id string, req client.UpdateRequest) (*latchkey.Token, error) {
	if req.Name == nil && req.Meta == nil && req.Tags == nil && req.Scopes == nil {
		return nil, latchkey.Errorf(latchkey.EInvalid, "nothing to change: give name, meta, tags or scopes")
	}
	// Validate the new values as for a new token.
	probe := client.CreateRequest{}
	if req.Name != nil {
		probe.Name = *req.Name
	}
	if req.Tags != nil {
		probe.Tags = *req.Tags
	}
	probe.Meta = req.Meta
	if req.Scopes != nil {
		probe.Scopes = *req.Scopes
	}
	now := s.now()
	v, err := s.fields(latchkey.Actor{}, probe, now)
	if err != nil {
		return nil, err
	}
	var out *latchkey.Token
	err = s.apply(ctx, func(tx latchkey.Tx, changed func(string)) error {
		t, err := tx.GetToken(ctx, id)
		if err != nil {
			return err
		}
		if err := canManage(a, t); err != nil {
			return err
		}
		if t.Status == latchkey.StatusRevoked {
			return latchkey.Errorf(latchkey.EConflict, "token %s is revoked; revoked tokens cannot be changed", id)
		}
		detail := map[string]any{}
		if req.Name != nil {
			t.Name, detail["name"] = v.Name, v.Name
		}
		if req.Meta != nil {
			t.Meta, detail["meta_changed"] = v.Meta, true
		}
		if req.Tags != nil {
			t.Tags, detail["tags"] = v.Tags, v.Tags
		}
		if req.Scopes != nil {
			for _, sc := range v.Scopes {
				if !latchkey.ScopesCover(t.Scopes, sc) {
					return latchkey.Errorf(latchkey.EPermissionDenied, "scopes can only be narrowed in place: %q is not covered by the token's scopes; issue a new token to widen", sc)
				}
			}
			kids, err := tx.SelectTokens(ctx, latchkey.TokenSelector{Parent: id})
			if err != nil {
				return err
			}
			for _, k := range kids {
				if k.Status == latchkey.StatusRevoked {
					continue
				}
				for _, sc := range k.Scopes {
					if !latchkey.ScopesCover(v.Scopes, sc) {
						return latchkey.Errorf(latchkey.EConflict, "derived token %s holds scope %q, which the new scopes do not cover; revoke it or narrow it first", k.ID, sc)
					}
				}
			}
			detail["scopes"], detail["previous_scopes"] = v.Scopes, t.Scopes
			t.Scopes = v.Scopes
		}
		if err := tx.UpdateToken(ctx, t, s.event(a, latchkey.ActionTokenUpdate, t, now, detail)); err != nil {
			return err
		}
		changed(id)
		out = t
		return nil
	})
	return out, err
}

// List returns a page of tokens.
func (s *Service) List(ctx context.Context, f latchkey.TokenFilter) (latchkey.TokenPage, error) {
	f.RotationDueBefore, f.Now, f.Expired, f.Rotated = time.Time{}, time.Time{}, false, false
	switch f.Status {
	case "", latchkey.StatusActive, latchkey.StatusSuspended, latchkey.StatusRevoked:
	case latchkey.StatusExpired:
		f.Status, f.Expired, f.Now = "", true, s.now()
	case latchkey.StatusRotated:
		f.Status, f.Rotated, f.Now = "", true, s.now()
	default:
		return latchkey.TokenPage{}, latchkey.Errorf(latchkey.EInvalid, "status must be active, suspended, revoked, expired or rotated")
	}
	if f.RotationDue {
		if s.Policy.RotationAge <= 0 {
			return latchkey.TokenPage{}, latchkey.Errorf(latchkey.EInvalid, "no rotation policy is configured (start the server with --rotate-after, e.g. 90d)")
		}
		now := s.now()
		f.RotationDueBefore, f.Now = now.Add(-s.Policy.RotationAge), now
	}
	if err := f.ListWindow(s.now()); err != nil {
		return latchkey.TokenPage{}, err
	}
	page, err := s.Store.ListTokens(ctx, f)
	now := s.now()
	for _, t := range page.Tokens {
		t.Effective = t.EffectiveStatus(now)
	}
	return page, err
}
