// Package verify is the hot path: it decides, for one presented token,
// whether it is real, current and allowed (docs/architecture.md §2), and hands every
// attempt to the audit pipeline.
//
// Checks run cheapest first: parse and checksum (no lookup), cache lookup
// (singleflight on a miss, short negative entries for unknown ids),
// constant-time keyed-hash comparison, status, time, scopes. A cache hit
// on a valid token does not allocate.
package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"golang.org/x/sync/singleflight"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/internal/monoclock"
	"github.com/latchkeyhq/latchkey/ratelimit"
	"github.com/latchkeyhq/latchkey/secret"
)

// Loader reads one token by id. latchkey.Store satisfies it. A missing
// token is an error with code latchkey.ENotFound.
type Loader interface {
	GetToken(ctx context.Context, id string) (*latchkey.Token, error)
}

// Store is what the verifier needs beyond reading tokens: spending usage
// budgets and writing last use behind. latchkey.Store satisfies it. A
// loader without it can verify tokens without usage limits only (a
// usage-limited token is then refused) and keeps last use in memory.
type Store interface {
	Loader
	ConsumeUse(ctx context.Context, series []string) (remaining int64, ok bool, err error)
	TouchTokens(ctx context.Context, uses []latchkey.TokenUse) error
}

// Config tunes a Verifier. The zero value works.
type Config struct {
	// Tracer, when set, gives each verification a span (latchkey.verify,
	// with the outcome and whether the cache answered) and each store read
	// a child span (latchkey.store.get_token). Nil: no tracing, no cost.
	Tracer trace.Tracer
	// PositiveTTL bounds how long a found token is served from the cache
	// without a reload (default 30s). Changes made through this process
	// invalidate at once; the TTL is the staleness bound for anything else.
	// A token verified late in its entry's life (its last third, or
	// earlier, up to half of it, when reads have been slow: twice their
	// recent duration) is reloaded in the background while the entry keeps
	// serving, so a slow store delays no verification.
	PositiveTTL time.Duration
	// NegativeTTL is how long an unknown id is remembered (default 2s), so
	// a flood of made-up ids costs one store read each per interval.
	NegativeTTL time.Duration
	// MaxEntries caps the cache (default 1<<21). Stale and negative entries
	// are evicted first. Negative entries (unknown ids, which anyone can
	// send) fill at most 1/NegativeShare of it, and stale entries are
	// swept from a shard at most every 10 s as it is written to, its table
	// shrinking with them.
	MaxEntries int
	// LoadTimeout bounds one store read on a miss (default 5s). After a
	// read that could not reach the store, misses fail at once (an error:
	// 503) for a second rather than each wait as long; the first miss
	// after that tries the store again.
	LoadTimeout time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// Node names this server in audit records.
	Node string
	// RotationAge, when set, is the age at which a token should be
	// rotated: older tokens verify with the rotation_due warning.
	RotationAge time.Duration
	// TouchInterval is how often last_used_at is written (default 1m): at
	// most one write per token per interval.
	TouchInterval time.Duration
	// Limits holds rate limiter state (default: a new table).
	Limits *ratelimit.Table
	// Shared, when set, counts rate limits for every node at once (Redis):
	// one round trip per check of a rate-limited token. When it fails,
	// the node's own Limits count instead (the default), or, with
	// SharedFailClosed, the verification fails (an error: 503).
	Shared           SharedLimits
	SharedFailClosed bool
	// Guard, when set, is asked whether the source is blocked before any
	// lookup (BLOCKED), and told about every refusal (the detector).
	Guard Guard
	// Tenancy, when set, resolves roles to scopes and names identities'
	// shared limits and keyspaces' rotation policy as tokens are loaded.
	// After any change to them, call Retenant.
	Tenancy Tenancy
	// SyncAudit makes Verify wait until its audit record is committed
	// (durability mode sync): no decision is returned without its record.
	// When the wait fails, Verify returns an error and the decision must
	// not be used.
	SyncAudit bool
}

// Tenancy is what the verifier reads about keyspaces, roles and
// identities. *tenancy.Registry satisfies it; it must be cheap (memory).
type Tenancy interface {
	// RoleScopes returns the scopes of role in keyspace ks (ok false: no
	// such role, which then grants nothing).
	RoleScopes(ks, role string) (scopes []string, ok bool)
	// Identity returns the shared limits of subject in ks, if any.
	Identity(ks, subject string) (*latchkey.Identity, bool)
	// RotateAfter is keyspace ks's rotation age (0: none).
	RotateAfter(ks string) time.Duration
}

// SharedLimits is a rate limiter shared by the nodes of a cluster.
// *redis.Client satisfies it.
type SharedLimits interface {
	// RateKey names the state of limit r for a token's rotation series.
	RateKey(series string, r latchkey.RateLimit) string
	// Allow spends one request from key (or only looks, spend false).
	Allow(ctx context.Context, key string, r latchkey.RateLimit, spend bool) (bool, latchkey.RateStatus, error)
}

// Guard blocks sources and learns from refusals. *detect.Detector
// satisfies it. Blocked is on the hot path and must be cheap.
type Guard interface {
	Blocked(src netip.Addr, now int64) bool
	// RefusedNow learns from a refusal and reports whether its source is
	// over its threshold, counted across the cluster (the attempt is then
	// answered BLOCKED), and how long it waited to count it (0 when it
	// counted in memory: the clock is read only around a round trip).
	RefusedNow(ctx context.Context, src netip.Addr, code latchkey.Code, reason, tokenID string, now int64) (blocked bool, waited time.Duration)
}

// Verifier makes verification decisions. It is safe for concurrent use.
type Verifier struct {
	loader Loader
	store  Store // nil when loader is not a Store
	hasher *secret.Hasher
	rec    *audit.Pipeline
	cfg    Config
	cache  *cache
	sf     singleflight.Group
	epoch  atomic.Pointer[epoch]
	usage  usage
	// refusals samples the records of edge refusals (Refuse).
	refusals refusalSampler

	counters       counters
	sharedFailures atomic.Uint64

	loadNs    atomic.Int64 // recent store reads' duration (ns), a moving average: how early to refresh
	downUntil atomic.Int64 // Unix ns: until then the store is taken to be unreachable (a miss fails at once)
	refreshMu sync.Mutex
	refreshes map[key]struct{} // tokens being reloaded in the background
	// compact is whether malformed attempts go as audit.Attempts: the
	// pipeline names this node in the records it expands.
	compact bool
}

// epoch anchors the wall clock to the cheap monotonic one. time.Now costs
// two vDSO calls (~45 ns on a VM); deriving wall time from one
// monoclock.Nanos reading (~10 ns) keeps the clock off the hot path's bill.
// The anchor is renewed every second, which also recalibrates monoclock
// and follows a stepped system clock within a second.
type epoch struct {
	wall int64 // Unix nanoseconds at the anchor
	mono int64 // monoclock.Nanos at the anchor
}

func newEpoch() *epoch {
	monoclock.Recalibrate()
	return &epoch{wall: time.Now().UnixNano(), mono: monoclock.Nanos()}
}

// now returns the current time in Unix nanoseconds: one monoclock
// reading and the epoch it is anchored to.
func (v *Verifier) now() int64 {
	if v.cfg.Now != nil {
		return v.cfg.Now().UnixNano()
	}
	mono := monoclock.Nanos()
	ep := v.epoch.Load()
	if mono-ep.mono >= int64(time.Second) || mono < ep.mono {
		n := newEpoch()
		v.epoch.CompareAndSwap(ep, n)
		ep, mono = n, n.mono
	}
	return ep.wall + (mono - ep.mono)
}

// New returns a Verifier reading tokens from loader, comparing secrets
// with hasher, and recording every attempt to rec (which may be nil).
//
// rec is the concrete pipeline rather than an interface so that the
// closure given to RecordFunc stays on the stack: the record is written
// straight into its queue slot, with no allocation and no extra copy.
func New(loader Loader, hasher *secret.Hasher, rec *audit.Pipeline, cfg Config) *Verifier {
	if cfg.PositiveTTL <= 0 {
		cfg.PositiveTTL = 30 * time.Second
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = 2 * time.Second
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 1 << 21
	}
	if cfg.LoadTimeout <= 0 {
		cfg.LoadTimeout = 5 * time.Second
	}
	if cfg.TouchInterval <= 0 {
		cfg.TouchInterval = time.Minute
	}
	v := &Verifier{loader: loader, hasher: hasher, rec: rec, cfg: cfg, cache: newCache(cfg.MaxEntries), compact: rec != nil && rec.Node == cfg.Node}
	v.store, _ = loader.(Store)
	v.epoch.Store(newEpoch())
	// The cheap clock needs two calibration points 100 ms apart; take the
	// second soon rather than at the first epoch renewal, a second from now.
	time.AfterFunc(150*time.Millisecond, monoclock.Recalibrate)
	if v.cfg.Limits == nil {
		v.cfg.Limits = ratelimit.NewTable(v.now)
	}
	return v
}

// Invalidate drops id from the cache. Call it after every change to the
// token; a load already in flight for id will not repopulate the cache.
func (v *Verifier) Invalidate(id string) { v.Changed(id, 0) }

// Changed drops token id from the cache, unless the cached entry already
// is at version or later: a change reported again (the change log's poll
// repeats what a notification said) does not throw away an entry loaded
// after it. Version 0 (unknown) always drops. A load of id in flight is
// cached only if it read version or later (with version 0, no load in
// flight in id's cache shard is).
func (v *Verifier) Changed(id string, version int64) {
	k := keyOf(id)
	v.cache.invalidateBefore(&k, version)
	v.sf.Forget(id)
}

// Retenant drops every cached token, so that each is resolved again
// against the current roles, identities and keyspace policies on its next
// verification (a role change reaches every token holding it, like a
// revocation). Loads in flight are not cached.
func (v *Verifier) Retenant() { v.cache.purge() }

// CacheLen reports how many entries the cache holds.
func (v *Verifier) CacheLen() int { return v.cache.len() }

// Verify decides on req. A refusal is a Decision, not an error; the error
// is non-nil only when the store could not be read, and then the Decision
// must not be used.
func (v *Verifier) Verify(ctx context.Context, req *latchkey.VerifyRequest) (d latchkey.Decision, err error) {
	if v.cfg.Tracer != nil {
		return v.traced(ctx, req)
	}
	// d is the caller's result: verify fills it in place rather than
	// returning a copy of a 300-byte struct through two frames.
	err = v.verify(ctx, req, &d)
	return d, err
}

// loadedKey marks a traced verification's context: load notes a store
// read there.
type loadedKey struct{}

// traced is Verify in a span.
func (v *Verifier) traced(ctx context.Context, req *latchkey.VerifyRequest) (d latchkey.Decision, err error) {
	ctx, span := v.cfg.Tracer.Start(ctx, "latchkey.verify", trace.WithSpanKind(trace.SpanKindInternal))
	defer span.End()
	loaded := new(bool)
	err = v.verify(context.WithValue(ctx, loadedKey{}, loaded), req, &d)
	cache := "hit"
	if *loaded {
		cache = "load"
	}
	span.SetAttributes(attribute.String("latchkey.code", d.Code.String()), attribute.String("latchkey.cache", cache),
		attribute.String("latchkey.token_id", d.TokenID), attribute.String("latchkey.action", req.Action))
	if d.Reason != "" {
		span.SetAttributes(attribute.String("latchkey.reason", d.Reason))
	}
	if err != nil {
		span.SetStatus(codes.Error, "store unavailable")
	}
	return d, err
}

// verify decides into d (zero on entry) and records the attempt.
//
// The clock is read once (docs/architecture.md §2): that reading is the
// decision's "now" and its record's time. d.Latency is the time spent
// waiting on the store, Redis or a usage budget (waited adds it), which
// is what varies between verifications; a decision made from memory
// alone records 0 rather than paying a second reading to say "under a
// microsecond".
func (v *Verifier) verify(ctx context.Context, req *latchkey.VerifyRequest, d *latchkey.Decision) error {
	now := v.now()
	d.Remaining = -1
	err := v.decide(ctx, req, now, d, !req.NoSpend && !req.Recheck)
	if g := v.cfg.Guard; g != nil && err == nil && d.Code != latchkey.Valid && d.Code != latchkey.Blocked && !req.Recheck {
		blocked, wait := g.RefusedNow(ctx, req.Source, d.Code, d.Reason, d.TokenID, now)
		d.Latency += wait
		if blocked {
			// Past its source's threshold, counted across the cluster: this
			// guess is not answered either.
			*d = latchkey.Decision{Code: latchkey.Blocked, Reason: "source_blocked", TokenID: d.TokenID, Remaining: -1, Latency: d.Latency}
		}
	}
	if v.rec == nil {
		return err
	}
	if d.Code == latchkey.Blocked && err == nil {
		// A blocked source may keep sending as fast as it can: its attempts
		// are sampled like edge refusals, one record a second with a count.
		v.sampled(req, "BLOCKED", d.Reason, d.TokenID, now)
		return nil
	}
	switch {
	case d.Code == latchkey.Malformed:
		v.recordMalformed(req, d.Reason, now)
	case req.AuditFailuresOnly && d.Code == latchkey.Valid:
		return err
	default:
		v.rec.RecordFunc(func(ev *latchkey.AuditEvent) {
			v.fillAttempt(ev, req, now)
			ev.TokenID = d.TokenID
			ev.Subject = d.Subject
			ev.Outcome, ev.Reason = d.Code.String(), d.Reason
			if err != nil {
				ev.Outcome, ev.Reason = "ERROR", "store_unavailable"
			}
			ev.Latency = d.Latency
		})
	}
	if v.cfg.SyncAudit && err == nil {
		if ferr := v.rec.Flush(ctx); ferr != nil {
			return fmt.Errorf("verify: audit record not committed: %w", ferr)
		}
	}
	return err
}

// waited adds the time since mono (a monoclock reading taken before a
// wait on the store or Redis) to d.Latency.
func waited(d *latchkey.Decision, mono int64) {
	d.Latency += time.Duration(max(0, monoclock.Nanos()-mono))
}

// fillAttempt writes what every record of an attempt says about its
// request: when, where, which door, and the caller's facts.
func (v *Verifier) fillAttempt(ev *latchkey.AuditEvent, req *latchkey.VerifyRequest, now int64) {
	ev.Time = time.Unix(0, now)
	ev.Node = v.cfg.Node
	ev.RequestID = req.RequestID
	ev.Kind = latchkey.KindVerify
	ev.Action = req.Action
	if ev.Action == "" {
		ev.Action = latchkey.ActionVerify
	}
	ev.Scopes = req.Scopes
	ev.ClientIP = req.ClientIP
	ev.UserAgent = req.UserAgent
	ev.Method = req.Method
	ev.Path = req.Path
	ev.Detail = req.Detail
}

// decide fills in d, which the caller keeps on its stack. With spend
// false it changes nothing: no rate or budget is spent and no use noted.
// The checks run in the order of docs/architecture.md §2; each step returns false
// once it has decided.
func (v *Verifier) decide(ctx context.Context, req *latchkey.VerifyRequest, now int64, d *latchkey.Decision, spend bool) error {
	var k key
	e, found, err := v.identify(ctx, req, now, d, &k)
	if err != nil || !found {
		return err
	}
	if !live(&e, now, d) {
		return nil
	}
	c := e.info.cons
	if c != nil {
		if ok, err := v.allowedHere(ctx, req, c, &e, now, d); err != nil || !ok {
			return err
		}
	}
	if len(req.Scopes) > 0 && !coversAll(e.info.scopes.Value(), req.Scopes) {
		d.Code, d.Reason = latchkey.InsufficientScope, "missing_scope"
		return nil
	}
	if req.Permission != "" && !latchkey.HoldsPermission(e.info.keyspace, *e.info.scopeList, req.Permission) {
		d.Code, d.Reason = latchkey.InsufficientScope, "missing_permission"
		return nil
	}
	if c != nil {
		if ok, err := v.withinLimits(ctx, &k, c, now, d, spend); err != nil || !ok {
			return err
		}
	}
	if in := e.info; in.rotateAt != 0 && now >= in.rotateAt {
		d.Warnings |= latchkey.WarnRotationDue
	}
	d.Code = latchkey.Valid
	if spend || (req.Recheck && req.InUse) {
		every := int64(v.cfg.TouchInterval)
		if c != nil {
			every = c.noteEvery
		}
		if now-int64(e.usedSec)*int64(time.Second) >= every {
			v.noteUse(&k, &e, now)
		}
	}
	return nil
}

// identify finds the token the request presents (steps 1 to 3: the
// source's block, the token's shape, its id and secret) and fills in its
// facts. found is false once d is decided (or err set).
func (v *Verifier) identify(ctx context.Context, req *latchkey.VerifyRequest, now int64, d *latchkey.Decision, k *key) (e entry, found bool, err error) {
	parts, perr := secret.Parse(req.Token)
	if g := v.cfg.Guard; g != nil && g.Blocked(req.Source, now) {
		// A blocked source is told so whatever it sends, before any lookup.
		// The id, when the token parses, is kept for the record.
		d.Code, d.Reason = latchkey.Blocked, "source_blocked"
		if perr == nil {
			d.TokenID = parts.ID
		}
		return e, false, nil
	}
	if perr != nil {
		d.Code, d.Reason = latchkey.Malformed, perr.Error()
		return e, false, nil
	}
	// The id is a substring of the presented token. An audit record holds
	// it for one trip through the queue (until its slot is reused; the store
	// copies the 16 characters), and the cache keys on a copy, so nothing
	// long-lived keeps the secret's memory alive.
	d.TokenID = parts.ID
	*k = keyOf(parts.ID)
	e, ok := v.cache.get(k, now)
	cs := v.counters.stripe()
	cs.lookups.Add(1)
	if ok && e.info != nil && now >= e.staleAt-v.ahead() {
		v.refresh(k, now) // late in its life: reloaded behind, served meanwhile
	}
	if !ok {
		cs.misses.Add(1)
		mono := monoclock.Nanos()
		e, err = v.load(ctx, k, now)
		waited(d, mono)
		if err != nil {
			d.Code = latchkey.NotFound
			return e, false, err
		}
	}
	if e.info == nil {
		d.Code, d.Reason = latchkey.NotFound, "unknown_id"
		return e, false, nil
	}
	if !v.hasher.EqualPrefix(parts.ID, &parts.Secret, e.hash[:]) {
		d.Code, d.Reason = latchkey.NotFound, "secret_mismatch"
		return e, false, nil
	}
	in := e.info
	if parts.Prefix != in.prefix.Value() {
		// The hash covers id and secret only; a swapped prefix with a
		// recomputed checksum is still not this token.
		d.Code, d.Reason = latchkey.NotFound, "prefix_mismatch"
		return e, false, nil
	}
	if !req.APICall && !req.AnyKeyspace && in.keyspace != req.Keyspace && (req.Keyspace != "" || in.keyspace != latchkey.DefaultKeyspace) {
		// A token of another keyspace does not exist here.
		d.Code, d.Reason = latchkey.NotFound, "keyspace_mismatch"
		return e, false, nil
	}
	d.Found, d.Subject, d.Scopes, d.Meta = true, in.subject.Value(), *in.scopeList, *in.meta
	d.Keyspace = in.keyspace
	d.CreatedAt, d.Version = timeOf(in.createdAt), in.version
	d.ExpiresAt = timeOf(e.expiresAt)
	if in.cons != nil {
		d.NotBefore, d.Audience = timeOf(in.cons.notBefore), in.cons.audience
	}
	return e, true, nil
}

// live decides on the token's status and expiry (steps 4 and 5).
func live(e *entry, now int64, d *latchkey.Decision) bool {
	switch e.state {
	case stateActive:
	case stateRevoked:
		d.Code, d.Reason = latchkey.Revoked, "revoked"
		return false
	case stateSuspended:
		d.Code, d.Reason = latchkey.Suspended, "suspended"
		if e.flags&flagAncestorSuspended != 0 {
			d.Reason = "ancestor_suspended"
		}
		return false
	default:
		d.Code, d.Reason = latchkey.Revoked, "unknown_status"
		return false
	}
	if e.expiresAt != 0 && now >= e.expiresAt {
		d.Code, d.Reason = latchkey.Expired, "expired"
		if e.flags&flagRotated != 0 {
			d.Reason = "rotated" // the grace period after a rotation has ended
		}
		return false
	}
	return true
}

// allowedHere applies the token's constraints on time and place: idle
// expiry (its own and its lineage's), not_before, network, method, path.
func (v *Verifier) allowedHere(ctx context.Context, req *latchkey.VerifyRequest, c *constraints, e *entry, now int64, d *latchkey.Decision) (bool, error) {
	if c.idle > 0 {
		if now >= max(c.idleFrom, int64(e.usedSec)*int64(time.Second))+c.idle {
			d.Code, d.Reason = latchkey.Expired, "idle"
			return false, nil
		}
		// A derived token is as idle as its lineage: using it keeps its
		// ancestors alive, and an ancestor gone idle ends it.
		for i := range c.ancestors {
			mono := monoclock.Nanos()
			idle, err := v.ancestorIdle(ctx, &c.ancestors[i], now)
			waited(d, mono)
			if err != nil {
				d.Code = latchkey.NotFound
				return false, err
			}
			if idle {
				d.Code, d.Reason = latchkey.Expired, "ancestor_idle"
				return false, nil
			}
		}
	}
	if c.notBefore != 0 && now < c.notBefore {
		d.Code, d.Reason = latchkey.NotYetValid, "not_yet_valid"
		return false, nil
	}
	if code, reason := c.check(req); code != latchkey.Valid {
		d.Code, d.Reason = code, reason
		return false, nil
	}
	return true, nil
}

// withinLimits spends (or, spend false, checks) the token's rate limits
// and usage budget.
func (v *Verifier) withinLimits(ctx context.Context, k *key, c *constraints, now int64, d *latchkey.Decision, spend bool) (bool, error) {
	if len(c.limiters) > 0 {
		var mono int64
		if v.cfg.Shared != nil {
			mono = monoclock.Nanos()
		}
		ok, st, err := v.allow(ctx, c, now, spend)
		if v.cfg.Shared != nil {
			waited(d, mono)
		}
		if err != nil {
			d.Code = latchkey.RateLimited
			return false, err
		}
		d.Rate = st
		if !ok {
			d.Code, d.Reason = latchkey.RateLimited, "rate_limited"
			return false, nil
		}
	}
	if c.budget != nil {
		mono := monoclock.Nanos()
		code, err := v.spend(ctx, k, c, d, spend)
		waited(d, mono)
		if err != nil || code != latchkey.Valid {
			d.Code = code
			return false, err
		}
	}
	return true, nil
}

// ancestorIdle reports whether the ancestor k has expired for being idle.
func (v *Verifier) ancestorIdle(ctx context.Context, k *key, now int64) (bool, error) {
	e, ok := v.cache.get(k, now)
	if !ok {
		var err error
		if e, err = v.load(ctx, k, now); err != nil {
			return false, err
		}
	}
	if e.info == nil {
		return false, nil
	}
	c := e.info.cons
	return c != nil && c.idle > 0 && now >= max(c.idleFrom, int64(e.usedSec)*int64(time.Second))+c.idle, nil
}

// spend takes one use from the token's budgets (step 8). Once a budget is
// found spent, the entry remembers it and later attempts skip the store.
func (v *Verifier) spend(ctx context.Context, k *key, c *constraints, d *latchkey.Decision, spend bool) (latchkey.Code, error) {
	if c.exhausted.Load() || v.store == nil {
		d.Reason = "usage_exceeded"
		return latchkey.UsageExceeded, nil
	}
	if !spend {
		return latchkey.Valid, nil
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.cfg.LoadTimeout)
	defer cancel()
	left, ok, err := v.store.ConsumeUse(lctx, c.budget)
	if err != nil {
		return latchkey.UsageExceeded, err
	}
	if !ok {
		c.exhausted.Store(true)
		d.Reason = "usage_exceeded"
		return latchkey.UsageExceeded, nil
	}
	if left == 0 {
		c.exhausted.Store(true) // the next attempt is refused without a write
	}
	d.Remaining = left
	return latchkey.Valid, nil
}

// load reads id from the store once, however many callers miss at the same
// moment, and caches the answer (negatively for an unknown id).
func (v *Verifier) load(ctx context.Context, k *key, now int64) (entry, error) {
	id := string(k[:]) // a copy: singleflight keeps its key while in flight
	if v.cfg.Tracer != nil {
		if p, ok := ctx.Value(loadedKey{}).(*bool); ok {
			*p = true
		}
		var span trace.Span
		ctx, span = v.cfg.Tracer.Start(ctx, "latchkey.store.get_token", trace.WithSpanKind(trace.SpanKindClient))
		defer span.End()
	}
	if now < v.downUntil.Load() {
		// The store could not be reached a moment ago: refused at once
		// rather than each waiting LoadTimeout. The first miss after the
		// second is up tries the store again.
		return entry{}, errStoreDown
	}
	kk := *k // the flight may outlive this call; the caller's key lives on its stack
	ch := v.sf.DoChan(id, func() (any, error) { return v.fetch(ctx, &kk, id, now, v.cfg.LoadTimeout) })
	var res singleflight.Result
	select {
	case res = <-ch:
	default:
		// In flight: wait for it, but no longer than a read of our own
		// would take (a background reload may be given longer).
		t := time.NewTimer(v.cfg.LoadTimeout)
		select {
		case res = <-ch:
		case <-t.C:
			res.Err = fmt.Errorf("verify: reading token %s: %w", id, context.DeadlineExceeded)
		}
		t.Stop()
	}
	if res.Err != nil {
		return entry{}, res.Err
	}
	return *res.Val.(*entry), nil
}

// ahead is how long before an entry goes stale a verification reloads it
// in the background: the last third of its life, or twice what reads
// take lately when the store is slow, at most half its life. (A third of
// the default 30 s is 10 s: time for a read through a slow link, dialling
// a connection included, before anyone would wait on it.)
func (v *Verifier) ahead() int64 {
	ttl := int64(v.cfg.PositiveTTL)
	return min(max(ttl/3, 2*v.loadNs.Load()), ttl/2)
}

// NoteStoreLatency tells the verifier how long another read of the store
// took (the change log's poll): when the store is slow, background reloads
// start earlier, so that they land before their entries go stale.
func (v *Verifier) NoteStoreLatency(d time.Duration) { v.noteLoad(d) }

// noteLoad folds a read's duration into the moving average (weight 1/4).
func (v *Verifier) noteLoad(d time.Duration) {
	for {
		old := v.loadNs.Load()
		if v.loadNs.CompareAndSwap(old, old+(int64(d)-old)/4) {
			return
		}
	}
}

// errStoreDown refuses a miss while the store is taken to be unreachable.
var errStoreDown = errors.New("verify: the store was unreachable a moment ago")

// fetch reads token id from the store and caches it (negatively when it
// does not exist), unless it changed meanwhile.
func (v *Verifier) fetch(ctx context.Context, k *key, id string, now int64, timeout time.Duration) (*entry, error) {
	gen := v.cache.begin(k)
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	began := time.Now()
	t, err := v.loader.GetToken(lctx, id)
	v.noteLoad(time.Since(began))
	var e entry
	switch {
	case err == nil:
		v.downUntil.Store(0)
		e = v.newEntry(t, now+int64(v.cfg.PositiveTTL))
	case latchkey.ErrorCode(err) == latchkey.ENotFound:
		v.downUntil.Store(0)
		e = entry{staleAt: now + int64(v.cfg.NegativeTTL)}
	default:
		v.cache.abandon(k)
		if latchkey.ErrorCode(err) == latchkey.EUnavailable {
			v.downUntil.Store(v.now() + int64(time.Second))
		}
		return nil, err
	}
	v.cache.putIfCurrent(k, e, gen, now)
	return &e, nil
}

// refresh reloads a cached token in the background, late in its entry's
// life, so that the verification that finds it stale does not wait on
// the store. One reload per token at a time (the same flight as a miss's);
// none while the store is taken to be down.
func (v *Verifier) refresh(k *key, now int64) {
	if now < v.downUntil.Load() {
		return
	}
	kk := *k // the caller's key lives on its stack
	v.refreshMu.Lock()
	_, busy := v.refreshes[kk]
	if !busy {
		if v.refreshes == nil {
			v.refreshes = map[key]struct{}{}
		}
		v.refreshes[kk] = struct{}{}
	}
	v.refreshMu.Unlock()
	if busy {
		return // every verification until it lands would otherwise join it
	}
	id := string(kk[:])
	// Nobody waits on it: it may take as long as the entry has left.
	timeout := max(v.cfg.LoadTimeout, time.Duration(v.ahead()))
	go func() {
		v.sf.Do(id, func() (any, error) { return v.fetch(context.Background(), &kk, id, now, timeout) })
		v.refreshMu.Lock()
		delete(v.refreshes, kk)
		v.refreshMu.Unlock()
	}()
}

// unixNano is t in Unix nanoseconds, 0 for the zero time, and saturated
// where nanoseconds overflow (after 2262 and before 1678), so a far-future
// expiry never wraps into the past.
func unixNano(t time.Time) int64 {
	switch {
	case t.IsZero():
		return 0
	case t.Year() >= 2262:
		return math.MaxInt64
	case t.Year() < 1678:
		return 1
	}
	return t.UnixNano()
}

func (v *Verifier) newEntry(t *latchkey.Token, staleAt int64) entry {
	e := entry{state: stateOf(t.Status), staleAt: staleAt}
	copy(e.hash[:], t.Hash)
	e.expiresAt = unixNano(t.ExpiresAt)
	if t.SuccessorID != "" {
		e.flags |= flagRotated
	}
	if t.SuspendedVia != "" && t.SuspendedVia != t.ID {
		e.flags |= flagAncestorSuspended
	}
	scopes := v.effectiveScopes(t)
	in := &tokenInfo{createdAt: unixNano(t.CreatedAt), version: t.Version, scopes: internScopes(scopes), prefix: unique.Make(t.Prefix), subject: unique.Make(t.Subject),
		keyspace: unique.Make(latchkey.KeyspaceOf(t.Keyspace)).Value()}
	in.scopeList = scopeLists.get(in.scopes.Value(), func() []string { return slices.Clip(slices.Clone(scopes)) })
	if meta := t.Meta; len(meta) == 0 {
		in.meta = &noMeta
	} else {
		in.meta = metas.get(string(meta), func() json.RawMessage { return slices.Clip(slices.Clone(meta)) })
	}
	if age := v.rotationAge(in.keyspace); age > 0 && t.SuccessorID == "" {
		in.rotateAt = unixNano(t.CreatedAt.Add(age))
	}
	// The last use is the later of the stored one and one noted here but
	// not yet written.
	used := max(unixNano(t.LastUsedAt), v.usage.latest(keyOf(t.ID)))
	if used > 0 {
		e.usedSec = uint32(min((used+int64(time.Second)-1)/int64(time.Second), math.MaxUint32))
	}
	in.cons = v.newConstraints(t)
	e.info = in
	return e
}

// noMeta is the metadata of a token stored without any.
var noMeta json.RawMessage

// timeOf is the time at Unix nanoseconds ns, the zero time for 0.
func timeOf(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// effectiveScopes are t's own scopes and those of its roles, resolved now.
func (v *Verifier) effectiveScopes(t *latchkey.Token) []string {
	if len(t.Roles) == 0 || v.cfg.Tenancy == nil {
		return t.Scopes
	}
	out := slices.Clone(t.Scopes)
	for _, r := range t.Roles {
		rs, _ := v.cfg.Tenancy.RoleScopes(latchkey.KeyspaceOf(t.Keyspace), r)
		for _, s := range rs {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// rotationAge is the stricter of the server's and keyspace ks's.
func (v *Verifier) rotationAge(ks string) time.Duration {
	age := v.cfg.RotationAge
	if v.cfg.Tenancy != nil {
		if k := v.cfg.Tenancy.RotateAfter(ks); k > 0 && (age == 0 || k < age) {
			age = k
		}
	}
	return age
}

// recordMalformed records an attempt with a token that did not parse: as
// the pipeline's compact Attempt when it can hold it (the pipeline names
// this node, the reason is the parser's), else as a full record.
func (v *Verifier) recordMalformed(req *latchkey.VerifyRequest, reason string, now int64) {
	action := req.Action
	if action == "" {
		action = latchkey.ActionVerify
	}
	if r, ok := audit.AttemptReason(reason); ok && v.compact {
		v.rec.RecordMalformed(&audit.Attempt{Time: now, Action: action, ClientIP: req.ClientIP, RequestID: req.RequestID, Reason: r})
		return
	}
	v.rec.RecordFunc(func(ev *latchkey.AuditEvent) {
		v.fillAttempt(ev, req, now)
		ev.Outcome, ev.Reason = latchkey.Malformed.String(), reason
	})
}
