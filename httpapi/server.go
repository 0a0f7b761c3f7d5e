// Package httpapi is latchkey's JSON REST API (docs/architecture.md §8) and a Go
// client for it. Handlers return errors; one renderer turns them into the
// {"error":{"code","message"}} shape, and one function maps codes to HTTP
// statuses.
//
// The package depends on the verifier and the token service through small
// interfaces, never on a store or database driver, so the CLI can use the
// client without linking one (a test in the root package enforces it).
package httpapi

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/docs"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/secret"
)

// TokenService performs admin operations. *tokens.Service satisfies it.
type TokenService interface {
	Create(ctx context.Context, a latchkey.Actor, req client.CreateRequest) (*latchkey.Token, secret.Plaintext, error)
	Revoke(ctx context.Context, a latchkey.Actor, id, reason string) (*latchkey.Token, error)
	RevokeMatching(ctx context.Context, a latchkey.Actor, sel latchkey.TokenSelector, reason string, opt latchkey.BulkOptions) (client.RevocationResult, error)
	Suspend(ctx context.Context, a latchkey.Actor, id, reason string) (*latchkey.Token, error)
	Resume(ctx context.Context, a latchkey.Actor, id string) (*latchkey.Token, error)
	Rotate(ctx context.Context, a latchkey.Actor, id string, grace time.Duration) (successor *latchkey.Token, pt secret.Plaintext, old *latchkey.Token, err error)
	Derive(ctx context.Context, a latchkey.Actor, parentID string, req client.CreateRequest) (*latchkey.Token, secret.Plaintext, error)
	Update(ctx context.Context, a latchkey.Actor, id string, req client.UpdateRequest) (*latchkey.Token, error)
	Get(ctx context.Context, id string) (*latchkey.Token, error)
	List(ctx context.Context, f latchkey.TokenFilter) (latchkey.TokenPage, error)
	ReportLeaks(ctx context.Context, a latchkey.Actor, reports []client.LeakReport) ([]client.LeakResult, error)
}

// BlockService lists and lifts the detector's blocks. *detect.Blocks
// satisfies it.
type BlockService interface {
	List(ctx context.Context) ([]latchkey.Block, error)
	Remove(ctx context.Context, a latchkey.Actor, source string) error
}

// AuditReader reads the audit log and its chain. latchkey.Store
// satisfies it.
type AuditReader interface {
	ListAudit(ctx context.Context, f latchkey.AuditFilter) (latchkey.AuditPage, error)
	AuditSources(ctx context.Context, f latchkey.AuditFilter) (latchkey.SourceReport, error)
	AuditNodes(ctx context.Context) ([]string, error)
	AuditAnchors(ctx context.Context) ([]latchkey.AuditAnchor, error)
}

// Server serves the API. Verifier, Tokens and Audit are required.
type Server struct {
	Verifier latchkey.Verifier
	Tokens   TokenService
	Audit    AuditReader
	// FlushAudit, when set, is called before audit records are listed, so a
	// reader sees every attempt made before its request (read your writes).
	FlushAudit func(ctx context.Context) error
	// Ready reports whether dependencies are reachable (for /readyz); nil
	// means always ready.
	Ready func(ctx context.Context) error
	// Logger receives request logs and internal errors (default slog.Default()).
	Logger *slog.Logger
	// TrustedProxies are the peers whose X-Forwarded-For is believed when
	// resolving the client's address; nil believes nobody's.
	TrustedProxies latchkey.TrustedProxies

	// ForwardAuth, when set, serves /v1/forward-auth (any method).
	ForwardAuth http.Handler
	// JWKS, when set, serves GET /.well-known/jwks.json.
	JWKS http.Handler
	// Metrics, when set, serves GET /metrics (Prometheus), without
	// authentication: it carries counts, never tokens.
	Metrics http.Handler
	// Blocks, when set, serves /v1/blocks.
	Blocks BlockService
	// OpenSessions, when set, lists and ends the doors' open sessions
	// under /v1/sessions; without it the list is empty.
	OpenSessions OpenSessions
	// MCP, when set, serves the MCP gateway's held calls and tool pins.
	MCP *MCP
	// LeakKeys are the secret scanner's public keys (ECDSA P-256) by key
	// identifier: a POST /v1/leaks signed by one of them needs no bearer
	// token (GitHub's secret-scanning partner scheme).
	LeakKeys map[string]*ecdsa.PublicKey
	// AuditWritten, when set, returns a channel closed when new records
	// are committed (audit.Pipeline.Written), so streams wake at once
	// rather than at their next poll.
	AuditWritten func() <-chan struct{}

	// Activity, when set, serves GET /v1/audit/summary: attempts per
	// second and today, by outcome class (this node's, or the cluster's).
	Activity audit.ActivitySource

	// UI, when set, serves the dashboard's files under GET /ui/ (package
	// ui); the security headers are added here.
	UI http.Handler
	// SessionKey (at least 32 bytes, derived from the server key) seals
	// dashboard sessions; without it, sign-in answers 404.
	SessionKey []byte
	// SessionTTL is how long a dashboard session lasts (default
	// DefaultSessionTTL); never longer than its token.
	SessionTTL time.Duration
	// Sessions records sign-outs, so they hold on every node.
	Sessions SessionStore

	// Tenancy, when set, serves keyspaces, roles, identities and access
	// requests; without it they answer 404.
	Tenancy TenancyService

	// Receipts, when set, collects the other nodes' confirmations of a
	// revocation asked with ?wait=all (PostgreSQL); without it this node
	// is the only one, and its own eviction is the receipt.
	Receipts   latchkey.Receipter
	receiptLog receiptLog

	// OAuth, when set, is the OAuth authorization server: its endpoints,
	// the consent page's calls and its clients' administration. Without
	// it they answer 404 (introspection and revocation work either way).
	OAuth OAuthServer

	sessOnce sync.Once
	sess     *sessionKeys

	draining  atomic.Bool
	drainOnce sync.Once
	initOnce  sync.Once
	drained   chan struct{} // closed by Drain: open streams end
}

// Route is one registered endpoint. Method "*" answers any method.
type Route struct {
	Method, Path string
	// Scope is the admin scope required, "" for none.
	Scope string
	// Self: the token named by {id} may also call it, presenting itself,
	// without Scope.
	Self bool
	// Relay: the caller is a backend or proxy asking about someone else's
	// token (POST /v1/verify). Its own credential is never blocked on
	// account of the end client's address.
	Relay bool
	// Stream: the answer lasts (server-sent events) and checks now and
	// then that its credential still holds.
	Stream bool
	// OAuth: served by the OAuth authorization server, which
	// authenticates its own callers (clients, not admin tokens).
	OAuth bool
	// Signed: any valid token may call it, with no admin scope (the
	// dashboard's consent page: a person answers with their own token).
	Signed bool
	// Keyspaced: a keyspace's admin scope for the same permission
	// (latchkey:keyspaces.<name>:tokens:read for latchkey:tokens:read)
	// admits the call too, and the handler confines it to the keyspaces
	// the caller reaches. Without it, only the global scope does.
	Keyspaced bool
}

// Perm is the permission the route's scope names ("tokens:read").
func (rt Route) Perm() string { return strings.TrimPrefix(rt.Scope, latchkey.ReservedPrefix) }

// Routes lists every endpoint. The OpenAPI document in docs/ is checked
// against it by a test.
func Routes() []Route {
	return []Route{
		{Method: "POST", Path: "/v1/tokens", Scope: latchkey.ScopeTokensWrite, Keyspaced: true},
		{Method: "GET", Path: "/v1/tokens", Scope: latchkey.ScopeTokensRead, Keyspaced: true},
		{Method: "GET", Path: "/v1/export/tokens", Scope: latchkey.ScopeTokensRead, Stream: true, Keyspaced: true},
		{Method: "GET", Path: "/v1/tokens/{id}", Scope: latchkey.ScopeTokensRead, Keyspaced: true},
		{Method: "PATCH", Path: "/v1/tokens/{id}", Scope: latchkey.ScopeTokensWrite, Keyspaced: true},
		{Method: "POST", Path: "/v1/tokens/{id}/revoke", Scope: latchkey.ScopeTokensWrite, Keyspaced: true},
		{Method: "POST", Path: "/v1/tokens/{id}/suspend", Scope: latchkey.ScopeTokensWrite, Keyspaced: true},
		{Method: "POST", Path: "/v1/tokens/{id}/resume", Scope: latchkey.ScopeTokensWrite, Keyspaced: true},
		{Method: "POST", Path: "/v1/tokens/{id}/rotate", Scope: latchkey.ScopeTokensWrite, Keyspaced: true},
		{Method: "POST", Path: "/v1/tokens/{id}/derive", Scope: latchkey.ScopeTokensWrite, Self: true, Keyspaced: true},
		{Method: "POST", Path: "/v1/revocations", Scope: latchkey.ScopeTokensWrite, Keyspaced: true},
		{Method: "POST", Path: "/v1/verify", Scope: latchkey.ScopeVerify, Relay: true, Keyspaced: true},
		{Method: "GET", Path: "/v1/audit", Scope: latchkey.ScopeAuditRead, Keyspaced: true},
		{Method: "GET", Path: "/v1/audit/stream", Scope: latchkey.ScopeAuditRead, Stream: true, Keyspaced: true},
		{Method: "GET", Path: "/v1/audit/sources", Scope: latchkey.ScopeAuditRead, Keyspaced: true},
		{Method: "GET", Path: "/v1/export/audit", Scope: latchkey.ScopeAuditRead, Stream: true, Keyspaced: true},
		{Method: "GET", Path: "/v1/audit/verify", Scope: latchkey.ScopeAuditRead},
		{Method: "GET", Path: "/v1/audit/summary", Scope: latchkey.ScopeAuditRead},
		{Method: "GET", Path: "/v1/receipts", Scope: latchkey.ScopeAuditRead},
		{Method: "GET", Path: "/v1/blocks", Scope: latchkey.ScopeAuditRead},
		{Method: "DELETE", Path: "/v1/blocks/{source...}", Scope: latchkey.AdminScope},
		{Method: "GET", Path: "/v1/sessions", Scope: latchkey.ScopeAuditRead},
		{Method: "DELETE", Path: "/v1/sessions/{id}", Scope: latchkey.ScopeTokensWrite},
		{Method: "GET", Path: "/v1/mcp/holds", Scope: latchkey.ScopeAuditRead},
		{Method: "POST", Path: "/v1/mcp/holds/{id}/approve", Scope: latchkey.ScopeMCPApprove},
		{Method: "POST", Path: "/v1/mcp/holds/{id}/deny", Scope: latchkey.ScopeMCPApprove},
		{Method: "GET", Path: "/v1/mcp/tools", Scope: latchkey.ScopeAuditRead},
		{Method: "POST", Path: "/v1/mcp/tools/{mcp_server}/{tool}/accept", Scope: latchkey.AdminScope},
		{Method: "GET", Path: "/v1/keyspaces", Scope: latchkey.ScopeTokensRead, Keyspaced: true},
		{Method: "GET", Path: "/v1/keyspaces/{keyspace}", Scope: latchkey.ScopeTokensRead, Keyspaced: true},
		{Method: "PUT", Path: "/v1/keyspaces/{keyspace}", Scope: latchkey.AdminScope, Keyspaced: true},
		{Method: "DELETE", Path: "/v1/keyspaces/{keyspace}", Scope: latchkey.AdminScope},
		{Method: "GET", Path: "/v1/keyspaces/{keyspace}/roles", Scope: latchkey.ScopeTokensRead, Keyspaced: true},
		{Method: "GET", Path: "/v1/keyspaces/{keyspace}/roles/{role}", Scope: latchkey.ScopeTokensRead, Keyspaced: true},
		{Method: "PUT", Path: "/v1/keyspaces/{keyspace}/roles/{role}", Scope: latchkey.AdminScope, Keyspaced: true},
		{Method: "DELETE", Path: "/v1/keyspaces/{keyspace}/roles/{role}", Scope: latchkey.AdminScope, Keyspaced: true},
		{Method: "GET", Path: "/v1/keyspaces/{keyspace}/identities", Scope: latchkey.ScopeTokensRead, Keyspaced: true},
		{Method: "GET", Path: "/v1/keyspaces/{keyspace}/identities/{subject}", Scope: latchkey.ScopeTokensRead, Keyspaced: true},
		{Method: "PUT", Path: "/v1/keyspaces/{keyspace}/identities/{subject}", Scope: latchkey.ScopeTokensWrite, Keyspaced: true},
		{Method: "DELETE", Path: "/v1/keyspaces/{keyspace}/identities/{subject}", Scope: latchkey.ScopeTokensWrite, Keyspaced: true},
		{Method: "POST", Path: "/v1/access-requests", Signed: true},
		{Method: "GET", Path: "/v1/access-requests", Signed: true},
		{Method: "GET", Path: "/v1/access-requests/{id}", Signed: true},
		{Method: "POST", Path: "/v1/access-requests/{id}/approve", Scope: latchkey.ScopeApprove, Keyspaced: true},
		{Method: "POST", Path: "/v1/access-requests/{id}/deny", Scope: latchkey.ScopeApprove, Keyspaced: true},
		{Method: "POST", Path: "/v1/access-requests/{id}/claim"},
		{Method: "POST", Path: "/v1/leaks"},
		{Method: "*", Path: "/v1/forward-auth"},
		{Method: "*", Path: "/v1/forward-auth/{path...}"},
		{Method: "GET", Path: "/v1/oauth/clients", Scope: latchkey.ScopeTokensRead},
		{Method: "POST", Path: "/v1/oauth/clients/revoke", Scope: latchkey.ScopeTokensWrite},
		{Method: "POST", Path: "/oauth2/introspect", Scope: latchkey.ScopeVerify},
		{Method: "POST", Path: "/oauth2/revoke"},
		{Method: "GET", Path: "/oauth2/authorize", OAuth: true},
		{Method: "POST", Path: "/oauth2/authorize", OAuth: true},
		{Method: "POST", Path: "/oauth2/token", OAuth: true},
		{Method: "POST", Path: "/oauth2/register", OAuth: true},
		{Method: "GET", Path: "/.well-known/oauth-authorization-server", OAuth: true},
		{Method: "GET", Path: "/.well-known/openid-configuration", OAuth: true},
		{Method: "GET", Path: "/.well-known/jwks.json"},
		{Method: "GET", Path: "/metrics"},
		{Method: "GET", Path: "/healthz"},
		{Method: "GET", Path: "/readyz"},
		{Method: "GET", Path: "/openapi.json"},
	}
}

// UIRoutes lists the dashboard's endpoints: its session, and every
// admin route relayed under UIPrefix (authenticated by the session).
func UIRoutes() []Route {
	rts := []Route{
		{Method: "POST", Path: UISessionPath},
		{Method: "GET", Path: UISessionPath},
		{Method: "DELETE", Path: UISessionPath},
		{Method: "GET", Path: UIPrefix + "/oauth/requests/{id}", Signed: true},
		{Method: "POST", Path: UIPrefix + "/oauth/requests/{id}", Signed: true},
		// The claim code is the credential; in the dashboard the person is
		// signed in as well.
		{Method: "POST", Path: UIPrefix + "/v1/access-requests/{id}/claim", Signed: true},
	}
	for _, rt := range Routes() {
		if (rt.Scope != "" || rt.Signed) && rt.Method != "*" && strings.HasPrefix(rt.Path, "/v1/") && !rt.Relay {
			rt.Path, rt.Self = UIPrefix+rt.Path, false
			rts = append(rts, rt)
		}
	}
	return rts
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error

// Handler returns the API's http.Handler.
func (s *Server) Handler() http.Handler {
	h := map[string]handlerFunc{
		"POST /v1/tokens":                                      s.createToken,
		"GET /v1/tokens":                                       s.listTokens,
		"GET /v1/tokens/{id}":                                  s.getToken,
		"PATCH /v1/tokens/{id}":                                s.updateToken,
		"POST /v1/tokens/{id}/revoke":                          s.revokeToken,
		"POST /v1/tokens/{id}/suspend":                         s.suspendToken,
		"POST /v1/tokens/{id}/resume":                          s.resumeToken,
		"POST /v1/tokens/{id}/rotate":                          s.rotateToken,
		"POST /v1/tokens/{id}/derive":                          s.deriveToken,
		"POST /v1/revocations":                                 s.revocations,
		"POST /v1/verify":                                      s.verify,
		"GET /v1/audit":                                        s.listAudit,
		"GET /v1/audit/stream":                                 s.streamAudit,
		"GET /v1/audit/sources":                                s.auditSources,
		"GET /v1/export/audit":                                 s.exportAudit,
		"GET /v1/export/tokens":                                s.exportTokens,
		"GET /v1/audit/verify":                                 s.verifyAudit,
		"GET /v1/audit/summary":                                s.auditSummary,
		"GET /v1/receipts":                                     s.listReceipts,
		"GET /v1/blocks":                                       s.listBlocks,
		"DELETE /v1/blocks/{source...}":                        s.removeBlock,
		"GET /v1/sessions":                                     s.listSessions,
		"DELETE /v1/sessions/{id}":                             s.endSession,
		"GET /v1/mcp/holds":                                    s.listHolds,
		"POST /v1/mcp/holds/{id}/approve":                      s.approveHold,
		"POST /v1/mcp/holds/{id}/deny":                         s.denyHold,
		"GET /v1/mcp/tools":                                    s.listPins,
		"POST /v1/mcp/tools/{mcp_server}/{tool}/accept":        s.acceptPin,
		"POST /v1/leaks":                                       s.reportLeaks,
		"GET /v1/keyspaces":                                    s.listKeyspaces,
		"GET /v1/keyspaces/{keyspace}":                         s.getKeyspace,
		"PUT /v1/keyspaces/{keyspace}":                         s.putKeyspace,
		"DELETE /v1/keyspaces/{keyspace}":                      s.deleteKeyspace,
		"GET /v1/keyspaces/{keyspace}/roles":                   s.listRoles,
		"GET /v1/keyspaces/{keyspace}/roles/{role}":            s.getRole,
		"PUT /v1/keyspaces/{keyspace}/roles/{role}":            s.putRole,
		"DELETE /v1/keyspaces/{keyspace}/roles/{role}":         s.deleteRole,
		"GET /v1/keyspaces/{keyspace}/identities":              s.listIdentities,
		"GET /v1/keyspaces/{keyspace}/identities/{subject}":    s.getIdentity,
		"PUT /v1/keyspaces/{keyspace}/identities/{subject}":    s.putIdentity,
		"DELETE /v1/keyspaces/{keyspace}/identities/{subject}": s.deleteIdentity,
		"POST /v1/access-requests":                             s.createAccessRequest,
		"GET /v1/access-requests":                              s.listAccessRequests,
		"GET /v1/access-requests/{id}":                         s.getAccessRequest,
		"POST /v1/access-requests/{id}/approve":                s.approveAccessRequest,
		"POST /v1/access-requests/{id}/deny":                   s.denyAccessRequest,
		"POST /v1/access-requests/{id}/claim":                  s.claimAccessRequest,
		"* /v1/forward-auth":                                   s.forwardAuth,
		"* /v1/forward-auth/{path...}":                         s.forwardAuth,
		"GET /v1/oauth/clients":                                s.listOAuthClients,
		"POST /v1/oauth/clients/revoke":                        s.revokeOAuthClient,
		"GET " + UIPrefix + "/oauth/requests/{id}":             s.consentRequest,
		"POST " + UIPrefix + "/oauth/requests/{id}":            s.consentDecide,
		"POST /oauth2/introspect":                              s.introspect,
		"POST /oauth2/revoke":                                  s.oauthRevoke,
		"GET /.well-known/jwks.json":                           s.jwks,
		"GET /metrics":                                         s.metrics,
		"GET /healthz":                                         s.healthz,
		"GET /readyz":                                          s.readyz,
		"GET /openapi.json":                                    s.openAPI,
		"POST " + UISessionPath:                                s.signIn,
		"GET " + UISessionPath:                                 s.sessionInfo,
		"DELETE " + UISessionPath:                              s.signOut,
	}
	mux := http.NewServeMux()
	paths := map[string][]string{}
	var anyMethod http.Handler
	oauthH := s.oauthHandler()
	for _, rt := range Routes() {
		if rt.OAuth {
			mux.Handle(rt.Method+" "+rt.Path, oauthH)
			paths[rt.Path] = append(paths[rt.Path], rt.Method)
			continue
		}
		fn := h[rt.Method+" "+rt.Path]
		if fn == nil {
			panic("httpapi: no handler for " + rt.Method + " " + rt.Path)
		}
		if rt.Method == "*" { // forward auth: any method (proxies forward the original one), served before the mux below
			anyMethod = s.endpoint(rt, fn, bearerCredential, false)
			continue
		}
		cred := bearerCredential
		if rt.Path == "/oauth2/introspect" || rt.Path == "/oauth2/revoke" {
			cred = oauthClientCredential
		}
		mux.Handle(rt.Method+" "+rt.Path, s.endpoint(rt, fn, cred, false))
		paths[rt.Path] = append(paths[rt.Path], rt.Method)
	}
	// The dashboard: its files, its sessions, and the admin API relayed
	// under /ui/api with the session as the credential.
	if s.UI != nil {
		ui := s.UI
		files := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			uiHeaders(w.Header())
			ui.ServeHTTP(w, r)
		})
		// The files are flat: one segment, so no pattern here overlaps
		// the API under /ui/api/.
		mux.Handle("GET /ui/{$}", files)
		mux.Handle("GET /ui/{file}", files)
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/ui/", http.StatusFound)
		})
	}
	for _, rt := range UIRoutes() {
		fn := h[rt.Method+" "+rt.Path] // the session's own routes
		if fn == nil {
			fn = h[rt.Method+" "+strings.TrimPrefix(rt.Path, UIPrefix)] // a relayed admin route
		}
		// The session routes have no scope and check their own
		// credentials; the relayed ones present the session's token.
		mux.Handle(rt.Method+" "+rt.Path, s.endpoint(rt, fn, s.sessionCredential, true))
		paths[rt.Path] = append(paths[rt.Path], rt.Method)
	}
	// Same path, other method: a 405 in the one error shape.
	for path, methods := range paths {
		allow, ui := strings.Join(methods, ", "), strings.HasPrefix(path, UIPrefix+"/")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if ui {
				uiHeaders(w.Header())
			}
			w.Header().Set("Allow", allow)
			s.writeError(w, r, &latchkey.Error{Code: "method_not_allowed", Message: "method " + r.Method + " is not allowed here; use " + allow})
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, latchkey.Errorf(latchkey.ENotFound, "no such endpoint: %s", r.URL.Path))
	})
	// Forward auth sees its path before the mux does: the mux would
	// redirect a path with dot segments to its cleaned form (Envoy appends
	// the client's path here), where forward auth refuses it with 400.
	root := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.EscapedPath(); p == "/v1/forward-auth" || strings.HasPrefix(p, "/v1/forward-auth/") {
			anyMethod.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
	return s.middleware(root)
}

// Drain makes /readyz fail, so load balancers stop sending traffic before
// shutdown.
// Open event streams end, so that a graceful shutdown is not held up by
// them.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.drainOnce.Do(func() { close(s.drainCh()) })
}

func (s *Server) drainCh() chan struct{} {
	s.initOnce.Do(func() { s.drained = make(chan struct{}) })
	return s.drained
}

// credential finds the token an admin call presents: the bearer header,
// or the dashboard's session cookie (with its CSRF check on state
// changes).
type credential func(r *http.Request) (string, error)

func bearerCredential(r *http.Request) (string, error) {
	tok, ok := edge.Bearer(r)
	if !ok {
		return "", latchkey.Errorf(latchkey.EUnauthenticated, "missing credentials: send Authorization: Bearer <token>")
	}
	return tok, nil
}

// endpoint wraps a handler with authentication (when scope is set) and
// error rendering. The dashboard's copy of a route differs only in where
// its credential comes from, and in the UI's security headers.
func (s *Server) endpoint(rt Route, fn handlerFunc, cred credential, ui bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ui {
			uiHeaders(w.Header())
		}
		ca := s.clientAddr(r)
		ip, src := ca.IP, ca.Source
		if rt.Relay {
			// The caller relays an end client's request: its own credential
			// counts toward the caller itself (the peer, unless a trusted
			// proxy), never toward the address a header names.
			src = edge.PeerSource(r, s.TrustedProxies)
		}
		a := latchkey.Actor{ClientIP: ip, UserAgent: r.UserAgent(), RequestID: requestID(r)}
		if scope := rt.Scope; scope != "" || rt.Signed {
			perm := ""
			if rt.Self && presentsSelf(r) {
				scope = "" // the token acting on itself needs no admin scope
			}
			if rt.Keyspaced && scope != "" {
				scope, perm = "", rt.Perm() // a keyspace's grant admits it too; the handler confines it
			}
			d, err := s.present(r, cred, scope, perm, &a, src)
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			a.TokenID, a.Scopes, a.Keyspace, a.Subject = d.TokenID, d.Scopes, d.Keyspace, d.Subject
			if scope != "" && !rt.Keyspaced && !a.Reach(rt.Perm()).All {
				// The server's own endpoints (blocks, sessions, the chain...)
				// are no keyspace's: a token confined to one is refused.
				s.writeError(w, r, latchkey.Errorf(latchkey.EPermissionDenied, "this endpoint serves every keyspace: it needs %s on a token of the default keyspace", rt.Scope))
				return
			}
			if rt.Keyspaced && strings.Contains(rt.Path, "/v1/tokens/{id}") {
				// A token outside the caller's reach does not exist for it.
				if err := s.inReach(r, a, rt.Perm()); err != nil {
					s.writeError(w, r, err)
					return
				}
			}
			if rt.Stream { // a long answer checks again as it goes
				r = s.withRecheck(r, cred, scope, perm, a, src)
			}
		}
		if err := fn(w, r, a); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// present authenticates the call's credential for scope (or, with perm,
// for that permission in some keyspace).
func (s *Server) present(r *http.Request, cred credential, scope, perm string, a *latchkey.Actor, src netip.Addr) (latchkey.Decision, error) {
	tok, err := cred(r)
	if err != nil {
		return latchkey.Decision{}, err
	}
	return s.authenticateAs(r, tok, scope, perm, "", a, src, true)
}

// inReach refuses a call on token {id} outside the caller's reach for
// perm as if the token did not exist (the token acting on itself aside):
// to a caller confined to some keyspaces, an unknown id and another
// keyspace's answer alike, before anything else is looked at.
func (s *Server) inReach(r *http.Request, a latchkey.Actor, perm string) error {
	id := r.PathValue("id")
	if id == a.TokenID || a.Reach(perm).All {
		return nil // the handler reads the body, then finds the token or not
	}
	if validID(id) != nil {
		return latchkey.Errorf(latchkey.ENotFound, "token not found")
	}
	t, err := s.Tokens.Get(r.Context(), id)
	if err != nil && latchkey.ErrorCode(err) != latchkey.ENotFound {
		return err
	}
	if err != nil || !a.Reach(perm).Has(t.Keyspace) {
		return latchkey.Errorf(latchkey.ENotFound, "token not found")
	}
	return nil
}

// callKeyspace is the keyspace a call is about: the one named (which must
// be within the caller's reach for perm), or, when none is named, every
// keyspace ("") for a caller that reaches all and the only one for a
// caller that reaches one.
func callKeyspace(a latchkey.Actor, perm, named string) (string, error) {
	reach := a.Reach(perm)
	switch {
	case named != "" && reach.Has(named):
		return named, nil
	case named != "":
		return "", latchkey.Errorf(latchkey.EPermissionDenied, "your token cannot act in keyspace %q", named)
	case reach.All:
		return "", nil
	case len(reach.Keyspaces) == 1:
		return reach.Keyspaces[0], nil
	}
	return "", latchkey.Errorf(latchkey.EInvalid, "your token reaches several keyspaces: name one with keyspace")
}

type recheckKey struct{}

// withRecheck attaches a check that the request's credential still holds.
// It is built here rather than in endpoint so that the closure captures
// copies: captured by a closure in endpoint, the actor and the request
// would be moved to the heap on every call, streams or not.
func (s *Server) withRecheck(r *http.Request, cred credential, scope, perm string, a latchkey.Actor, src netip.Addr) *http.Request {
	check := func(r *http.Request) error {
		a := latchkey.Actor{ClientIP: a.ClientIP, UserAgent: a.UserAgent, RequestID: a.RequestID}
		_, err := s.present(r, cred, scope, perm, &a, src)
		return err
	}
	return r.WithContext(context.WithValue(r.Context(), recheckKey{}, check))
}

// recheck reports whether the credential behind r still holds: a
// long-lived answer ends when its token is revoked, suspended or expires,
// or its dashboard session ends.
func recheck(r *http.Request) error {
	if f, ok := r.Context().Value(recheckKey{}).(func(*http.Request) error); ok {
		return f(r)
	}
	return nil
}

// authenticate verifies the bearer token for an admin call. Refusals are
// recorded in the audit log (admin_auth); successful reads are not, so
// that following the log does not fill it.
func (s *Server) authenticate(r *http.Request, scope string, a *latchkey.Actor, src netip.Addr) (latchkey.Decision, error) {
	return s.present(r, bearerCredential, scope, "", a, src)
}

// authenticateToken is authenticate for a token from anywhere (a bearer
// header, a dashboard session). failuresOnly leaves successes out of the
// audit log.
func (s *Server) authenticateToken(r *http.Request, tok, scope string, a *latchkey.Actor, src netip.Addr, failuresOnly bool) (latchkey.Decision, error) {
	return s.authenticateFor(r, tok, scope, "", a, src, failuresOnly)
}

// authenticateFor is authenticateToken for a credential bound to a
// resource: an OAuth client's secret, bound to the token endpoint.
func (s *Server) authenticateFor(r *http.Request, tok, scope, resource string, a *latchkey.Actor, src netip.Addr, failuresOnly bool) (latchkey.Decision, error) {
	return s.authenticateAs(r, tok, scope, "", resource, a, src, failuresOnly)
}

// authenticateAs is authenticateFor with a permission that a keyspace's
// admin scope satisfies too (VerifyRequest.Permission).
func (s *Server) authenticateAs(r *http.Request, tok, scope, perm, resource string, a *latchkey.Actor, src netip.Addr, failuresOnly bool) (latchkey.Decision, error) {
	var scopes []string
	if scope != "" {
		scopes = []string{scope}
	}
	d, err := s.Verifier.Verify(r.Context(), &latchkey.VerifyRequest{
		Token: tok, Scopes: scopes, ClientIP: a.ClientIP, UserAgent: a.UserAgent,
		Method: r.Method, Path: r.URL.Path, RequestID: a.RequestID, // the audit writer redacts it
		Action: latchkey.ActionAdminAuth, AuditFailuresOnly: failuresOnly, APICall: true, Source: src, Resource: resource,
		Permission: perm,
	})
	if err != nil {
		return d, latchkey.Errorf(latchkey.EUnavailable, "cannot verify credentials right now")
	}
	switch d.Code {
	case latchkey.Valid:
		return d, nil
	case latchkey.InsufficientScope:
		if perm != "" {
			alts := strings.Split(perm, "|")
			return d, latchkey.Errorf(latchkey.EPermissionDenied, "this token lacks the scope latchkey:%s (or a keyspace's, latchkey:keyspaces.<name>:%s)",
				strings.Join(alts, " or latchkey:"), alts[0])
		}
		return d, latchkey.Errorf(latchkey.EPermissionDenied, "this token lacks the scope %s", scope)
	case latchkey.IPNotAllowed:
		return d, latchkey.Errorf(latchkey.EPermissionDenied, "this token may not be used from this address")
	case latchkey.UsageExceeded:
		return d, latchkey.Errorf(latchkey.EPermissionDenied, "this token's usage limit is spent")
	case latchkey.RateLimited:
		return d, &rateLimited{retryAfter: d.Rate.RetryAfter}
	case latchkey.Blocked:
		return d, latchkey.Errorf(latchkey.EPermissionDenied, "requests from this address are blocked for now after repeated failures")
	}
	return d, latchkey.Errorf(latchkey.EUnauthenticated, "invalid credentials")
}

// rateLimited is a 429 with a Retry-After header.
type rateLimited struct{ retryAfter time.Duration }

func (e *rateLimited) Error() string { return "rate limited" }

func (e *rateLimited) Unwrap() error {
	return latchkey.Errorf(latchkey.EResourceExhausted, "this token's rate limit is exhausted; retry in %s", strconv.FormatInt(edge.RetryAfter(e.retryAfter), 10)+"s")
}

// presentsSelf reports whether the bearer token's id is the {id} of the
// path: the token acting on itself. The id is read without verifying;
// authentication follows.
func presentsSelf(r *http.Request) bool {
	tok, ok := edge.Bearer(r)
	if !ok {
		return false
	}
	parts, err := secret.Parse(tok)
	return err == nil && parts.ID == r.PathValue("id")
}

type ctxKey struct{}

// reqInfo is what the API works out about a request once, as it arrives:
// its id and its client's address.
type reqInfo struct {
	id   string
	addr edge.Addr
}

func info(r *http.Request) *reqInfo {
	in, _ := r.Context().Value(ctxKey{}).(*reqInfo)
	return in
}

func requestID(r *http.Request) string {
	if in := info(r); in != nil {
		return in.id
	}
	return ""
}

// middleware assigns a request id, logs each request (method, path and
// status; never the query string or headers, where credentials travel),
// and turns a panic into a 500 without logging the panic's value.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := edge.RequestID(r.Header) // the caller's when plain and not token-shaped
		w.Header().Set("X-Request-Id", id)
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, &reqInfo{id: id, addr: s.clientAddr(r)}))
		sw := &edge.StatusWriter{ResponseWriter: w}
		if !strings.HasPrefix(r.URL.Path, "/v1/forward-auth") && !cleanPath(r.URL.Path) {
			// ServeMux would redirect to the cleaned path; like the doors, the
			// API refuses instead. (Forward auth checks its own, and records
			// the refusal.)
			s.writeError(sw, r, latchkey.Errorf(latchkey.EInvalid, "the path is not canonical: no empty, . or .. segments"))
			return
		}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				// The value may hold request data; its type is enough to debug.
				s.logger().Error("panic serving request", "method", r.Method, "path", secret.Redact(r.URL.Path),
					"request_id", id, "panic_type", fmt.Sprintf("%T", p))
				if sw.Status == 0 {
					s.writeError(sw, r, latchkey.Errorf(latchkey.EInternal, "internal error"))
				}
			}
			if l := s.logger(); l.Enabled(r.Context(), slog.LevelDebug) { // skip the redaction scan otherwise
				l.Debug("request", "method", r.Method, "path", secret.Redact(r.URL.Path), "status", sw.Status,
					"duration", time.Since(start), "request_id", id, "remote", edge.RemoteHost(r))
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

func (s *Server) forwardAuth(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	if s.ForwardAuth == nil {
		return latchkey.Errorf(latchkey.ENotFound, "forward auth is not enabled")
	}
	s.ForwardAuth.ServeHTTP(w, r)
	return nil
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	if s.JWKS == nil {
		return latchkey.Errorf(latchkey.ENotFound, "identity signing is not enabled")
	}
	s.JWKS.ServeHTTP(w, r)
	return nil
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	if s.Metrics == nil {
		return latchkey.Errorf(latchkey.ENotFound, "metrics are not enabled")
	}
	s.Metrics.ServeHTTP(w, r)
	return nil
}

// openAPI serves docs/openapi.json, the description of this API.
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(docs.OpenAPI)
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	if s.draining.Load() {
		return latchkey.Errorf(latchkey.EUnavailable, "shutting down")
	}
	if s.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.Ready(ctx); err != nil {
			s.logger().Warn("not ready", "err", err)
			return latchkey.Errorf(latchkey.EUnavailable, "store unreachable")
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

// clientAddr is the end client's address (edge.ClientAddr, through the
// trusted proxies), worked out once per request.
func (s *Server) clientAddr(r *http.Request) edge.Addr {
	if in := info(r); in != nil {
		return in.addr
	}
	return edge.ClientAddr(r, s.TrustedProxies)
}

// cleanPath reports whether p is what ServeMux would route without a
// redirect: rooted, with no empty, "." or ".." segments (a trailing slash
// is kept).
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}
