// Package middleware protects a Go HTTP service with latchkey tokens:
//
//	v := middleware.Local(verifier)                       // the verifier in process
//	v := middleware.Remote(&client.Client{BaseURL, Token}) // or a latchkey server
//	mux.Handle("/invoices", middleware.Require(v, "invoices:read")(handler))
//
// A request without a valid token covering the scopes gets 401, 403 or 429
// (RFC 6750 challenges, nothing more in the body); an allowed one reaches
// the handler with the caller's identity in its context (FromContext).
package middleware

import (
	"context"
	"net/http"
	"net/netip"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/gateway"
)

// Identity is who is calling.
type Identity struct {
	TokenID string
	Subject string
	Scopes  []string
	// Meta is the token's meta object, as JSON.
	Meta []byte
}

type ctxKey struct{}

// FromContext returns the identity Require placed in ctx.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// Checker decides on a token for a request.
type Checker interface {
	Check(ctx context.Context, token string, scopes []string, clientIP string, src netip.Addr, method, path string) (latchkey.Decision, Identity, error)
}

// Options tune Require.
type Options struct {
	// TokenHeader is read besides Authorization: Bearer (e.g. X-API-Key).
	TokenHeader string
	// TrustedProxies are believed for X-Forwarded-For.
	TrustedProxies latchkey.TrustedProxies
}

// Require returns middleware admitting only requests whose token covers
// every scope.
func Require(c Checker, scopes ...string) func(http.Handler) http.Handler {
	return RequireWith(c, Options{}, scopes...)
}

// RequireWith is Require with options.
func RequireWith(c Checker, o Options, scopes ...string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if gateway.TokenInQuery(r.URL.RawQuery) {
				http.Error(w, `{"error":"invalid_request","error_description":"credentials in the URL are refused"}`, http.StatusBadRequest)
				return
			}
			tok, ok := gateway.TokenFrom(r, o.TokenHeader)
			if !ok {
				gateway.Deny(w, gateway.Outcome{}, true)
				return
			}
			ip, src := gateway.ClientAddr(r, o.TrustedProxies)
			d, id, err := c.Check(r.Context(), tok, scopes, ip, src, r.Method, r.URL.Path)
			if err != nil || !d.Valid() {
				gateway.Deny(w, gateway.Outcome{Decision: d, Err: err}, false)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
		})
	}
}

// Local checks tokens with a verifier in the same process.
func Local(v latchkey.Verifier) Checker { return local{v} }

type local struct{ v latchkey.Verifier }

func (l local) Check(ctx context.Context, token string, scopes []string, ip string, src netip.Addr, method, path string) (latchkey.Decision, Identity, error) {
	d, err := l.v.Verify(ctx, &latchkey.VerifyRequest{Token: token, Scopes: scopes, ClientIP: ip, Source: src, Method: method, Path: path, Action: "middleware"})
	if err != nil || !d.Valid() {
		return d, Identity{}, err
	}
	return d, Identity{TokenID: d.TokenID, Subject: d.Subject, Scopes: d.Scopes, Meta: d.Meta}, nil
}

// Remote checks tokens with a latchkey server's POST /v1/verify; the
// client's token needs latchkey:verify.
func Remote(c *client.Client) Checker { return remote{c} }

type remote struct{ c *client.Client }

func (rm remote) Check(ctx context.Context, token string, scopes []string, ip string, _ netip.Addr, method, path string) (latchkey.Decision, Identity, error) {
	res, err := rm.c.Verify(ctx, client.VerifyRequest{Token: token, Scopes: scopes, IP: ip, Method: method, Path: path})
	if err != nil {
		return latchkey.Decision{}, Identity{}, err
	}
	d := latchkey.Decision{Code: res.Code}
	if res.RateLimit != nil {
		d.Rate.RetryAfter = secondsDur(res.RateLimit.RetryAfter)
	}
	if !res.Valid {
		return d, Identity{}, nil
	}
	return d, Identity{TokenID: res.TokenID, Subject: res.Subject, Scopes: res.Scopes, Meta: res.Meta}, nil
}

func secondsDur(s int64) time.Duration { return time.Duration(s) * time.Second }
