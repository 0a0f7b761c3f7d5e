package tenancy

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"strings"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
)

// Store is what the service changes. latchkey.Store satisfies it.
type Store interface {
	SettingsReader
	GetSetting(ctx context.Context, key string) (string, bool, error)
	ChangeSetting(ctx context.Context, key string, fn func(old string, ok bool) (string, bool, *latchkey.AuditEvent, error)) error
	SetBudget(ctx context.Context, key string, max int64) error
	BudgetUses(ctx context.Context, key string) (int64, error)
	ListTokens(ctx context.Context, f latchkey.TokenFilter) (latchkey.TokenPage, error)
	AppendAudit(ctx context.Context, evs []latchkey.AuditEvent) error
}

// Issuer issues the token an approved access request's claim collects.
// *tokens.Service satisfies it.
type Issuer interface {
	Create(ctx context.Context, a latchkey.Actor, req client.CreateRequest) (*latchkey.Token, secret.Plaintext, error)
}

// Service changes keyspaces, roles and identities, and runs access
// requests. Store and Registry are required.
type Service struct {
	Store    Store
	Registry *Registry
	Tokens   Issuer
	// Changed is called after a change to a keyspace, role or identity
	// made here, once the registry has reloaded: the daemon drops the
	// verifier's cache. Other nodes hear of it through the change feed.
	Changed func()
	Node    string
	Now     func() time.Time
	Rand    io.Reader
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return latchkey.TimeOf(s.Now())
	}
	return latchkey.TimeOf(time.Now())
}

func (s *Service) rand() io.Reader {
	if s.Rand != nil {
		return s.Rand
	}
	return rand.Reader
}

// Reload rereads the registry and calls Changed: after a change here, or
// one another node announced.
func (s *Service) Reload(ctx context.Context) error {
	if err := s.Registry.Load(ctx, s.Store); err != nil {
		return err
	}
	if s.Changed != nil {
		s.Changed()
	}
	return nil
}

func actorName(a latchkey.Actor) string {
	switch {
	case a.TokenID != "":
		return a.TokenID
	case a.System != "":
		return "latchkey:" + a.System
	}
	return "latchkey"
}

// event is the audit record of a change to keyspace ks.
func (s *Service) event(a latchkey.Actor, action, ks string, now time.Time, detail map[string]any) *latchkey.AuditEvent {
	raw, _ := json.Marshal(detail) // plain values only
	return &latchkey.AuditEvent{
		Time: now, Node: s.Node, RequestID: a.RequestID, Kind: latchkey.KindAdmin, Action: action,
		Actor: actorName(a), Subject: latchkey.KeyspaceSubject(ks), Outcome: latchkey.OutcomeOK,
		ClientIP: a.ClientIP, UserAgent: a.UserAgent, Detail: raw,
	}
}

// change writes key through ChangeSetting, then reloads.
func (s *Service) change(ctx context.Context, key string, fn func(old string, ok bool) (string, bool, *latchkey.AuditEvent, error)) error {
	if err := s.Store.ChangeSetting(ctx, key, fn); err != nil {
		return err
	}
	return s.Reload(ctx)
}

func plain(field, v string, max int) error {
	if len(v) > max {
		return latchkey.Errorf(latchkey.EInvalid, "%s is longer than %d bytes", field, max)
	}
	if secret.LooksLikeToken(v) {
		return latchkey.Errorf(latchkey.EInvalid, "%s must not contain a token", field)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			return latchkey.Errorf(latchkey.EInvalid, "%s must not contain control characters", field)
		}
	}
	return nil
}

// PutKeyspace creates keyspace k or replaces its description and policy
// (its prefix is fixed once tokens carry it). It reports whether k is new.
// Only a global administrator creates keyspaces; the API checks who may
// change one.
func (s *Service) PutKeyspace(ctx context.Context, a latchkey.Actor, k latchkey.Keyspace) (latchkey.Keyspace, bool, error) {
	if err := latchkey.ValidateName("keyspace", k.Name); err != nil {
		return k, false, err
	}
	if k.Name == latchkey.DefaultKeyspace && k.Prefix != "" {
		return k, false, latchkey.Errorf(latchkey.EInvalid, "the default keyspace has no prefix of its own (its tokens keep the prefix each was issued with)")
	}
	if k.Name != latchkey.DefaultKeyspace && !secret.ValidPrefix(k.Prefix) {
		return k, false, latchkey.Errorf(latchkey.EInvalid, "prefix %q is invalid: use lowercase segments joined by '_' (e.g. \"acme_live\")", k.Prefix)
	}
	if err := plain("description", k.Description, 500); err != nil {
		return k, false, err
	}
	if err := validatePolicy(&k.Policy); err != nil {
		return k, false, err
	}
	for _, o := range s.Registry.Keyspaces() {
		if o.Name != k.Name && o.Prefix != "" && o.Prefix == k.Prefix {
			return k, false, latchkey.Errorf(latchkey.EConflict, "keyspace %s already uses the prefix %s", o.Name, k.Prefix)
		}
	}
	if !a.Reach(latchkey.PermAdmin).All {
		if _, ok := s.Registry.Keyspace(k.Name); !ok {
			return k, false, latchkey.Errorf(latchkey.EPermissionDenied, "only a global administrator (latchkey:admin) creates keyspaces")
		}
	}
	now := s.now()
	created := false
	err := s.change(ctx, keyspaceKey(k.Name), func(old string, ok bool) (string, bool, *latchkey.AuditEvent, error) {
		out := k
		if ok {
			var prev latchkey.Keyspace
			if err := json.Unmarshal([]byte(old), &prev); err != nil {
				return "", false, nil, err
			}
			if prev.Prefix != k.Prefix {
				return "", false, nil, latchkey.Errorf(latchkey.EInvalid, "keyspace %s keeps its prefix %s", k.Name, prev.Prefix)
			}
			out.CreatedAt, out.CreatedBy = prev.CreatedAt, prev.CreatedBy
		} else {
			created = true
			if k.Name == latchkey.DefaultKeyspace {
				out.CreatedBy = "latchkey"
			} else {
				out.CreatedAt, out.CreatedBy = now, actorName(a)
			}
		}
		out.UpdatedAt, out.UpdatedBy = now, actorName(a)
		b, _ := json.Marshal(out)
		k = out
		return string(b), false, s.event(a, latchkey.ActionKeyspacePut, k.Name, now, map[string]any{"keyspace": k.Name, "prefix": k.Prefix, "policy": k.Policy, "created": created}), nil
	})
	return k, created, err
}

func validatePolicy(p *latchkey.KeyspacePolicy) error {
	for _, d := range []latchkey.Duration{p.DefaultTTL, p.MaxLifetime, p.RotateAfter, p.MaxIdleTimeout, p.RequestTTL, p.ClaimTTL} {
		if d < 0 {
			return latchkey.Errorf(latchkey.EInvalid, "policy durations must not be negative")
		}
	}
	if p.MaxLifetime > 0 && p.DefaultTTL > p.MaxLifetime {
		return latchkey.Errorf(latchkey.EInvalid, "the default TTL (%s) is longer than the maximum lifetime (%s)", p.DefaultTTL, p.MaxLifetime)
	}
	if p.MaxIdleTimeout != 0 && time.Duration(p.MaxIdleTimeout) < latchkey.MinIdleTimeout {
		return latchkey.Errorf(latchkey.EInvalid, "max_idle_timeout must be at least %s", latchkey.Duration(latchkey.MinIdleTimeout))
	}
	if len(p.Requests) > 50 {
		return latchkey.Errorf(latchkey.EInvalid, "at most 50 approval rules")
	}
	for i := range p.Requests {
		r := &p.Requests[i]
		if len(r.Scopes) == 0 || len(r.Scopes) > latchkey.MaxScopes {
			return latchkey.Errorf(latchkey.EInvalid, "approval rule %d: give 1 to %d scopes", i+1, latchkey.MaxScopes)
		}
		for _, sc := range r.Scopes {
			if err := latchkey.ValidateScope(sc); err != nil {
				return err
			}
			if strings.HasPrefix(sc, latchkey.ReservedPrefix) {
				return latchkey.Errorf(latchkey.EInvalid, "approval rule %d: latchkey's own scopes cannot be requested", i+1)
			}
		}
		if r.Approvals < 1 || r.Approvals > 10 {
			return latchkey.Errorf(latchkey.EInvalid, "approval rule %d: approvals must be 1 to 10", i+1)
		}
		if r.MaxTTL <= 0 {
			return latchkey.Errorf(latchkey.EInvalid, "approval rule %d: max_ttl is required (e.g. \"4h\")", i+1)
		}
	}
	return nil
}

// DeleteKeyspace removes an empty keyspace (no tokens, no roles).
func (s *Service) DeleteKeyspace(ctx context.Context, a latchkey.Actor, name string) error {
	if name == latchkey.DefaultKeyspace {
		return latchkey.Errorf(latchkey.EInvalid, "the default keyspace cannot be deleted")
	}
	if _, ok := s.Registry.Keyspace(name); !ok {
		return latchkey.Errorf(latchkey.ENotFound, "no keyspace %q", name)
	}
	page, err := s.Store.ListTokens(ctx, latchkey.TokenFilter{Keyspace: name, Limit: 1})
	if err != nil {
		return err
	}
	if len(page.Tokens) > 0 || len(s.Registry.Roles(name)) > 0 {
		return latchkey.Errorf(latchkey.EConflict, "keyspace %s still has tokens or roles; revoke and delete them first", name)
	}
	now := s.now()
	return s.change(ctx, keyspaceKey(name), func(_ string, ok bool) (string, bool, *latchkey.AuditEvent, error) {
		if !ok {
			return "", false, nil, latchkey.Errorf(latchkey.ENotFound, "no keyspace %q", name)
		}
		return "", true, s.event(a, latchkey.ActionKeyspaceDelete, name, now, map[string]any{"keyspace": name}), nil
	})
}

// checkRoleScopes validates the scopes a role in ks may hold.
func checkRoleScopes(a latchkey.Actor, ks string, scopes []string) ([]string, error) {
	if len(scopes) == 0 || len(scopes) > latchkey.MaxScopes {
		return nil, latchkey.Errorf(latchkey.EInvalid, "a role holds 1 to %d scopes", latchkey.MaxScopes)
	}
	global := a.Reach(latchkey.PermAdmin).All
	var out []string
	for _, sc := range scopes {
		if secret.LooksLikeToken(sc) {
			return nil, latchkey.Errorf(latchkey.EInvalid, "scopes must not contain a token")
		}
		if err := latchkey.ValidateScope(sc); err != nil {
			return nil, err
		}
		if strings.HasPrefix(sc, latchkey.ReservedPrefix) && !global {
			if k, _, ok := latchkey.SplitKeyspaceScope(sc); !ok || k != ks {
				return nil, latchkey.Errorf(latchkey.EPermissionDenied, "only a global administrator may put latchkey's scope %q in a role", sc)
			}
		}
		if k, _, ok := latchkey.SplitKeyspaceScope(sc); ok && k != ks && ks != latchkey.DefaultKeyspace {
			return nil, latchkey.Errorf(latchkey.EInvalid, "a role of keyspace %s cannot hold another keyspace's scope %q", ks, sc)
		}
		if !containsStr(out, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// PutRole creates or replaces role r. Every token holding it changes at
// its next verification, on every node.
func (s *Service) PutRole(ctx context.Context, a latchkey.Actor, r latchkey.Role) (latchkey.Role, error) {
	r.Keyspace = latchkey.KeyspaceOf(r.Keyspace)
	if _, ok := s.Registry.Keyspace(r.Keyspace); !ok {
		return r, latchkey.Errorf(latchkey.ENotFound, "no keyspace %q", r.Keyspace)
	}
	if err := latchkey.ValidateName("role", r.Name); err != nil {
		return r, err
	}
	if err := plain("description", r.Description, 500); err != nil {
		return r, err
	}
	scopes, err := checkRoleScopes(a, r.Keyspace, r.Scopes)
	if err != nil {
		return r, err
	}
	r.Scopes = scopes
	if _, ok := s.Registry.Role(r.Keyspace, r.Name); !ok && len(s.Registry.Roles(r.Keyspace)) >= latchkey.MaxRolesPerSpace {
		return r, latchkey.Errorf(latchkey.EResourceExhausted, "keyspace %s already has %d roles", r.Keyspace, latchkey.MaxRolesPerSpace)
	}
	now := s.now()
	err = s.change(ctx, roleKey(r.Keyspace, r.Name), func(old string, ok bool) (string, bool, *latchkey.AuditEvent, error) {
		detail := map[string]any{"keyspace": r.Keyspace, "role": r.Name, "scopes": r.Scopes}
		r.Version = 1
		if ok {
			var prev latchkey.Role
			if err := json.Unmarshal([]byte(old), &prev); err != nil {
				return "", false, nil, err
			}
			r.Version = prev.Version + 1
			detail["previous_scopes"] = prev.Scopes
		}
		r.UpdatedAt, r.UpdatedBy = now, actorName(a)
		detail["version"] = r.Version
		b, _ := json.Marshal(r)
		return string(b), false, s.event(a, latchkey.ActionRolePut, r.Keyspace, now, detail), nil
	})
	return r, err
}

// DeleteRole removes a role: tokens holding it lose its scopes.
func (s *Service) DeleteRole(ctx context.Context, a latchkey.Actor, ks, name string) error {
	now := s.now()
	return s.change(ctx, roleKey(ks, name), func(old string, ok bool) (string, bool, *latchkey.AuditEvent, error) {
		if !ok {
			return "", false, nil, latchkey.Errorf(latchkey.ENotFound, "no role %q in keyspace %s", name, ks)
		}
		var prev latchkey.Role
		_ = json.Unmarshal([]byte(old), &prev)
		return "", true, s.event(a, latchkey.ActionRoleDelete, ks, now, map[string]any{"keyspace": ks, "role": name, "previous_scopes": prev.Scopes}), nil
	})
}

// PutIdentity sets the limits shared by every token of a subject in a
// keyspace: a rate limit (exact across nodes with Redis) and a usage
// budget (exact: one row in the store).
func (s *Service) PutIdentity(ctx context.Context, a latchkey.Actor, id latchkey.Identity) (latchkey.Identity, error) {
	id.Keyspace = latchkey.KeyspaceOf(id.Keyspace)
	if _, ok := s.Registry.Keyspace(id.Keyspace); !ok {
		return id, latchkey.Errorf(latchkey.ENotFound, "no keyspace %q", id.Keyspace)
	}
	if id.Subject == "" {
		return id, latchkey.Errorf(latchkey.EInvalid, "subject is required")
	}
	if err := plain("subject", id.Subject, 200); err != nil {
		return id, err
	}
	if id.RateLimit == nil && id.MaxUses == 0 {
		return id, latchkey.Errorf(latchkey.EInvalid, "give rate_limit or max_uses (or delete the identity)")
	}
	if r := id.RateLimit; r != nil {
		if _, err := (latchkey.Constraints{RateLimit: r}).Normalize(); err != nil {
			return id, err
		}
	}
	if id.MaxUses < 0 {
		return id, latchkey.Errorf(latchkey.EInvalid, "max_uses must not be negative")
	}
	// The budget row first: a crash in between leaves a budget nobody
	// spends yet, never an identity whose budget is missing.
	if err := s.Store.SetBudget(ctx, id.BudgetKey(), id.MaxUses); err != nil {
		return id, err
	}
	now := s.now()
	id.UpdatedAt, id.UpdatedBy = now, actorName(a)
	err := s.change(ctx, identityKey(id.Keyspace, id.Subject), func(string, bool) (string, bool, *latchkey.AuditEvent, error) {
		b, _ := json.Marshal(id)
		return string(b), false, s.event(a, latchkey.ActionIdentityPut, id.Keyspace, now,
			map[string]any{"keyspace": id.Keyspace, "identity": id.Subject, "rate_limit": id.RateLimit, "max_uses": id.MaxUses}), nil
	})
	return id, err
}

// IdentityUses reports how much of an identity's budget is spent.
func (s *Service) IdentityUses(ctx context.Context, id *latchkey.Identity) (int64, error) {
	if id.MaxUses == 0 {
		return 0, nil
	}
	return s.Store.BudgetUses(ctx, id.BudgetKey())
}

// DeleteIdentity removes a subject's shared limits.
func (s *Service) DeleteIdentity(ctx context.Context, a latchkey.Actor, ks, subject string) error {
	now := s.now()
	err := s.change(ctx, identityKey(ks, subject), func(_ string, ok bool) (string, bool, *latchkey.AuditEvent, error) {
		if !ok {
			return "", false, nil, latchkey.Errorf(latchkey.ENotFound, "no identity %q in keyspace %s", subject, ks)
		}
		return "", true, s.event(a, latchkey.ActionIdentityDelete, ks, now, map[string]any{"keyspace": ks, "identity": subject}), nil
	})
	if err != nil {
		return err
	}
	id := latchkey.Identity{Keyspace: ks, Subject: subject}
	return s.Store.SetBudget(ctx, id.BudgetKey(), 0)
}

// Keyspaces lists every keyspace (the registry's).
func (s *Service) Keyspaces() []latchkey.Keyspace { return s.Registry.Keyspaces() }

// Keyspace returns one keyspace.
func (s *Service) Keyspace(name string) (latchkey.Keyspace, bool) { return s.Registry.Keyspace(name) }

// Roles lists a keyspace's roles.
func (s *Service) Roles(ks string) []latchkey.Role { return s.Registry.Roles(ks) }

// Role returns one role.
func (s *Service) Role(ks, name string) (latchkey.Role, bool) { return s.Registry.Role(ks, name) }

// Identities lists a keyspace's identities.
func (s *Service) Identities(ks string) []latchkey.Identity { return s.Registry.Identities(ks) }

// Identity returns one identity.
func (s *Service) Identity(ks, subject string) (*latchkey.Identity, bool) {
	return s.Registry.Identity(ks, subject)
}
