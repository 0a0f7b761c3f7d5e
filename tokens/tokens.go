// Package tokens holds the admin operations on tokens: issue, revoke,
// read. It enforces the rules a request must meet (valid scopes, sane
// times, no privilege escalation), writes each change with its audit event
// in one transaction, and invalidates caches after every change.
//
// It sits between the HTTP API and the store so that every front end (the
// REST API today; the gateway and dashboard later) applies the same rules.
package tokens

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
)

// Limits on what one token may carry.
const (
	MaxNameLen    = 200
	MaxSubjectLen = 200
	MaxTags       = 32
	MaxTagLen     = 64
	MaxMetaBytes  = 4096
	MaxReasonLen  = 500
	// MaxLifetime bounds how far ahead expires_at and not_before may be:
	// beyond it a time is a mistake, not a policy (and nanosecond clocks
	// end in 2262).
	MaxLifetime = 100 * 365 * 24 * time.Hour
)

// Service performs admin operations. Store and Hasher are required; the
// other fields have working zero values.
type Service struct {
	Store  latchkey.Store
	Hasher *secret.Hasher
	// Rand is the source of token ids and secrets (default crypto/rand).
	Rand io.Reader
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// Invalidate is called with a token's id after every change, to evict
	// it from verification caches.
	Invalidate func(id string)
	// Node names this server in audit records.
	Node string
	// Policy is the server's expiry and rotation policy.
	Policy Policy
	// Tenancy, when set, knows the keyspaces and their roles; without it
	// only the default keyspace exists and no role does.
	Tenancy Tenancy
	// FlushUsage, when set, writes last-use times still held in memory
	// (verify.Verifier.FlushUsage), so that idle expiry is judged on
	// current data before a rotation or derivation.
	FlushUsage func(ctx context.Context) error

	rotationMu sync.Mutex // one AnnounceRotationDue at a time
}

// Tenancy is what the token service reads about keyspaces and roles.
// *tenancy.Registry satisfies it.
type Tenancy interface {
	Keyspace(name string) (latchkey.Keyspace, bool)
	RoleScopes(ks, role string) ([]string, bool)
}

// keyspace returns keyspace ks (the default one is always there).
func (s *Service) keyspace(ks string) (latchkey.Keyspace, error) {
	ks = latchkey.KeyspaceOf(ks)
	if s.Tenancy != nil {
		if k, ok := s.Tenancy.Keyspace(ks); ok {
			return k, nil
		}
	}
	if ks == latchkey.DefaultKeyspace {
		return latchkey.Keyspace{Name: ks}, nil
	}
	return latchkey.Keyspace{}, latchkey.Errorf(latchkey.EInvalid, "there is no keyspace %q", ks)
}

// roleScopes resolves roles in ks (unknown roles grant nothing).
func (s *Service) roleScopes(ks string, roles []string) []string {
	var out []string
	if s.Tenancy == nil {
		return nil
	}
	for _, r := range roles {
		rs, _ := s.Tenancy.RoleScopes(latchkey.KeyspaceOf(ks), r)
		out = append(out, rs...)
	}
	return out
}

// EffectiveScopes are t's scopes and its roles' (as verification sees them).
func (s *Service) EffectiveScopes(t *latchkey.Token) []string {
	if len(t.Roles) == 0 {
		return t.Scopes
	}
	return append(slices.Clone(t.Scopes), s.roleScopes(t.Keyspace, t.Roles)...)
}

// Policy is the server's rules for token lifetimes (docs/architecture.md §3).
type Policy struct {
	// DefaultTTL is given to a token created without ttl or expires_at
	// (0: such a token does not expire, unless RequireExpiry).
	DefaultTTL time.Duration
	// MaxLifetime caps how long after its creation a token may expire
	// (0: no cap beyond the 100-year sanity limit).
	MaxLifetime time.Duration
	// RequireExpiry refuses tokens that would never expire.
	RequireExpiry bool
	// RotationAge is the age at which a token is due for rotation: it then
	// verifies with the rotation_due warning and is listed by
	// ?rotation_due=true (0: no rotation policy).
	RotationAge time.Duration
}

// Validate checks the policy itself.
func (p Policy) Validate() error {
	if p.DefaultTTL < 0 || p.MaxLifetime < 0 || p.RotationAge < 0 {
		return latchkey.Errorf(latchkey.EInvalid, "policy durations must not be negative")
	}
	if p.MaxLifetime > 0 && p.DefaultTTL > p.MaxLifetime {
		return latchkey.Errorf(latchkey.EInvalid, "the default TTL (%s) is longer than the maximum lifetime (%s)", latchkey.Duration(p.DefaultTTL), latchkey.Duration(p.MaxLifetime))
	}
	return nil
}

// constraints parses and normalises the constraint fields of req.
func requestConstraints(req *client.CreateRequest) (latchkey.Constraints, error) {
	var c latchkey.Constraints
	if req.IdleTimeout != "" {
		d, err := latchkey.ParseDuration(req.IdleTimeout)
		if err != nil {
			return c, latchkey.Errorf(latchkey.EInvalid, "idle_timeout: %s", latchkey.ErrorMessage(err))
		}
		if d == 0 {
			return c, latchkey.Errorf(latchkey.EInvalid, "idle_timeout must be positive (omit it for none)")
		}
		c.IdleTimeout = latchkey.Duration(d)
	}
	c.AllowedCIDRs, c.AllowedMethods, c.AllowedPaths = req.AllowedCIDRs, req.AllowedMethods, req.AllowedPaths
	if r := req.RateLimit; r != nil {
		if r.Window == "" {
			return c, latchkey.Errorf(latchkey.EInvalid, `rate_limit.window is required, e.g. {"limit": 100, "window": "1m"}`)
		}
		w, err := latchkey.ParseDuration(r.Window)
		if err != nil {
			return c, latchkey.Errorf(latchkey.EInvalid, "rate_limit.window: %s", latchkey.ErrorMessage(err))
		}
		c.RateLimit = &latchkey.RateLimit{Limit: r.Limit, Window: latchkey.Duration(w)}
	}
	c.MaxUses = req.MaxUses
	c.Audience = req.Audience
	for _, list := range [][]string{c.AllowedCIDRs, c.AllowedMethods, c.AllowedPaths, c.Audience} {
		for _, v := range list {
			if secret.LooksLikeToken(v) {
				return c, latchkey.Errorf(latchkey.EInvalid, "constraints must not contain a token")
			}
		}
	}
	return c.Normalize()
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

func (s *Service) invalidate(id string) {
	if s.Invalidate != nil {
		s.Invalidate(id)
	}
}

// CanGrant reports whether a caller holding granted may issue a token with
// scope. latchkey:admin may grant anything; anyone else only what their own
// grants cover, so a token limited to latchkey:tokens:write cannot mint
// latchkey:admin or any scope beyond its own.
func CanGrant(granted []string, scope string) bool {
	return latchkey.ScopesCover(granted, latchkey.AdminScope) || latchkey.ScopesCover(granted, scope)
}

// canGrantIn is CanGrant for a token of keyspace ks: an administrator of
// ks (latchkey:keyspaces.<ks>:admin) may grant any application scope and
// ks's own admin scopes, never latchkey's global ones.
func canGrantIn(a latchkey.Actor, ks, scope string) bool {
	if a.TokenID == "" {
		return true
	}
	admin := latchkey.ReachOf(a.Keyspace, a.Scopes, latchkey.PermAdmin)
	if admin.All {
		return true
	}
	if admin.Has(ks) {
		if !strings.HasPrefix(scope, latchkey.ReservedPrefix) {
			return true
		}
		if k, _, ok := latchkey.SplitKeyspaceScope(scope); ok && k == latchkey.KeyspaceOf(ks) {
			return true
		}
	}
	return latchkey.ScopesCover(a.Scopes, scope)
}

// adminIn reports whether a administers keyspace ks: it issues root
// tokens there (not children of its own).
func adminIn(a latchkey.Actor, ks string) bool {
	r := latchkey.ReachOf(a.Keyspace, a.Scopes, latchkey.PermAdmin)
	return r.All || r.Has(ks) && latchkey.KeyspaceOf(ks) != latchkey.DefaultKeyspace
}

// Create validates req, issues a token and stores it with its audit event.
// It returns the record and the plaintext, which exists nowhere else.
//
// A token created by a token without latchkey:admin (a holder of
// latchkey:tokens:write) is recorded as its creator's child: it can be no
// looser than its creator in any dimension derivation checks (scopes,
// expiry, networks, methods, paths, idle timeout, rate and usage limits,
// which it also spends from), and is revoked, suspended and idled with
// it. Otherwise a writer with a 1 h TTL, a network allowlist and a budget
// could mint a peer with none of them that outlives its own revocation.
func (s *Service) Create(ctx context.Context, a latchkey.Actor, req client.CreateRequest) (*latchkey.Token, secret.Plaintext, error) {
	if a.TokenID != "" && !adminIn(a, req.Keyspace) {
		return s.derive(ctx, a, a.TokenID, req, false, true) // scopes judged against the creator's, as a parent's
	}
	now := s.now()
	t, err := s.validate(a, req, now)
	if err != nil {
		return nil, secret.Plaintext{}, err
	}
	pt, parts, err := secret.Generate(t.Prefix, s.rand())
	if err != nil {
		return nil, secret.Plaintext{}, fmt.Errorf("tokens: generate: %w", err)
	}
	t.ID = parts.ID
	t.Hash = s.Hasher.Sum(parts.ID, &parts.Secret)
	ev := s.event(a, latchkey.ActionTokenCreate, t, now, grantsDetail(t, nil))
	if err := s.Store.CreateToken(ctx, t, ev); err != nil {
		return nil, secret.Plaintext{}, err
	}
	// A negative cache entry for this id (a guess that happened to hit it)
	// must not outlive the token's creation.
	s.invalidate(t.ID)
	return t, pt, nil
}

// validate checks every field of a new token and applies the policy.
func (s *Service) validate(a latchkey.Actor, req client.CreateRequest, now time.Time) (*latchkey.Token, error) {
	t, err := s.fields(a, req, now)
	if err != nil {
		return nil, err
	}
	if t.Constraints, err = requestConstraints(&req); err != nil {
		return nil, err
	}
	if t.ExpiresAt, t.NotBefore, err = s.times(req, now, t.Keyspace); err != nil {
		return nil, err
	}
	if err := s.idleCap(t); err != nil {
		return nil, err
	}
	return t, nil
}

// idleCap applies the keyspace's cap on idle timeouts.
func (s *Service) idleCap(t *latchkey.Token) error {
	k, err := s.keyspace(t.Keyspace)
	if err != nil {
		return err
	}
	if max := k.Policy.MaxIdleTimeout; max > 0 {
		switch {
		case t.IdleTimeout == 0:
			t.IdleTimeout = max
		case t.IdleTimeout > max:
			return latchkey.Errorf(latchkey.EInvalid, "idle_timeout %s is longer than keyspace %s allows (%s)", t.IdleTimeout, k.Name, max)
		}
	}
	return nil
}

// tenancyFields sets t's keyspace, prefix and roles from req and checks
// them: the keyspace exists, its prefix is kept, its roles exist and a
// can grant what they hold, and a token outside the default keyspace
// holds no other keyspace's admin scopes.
func (s *Service) tenancyFields(a latchkey.Actor, req client.CreateRequest, t *latchkey.Token) error {
	k, err := s.keyspace(req.Keyspace)
	if err != nil {
		return err
	}
	t.Keyspace = k.Name
	if k.Prefix != "" {
		if req.Prefix != "" && req.Prefix != k.Prefix {
			return latchkey.Errorf(latchkey.EInvalid, "tokens of keyspace %s have the prefix %s", k.Name, k.Prefix)
		}
		t.Prefix = k.Prefix
	}
	for _, sc := range t.Scopes {
		if ks, _, ok := latchkey.SplitKeyspaceScope(sc); ok && k.Name != latchkey.DefaultKeyspace && ks != k.Name {
			return latchkey.Errorf(latchkey.EInvalid, "a token of keyspace %s cannot hold another keyspace's scope %q", k.Name, sc)
		}
	}
	roles, err := s.checkRoles(k.Name, req.Roles)
	if err != nil {
		return err
	}
	for _, sc := range s.roleScopes(k.Name, roles) {
		if a.TokenID != "" && !canGrantIn(a, k.Name, sc) {
			return latchkey.Errorf(latchkey.EPermissionDenied, "you cannot grant a role holding scope %q: your token does not hold it", sc)
		}
	}
	t.Roles = roles
	return nil
}

// checkRoles validates a token's role list in keyspace ks.
func (s *Service) checkRoles(ks string, roles []string) ([]string, error) {
	if len(roles) > latchkey.MaxRolesPerToken {
		return nil, latchkey.Errorf(latchkey.EInvalid, "a token may hold at most %d roles", latchkey.MaxRolesPerToken)
	}
	var out []string
	for _, r := range roles {
		ok := false
		if s.Tenancy != nil {
			_, ok = s.Tenancy.RoleScopes(ks, r)
		}
		if !ok {
			return nil, latchkey.Errorf(latchkey.EInvalid, "there is no role %q in keyspace %s", r, ks)
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// fields checks the descriptive fields and grants of a request (not its
// times or constraints).
func (s *Service) fields(a latchkey.Actor, req client.CreateRequest, now time.Time) (*latchkey.Token, error) {
	if len(req.Name) > MaxNameLen {
		return nil, latchkey.Errorf(latchkey.EInvalid, "name is longer than %d bytes", MaxNameLen)
	}
	if len(req.Subject) > MaxSubjectLen {
		return nil, latchkey.Errorf(latchkey.EInvalid, "subject is longer than %d bytes", MaxSubjectLen)
	}
	for _, f := range []struct{ name, v string }{{"name", req.Name}, {"subject", req.Subject}} {
		if err := PlainText(f.name, f.v); err != nil {
			return nil, err
		}
	}
	// A token pasted into the wrong field would be stored, listed and
	// audited in clear: refuse it (without quoting it back).
	for _, f := range []struct{ name, v string }{{"name", req.Name}, {"subject", req.Subject}, {"meta", string(req.Meta)}} {
		if secret.LooksLikeToken(f.v) {
			return nil, latchkey.Errorf(latchkey.EInvalid, "%s must not contain a token", f.name)
		}
	}
	for _, sc := range req.Scopes {
		if secret.LooksLikeToken(sc) {
			return nil, latchkey.Errorf(latchkey.EInvalid, "scopes must not contain a token")
		}
	}
	if len(req.Scopes) > latchkey.MaxScopes {
		return nil, latchkey.Errorf(latchkey.EInvalid, "a token may hold at most %d scopes", latchkey.MaxScopes)
	}
	scopes := make([]string, 0, len(req.Scopes))
	for _, sc := range req.Scopes {
		if err := latchkey.ValidateScope(sc); err != nil {
			return nil, err
		}
		if a.TokenID != "" && !canGrantIn(a, req.Keyspace, sc) {
			return nil, latchkey.Errorf(latchkey.EPermissionDenied, "you cannot grant scope %q: your token does not hold it", sc)
		}
		if !slices.Contains(scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	if len(req.Tags) > MaxTags {
		return nil, latchkey.Errorf(latchkey.EInvalid, "a token may carry at most %d tags", MaxTags)
	}
	tags := make([]string, 0, len(req.Tags))
	for _, tag := range req.Tags {
		if err := ValidateTag(tag); err != nil {
			return nil, err
		}
		if !slices.Contains(tags, tag) {
			tags = append(tags, tag)
		}
	}
	meta, err := validateMeta(req.Meta)
	if err != nil {
		return nil, err
	}
	prefix := req.Prefix
	if prefix == "" {
		prefix = secret.DefaultPrefix
	}
	if !secret.ValidPrefix(prefix) {
		return nil, latchkey.Errorf(latchkey.EInvalid, "prefix %q is invalid: use lowercase segments joined by '_' (e.g. \"acme_live\"), at most %d bytes", prefix, secret.MaxPrefixLen)
	}
	t := &latchkey.Token{
		Prefix: prefix, Name: req.Name, Subject: req.Subject, Scopes: scopes, Tags: tags, Meta: meta,
		CreatedAt: now, CreatedBy: createdBy(a), Status: latchkey.StatusActive, Version: 1,
	}
	if err := s.tenancyFields(a, req, t); err != nil {
		return nil, err
	}
	return t, nil
}

// times reads the requested expiry and not-before and applies the policy:
// the default TTL when none is given, the expiry requirement, and the
// maximum lifetime.
func (s *Service) times(req client.CreateRequest, now time.Time, ks string) (expires, notBefore time.Time, err error) {
	expires, notBefore, err = requestedTimes(req, now)
	if err != nil {
		return
	}
	p, err := s.policyFor(ks)
	if err != nil {
		return
	}
	if expires.IsZero() {
		switch {
		case p.DefaultTTL > 0:
			expires = now.Add(p.DefaultTTL)
		case p.RequireExpiry:
			return expires, notBefore, latchkey.Errorf(latchkey.EInvalid, "this server requires every token to expire: give ttl (e.g. \"30d\") or expires_at")
		case p.MaxLifetime > 0:
			return expires, notBefore, latchkey.Errorf(latchkey.EInvalid, "this server limits tokens to a lifetime of %s: give ttl or expires_at", latchkey.Duration(p.MaxLifetime))
		}
	}
	if p.MaxLifetime > 0 && expires.Sub(now) > p.MaxLifetime {
		return expires, notBefore, latchkey.Errorf(latchkey.EInvalid, "the token would live %s, more than this server's maximum lifetime of %s",
			latchkey.Duration(expires.Sub(now).Round(time.Second)), latchkey.Duration(p.MaxLifetime))
	}
	if !notBefore.IsZero() && !expires.IsZero() && !notBefore.Before(expires) {
		return expires, notBefore, latchkey.Errorf(latchkey.EInvalid, "not_before must be earlier than the expiry")
	}
	return expires, notBefore, nil
}

// policyFor is the server's policy made stricter by keyspace ks's.
func (s *Service) policyFor(ks string) (Policy, error) {
	p := s.Policy
	k, err := s.keyspace(ks)
	if err != nil {
		return p, err
	}
	kp := k.Policy
	if d := time.Duration(kp.DefaultTTL); d > 0 && (p.DefaultTTL == 0 || d < p.DefaultTTL) {
		p.DefaultTTL = d
	}
	if d := time.Duration(kp.MaxLifetime); d > 0 && (p.MaxLifetime == 0 || d < p.MaxLifetime) {
		p.MaxLifetime = d
	}
	if p.MaxLifetime > 0 && p.DefaultTTL > p.MaxLifetime {
		p.DefaultTTL = p.MaxLifetime
	}
	p.RequireExpiry = p.RequireExpiry || kp.RequireExpiry
	return p, nil
}

// requestedTimes parses ttl, expires_at and not_before as given.
func requestedTimes(req client.CreateRequest, now time.Time) (expires, notBefore time.Time, err error) {
	switch {
	case req.TTL != "" && req.ExpiresAt != nil:
		return expires, notBefore, latchkey.Errorf(latchkey.EInvalid, "give ttl or expires_at, not both")
	case req.TTL != "":
		d, err := latchkey.ParseDuration(req.TTL)
		if err != nil {
			return expires, notBefore, latchkey.Errorf(latchkey.EInvalid, "ttl: %s", latchkey.ErrorMessage(err))
		}
		if d <= 0 {
			return expires, notBefore, latchkey.Errorf(latchkey.EInvalid, "ttl must be positive")
		}
		if d > MaxLifetime {
			return expires, notBefore, latchkey.Errorf(latchkey.EInvalid, "the expiry is more than 100 years away")
		}
		expires = now.Add(d)
	case req.ExpiresAt != nil:
		expires = latchkey.TimeOf(*req.ExpiresAt)
		if !expires.After(now) {
			return expires, notBefore, latchkey.Errorf(latchkey.EInvalid, "expires_at %s is not in the future", expires.Format(time.RFC3339))
		}
	}
	if !expires.IsZero() && expires.After(now.Add(MaxLifetime)) {
		return expires, notBefore, latchkey.Errorf(latchkey.EInvalid, "the expiry is more than 100 years away")
	}
	if req.NotBefore != nil {
		notBefore = latchkey.TimeOf(*req.NotBefore)
		if notBefore.After(now.Add(MaxLifetime)) {
			return expires, notBefore, latchkey.Errorf(latchkey.EInvalid, "not_before is more than 100 years away")
		}
	}
	return expires, notBefore, nil
}

// PlainText refuses text that would drive a terminal or hide what it
// says when printed: invalid UTF-8, control characters (NUL, ESC, the C1
// range, newlines) and the bidirectional overrides (U+202A-U+202E,
// U+2066-U+2069) that make "txt.exe" read as "exe.txt".
func PlainText(field, s string) error {
	if !utf8.ValidString(s) {
		return latchkey.Errorf(latchkey.EInvalid, "%s is not valid UTF-8", field)
	}
	for _, r := range s {
		if unicode.IsControl(r) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			return latchkey.Errorf(latchkey.EInvalid, "%s must not contain control characters (found U+%04X)", field, r)
		}
	}
	return nil
}

// ValidateTag checks one tag: 1 to MaxTagLen characters of
// [A-Za-z0-9_.:-].
func ValidateTag(tag string) error {
	if secret.LooksLikeToken(tag) {
		return latchkey.Errorf(latchkey.EInvalid, "tags must not contain a token")
	}
	if tag == "" || len(tag) > MaxTagLen {
		return latchkey.Errorf(latchkey.EInvalid, "tag %q must be 1 to %d characters", tag, MaxTagLen)
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':') {
			return latchkey.Errorf(latchkey.EInvalid, "tag %q contains %q; allowed are letters, digits and _ - . :", tag, c)
		}
	}
	return nil
}

func validateMeta(m json.RawMessage) (json.RawMessage, error) {
	m = bytes.TrimSpace(m)
	if len(m) == 0 || string(m) == "null" {
		return json.RawMessage(`{}`), nil
	}
	if len(m) > MaxMetaBytes {
		return nil, latchkey.Errorf(latchkey.EInvalid, "meta is larger than %d bytes", MaxMetaBytes)
	}
	var obj map[string]any
	if m[0] != '{' || json.Unmarshal(m, &obj) != nil {
		return nil, latchkey.Errorf(latchkey.EInvalid, "meta must be a JSON object")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, m); err != nil {
		return nil, latchkey.Errorf(latchkey.EInvalid, "meta must be a JSON object")
	}
	return json.RawMessage(buf.Bytes()), nil
}

func createdBy(a latchkey.Actor) string {
	switch {
	case a.TokenID != "":
		return a.TokenID
	case a.System != "":
		return "latchkey:" + a.System
	}
	return "latchkey"
}

func optTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// event builds the audit record of an admin change.
func (s *Service) event(a latchkey.Actor, action string, t *latchkey.Token, now time.Time, detail map[string]any) *latchkey.AuditEvent {
	var raw json.RawMessage
	if detail != nil {
		raw, _ = json.Marshal(detail) // plain values only: cannot fail
	}
	return &latchkey.AuditEvent{
		Time: now, Node: s.Node, RequestID: a.RequestID, Kind: latchkey.KindAdmin, Action: action,
		Actor: createdBy(a), TokenID: t.ID, Subject: t.Subject, Outcome: latchkey.OutcomeOK,
		ClientIP: a.ClientIP, UserAgent: a.UserAgent, Detail: raw,
	}
}

// canManage refuses changes to a token the caller could not have issued:
// a latchkey:tokens:write token must not revoke the root token, or any
// token holding more than it does.
func canManage(a latchkey.Actor, t *latchkey.Token) error {
	if a.TokenID == "" {
		return nil // the server itself
	}
	for _, sc := range t.Scopes {
		if a.TokenID != "" && !canGrantIn(a, t.Keyspace, sc) {
			return latchkey.Errorf(latchkey.EPermissionDenied, "token %s holds scope %q, which your token does not; only a token covering all its scopes may change it", t.ID, sc)
		}
	}
	return nil
}

// Get returns one token.
func (s *Service) Get(ctx context.Context, id string) (*latchkey.Token, error) {
	t, err := s.Store.GetToken(ctx, id)
	if err == nil {
		t.Effective = t.EffectiveStatus(s.now())
	}
	return t, err
}

// Settings keys kept in the store.
const (
	settingRootTokenID    = "root_token_id"
	SettingKeyFingerprint = "server_key_fingerprint"
)

// Bootstrap creates the root token (scope latchkey:admin) the first time
// a database is used, and returns its plaintext with created=true. Later
// calls, on this or any node sharing the database, return created=false.
//
// The root token's id is claimed in the settings table before the token is
// written: a crash in between leaves a claim without a token, which the
// next start completes; two nodes starting at once agree on one claim.
func (s *Service) Bootstrap(ctx context.Context) (pt secret.Plaintext, created bool, err error) {
	id, err := secret.NewID(s.rand())
	if err != nil {
		return pt, false, err
	}
	claimed, err := s.Store.PutSettingIfAbsent(ctx, settingRootTokenID, id)
	if err != nil {
		return pt, false, fmt.Errorf("tokens: bootstrap: %w", err)
	}
	if claimed != id {
		if _, err := s.Store.GetToken(ctx, claimed); err == nil {
			return pt, false, nil
		} else if latchkey.ErrorCode(err) != latchkey.ENotFound {
			return pt, false, fmt.Errorf("tokens: bootstrap: %w", err)
		}
		id = claimed // a previous start claimed the id but did not finish
	}
	pt, parts, err := secret.GenerateWithID(secret.DefaultPrefix, id, s.rand())
	if err != nil {
		return pt, false, err
	}
	now := s.now()
	t := &latchkey.Token{
		ID: id, Prefix: secret.DefaultPrefix, Name: "root", Subject: "latchkey-root",
		Scopes: []string{latchkey.AdminScope}, Tags: []string{}, Meta: json.RawMessage(`{}`),
		CreatedAt: now, CreatedBy: "latchkey", Status: latchkey.StatusActive, Version: 1,
		Hash: s.Hasher.Sum(parts.ID, &parts.Secret),
	}
	ev := s.event(latchkey.Actor{}, latchkey.ActionTokenCreate, t, now, map[string]any{"name": "root", "scopes": t.Scopes, "bootstrap": true})
	if err := s.Store.CreateToken(ctx, t, ev); err != nil {
		if latchkey.ErrorCode(err) == latchkey.EConflict {
			return secret.Plaintext{}, false, nil // another node finished it
		}
		return secret.Plaintext{}, false, fmt.Errorf("tokens: bootstrap: %w", err)
	}
	s.invalidate(id)
	return pt, true, nil
}

// RecoverRoot issues a new root token (latchkey:admin) for whoever holds
// the data directory and the server key, when every admin token is lost
// or revoked (latchkey admin recover-root). It is recorded as its own
// action, token.recover_root, so that the break-glass path is never
// mistaken for an ordinary creation.
func (s *Service) RecoverRoot(ctx context.Context, by string) (*latchkey.Token, secret.Plaintext, error) {
	pt, parts, err := secret.Generate(secret.DefaultPrefix, s.rand())
	if err != nil {
		return nil, secret.Plaintext{}, fmt.Errorf("tokens: generate: %w", err)
	}
	now := s.now()
	t := &latchkey.Token{
		ID: parts.ID, Prefix: secret.DefaultPrefix, Name: "root (recovered)", Subject: "latchkey-root",
		Scopes: []string{latchkey.AdminScope}, Tags: []string{}, Meta: json.RawMessage(`{}`),
		CreatedAt: now, CreatedBy: "latchkey:recover-root", Status: latchkey.StatusActive, Version: 1,
		Hash: s.Hasher.Sum(parts.ID, &parts.Secret),
	}
	ev := s.event(latchkey.Actor{System: "recover-root"}, latchkey.ActionRootRecover, t, now, map[string]any{"scopes": t.Scopes, "by": by})
	if err := s.Store.CreateToken(ctx, t, ev); err != nil {
		return nil, secret.Plaintext{}, fmt.Errorf("tokens: recover root: %w", err)
	}
	s.invalidate(t.ID)
	return t, pt, nil
}
