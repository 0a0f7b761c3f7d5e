package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
)

// pending is an authorization request waiting for consent, and then
// (with Parent, Granted and Grant set) the code it became.
type pending struct {
	ID           string    `json:"id"`
	ClientID     string    `json:"client_id"`
	ClientName   string    `json:"client_name,omitempty"`
	ClientURI    string    `json:"client_uri,omitempty"`
	Confidential bool      `json:"confidential,omitempty"`
	RedirectURI  string    `json:"redirect_uri"`
	State        string    `json:"state"`
	Challenge    string    `json:"code_challenge"`
	Scopes       []string  `json:"scopes"`
	Resources    []string  `json:"resources"`
	Expires      time.Time `json:"expires"`

	Parent  string   `json:"parent,omitempty"` // the consenting token
	Granted []string `json:"granted,omitempty"`
	Grant   string   `json:"grant,omitempty"`
}

// params reads a request's parameters: the query of a GET, the form of
// a POST. A parameter given twice is refused (RFC 6749 §3.1), except
// those in multi (resource, RFC 8707 §2).
func params(w http.ResponseWriter, r *http.Request, multi ...string) (url.Values, *Error) {
	var v url.Values
	if r.Method == http.MethodGet {
		var err error
		if v, err = url.ParseQuery(r.URL.RawQuery); err != nil {
			return nil, oerr("invalid_request", "the query does not parse")
		}
	} else {
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
			return nil, oerr("invalid_request", "send the parameters form-encoded (application/x-www-form-urlencoded)")
		}
		if r.URL.RawQuery != "" {
			return nil, oerr("invalid_request", "parameters go in the body, not the URL: URLs end up in logs")
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			return nil, oerr("invalid_request", "the form does not parse or is larger than 64 KiB")
		}
		v = r.PostForm
	}
	for k, vs := range v {
		if len(vs) > 1 && !slices.Contains(multi, k) {
			return nil, oerr("invalid_request", "parameter %s is given more than once", k)
		}
		if len(vs) > latchkey.MaxAudience {
			return nil, oerr("invalid_request", "parameter %s is given more than %d times", k, latchkey.MaxAudience)
		}
	}
	return v, nil
}

// authorize serves the authorization endpoint (RFC 6749 §4.1.1 with
// OAuth 2.1's rules): it checks the request and sends the browser to the
// dashboard's consent page. Until the client and its redirect URI are
// known good, an error is shown here and never redirected (§4.1.2.1).
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q, e := params(w, r, "resource")
	refuse := func(clientID, reason string, e *Error) {
		s.record(r, clientID, func(ev *latchkey.AuditEvent) {
			ev.Kind, ev.Action, ev.Outcome, ev.Reason = latchkey.KindVerify, latchkey.ActionOAuthAuthorize, latchkey.OutcomeRefused, reason
			ev.Detail = detail("client_id", clientID, "error", e.Code, "error_description", e.Description)
		})
	}
	if e != nil {
		refuse("", "bad_request", e)
		errorPage(w, e)
		return
	}
	ctx := r.Context()
	clientID := q.Get("client_id")
	c, e := s.lookupClient(ctx, clientID)
	if e != nil {
		refuse(clientID, "unknown_client", e)
		errorPage(w, e)
		return
	}
	redirect := q.Get("redirect_uri")
	if redirect == "" || !slices.Contains(c.RedirectURIs, redirect) {
		// Exact string match (OAuth 2.1 §4.1.3): no prefix, no
		// normalisation, no port leniency.
		e := oerr("invalid_request", "redirect_uri is missing or not one this client registered (it must match exactly)")
		refuse(clientID, "redirect_uri_mismatch", e)
		errorPage(w, e)
		return
	}
	state := q.Get("state")
	for _, k := range []string{"state", "scope", "code_challenge"} {
		if secret.LooksLikeToken(q.Get(k)) {
			// It would be stored and shown on the consent page.
			e := oerr("invalid_request", "%s must not contain a latchkey token", k)
			refuse(clientID, "token_in_request", e)
			errorPage(w, e)
			return
		}
	}
	back := func(reason string, e *Error) {
		refuse(clientID, reason, e)
		http.Redirect(w, r, s.answerURL(redirect, url.Values{"error": {e.Code}, "error_description": {e.Description}}, state), http.StatusSeeOther)
	}
	if !slices.Contains(c.GrantTypes, GrantCode) {
		back("grant_type", oerr("unauthorized_client", "this client did not register for the authorization code grant"))
		return
	}
	switch rt := q.Get("response_type"); rt {
	case "code":
	case "token", "id_token", "code token", "code id_token":
		back("response_type", oerr("unsupported_response_type", "only response_type=code: the implicit grant is not allowed"))
		return
	default:
		back("response_type", oerr("unsupported_response_type", "response_type must be code"))
		return
	}
	if state == "" || len(state) > 512 {
		back("no_state", oerr("invalid_request", "state is required (at most 512 bytes): it protects the client from forged answers"))
		return
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case challenge == "":
		back("no_pkce", oerr("invalid_request", "code_challenge is required (PKCE, RFC 7636, with S256)"))
		return
	case method != "S256":
		back("pkce_method", oerr("invalid_request", "code_challenge_method must be S256; plain is not allowed"))
		return
	case len(challenge) != 43 || !unreserved(challenge):
		back("pkce_challenge", oerr("invalid_request", "code_challenge must be the 43-character base64url SHA-256 of the verifier"))
		return
	}
	resources, e := s.resources(q["resource"], nil)
	if e != nil {
		back("resource", e)
		return
	}
	scopes, e := s.requestedScopes(q.Get("scope"), c)
	if e != nil {
		back("scope", e)
		return
	}
	p := pending{ID: s.random(16), ClientID: c.ClientID, ClientName: c.ClientName, ClientURI: c.ClientURI,
		Confidential: c.TokenEndpointAuthMethod != "none", RedirectURI: redirect, State: state, Challenge: challenge,
		Scopes: scopes, Resources: resources, Expires: s.now().Add(durOr(s.RequestTTL, DefaultRequestTTL))}
	if err := s.put(ctx, requestKey+p.ID, p); err != nil {
		back("unavailable", s.asError(err))
		return
	}
	http.Redirect(w, r, s.url(ConsentPage+p.ID), http.StatusSeeOther)
}

// unreserved reports whether s holds only RFC 7636's unreserved
// characters ([A-Za-z0-9-._~]).
func unreserved(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// resources checks RFC 8707 resource parameters: at least one, each a
// resource this server issues tokens for, and (within, when set) among
// those already granted.
func (s *Server) resources(rs []string, within []string) ([]string, *Error) {
	if len(rs) == 0 {
		if within != nil {
			return within, nil
		}
		return nil, oerr("invalid_target", "resource is required (RFC 8707): name the resource server the token is for")
	}
	var known []string
	if s.Resources != nil {
		known = s.Resources()
	}
	var out []string
	for _, res := range rs {
		if err := latchkey.ValidateResource(res); err != nil {
			return nil, oerr("invalid_target", "%s", latchkey.ErrorMessage(err))
		}
		if !slices.Contains(known, res) {
			return nil, oerr("invalid_target", "resource %.100q is not one this server issues tokens for", res)
		}
		if within != nil && !slices.Contains(within, res) {
			return nil, oerr("invalid_target", "resource %.100q was not part of the grant", res)
		}
		if !slices.Contains(out, res) {
			out = append(out, res)
		}
	}
	return out, nil
}

// requestedScopes parses a scope parameter. Empty means what the server
// supports (and the client registered); latchkey's own scopes are never
// delegated.
func (s *Server) requestedScopes(raw string, c client.OAuthClient) ([]string, *Error) {
	scopes := strings.Fields(raw)
	if len(scopes) == 0 {
		if c.Scope != "" {
			scopes = strings.Fields(c.Scope)
		} else if s.ScopesSupported != nil {
			scopes = s.ScopesSupported()
		}
	}
	if len(scopes) == 0 {
		return nil, oerr("invalid_scope", "scope is required")
	}
	if len(scopes) > latchkey.MaxScopes {
		return nil, oerr("invalid_scope", "at most %d scopes", latchkey.MaxScopes)
	}
	var out []string
	for _, sc := range scopes {
		if secret.LooksLikeToken(sc) {
			return nil, oerr("invalid_scope", "scopes must not contain a token")
		}
		if err := latchkey.ValidateScope(sc); err != nil {
			return nil, oerr("invalid_scope", "%s", latchkey.ErrorMessage(err))
		}
		if strings.HasPrefix(sc, latchkey.ReservedPrefix) || sc == "*" {
			return nil, oerr("invalid_scope", "scope %q cannot be delegated: latchkey's own scopes (and *) stay with their holder", sc)
		}
		if c.Scope != "" && !latchkey.ScopesCover(strings.Fields(c.Scope), sc) {
			return nil, oerr("invalid_scope", "scope %q is not among those the client registered", sc)
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}

// answerURL adds the answer's parameters, the state and the issuer (RFC
// 9207) to the client's redirect URI, keeping its own query.
func (s *Server) answerURL(redirect string, v url.Values, state string) string {
	u, err := url.Parse(redirect)
	if err != nil {
		return redirect
	}
	q := u.Query()
	for k, vs := range v {
		q[k] = vs
	}
	if state != "" {
		q.Set("state", state)
	}
	q.Set("iss", s.Issuer.String())
	u.RawQuery = q.Encode()
	return u.String()
}

// errorPage shows an error the authorization endpoint may not redirect.
func errorPage(w http.ResponseWriter, e *Error) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(e.Status)
	w.Write([]byte("<!doctype html><meta charset=utf-8><title>Authorization error</title><h1>This authorization request cannot be served</h1><p><code>" +
		html.EscapeString(e.Code) + "</code>: " + html.EscapeString(e.Description) + "</p><p>Go back to the application and try again.</p>\n"))
}

func (s *Server) put(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.Store.PutSetting(ctx, key, string(b))
}

func (s *Server) get(ctx context.Context, key string, v any) (bool, error) {
	raw, ok, err := s.Store.GetSetting(ctx, key)
	if err != nil || !ok {
		return false, err
	}
	return true, json.Unmarshal([]byte(raw), v)
}

// claim marks key used, once across every node: true for the first
// caller only.
func (s *Server) claim(ctx context.Context, key string) (bool, error) {
	mine := s.random(12)
	got, err := s.Store.PutSettingIfAbsent(ctx, usedKey+key, mine+" "+s.now().UTC().Format(time.RFC3339))
	if err != nil {
		return false, err
	}
	return strings.HasPrefix(got, mine+" "), nil
}

func (s *Server) pendingRequest(ctx context.Context, id string) (pending, error) {
	var p pending
	if id == "" || len(id) > 64 || !unreserved(id) {
		return p, latchkey.Errorf(latchkey.ENotFound, "no such authorization request")
	}
	ok, err := s.get(ctx, requestKey+id, &p)
	if err != nil {
		return p, err
	}
	if !ok || !s.now().Before(p.Expires) {
		return p, latchkey.Errorf(latchkey.ENotFound, "this authorization request is unknown or has expired: start again from the application")
	}
	return p, nil
}

// Request shows a pending request to the person signed in with token a.
func (s *Server) Request(ctx context.Context, a latchkey.Actor, id string) (client.OAuthRequest, error) {
	p, err := s.pendingRequest(ctx, id)
	if err != nil {
		return client.OAuthRequest{}, err
	}
	out := client.OAuthRequest{ID: p.ID, ClientID: p.ClientID, ClientName: p.ClientName, ClientURI: p.ClientURI,
		RedirectURI: p.RedirectURI, Resources: p.Resources, ExpiresAt: p.Expires, AccessTTL: latchkey.Duration(s.accessTTL())}
	for _, sc := range p.Scopes {
		g := delegable(latchkey.IntersectScopes([]string{sc}, a.Scopes))
		out.Scopes = append(out.Scopes, client.OAuthScope{Scope: sc, Held: len(g) > 0, Grants: g})
	}
	return out, nil
}

// delegable drops latchkey's own scopes.
func delegable(scopes []string) []string {
	return slices.DeleteFunc(scopes, func(s string) bool { return strings.HasPrefix(s, latchkey.ReservedPrefix) })
}

// Decide records the person's answer to a pending request and returns
// where their browser goes: the client's redirect URI with a code (valid
// CodeTTL, once) or with access_denied. Approved scopes are the
// intersection of what was asked, what the person kept and what their
// token holds.
func (s *Server) Decide(ctx context.Context, a latchkey.Actor, id string, d client.OAuthDecision) (client.OAuthDecided, error) {
	if a.TokenID == "" {
		return client.OAuthDecided{}, latchkey.Errorf(latchkey.EUnauthenticated, "sign in with your own token to answer")
	}
	p, err := s.pendingRequest(ctx, id)
	if err != nil {
		return client.OAuthDecided{}, err
	}
	var granted []string
	if d.Approve {
		kept := p.Scopes
		if len(d.Scopes) > 0 {
			if len(d.Scopes) > latchkey.MaxScopes {
				return client.OAuthDecided{}, latchkey.Errorf(latchkey.EInvalid, "at most %d scopes", latchkey.MaxScopes)
			}
			for _, sc := range d.Scopes {
				if err := latchkey.ValidateScope(sc); err != nil {
					return client.OAuthDecided{}, err
				}
			}
			kept = latchkey.IntersectScopes(p.Scopes, d.Scopes)
		}
		granted = delegable(latchkey.IntersectScopes(kept, a.Scopes))
		if len(granted) == 0 {
			return client.OAuthDecided{}, latchkey.Errorf(latchkey.EInvalid, "your token holds none of the scopes approved, so there is nothing to delegate: deny the request, or sign in with a token that holds them")
		}
	}
	ok, err := s.claim(ctx, "request/"+p.ID)
	if err != nil {
		return client.OAuthDecided{}, err
	}
	if !ok {
		return client.OAuthDecided{}, latchkey.Errorf(latchkey.EConflict, "this request was already answered")
	}
	s.Store.DeleteSetting(ctx, requestKey+p.ID)
	rec := func(action string, kv ...any) {
		s.record(nil, p.ClientID, func(ev *latchkey.AuditEvent) {
			ev.Kind, ev.Action, ev.Outcome, ev.Actor, ev.TokenID = latchkey.KindAdmin, action, latchkey.OutcomeOK, a.TokenID, a.TokenID
			ev.ClientIP, ev.UserAgent, ev.RequestID = a.ClientIP, a.UserAgent, a.RequestID
			ev.Scopes = granted
			ev.Detail = detail(append([]any{"client_id", p.ClientID, "client_name", p.ClientName, "redirect_uri", p.RedirectURI,
				"resources", p.Resources, "requested", p.Scopes}, kv...)...)
		})
	}
	if !d.Approve {
		rec(latchkey.ActionOAuthDeny)
		return client.OAuthDecided{RedirectTo: s.answerURL(p.RedirectURI, url.Values{"error": {"access_denied"},
			"error_description": {"the person denied the request"}}, p.State)}, nil
	}
	code := s.random(32)
	p.Parent, p.Granted, p.Grant = a.TokenID, granted, s.random(16)
	p.Expires = s.now().Add(durOr(s.CodeTTL, DefaultCodeTTL))
	if err := s.put(ctx, codeKey+codeHash(code), p); err != nil {
		return client.OAuthDecided{}, err
	}
	rec(latchkey.ActionOAuthConsent, "grant", p.Grant)
	return client.OAuthDecided{RedirectTo: s.answerURL(p.RedirectURI, url.Values{"code": {code}}, p.State)}, nil
}

// codeHash is how a code is stored: never in clear.
func codeHash(code string) string {
	h := sha256.Sum256([]byte(code))
	return hex.EncodeToString(h[:])
}

// Prune deletes requests, codes and use marks past their time (codes are
// kept a while after expiry, so a late second use is still known as
// one). It returns how many it deleted.
func (s *Server) Prune(ctx context.Context) (int, error) {
	now := s.now()
	n := 0
	for _, prefix := range []string{requestKey, codeKey} {
		m, err := s.Store.SettingsWithPrefix(ctx, prefix)
		if err != nil {
			return n, err
		}
		for k, v := range m {
			var p pending
			if json.Unmarshal([]byte(v), &p) == nil && now.Sub(p.Expires) < time.Hour {
				continue
			}
			if s.Store.DeleteSetting(ctx, k) == nil {
				n++
			}
		}
	}
	m, err := s.Store.SettingsWithPrefix(ctx, usedKey)
	if err != nil {
		return n, err
	}
	for k, v := range m {
		_, at, _ := strings.Cut(v, " ")
		if t, err := time.Parse(time.RFC3339, at); err == nil && now.Sub(t) < 2*time.Hour {
			continue
		}
		if s.Store.DeleteSetting(ctx, k) == nil {
			n++
		}
	}
	return n, nil
}
