// Package middleware protects a Go HTTP service with latchkey tokens:
//
//	v := middleware.Remote(&client.Client{BaseURL: "https://latchkey.internal:7480", Token: os.Getenv("LATCHKEY_TOKEN")})
//	// or, with the verifier in process: v := middleware.Local(verifier)
//	mux.Handle("/invoices", middleware.Require(v, "invoices:read")(handler))
//
// ExampleRemote and ExampleLocal show both, running.
//
// A request without a valid token covering the scopes gets 401, 403 or 429
// (RFC 6750 challenges, nothing more in the body); an allowed one reaches
// the handler with the caller's identity in its context (FromContext).
package middleware

import (
	"context"
	"net/http"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/edge"
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

// Checker decides on a token for a request: req carries the token, the
// scopes it must cover and the facts about the caller.
type Checker interface {
	Check(ctx context.Context, req *latchkey.VerifyRequest) (latchkey.Decision, Identity, error)
}

// Options tune Require.
type Options struct {
	// TokenHeader is read besides Authorization: Bearer (e.g. X-API-Key).
	TokenHeader string
	// TrustedProxies are believed for X-Forwarded-For.
	TrustedProxies latchkey.TrustedProxies
	// Keyspace is the keyspace whose tokens are accepted (default: the
	// default keyspace); another keyspace's token is NOT_FOUND.
	Keyspace string
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
			if edge.CredentialInQuery(r.URL.RawQuery) {
				edge.Refuse(w, http.StatusBadRequest, edge.AnswerInQuery)
				return
			}
			tok, ok := edge.Credential(r, o.TokenHeader)
			if !ok {
				edge.Challenge(w)
				return
			}
			ca := edge.ClientAddr(r, o.TrustedProxies)
			req := latchkey.VerifyRequest{Token: tok, Scopes: scopes, ClientIP: ca.IP, Source: ca.Source, UserAgent: r.UserAgent(),
				Method: r.Method, Path: r.URL.Path, RequestID: edge.PlainRequestID(r.Header), Keyspace: o.Keyspace}
			d, id, err := c.Check(r.Context(), &req)
			if err != nil || !d.Valid() {
				edge.Deny(w, d, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
		})
	}
}

// Local checks tokens with a verifier in the same process.
func Local(v latchkey.Verifier) Checker { return local{v} }

type local struct{ v latchkey.Verifier }

func (l local) Check(ctx context.Context, req *latchkey.VerifyRequest) (latchkey.Decision, Identity, error) {
	if req.Action == "" {
		req.Action = "middleware"
	}
	d, err := l.v.Verify(ctx, req)
	if err != nil || !d.Valid() {
		return d, Identity{}, err
	}
	return d, Identity{TokenID: d.TokenID, Subject: d.Subject, Scopes: d.Scopes, Meta: d.Meta}, nil
}

// Remote checks tokens with a latchkey server's POST /v1/verify; the
// client's token needs latchkey:verify.
func Remote(c *client.Client) Checker { return remote{c} }

type remote struct{ c *client.Client }

func (rm remote) Check(ctx context.Context, req *latchkey.VerifyRequest) (latchkey.Decision, Identity, error) {
	res, err := rm.c.Verify(ctx, client.VerifyRequest{Token: req.Token, Scopes: req.Scopes, IP: req.ClientIP, Method: req.Method, Path: req.Path, Keyspace: req.Keyspace})
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
