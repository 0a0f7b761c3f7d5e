package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/secret"
)

// formToken reads the form-encoded token parameter of RFC 7662 and 7009.
func formToken(w http.ResponseWriter, r *http.Request) (string, error) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		return "", latchkey.Errorf(latchkey.EInvalid, "send the token form-encoded (Content-Type: application/x-www-form-urlencoded), as RFC 7662 and 7009 ask")
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		return "", latchkey.Errorf(latchkey.EInvalid, "the form does not parse")
	}
	if len(r.URL.Query()) > 0 {
		return "", latchkey.Errorf(latchkey.EInvalid, "parameters go in the body, not the URL: URLs end up in logs")
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		return "", latchkey.Errorf(latchkey.EInvalid, "token is required")
	}
	return tok, nil
}

// oauthClientCredential is the credential of the introspection and
// revocation endpoints: a bearer token, or client authentication as RFC
// 7662 and 7009 expect it (RFC 6749 §2.3.1): HTTP Basic
// (client_secret_basic) or client_secret in the form
// (client_secret_post). A client secret is a latchkey token.
func oauthClientCredential(r *http.Request) (string, error) {
	sec, present, err := clientSecret(r)
	if err == nil && !present {
		err = latchkey.Errorf(latchkey.EUnauthenticated, "client authentication is required: HTTP Basic (client_secret_basic), client_secret in the form (client_secret_post), or Authorization: Bearer")
	}
	return sec, err
}

// clientSecret finds the credential a caller of the introspection or
// revocation endpoint sent, if any (present false), and refuses a
// malformed one. It parses the form, bounded.
func clientSecret(r *http.Request) (sec string, present bool, err error) {
	if tok, ok := edge.Bearer(r); ok {
		return tok, true, nil
	}
	if r.Header.Get("Authorization") != "" {
		_, sec, ok := r.BasicAuth()
		if sec, err := url.QueryUnescape(sec); ok && err == nil && sec != "" {
			return sec, true, nil
		}
		return "", true, latchkey.Errorf(latchkey.EUnauthenticated, "the Authorization header is neither Bearer nor form-encoded Basic credentials (RFC 6749 §2.3.1)")
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		r.Body = http.MaxBytesReader(nil, r.Body, MaxBodyBytes)
		if r.ParseForm() == nil && r.PostForm.Has("client_secret") {
			return r.PostForm.Get("client_secret"), true, nil
		}
	}
	return "", false, nil
}

// presentedClient is the client id a caller names (Basic user name, or
// client_id in the form), "" when none.
func presentedClient(r *http.Request) string {
	if id, _, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(id)
		return id
	}
	return r.PostForm.Get("client_id")
}

// clientMatches reports whether a named client id is the authenticated
// token: its own id (a machine client), or the registered client whose
// secret it is.
func clientMatches(id string, d latchkey.Decision) bool {
	return id == "" || id == d.TokenID || d.Subject == latchkey.OAuthClientSubject+id
}

// oauthError renders err in the form of RFC 6749 §5.2, as the
// introspection and revocation endpoints answer.
func (s *Server) oauthError(w http.ResponseWriter, r *http.Request, err error) {
	code, status := "invalid_request", http.StatusBadRequest
	switch latchkey.ErrorCode(err) {
	case latchkey.EUnauthenticated:
		code, status = "invalid_client", http.StatusUnauthorized
		if _, _, basic := r.BasicAuth(); basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="latchkey"`)
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="latchkey"`)
		}
	case latchkey.EPermissionDenied:
		code, status = "unauthorized_client", http.StatusForbidden
	case latchkey.EUnavailable:
		code, status = "temporarily_unavailable", http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "1")
	case latchkey.EResourceExhausted:
		code, status = "temporarily_unavailable", http.StatusTooManyRequests
		var rl *rateLimited
		if errors.As(err, &rl) {
			w.Header().Set("Retry-After", strconv.FormatInt(edge.RetryAfter(rl.retryAfter), 10))
		}
	case latchkey.EInternal:
		s.logger().Error("request failed", "path", r.URL.Path, "request_id", requestID(r), "err", err)
		code, status = "server_error", http.StatusInternalServerError
	case "method_not_allowed", latchkey.ENotFound:
		status = statusOf(latchkey.ErrorCode(err))
	}
	writeJSON(w, status, struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{code, secret.Redact(latchkey.ErrorMessage(err))})
}

// introspect serves POST /oauth2/introspect (RFC 7662). The caller (a
// resource server) authenticates with a latchkey token holding
// latchkey:verify (or latchkey:admin): as a bearer token or as client
// credentials. Looking a token up spends none of its rate or uses.
//
// Two optional parameters tell more about the request the resource
// server is serving: resource (its RFC 8707 resource indicator; a token
// bound to another audience is then inactive) and client_ip (the end
// client's address, checked against the token's allowed networks).
// Without resource, the token's audience is returned in aud, for the
// resource server to check.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	tok, err := formToken(w, r)
	if err != nil {
		return err
	}
	if id := presentedClient(r); id != "" && id != a.TokenID {
		return latchkey.Errorf(latchkey.EUnauthenticated, "client_id is not the authenticated client")
	}
	vr := latchkey.VerifyRequest{Token: tok, ClientIP: a.ClientIP, UserAgent: a.UserAgent,
		RequestID: a.RequestID, Action: "introspect", NoSpend: true, AnyResource: true, AnyKeyspace: true}
	if res := r.PostForm.Get("resource"); res != "" {
		if err := latchkey.ValidateResource(res); err != nil {
			return err
		}
		vr.Resource, vr.AnyResource = res, false
	}
	if ip := r.PostForm.Get("client_ip"); ip != "" {
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			return latchkey.Errorf(latchkey.EInvalid, "client_ip is not an IP address")
		}
		vr.ClientIP = addr.Unmap().String()
	}
	d, err := s.Verifier.Verify(r.Context(), &vr)
	if err != nil {
		return latchkey.Errorf(latchkey.EUnavailable, "cannot introspect right now")
	}
	w.Header().Set("Cache-Control", "no-store")
	if !d.Valid() {
		writeJSON(w, http.StatusOK, client.Introspection{Active: false})
		return nil
	}
	res := client.Introspection{Active: true, Scope: strings.Join(d.Scopes, " "), ClientID: oauthClientOf(d), Subject: d.Subject,
		IssuedAt: d.CreatedAt.Unix(), JTI: d.TokenID, TokenType: "Bearer", Audience: d.Audience}
	if !d.ExpiresAt.IsZero() {
		res.ExpiresAt = d.ExpiresAt.Unix()
	}
	if !d.NotBefore.IsZero() {
		res.NotBefore = d.NotBefore.Unix()
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// oauthRevoke serves POST /oauth2/revoke (RFC 7009). Holding a token is
// the authority to revoke it: the token in the body is checked in full and
// revoked, with everything derived from it. As the RFC asks, the answer is
// 200 whether or not the token was valid, so it tells a guesser nothing.
//
// A client may authenticate (client_secret_basic or client_secret_post):
// then its credential must hold, or nothing is revoked.
func (s *Server) oauthRevoke(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	sec, present, err := clientSecret(r)
	if err != nil {
		return err
	}
	if present {
		// A registered client's secret is bound to the token endpoint.
		var resource string
		if s.OAuth != nil {
			resource = s.OAuth.TokenEndpoint()
		}
		d, err := s.authenticateFor(r, sec, "", resource, &a, s.clientAddr(r).Source, true)
		if err != nil {
			return err
		}
		if !clientMatches(presentedClient(r), d) {
			return latchkey.Errorf(latchkey.EUnauthenticated, "client_id is not the authenticated client")
		}
	}
	tok, err := formToken(w, r)
	if err != nil {
		return err
	}
	// Unauthenticated: the caller is the one presenting the token, so its
	// failures count toward its block like any other (a flood of forged
	// tokens here would otherwise be free, and fill the audit log).
	src := s.clientAddr(r).Source
	d, err := s.Verifier.Verify(r.Context(), &latchkey.VerifyRequest{Token: tok, ClientIP: a.ClientIP, UserAgent: a.UserAgent,
		RequestID: a.RequestID, Action: "oauth_revoke", NoSpend: true, Source: src, AnyKeyspace: true})
	if err != nil {
		return latchkey.Errorf(latchkey.EUnavailable, "cannot revoke right now")
	}
	if d.Found && d.Code != latchkey.Revoked {
		id := strings.Clone(d.TokenID)
		self := latchkey.Actor{TokenID: id, Scopes: d.Scopes, ClientIP: a.ClientIP, UserAgent: a.UserAgent, RequestID: a.RequestID}
		if _, err := s.Tokens.Revoke(r.Context(), self, id, "revoked by its holder (RFC 7009)"); err != nil &&
			latchkey.ErrorCode(err) != latchkey.EConflict {
			return err
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return nil
}

// oauthClientOf is an introspected token's client: the OAuth client it
// was issued to, else the token itself.
func oauthClientOf(d latchkey.Decision) string {
	var m struct {
		OAuth struct {
			ClientID string `json:"client_id"`
		} `json:"oauth"`
	}
	if len(d.Meta) > 2 && json.Unmarshal(d.Meta, &m) == nil && m.OAuth.ClientID != "" {
		return m.OAuth.ClientID
	}
	return d.TokenID
}
