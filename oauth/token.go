package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/edge"
)

// Revocation reasons the server writes (and reads back: a refresh token
// revoked for refreshReason and presented again is a reuse).
const (
	refreshReason = "OAuth refresh token used (replaced)"
	reuseReason   = "OAuth grant revoked: a code or refresh token was used twice"
)

// grantMeta is what an issued token's metadata says about its grant,
// under "oauth".
type grantMeta struct {
	ClientID  string          `json:"client_id"`
	GrantType string          `json:"grant_type"`
	Grant     string          `json:"grant,omitempty"`
	Kind      string          `json:"kind"` // access_token, refresh_token
	Resources []string        `json:"resources,omitempty"`
	Scopes    []string        `json:"scopes,omitempty"`
	Act       json.RawMessage `json:"act,omitempty"`
}

// caller is the client a token request comes from.
type caller struct {
	id            string
	client        client.OAuthClient // registered or document clients
	token         *latchkey.Decision // token clients: the client's own token
	authenticated bool
}

// tokenResponse is RFC 6749 §5.1 (and RFC 8693 §2.2.1).
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	RefreshToken    string `json:"refresh_token,omitempty"`
	Scope           string `json:"scope"`
}

// outcome is what a token request's record says.
type outcome struct {
	grantType, clientID, tokenID, subject, reason, grant string
	scopes                                               []string
}

// token serves the token endpoint.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	var o outcome
	q, e := params(w, r, "resource", "audience")
	if e == nil {
		o.grantType = q.Get("grant_type")
		var resp tokenResponse
		resp, e = s.grant(r, q, &o)
		if e == nil {
			s.recordToken(r, &o, latchkey.OutcomeOK, "", start)
			w.Header().Set("Pragma", "no-cache")
			writeJSON(w, http.StatusOK, resp)
			return
		}
	}
	if o.reason == "" {
		o.reason = e.Code
	}
	s.recordToken(r, &o, latchkey.OutcomeRefused, e.Code, start)
	writeError(w, e)
}

func (s *Server) recordToken(r *http.Request, o *outcome, result, errCode string, start time.Time) {
	lat := s.now().Sub(start)
	s.record(r, o.clientID, func(ev *latchkey.AuditEvent) {
		ev.Kind, ev.Action, ev.Outcome, ev.Reason = latchkey.KindVerify, latchkey.ActionOAuthToken, result, o.reason
		ev.TokenID, ev.Subject, ev.Scopes, ev.Latency = o.tokenID, o.subject, o.scopes, lat
		ev.Detail = detail("grant_type", edge.Clip(o.grantType, 100), "client_id", o.clientID, "grant", o.grant, "error", errCode)
	})
}

func (s *Server) grant(r *http.Request, q url.Values, o *outcome) (tokenResponse, *Error) {
	var c caller
	_, _, basic := r.BasicAuth()
	// A token exchange needs no client: holding the subject token is the
	// authority, as deriving from it is. A client that does authenticate
	// becomes the actor.
	if o.grantType != GrantTokenExchange || basic || q.Get("client_id") != "" || q.Get("client_secret") != "" {
		var e *Error
		if c, e = s.authClient(r, q); e != nil {
			o.clientID, o.reason = q.Get("client_id"), "client_auth"
			return tokenResponse{}, e
		}
	}
	o.clientID = c.id
	switch o.grantType {
	case GrantCode:
		return s.codeGrant(r, q, c, o)
	case GrantRefresh:
		return s.refreshGrant(r, q, c, o)
	case GrantClientCreds:
		return s.clientCredentials(r, q, c, o)
	case GrantTokenExchange:
		return s.exchange(r, q, c, o)
	case "password", "implicit":
		return tokenResponse{}, oerr("unsupported_grant_type", "the %s grant is not allowed (OAuth 2.1 removed it)", o.grantType)
	case "":
		return tokenResponse{}, oerr("invalid_request", "grant_type is required")
	}
	return tokenResponse{}, oerr("unsupported_grant_type", "grant_type %.80q is not supported", o.grantType)
}

// authClient authenticates the client (RFC 6749 §2.3.1): HTTP Basic, or
// client_id and client_secret in the form, or a public client's
// client_id alone. A client secret is a latchkey token: a registered
// confidential client's, or, for a machine client, any latchkey token,
// whose id is then the client_id.
func (s *Server) authClient(r *http.Request, q url.Values) (caller, *Error) {
	id, sec, basic := r.BasicAuth()
	if basic {
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		sec, err2 = url.QueryUnescape(sec)
		if err1 != nil || err2 != nil {
			return caller{}, &Error{Code: "invalid_client", Description: "the Basic credentials are not form-encoded", Status: http.StatusUnauthorized, Basic: true}
		}
		if q.Get("client_secret") != "" {
			return caller{}, oerr("invalid_request", "use one client authentication method, not two")
		}
		if fid := q.Get("client_id"); fid != "" && fid != id {
			return caller{}, &Error{Code: "invalid_client", Description: "client_id differs from the authenticated client", Status: http.StatusUnauthorized, Basic: true}
		}
	} else {
		id, sec = q.Get("client_id"), q.Get("client_secret")
	}
	c, e := s.authenticateClient(r, id, sec)
	if e != nil {
		e.Basic = basic
	}
	return c, e
}

// authenticateClient checks a client's credentials (secret "" for a
// public client).
func (s *Server) authenticateClient(r *http.Request, id, sec string) (caller, *Error) {
	ctx := r.Context()
	if sec == "" {
		if id == "" {
			return caller{}, oerr("invalid_client", "client authentication is required: client_id (public clients), or client credentials")
		}
		c, e := s.lookupClient(ctx, id)
		if e != nil {
			return caller{}, e
		}
		if c.TokenEndpointAuthMethod != "none" {
			return caller{}, oerr("invalid_client", "this client must authenticate (%s)", c.TokenEndpointAuthMethod)
		}
		return caller{id: id, client: c}, nil
	}
	ca := edge.ClientAddr(r, s.TrustedProxies)
	d, err := s.Verifier.Verify(ctx, &latchkey.VerifyRequest{Token: sec, ClientIP: ca.IP, Source: ca.Source, UserAgent: r.UserAgent(),
		RequestID: edge.RequestID(r.Header), Action: "oauth_client_auth", APICall: true, Resource: s.refreshAudience()})
	if err != nil {
		return caller{}, oerr("temporarily_unavailable", "cannot authenticate the client right now")
	}
	if !d.Valid() {
		return caller{}, oerr("invalid_client", "client authentication failed")
	}
	switch {
	case id == d.TokenID || id == "":
		// A machine client: the secret is its own latchkey token.
		if strings.HasPrefix(d.Subject, latchkey.OAuthClientSubject) {
			return caller{}, oerr("invalid_client", "a registered client's secret authenticates only with its client_id")
		}
		return caller{id: d.TokenID, token: &d, authenticated: true}, nil
	}
	c, e := s.lookupClient(ctx, id)
	if e != nil {
		return caller{}, oerr("invalid_client", "client authentication failed")
	}
	if c.SecretTokenID == "" || subtle.ConstantTimeCompare([]byte(c.SecretTokenID), []byte(d.TokenID)) != 1 {
		return caller{}, oerr("invalid_client", "client authentication failed")
	}
	return caller{id: id, client: c, authenticated: true}, nil
}

// codeGrant redeems an authorization code (RFC 6749 §4.1.3, RFC 7636
// §4.6). A code is good once: a second use fails and revokes what the
// first issued (§4.1.2).
func (s *Server) codeGrant(r *http.Request, q url.Values, c caller, o *outcome) (tokenResponse, *Error) {
	ctx := r.Context()
	if c.token != nil {
		return tokenResponse{}, oerr("unauthorized_client", "a machine client (a token) has no authorization codes")
	}
	code := q.Get("code")
	if code == "" || len(code) > 128 {
		o.reason = "no_code"
		return tokenResponse{}, oerr("invalid_request", "code is required")
	}
	h := codeHash(code)
	var p pending
	ok, err := s.get(ctx, codeKey+h, &p)
	if err != nil {
		return tokenResponse{}, s.asError(err)
	}
	if !ok {
		o.reason = "unknown_code"
		return tokenResponse{}, oerr("invalid_grant", "the code is unknown or expired")
	}
	o.grant = p.Grant
	first, err := s.claim(ctx, "code/"+h)
	if err != nil {
		return tokenResponse{}, s.asError(err)
	}
	if !first {
		o.reason = "code_reused"
		s.revokeGrant(r, p.ClientID, p.Grant, "code")
		return tokenResponse{}, oerr("invalid_grant", "the code was already used; the tokens issued for it are revoked")
	}
	switch {
	case !s.now().Before(p.Expires):
		o.reason = "code_expired"
		return tokenResponse{}, oerr("invalid_grant", "the code has expired (codes last %s)", latchkey.Duration(durOr(s.CodeTTL, DefaultCodeTTL)))
	case p.ClientID != c.id:
		o.reason = "client_mismatch"
		return tokenResponse{}, oerr("invalid_grant", "the code was issued to another client")
	case p.Confidential && !c.authenticated:
		o.reason = "client_auth"
		return tokenResponse{}, oerr("invalid_client", "this client must authenticate")
	case q.Get("redirect_uri") != p.RedirectURI:
		o.reason = "redirect_uri_mismatch"
		return tokenResponse{}, oerr("invalid_grant", "redirect_uri differs from the authorization request's")
	}
	v := q.Get("code_verifier")
	if v == "" {
		o.reason = "no_verifier"
		return tokenResponse{}, oerr("invalid_grant", "code_verifier is required (PKCE)")
	}
	if len(v) < 43 || len(v) > 128 || !unreserved(v) {
		o.reason = "bad_verifier"
		return tokenResponse{}, oerr("invalid_grant", "code_verifier must be 43 to 128 unreserved characters (RFC 7636 §4.1)")
	}
	sum := sha256.Sum256([]byte(v))
	if subtle.ConstantTimeCompare([]byte(b64(sum[:])), []byte(p.Challenge)) != 1 {
		o.reason = "pkce_mismatch"
		return tokenResponse{}, oerr("invalid_grant", "code_verifier does not match the code_challenge")
	}
	resources, e := s.resources(q["resource"], p.Resources)
	if e != nil {
		o.reason = "resource_mismatch"
		return tokenResponse{}, e
	}
	m := grantMeta{ClientID: p.ClientID, GrantType: GrantCode, Grant: p.Grant, Resources: resources, Scopes: p.Granted}
	return s.issuePair(r, p.Parent, m, o)
}

// issuePair issues an access token and a refresh token for grant m, both
// derived from the consenting token parent.
func (s *Server) issuePair(r *http.Request, parent string, m grantMeta, o *outcome) (tokenResponse, *Error) {
	ctx := r.Context()
	access, e := s.issue(ctx, parent, m, "access_token", m.Resources, s.accessTTL())
	if e != nil {
		o.reason = "derive"
		return tokenResponse{}, e
	}
	refresh, e := s.issue(ctx, parent, m, "refresh_token", []string{s.refreshAudience()}, durOr(s.RefreshTTL, DefaultRefreshTTL))
	if e != nil {
		o.reason = "derive"
		s.Tokens.Revoke(ctx, latchkey.Actor{System: "oauth"}, access.tokenID, "OAuth grant could not be completed")
		return tokenResponse{}, e
	}
	o.tokenID, o.subject, o.scopes = access.tokenID, access.subject, access.scopes
	return tokenResponse{AccessToken: access.plain, TokenType: "Bearer", ExpiresIn: access.expiresIn,
		RefreshToken: refresh.plain, Scope: strings.Join(access.scopes, " ")}, nil
}

type issued struct {
	plain, tokenID, subject string
	scopes                  []string
	expiresIn               int64
}

// issue derives one token from parent for grant m: its scopes m.Scopes
// (cut to what the parent holds now), its audience, its lifetime ttl (and
// never past the parent's).
func (s *Server) issue(ctx context.Context, parent string, m grantMeta, kind string, audience []string, ttl time.Duration) (issued, *Error) {
	p, err := s.Tokens.Get(ctx, parent)
	if err != nil {
		if latchkey.ErrorCode(err) == latchkey.ENotFound {
			return issued{}, oerr("invalid_grant", "the token that consented is gone")
		}
		return issued{}, s.asError(err)
	}
	scopes := delegable(latchkey.IntersectScopes(m.Scopes, p.Scopes))
	if len(scopes) == 0 {
		return issued{}, oerr("invalid_scope", "the delegating token holds none of the granted scopes")
	}
	now := s.now()
	exp := latchkey.TimeOf(now.Add(ttl))
	if !p.ExpiresAt.IsZero() && p.ExpiresAt.Before(exp) {
		exp = p.ExpiresAt
	}
	m.Kind = kind
	meta, err := json.Marshal(map[string]any{"oauth": m})
	if err != nil {
		return issued{}, s.asError(err)
	}
	tags := []string{clientTag(m.ClientID)}
	if m.Grant != "" {
		tags = append(tags, grantTag(m.Grant))
	}
	name := "OAuth " + strings.ReplaceAll(kind, "_", " ") + " for " + edge.Clip(nameOf(m.ClientID), 80)
	t, pt, err := s.Tokens.Derive(ctx, latchkey.Actor{TokenID: parent, Scopes: p.Scopes}, parent, client.CreateRequest{
		Name: name, Scopes: scopes, ExpiresAt: &exp, Tags: tags, Meta: meta, Audience: audience})
	if err != nil {
		return issued{}, s.asError(err)
	}
	in := issued{plain: pt.Reveal(), tokenID: t.ID, subject: t.Subject, scopes: t.Scopes}
	if !t.ExpiresAt.IsZero() {
		in.expiresIn = max(1, int64(t.ExpiresAt.Sub(now)/time.Second))
	}
	return in, nil
}

func nameOf(clientID string) string {
	if u, err := url.Parse(clientID); err == nil && u.Host != "" {
		return u.Host
	}
	return clientID
}

// revokeGrant revokes every token of a grant, on a second use of its
// code or of a replaced refresh token.
func (s *Server) revokeGrant(r *http.Request, clientID, grant, what string) {
	if grant == "" {
		return
	}
	res, err := s.Tokens.RevokeMatching(r.Context(), latchkey.Actor{System: "oauth"}, latchkey.TokenSelector{Tag: grantTag(grant), Descendants: true},
		reuseReason, latchkey.BulkOptions{IncludeSelf: true})
	if err != nil {
		s.log().Error("oauth: revoking a reused grant failed", "grant", grant, "err", err)
	}
	s.record(r, clientID, func(ev *latchkey.AuditEvent) {
		ev.Kind, ev.Action, ev.Outcome, ev.Reason = latchkey.KindDetect, latchkey.ActionOAuthReuse, latchkey.OutcomeOK, what+"_reused"
		ev.Detail = detail("client_id", clientID, "grant", grant, "tokens_revoked", res.Revoked)
	})
}

// readMeta reads an issued token's grant metadata.
func readMeta(t *latchkey.Token) (grantMeta, bool) {
	var m struct {
		OAuth *grantMeta `json:"oauth"`
	}
	if json.Unmarshal(t.Meta, &m) != nil || m.OAuth == nil {
		return grantMeta{}, false
	}
	return *m.OAuth, true
}

// refreshGrant replaces a refresh token with a new one and a new access
// token (RFC 6749 §6; OAuth 2.1 §4.3.1: refresh tokens of public clients
// are rotated). A replaced refresh token presented again revokes the
// whole grant.
func (s *Server) refreshGrant(r *http.Request, q url.Values, c caller, o *outcome) (tokenResponse, *Error) {
	ctx := r.Context()
	rt := q.Get("refresh_token")
	if rt == "" {
		o.reason = "no_refresh_token"
		return tokenResponse{}, oerr("invalid_request", "refresh_token is required")
	}
	ca := edge.ClientAddr(r, s.TrustedProxies)
	d, err := s.Verifier.Verify(ctx, &latchkey.VerifyRequest{Token: rt, ClientIP: ca.IP, Source: ca.Source, UserAgent: r.UserAgent(),
		RequestID: edge.RequestID(r.Header), Action: "oauth_refresh", Resource: s.refreshAudience(), NoSpend: true, AnyKeyspace: true})
	if err != nil {
		return tokenResponse{}, oerr("temporarily_unavailable", "cannot check the refresh token right now")
	}
	if !d.Found {
		o.reason = "unknown_refresh_token"
		return tokenResponse{}, oerr("invalid_grant", "the refresh token is not valid")
	}
	o.tokenID, o.subject = d.TokenID, d.Subject
	t, err := s.Tokens.Get(ctx, d.TokenID)
	if err != nil {
		return tokenResponse{}, s.asError(err)
	}
	m, ok := readMeta(t)
	if !ok || m.Kind != "refresh_token" {
		o.reason = "not_a_refresh_token"
		return tokenResponse{}, oerr("invalid_grant", "the refresh token is not valid")
	}
	o.grant = m.Grant
	if m.ClientID != c.id {
		o.reason = "client_mismatch"
		return tokenResponse{}, oerr("invalid_grant", "the refresh token was issued to another client")
	}
	if d.Code == latchkey.Revoked && t.RevokedReason == refreshReason {
		o.reason = "refresh_reused"
		s.revokeGrant(r, m.ClientID, m.Grant, "refresh_token")
		return tokenResponse{}, oerr("invalid_grant", "the refresh token was already used; every token of this grant is now revoked")
	}
	if !d.Valid() {
		o.reason = "refresh_" + strings.ToLower(d.Code.String())
		return tokenResponse{}, oerr("invalid_grant", "the refresh token is not valid")
	}
	// Narrowing on refresh is allowed (§6), widening is not.
	if sc := strings.Fields(q.Get("scope")); len(sc) > 0 {
		for _, x := range sc {
			if !latchkey.ScopesCover(m.Scopes, x) {
				o.reason = "scope_widened"
				return tokenResponse{}, oerr("invalid_scope", "scope %q was not part of the grant", x)
			}
		}
		m.Scopes = sc
	}
	resources, e := s.resources(q["resource"], m.Resources)
	if e != nil {
		o.reason = "resource_mismatch"
		return tokenResponse{}, e
	}
	// Spend the refresh token first: of two concurrent refreshes, only
	// one revokes it; the other is a reuse.
	if _, err := s.Tokens.Revoke(ctx, latchkey.Actor{System: "oauth"}, t.ID, refreshReason); err != nil {
		if latchkey.ErrorCode(err) == latchkey.EConflict {
			o.reason = "refresh_reused"
			s.revokeGrant(r, m.ClientID, m.Grant, "refresh_token")
			return tokenResponse{}, oerr("invalid_grant", "the refresh token was already used; every token of this grant is now revoked")
		}
		return tokenResponse{}, s.asError(err)
	}
	m.Resources = resources
	return s.issuePair(r, t.ParentID, m, o)
}

// clientCredentials issues a machine client (a latchkey token) a
// short-lived child of itself for one resource (RFC 6749 §4.4).
func (s *Server) clientCredentials(r *http.Request, q url.Values, c caller, o *outcome) (tokenResponse, *Error) {
	if c.token == nil {
		o.reason = "not_a_machine_client"
		return tokenResponse{}, oerr("unauthorized_client", "client_credentials is for machine clients: authenticate with a latchkey token as the client secret")
	}
	scopes, resources, rf := s.narrowTo(q, c.token.Scopes, "the client's token")
	if rf != nil {
		o.reason = rf.reason
		return tokenResponse{}, rf.Error
	}
	m := grantMeta{ClientID: c.id, GrantType: GrantClientCreds, Resources: resources, Scopes: scopes}
	in, e := s.issue(r.Context(), c.id, m, "access_token", resources, s.accessTTL())
	if e != nil {
		o.reason = "derive"
		return tokenResponse{}, e
	}
	o.tokenID, o.subject, o.scopes = in.tokenID, in.subject, in.scopes
	return tokenResponse{AccessToken: in.plain, TokenType: "Bearer", ExpiresIn: in.expiresIn, Scope: strings.Join(in.scopes, " ")}, nil
}

// exchange is RFC 8693 token exchange: the holder of a latchkey token
// (subject_token) gets a narrower child of it for a resource, to hand to
// a sub-agent. The acting party (actor_token, or else the authenticated
// client) is recorded in the child's metadata as an act chain, the
// subject token's own chain nested inside.
func (s *Server) exchange(r *http.Request, q url.Values, c caller, o *outcome) (tokenResponse, *Error) {
	ctx := r.Context()
	if tt := q.Get("subject_token_type"); tt != TokenTypeAccess {
		o.reason = "token_type"
		return tokenResponse{}, oerr("invalid_request", "subject_token_type must be %s", TokenTypeAccess)
	}
	if rt := q.Get("requested_token_type"); rt != "" && rt != TokenTypeAccess {
		o.reason = "token_type"
		return tokenResponse{}, oerr("invalid_request", "requested_token_type must be %s", TokenTypeAccess)
	}
	if len(q["audience"]) > 0 {
		o.reason = "audience"
		return tokenResponse{}, oerr("invalid_target", "name the target with resource (an absolute URL), not audience")
	}
	subj, e := s.presented(r, q.Get("subject_token"), "subject_token")
	if e != nil {
		o.reason = "subject_token"
		return tokenResponse{}, e
	}
	o.subject = subj.Subject
	parent, err := s.Tokens.Get(ctx, subj.TokenID)
	if err != nil {
		return tokenResponse{}, s.asError(err)
	}
	pm, _ := readMeta(parent)
	if pm.Kind == "refresh_token" {
		o.reason = "subject_is_refresh"
		return tokenResponse{}, oerr("invalid_grant", "a refresh token cannot be exchanged")
	}
	act := map[string]any{}
	if at := q.Get("actor_token"); at != "" {
		if q.Get("actor_token_type") != TokenTypeAccess {
			o.reason = "token_type"
			return tokenResponse{}, oerr("invalid_request", "actor_token_type must be %s", TokenTypeAccess)
		}
		actor, e := s.presented(r, at, "actor_token")
		if e != nil {
			o.reason = "actor_token"
			return tokenResponse{}, e
		}
		act["sub"], act["token_id"] = actor.Subject, actor.TokenID
	} else if c.id != "" {
		act["sub"], act["client_id"] = "client:"+c.id, c.id
	}
	if len(pm.Act) > 0 {
		act["act"] = pm.Act
	}
	scopes, resources, rf := s.narrowTo(q, subj.Scopes, "the subject token")
	if rf != nil {
		o.reason = rf.reason
		return tokenResponse{}, rf.Error
	}
	m := grantMeta{ClientID: c.id, GrantType: GrantTokenExchange, Resources: resources, Scopes: scopes, Grant: pm.Grant}
	if len(act) > 0 {
		m.Act, _ = json.Marshal(act)
	}
	if m.ClientID == "" {
		m.ClientID = pm.ClientID
	}
	ttl := s.accessTTL()
	in, e := s.issue(ctx, subj.TokenID, m, "access_token", resources, ttl)
	if e != nil {
		o.reason = "derive"
		return tokenResponse{}, e
	}
	o.tokenID, o.scopes = in.tokenID, in.scopes
	return tokenResponse{AccessToken: in.plain, IssuedTokenType: TokenTypeAccess, TokenType: "Bearer", ExpiresIn: in.expiresIn,
		Scope: strings.Join(in.scopes, " ")}, nil
}

// refusal is an error with the reason its record gives.
type refusal struct {
	*Error
	reason string
}

// narrowTo reads the scope and resource parameters of a request for a
// child of a token holding own: the scopes are what was asked (default:
// all of own) cut to own, never latchkey's; the resources are required.
func (s *Server) narrowTo(q url.Values, own []string, holder string) (scopes, resources []string, _ *refusal) {
	scopes = delegable(slices.Clone(own))
	if raw := q.Get("scope"); raw != "" {
		req, e := s.requestedScopes(raw, client.OAuthClient{})
		if e != nil {
			return nil, nil, &refusal{e, "scope"}
		}
		if scopes = latchkey.IntersectScopes(req, scopes); len(scopes) == 0 {
			return nil, nil, &refusal{oerr("invalid_scope", "%s holds none of the requested scopes", holder), "scope"}
		}
	}
	resources, e := s.resources(q["resource"], nil)
	if e != nil {
		return nil, nil, &refusal{e, "resource"}
	}
	return scopes, resources, nil
}

// presented verifies a token presented in a token exchange: it must be
// valid (whatever its audience: narrowing it is the point).
func (s *Server) presented(r *http.Request, tok, name string) (latchkey.Decision, *Error) {
	if tok == "" {
		return latchkey.Decision{}, oerr("invalid_request", "%s is required", name)
	}
	ca := edge.ClientAddr(r, s.TrustedProxies)
	d, err := s.Verifier.Verify(r.Context(), &latchkey.VerifyRequest{Token: tok, ClientIP: ca.IP, Source: ca.Source, UserAgent: r.UserAgent(),
		RequestID: edge.RequestID(r.Header), Action: "oauth_exchange", APICall: true, AnyResource: true})
	if err != nil {
		return d, oerr("temporarily_unavailable", "cannot check the %s right now", name)
	}
	if !d.Valid() {
		return d, oerr("invalid_grant", "the %s is not valid", name)
	}
	return d, nil
}
