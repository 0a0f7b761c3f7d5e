// Package verify is the hot path: it decides, for one presented token,
// whether it is real, current and allowed (DESIGN.md §2), and hands every
// attempt to the audit pipeline.
//
// Checks run cheapest first: parse and checksum (no lookup), cache lookup
// (singleflight on a miss, short negative entries for unknown ids),
// constant-time keyed-hash comparison, status, time, scopes. A cache hit
// on a valid token does not allocate.
package verify

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/secret"
)

// Loader reads one token by id. latchkey.Store satisfies it. A missing
// token is an error with code latchkey.ENotFound.
type Loader interface {
	GetToken(ctx context.Context, id string) (*latchkey.Token, error)
}

// Recorder receives one audit event per attempt without blocking for I/O.
// *audit.Pipeline satisfies it.
type Recorder interface {
	Record(ev latchkey.AuditEvent)
}

// Config tunes a Verifier. The zero value works.
type Config struct {
	// PositiveTTL bounds how long a found token is served from the cache
	// without a reload (default 30s). Changes made through this process
	// invalidate at once; the TTL is the staleness bound for anything else.
	PositiveTTL time.Duration
	// NegativeTTL is how long an unknown id is remembered (default 2s), so
	// a flood of made-up ids costs one store read each per interval.
	NegativeTTL time.Duration
	// MaxEntries caps the cache (default 1<<21). Stale and negative entries
	// are evicted first.
	MaxEntries int
	// LoadTimeout bounds one store read on a miss (default 5s).
	LoadTimeout time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// Node names this server in audit records.
	Node string
}

// Request is one verification. Only Token is required.
type Request struct {
	Token string
	// Scopes that must all be covered by the token's grants.
	Scopes []string
	// Facts about the caller, for the audit record (and, later, constraints).
	ClientIP  string
	UserAgent string
	Method    string
	Path      string
	RequestID string
	// Action names the attempt in the audit log (default "verify").
	Action string
	// AuditFailuresOnly records the attempt only when it is refused. Used for
	// authenticating admin calls, so that reading the log does not flood it.
	AuditFailuresOnly bool
}

// Verifier makes verification decisions. It is safe for concurrent use.
type Verifier struct {
	loader Loader
	hasher *secret.Hasher
	rec    Recorder
	cfg    Config
	cache  *cache
	sf     singleflight.Group
	epoch  atomic.Pointer[epoch]
}

// epoch anchors the wall clock to the monotonic one. time.Now reads both
// clocks (two vDSO calls, ~45 ns on a VM); deriving wall time from one
// monotonic read halves that on every verification. The anchor is renewed
// every second, so a stepped system clock is followed within a second.
type epoch struct {
	mono time.Time     // a time.Now() reading: wall and monotonic
	age  time.Duration // when to renew, as time.Since(mono)
}

// clock returns the current wall time, and the epoch and offset to
// measure latency from.
func (v *Verifier) clock() (time.Time, *epoch, time.Duration) {
	ep := v.epoch.Load()
	since := time.Since(ep.mono)
	if since >= ep.age {
		n := &epoch{mono: time.Now(), age: time.Second}
		v.epoch.CompareAndSwap(ep, n)
		ep, since = n, 0
	}
	now := ep.mono.Add(since)
	if v.cfg.Now != nil {
		now = v.cfg.Now()
	}
	return now, ep, since
}

// New returns a Verifier reading tokens from loader, comparing secrets
// with hasher, and recording every attempt to rec (which may be nil).
func New(loader Loader, hasher *secret.Hasher, rec Recorder, cfg Config) *Verifier {
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
	v := &Verifier{loader: loader, hasher: hasher, rec: rec, cfg: cfg, cache: newCache(cfg.MaxEntries)}
	v.epoch.Store(&epoch{mono: time.Now(), age: time.Second})
	return v
}

// Invalidate drops id from the cache. Call it after every change to the
// token; a load already in flight for id will not repopulate the cache.
func (v *Verifier) Invalidate(id string) {
	k := keyOf(id)
	v.cache.invalidate(&k)
	v.sf.Forget(id)
}

// CacheLen reports how many entries the cache holds.
func (v *Verifier) CacheLen() int { return v.cache.len() }

// Verify decides on req. A refusal is a Decision, not an error; the error
// is non-nil only when the store could not be read, and then the Decision
// must not be used.
func (v *Verifier) Verify(ctx context.Context, req *Request) (latchkey.Decision, error) {
	now, ep, mono := v.clock()
	d, err := v.decide(ctx, req, now.UnixNano())
	d.Latency = time.Since(ep.mono) - mono
	if v.rec != nil && !(req.AuditFailuresOnly && d.Code == latchkey.Valid) {
		ev := latchkey.AuditEvent{
			Time:      now,
			Node:      v.cfg.Node,
			RequestID: req.RequestID,
			Kind:      latchkey.KindVerify,
			Action:    req.Action,
			TokenID:   d.TokenID,
			Outcome:   d.Code.String(),
			Reason:    d.Reason,
			Scopes:    req.Scopes,
			ClientIP:  req.ClientIP,
			UserAgent: req.UserAgent,
			Method:    req.Method,
			Path:      req.Path,
			Latency:   d.Latency,
		}
		if ev.Action == "" {
			ev.Action = latchkey.ActionVerify
		}
		ev.Subject = d.Subject
		if err != nil {
			ev.Outcome, ev.Reason = "ERROR", "store_unavailable"
		}
		v.rec.Record(ev)
	}
	return d, err
}

func (v *Verifier) decide(ctx context.Context, req *Request, now int64) (latchkey.Decision, error) {
	var d latchkey.Decision
	parts, err := secret.Parse(req.Token)
	if err != nil {
		d.Code, d.Reason = latchkey.Malformed, err.Error()
		return d, nil
	}
	// The id is a substring of the presented token. Records hold it only
	// until written (the audit store copies the 16 characters), and the
	// cache keys on a copy, so nothing long-lived refers to the secret.
	d.TokenID = parts.ID
	k := keyOf(parts.ID)
	e, ok := v.cache.get(&k, now)
	if !ok {
		if e, err = v.load(ctx, &k, parts.ID, now); err != nil {
			d.Code = latchkey.NotFound
			return d, err
		}
	}
	if e.tok == nil {
		d.Code, d.Reason = latchkey.NotFound, "unknown_id"
		return d, nil
	}
	if !v.hasher.Equal(parts.ID, &parts.Secret, e.hash[:]) {
		d.Code, d.Reason = latchkey.NotFound, "secret_mismatch"
		return d, nil
	}
	if parts.Prefix != e.prefix {
		// The hash covers id and secret only; a swapped prefix with a
		// recomputed checksum is still not this token.
		d.Code, d.Reason = latchkey.NotFound, "prefix_mismatch"
		return d, nil
	}
	d.Token, d.Subject = e.tok, e.subject
	switch e.status {
	case latchkey.StatusActive:
	case latchkey.StatusRevoked:
		d.Code, d.Reason = latchkey.Revoked, "revoked"
		return d, nil
	case latchkey.StatusSuspended:
		d.Code, d.Reason = latchkey.Suspended, "suspended"
		return d, nil
	default:
		d.Code, d.Reason = latchkey.Revoked, "unknown_status"
		return d, nil
	}
	if e.expiresAt != 0 && now >= e.expiresAt {
		d.Code, d.Reason = latchkey.Expired, "expired"
		return d, nil
	}
	if e.notBefore != 0 && now < e.notBefore {
		d.Code, d.Reason = latchkey.NotYetValid, "not_yet_valid"
		return d, nil
	}
	if _, missing := latchkey.MissingScope(e.scopes, req.Scopes); missing {
		d.Code, d.Reason = latchkey.InsufficientScope, "missing_scope"
		return d, nil
	}
	d.Code = latchkey.Valid
	return d, nil
}

// load reads id from the store once, however many callers miss at the same
// moment, and caches the answer (negatively for an unknown id).
func (v *Verifier) load(ctx context.Context, k *key, presentedID string, now int64) (entry, error) {
	id := string(k[:]) // a copy: singleflight keeps its key while in flight
	res, err, _ := v.sf.Do(id, func() (any, error) {
		gen := v.cache.generation(k)
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.cfg.LoadTimeout)
		defer cancel()
		t, err := v.loader.GetToken(lctx, id)
		var e entry
		switch {
		case err == nil:
			e = newEntry(t, now+int64(v.cfg.PositiveTTL))
		case latchkey.ErrorCode(err) == latchkey.ENotFound:
			e = entry{staleAt: now + int64(v.cfg.NegativeTTL)}
		default:
			return nil, err
		}
		v.cache.putIfCurrent(k, e, gen, now)
		return &e, nil
	})
	if err != nil {
		return entry{}, err
	}
	return *res.(*entry), nil
}

func newEntry(t *latchkey.Token, staleAt int64) entry {
	e := entry{tok: t, subject: t.Subject, prefix: intern(t.Prefix), scopes: t.Scopes, status: t.Status, staleAt: staleAt}
	copy(e.hash[:], t.Hash)
	if !t.ExpiresAt.IsZero() {
		e.expiresAt = t.ExpiresAt.UnixNano()
	}
	if !t.NotBefore.IsZero() {
		e.notBefore = t.NotBefore.UnixNano()
	}
	return e
}
