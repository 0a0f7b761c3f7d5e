// Package gateway puts latchkey in front of services: a reverse proxy
// that checks every request's token before forwarding it (docs/architecture.md §7),
// and the same decision as a forward-auth endpoint for nginx, Caddy,
// Traefik and Envoy.
//
// Upstreams learn who is calling from X-Latchkey-Token-Id,
// X-Latchkey-Subject and X-Latchkey-Scopes, and from X-Latchkey-Identity,
// a short-lived EdDSA JWT they can check without trusting the network
// (package identity). Whatever the client sent under those names is
// removed first, and so is the credential.
package gateway

import (
	"context"
	"crypto/rand"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/identity"
	"github.com/latchkeyhq/latchkey/secret"
)

// Headers set for the upstream.
const (
	HeaderTokenID = "X-Latchkey-Token-Id"
	HeaderSubject = "X-Latchkey-Subject"
	HeaderScopes  = "X-Latchkey-Scopes"
)

// Authorizer is the decision both the gateway and forward-auth make.
type Authorizer struct {
	Verifier latchkey.Verifier
	// Refuser records the attempts refused at the edge, before there is a
	// token to decide on (nil: they are answered, not recorded). The
	// daemon gives the verifier, which samples them.
	Refuser        latchkey.Refuser
	Signer         *identity.Signer
	TrustedProxies latchkey.TrustedProxies
	Now            func() time.Time

	jwts jwtCache
}

// Check verifies req (its token, for its required scopes, from its
// client).
func (a *Authorizer) Check(ctx context.Context, req *latchkey.VerifyRequest) (latchkey.Decision, error) {
	d, err := a.Verifier.Verify(ctx, req)
	edge.AccessOf(ctx).Decided(&d)
	return d, err
}

// Refuse records a request refused at the edge (see the Reason
// constants) and answers it with status and body.
func (a *Authorizer) Refuse(ctx context.Context, w http.ResponseWriter, req *latchkey.VerifyRequest, reason string, status int, body string) {
	a.refused(ctx, req, reason)
	edge.Refuse(w, status, body)
}

// refused records an edge refusal answered elsewhere.
func (a *Authorizer) refused(ctx context.Context, req *latchkey.VerifyRequest, reason string) {
	edge.AccessOf(ctx).Refused(reason)
	if a.Refuser != nil {
		a.Refuser.Refuse(req, reason)
	}
}

// Identify sets the identity headers of an allowed request on h, after
// removing any the client sent (tokenHeader, the route file's credential
// header, included).
func (a *Authorizer) Identify(h http.Header, d latchkey.Decision, aud, tokenHeader string) {
	edge.StripIdentity(h, tokenHeader)
	h.Set(HeaderTokenID, d.TokenID)
	h.Set(HeaderSubject, d.Subject)
	if a.Signer == nil {
		h.Set(HeaderScopes, strings.Join(d.Scopes, " "))
		return
	}
	e := a.jwt(&d, aud)
	h.Set(HeaderScopes, e.scopes)
	h.Set(identity.Header, e.jwt)
}

func (a *Authorizer) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// jwt returns a signed identity for token t and audience aud. Signing
// costs tens of microseconds, so a JWT is reused for half its life by
// every request of the same token to the same route.
func (a *Authorizer) jwt(d *latchkey.Decision, aud string) jwtEntry {
	now := a.now()
	k := jwtKey{d.TokenID, aud, d.Version}
	if e, ok := a.jwts.get(k); ok && now.Before(e.reuseUntil) {
		return e
	}
	// The decision's id is part of the presented token's memory: the
	// cache keeps a copy.
	k.tokenID = strings.Clone(d.TokenID)
	ttl := a.Signer.TTL()
	if !d.ExpiresAt.IsZero() && d.ExpiresAt.Sub(now) < ttl {
		ttl = max(time.Second, d.ExpiresAt.Sub(now)) // never outlive the token by much
	}
	scopes := strings.Join(d.Scopes, " ")
	s := a.Signer.Sign(identity.Claims{Subject: d.Subject, TokenID: k.tokenID, Scope: scopes, Audience: aud, ID: jwtID()}, now)
	e := jwtEntry{jwt: s, scopes: scopes, reuseUntil: now.Add(min(ttl, a.Signer.TTL()) / 2)}
	a.jwts.put(k, e)
	return e
}

func jwtID() string {
	id, _ := secret.NewID(rand.Reader)
	return id
}

type jwtKey struct {
	tokenID, aud string
	version      int64 // a changed token gets a fresh JWT
}

type jwtEntry struct {
	jwt        string
	scopes     string // the X-Latchkey-Scopes value, joined once
	reuseUntil time.Time
}

// jwtCache is a bounded map of recently signed JWTs.
type jwtCache struct {
	mu sync.RWMutex
	m  map[jwtKey]jwtEntry
}

const jwtCacheMax = 100_000

func (c *jwtCache) get(k jwtKey) (jwtEntry, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	return e, ok
}

func (c *jwtCache) put(k jwtKey, e jwtEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= jwtCacheMax {
		c.m = map[jwtKey]jwtEntry{} // start over: the cache refills as it is used
	}
	c.m[k] = e
}
