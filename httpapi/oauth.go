package httpapi

import (
	"net/http"
	"strings"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
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

// introspect serves POST /oauth2/introspect. The caller authenticates with
// a latchkey token holding latchkey:verify (or latchkey:admin). Looking a
// token up spends none of its rate or uses.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	tok, err := formToken(w, r)
	if err != nil {
		return err
	}
	d, err := s.Verifier.Verify(r.Context(), &latchkey.VerifyRequest{Token: tok, ClientIP: a.ClientIP, UserAgent: a.UserAgent,
		RequestID: a.RequestID, Action: "introspect", NoSpend: true})
	if err != nil {
		return latchkey.Errorf(latchkey.EUnavailable, "cannot introspect right now")
	}
	w.Header().Set("Cache-Control", "no-store")
	if !d.Valid() {
		writeJSON(w, http.StatusOK, client.Introspection{Active: false})
		return nil
	}
	res := client.Introspection{Active: true, Scope: strings.Join(d.Scopes, " "), ClientID: d.TokenID, Subject: d.Subject,
		IssuedAt: d.CreatedAt.Unix(), JTI: d.TokenID, TokenType: "Bearer"}
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
func (s *Server) oauthRevoke(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	tok, err := formToken(w, r)
	if err != nil {
		return err
	}
	// Unauthenticated: the caller is the one presenting the token, so its
	// failures count toward its block like any other (a flood of forged
	// tokens here would otherwise be free, and fill the audit log).
	src := s.clientAddr(r).Source
	d, err := s.Verifier.Verify(r.Context(), &latchkey.VerifyRequest{Token: tok, ClientIP: a.ClientIP, UserAgent: a.UserAgent,
		RequestID: a.RequestID, Action: "oauth_revoke", NoSpend: true, Source: src})
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
