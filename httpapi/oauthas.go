package httpapi

import (
	"context"
	"net/http"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

// OAuthServer is the OAuth authorization server (package oauth) as the
// API serves it: its own endpoints, the dashboard's consent page, and
// the administration of its clients.
type OAuthServer interface {
	// Handler serves the metadata, authorize, token and register
	// endpoints (the routes marked OAuth).
	Handler() http.Handler
	// Request and Decide are the consent page's: the person signed in
	// with token a sees a pending request and answers it.
	Request(ctx context.Context, a latchkey.Actor, id string) (client.OAuthRequest, error)
	Decide(ctx context.Context, a latchkey.Actor, id string, d client.OAuthDecision) (client.OAuthDecided, error)
	Clients(ctx context.Context) ([]client.OAuthClient, error)
	RevokeClient(ctx context.Context, a latchkey.Actor, id string) (client.OAuthClient, int, error)
	// TokenEndpoint is the resource a registered client's secret is
	// bound to: its URL.
	TokenEndpoint() string
}

var errNoOAuth = latchkey.Errorf(latchkey.ENotFound, "the OAuth authorization server is not enabled on this server (serve --oauth-issuer)")

// oauthHandler answers the authorization server's own endpoints.
func (s *Server) oauthHandler() http.Handler {
	if s.OAuth != nil {
		return s.OAuth.Handler()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.writeError(w, r, errNoOAuth) })
}

// consentRequest serves GET /ui/api/oauth/requests/{id}.
func (s *Server) consentRequest(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	if s.OAuth == nil {
		return errNoOAuth
	}
	req, err := s.OAuth.Request(r.Context(), a, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

// consentDecide serves POST /ui/api/oauth/requests/{id}: approve (with
// the scopes kept) or deny.
func (s *Server) consentDecide(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	if s.OAuth == nil {
		return errNoOAuth
	}
	var d client.OAuthDecision
	if err := decode(w, r, &d); err != nil {
		return err
	}
	out, err := s.OAuth.Decide(r.Context(), a, r.PathValue("id"), d)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// listOAuthClients serves GET /v1/oauth/clients.
func (s *Server) listOAuthClients(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	if err := onlyParams(r.URL.Query()); err != nil {
		return err
	}
	out := client.OAuthClientList{Clients: []client.OAuthClient{}}
	if s.OAuth != nil {
		cs, err := s.OAuth.Clients(r.Context())
		if err != nil {
			return err
		}
		out.Clients = append(out.Clients, cs...)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// revokeOAuthClient serves POST /v1/oauth/clients/revoke.
func (s *Server) revokeOAuthClient(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	if s.OAuth == nil {
		return errNoOAuth
	}
	var req client.OAuthClientRevoke
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.ClientID == "" {
		return latchkey.Errorf(latchkey.EInvalid, "client_id is required")
	}
	c, n, err := s.OAuth.RevokeClient(r.Context(), a, req.ClientID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, client.OAuthClientRevoked{Client: c, TokensRevoked: n})
	return nil
}
