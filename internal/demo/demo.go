// Package demo runs a whole latchkey server in process (SQLite in a
// temporary directory, the API, forward auth and the identity JWKS) for
// the SDK's runnable examples and tests. It is the stack `latchkey serve`
// builds, without the daemon's background work.
package demo

import (
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/gateway"
	"github.com/latchkeyhq/latchkey/httpapi"
	"github.com/latchkeyhq/latchkey/identity"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/verify"
)

// Server is a running latchkey.
type Server struct {
	URL      string            // the API, e.g. http://127.0.0.1:34567
	Root     string            // a root token (latchkey:admin)
	Verifier latchkey.Verifier // the server's verifier, for in-process use (middleware.Local)
	close    []func()
}

// Start runs a server. Close stops it and removes its data.
func Start() (*Server, error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "latchkey-demo")
	if err != nil {
		return nil, err
	}
	s := &Server{close: []func(){func() { os.RemoveAll(dir) }}}
	fail := func(err error) (*Server, error) { s.Close(); return nil, err }
	db, err := sqlite.Open(ctx, filepath.Join(dir, "latchkey.db"))
	if err != nil {
		return fail(err)
	}
	s.close = append(s.close, func() { db.Close() })
	key := make([]byte, 32)
	rand.Read(key)
	h, err := secret.NewHasher(key)
	if err != nil {
		return fail(err)
	}
	pipe := &audit.Pipeline{Sink: db}
	pipe.Start()
	s.close = append(s.close, func() { pipe.Close(ctx) })
	v := verify.New(db, h, pipe, verify.Config{})
	s.close = append(s.close, func() { v.Close(ctx) })
	svc := &tokens.Service{Store: db, Hasher: h, Invalidate: v.Invalidate, FlushUsage: v.FlushUsage}
	root, _, err := svc.Bootstrap(ctx)
	if err != nil {
		return fail(err)
	}
	signer, err := identity.NewSigner(key, 24*time.Hour, 0)
	if err != nil {
		return fail(err)
	}
	authz := &gateway.Authorizer{Verifier: v, Refuser: v, Signer: signer, TrustedProxies: latchkey.LoopbackProxies}
	api := &httpapi.Server{Verifier: v, Tokens: svc, Audit: db, FlushAudit: pipe.Flush, TrustedProxies: latchkey.LoopbackProxies,
		ForwardAuth: &gateway.ForwardAuth{Auth: authz},
		JWKS:        http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { gateway.ServeJWKS(w, signer) })}
	srv := httptest.NewServer(api.Handler())
	// Stop the listener first, so nothing reaches a closed store.
	s.close = append(s.close, srv.Close)
	s.URL, s.Root, s.Verifier = srv.URL, root.Reveal(), v
	return s, nil
}

// Close stops the server and removes its data.
func (s *Server) Close() {
	for i := len(s.close) - 1; i >= 0; i-- {
		s.close[i]()
	}
}
