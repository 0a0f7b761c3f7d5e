package oauth

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/secret"
)

// Limits on client metadata.
const (
	MaxRegistrationBytes = 16 << 10
	MaxRedirectURIs      = 10
	MaxURILen            = 512
	MaxClientNameLen     = 100
)

// Client kinds (client.OAuthClient.Kind).
const (
	KindRegistered = "registered"
	KindDocument   = "metadata_document"
	// KindToken is a machine client that is a latchkey token: its
	// client_id is the token's id and its secret the token.
	KindToken = "token"
)

const (
	clientKey  = "oauth.client/"
	requestKey = "oauth.request/"
	codeKey    = "oauth.code/"
	usedKey    = "oauth.used/"
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// clientTag marks every token issued to a client, so that revoking the
// client revokes them all (a tag cannot hold a URL: the client id is
// hashed).
func clientTag(clientID string) string {
	h := sha256.Sum256([]byte(clientID))
	return "oauth.client:" + hex.EncodeToString(h[:12])
}

// grantTag marks every token of one grant (one consent, and the tokens
// refreshed from it).
func grantTag(grant string) string { return "oauth.grant:" + grant }

// registration is the RFC 7591 client metadata latchkey reads. Other
// members are ignored, as §2 asks of a server that does not understand
// them.
type registration struct {
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	ClientName              string   `json:"client_name"`
	ClientURI               string   `json:"client_uri"`
	Scope                   string   `json:"scope"`
	// ClientID is only in metadata documents: it must equal their URL.
	ClientID string `json:"client_id"`
}

// check validates the metadata and returns the client it describes.
// document: it is a Client ID Metadata Document (public clients only).
func (m *registration) check(document bool) (client.OAuthClient, *Error) {
	bad := func(format string, args ...any) (client.OAuthClient, *Error) {
		return client.OAuthClient{}, oerr("invalid_client_metadata", format, args...)
	}
	c := client.OAuthClient{ClientName: m.ClientName, ClientURI: m.ClientURI, Scope: m.Scope}
	switch m.TokenEndpointAuthMethod {
	case "":
		// RFC 7591 §2: the default is client_secret_basic; a metadata
		// document describes a public client.
		c.TokenEndpointAuthMethod = "client_secret_basic"
		if document {
			c.TokenEndpointAuthMethod = "none"
		}
	case "none":
		c.TokenEndpointAuthMethod = "none"
	case "client_secret_basic", "client_secret_post":
		if document {
			return bad("a client metadata document describes a public client: token_endpoint_auth_method must be none")
		}
		c.TokenEndpointAuthMethod = m.TokenEndpointAuthMethod
	default:
		return bad("token_endpoint_auth_method %.40q is not supported (none, client_secret_basic, client_secret_post)", m.TokenEndpointAuthMethod)
	}
	c.GrantTypes = []string{GrantCode, GrantRefresh}
	if len(m.GrantTypes) > 0 {
		c.GrantTypes = nil
		for _, g := range m.GrantTypes {
			switch g {
			case GrantCode, GrantRefresh:
				if !slices.Contains(c.GrantTypes, g) {
					c.GrantTypes = append(c.GrantTypes, g)
				}
			case "implicit", "password":
				return bad("grant type %s is not allowed (OAuth 2.1 removed it)", g)
			default:
				return bad("grant type %.60q is not supported for a registered client (authorization_code, refresh_token)", g)
			}
		}
	}
	for _, rt := range m.ResponseTypes {
		if rt != "code" {
			return bad("response type %.40q is not supported: only code", rt)
		}
	}
	if len(m.RedirectURIs) == 0 {
		return client.OAuthClient{}, oerr("invalid_redirect_uri", "redirect_uris is required")
	}
	if len(m.RedirectURIs) > MaxRedirectURIs {
		return client.OAuthClient{}, oerr("invalid_redirect_uri", "at most %d redirect_uris", MaxRedirectURIs)
	}
	for _, u := range m.RedirectURIs {
		if err := checkRedirectURI(u); err != nil {
			return client.OAuthClient{}, oerr("invalid_redirect_uri", "%s", err)
		}
		if !slices.Contains(c.RedirectURIs, u) {
			c.RedirectURIs = append(c.RedirectURIs, u)
		}
	}
	if len(m.ClientName) > MaxClientNameLen || !plainText(m.ClientName) {
		return bad("client_name must be plain text of at most %d bytes", MaxClientNameLen)
	}
	if m.ClientURI != "" {
		if u, err := url.Parse(m.ClientURI); err != nil || len(m.ClientURI) > MaxURILen || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return bad("client_uri must be an http or https URL")
		}
	}
	if len(m.Scope) > 2048 || !plainText(m.Scope) {
		return bad("scope is too long or not plain text")
	}
	for _, f := range []string{m.ClientName, m.ClientURI, m.Scope, strings.Join(m.RedirectURIs, " ")} {
		if secret.LooksLikeToken(f) {
			return bad("client metadata must not contain a token")
		}
	}
	return c, nil
}

func plainText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' || (r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069') {
			return false
		}
	}
	return true
}

// checkRedirectURI applies OAuth 2.1 §2.3.1 and RFC 8252: an absolute
// URI without fragment; https, or http on a loopback address, or a
// private-use scheme (com.example.app:/callback) for native apps.
func checkRedirectURI(raw string) error {
	if len(raw) > MaxURILen {
		return fmt.Errorf("redirect URI is longer than %d bytes", MaxURILen)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs():
		return fmt.Errorf("redirect URI %.80q is not an absolute URI", raw)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return fmt.Errorf("redirect URI %.80q must not have a fragment", raw)
	case u.User != nil:
		return fmt.Errorf("redirect URI %.80q must not hold user information", raw)
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] <= ' ' || raw[i] >= 0x7f {
			return fmt.Errorf("redirect URI %.80q holds a space or a character outside ASCII", raw)
		}
	}
	switch u.Scheme {
	case "https":
		if u.Host == "" {
			return fmt.Errorf("redirect URI %.80q has no host", raw)
		}
	case "http":
		if !loopbackHost(u.Hostname()) {
			return fmt.Errorf("redirect URI %.80q: http is allowed only on a loopback address (127.0.0.1, [::1], localhost)", raw)
		}
	case "javascript", "data", "file", "vbscript", "blob", "about":
		return fmt.Errorf("redirect URI scheme %s is not allowed", u.Scheme)
	default:
		if !strings.Contains(u.Scheme, ".") {
			return fmt.Errorf("redirect URI %.80q: a native app's scheme must be a reversed domain name (com.example.app:/callback)", raw)
		}
	}
	return nil
}

// register serves POST /oauth2/register (RFC 7591).
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	fail := func(e *Error, reason string) {
		s.record(r, "", func(ev *latchkey.AuditEvent) {
			ev.Kind, ev.Action, ev.Outcome, ev.Reason = latchkey.KindAdmin, latchkey.ActionOAuthRegister, latchkey.OutcomeRefused, reason
			ev.Detail = detail("error", e.Code)
		})
		writeError(w, e)
	}
	var actor string
	switch s.Registration {
	case RegistrationOff:
		fail(&Error{Code: "access_denied", Description: "client registration is off on this server", Status: http.StatusForbidden}, "registration_off")
		return
	case RegistrationToken:
		tok, ok := edge.Bearer(r)
		if !ok {
			fail(&Error{Code: "invalid_token", Description: "registration needs an initial access token (Authorization: Bearer) holding " + latchkey.ScopeOAuthRegister, Status: http.StatusUnauthorized}, "no_credential")
			return
		}
		ca := edge.ClientAddr(r, s.TrustedProxies)
		d, err := s.Verifier.Verify(r.Context(), &latchkey.VerifyRequest{Token: tok, Scopes: []string{latchkey.ScopeOAuthRegister},
			ClientIP: ca.IP, Source: ca.Source, UserAgent: r.UserAgent(), RequestID: edge.RequestID(r.Header), Action: "oauth_register", APICall: true})
		if err != nil {
			fail(oerr("temporarily_unavailable", "cannot check the initial access token right now"), "unavailable")
			return
		}
		if !d.Valid() {
			status, code := http.StatusUnauthorized, "invalid_token"
			if d.Found && d.Code == latchkey.InsufficientScope {
				status, code = http.StatusForbidden, "insufficient_scope"
			}
			fail(&Error{Code: code, Description: "the initial access token does not allow registration", Status: status}, "initial_token_"+strings.ToLower(d.Code.String()))
			return
		}
		actor = d.TokenID
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		fail(oerr("invalid_client_metadata", "send the client metadata as application/json"), "bad_request")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRegistrationBytes))
	if err != nil {
		fail(oerr("invalid_client_metadata", "the client metadata is larger than %d bytes", MaxRegistrationBytes), "too_large")
		return
	}
	var m registration
	if err := json.Unmarshal(body, &m); err != nil {
		fail(oerr("invalid_client_metadata", "the client metadata is not a JSON object with the members RFC 7591 defines"), "bad_json")
		return
	}
	c, e := m.check(false)
	if e != nil {
		fail(e, "bad_metadata")
		return
	}
	ctx := r.Context()
	existing, err := s.Store.SettingsWithPrefix(ctx, clientKey)
	if err != nil {
		fail(s.asError(err), "unavailable")
		return
	}
	if len(existing) >= cmp.Or(s.MaxClients, DefaultMaxClients) {
		fail(&Error{Code: "access_denied", Description: "this server already holds its maximum number of clients", Status: http.StatusForbidden}, "too_many_clients")
		return
	}
	c.ClientID = "lkc_" + s.random(16)
	c.Kind, c.CreatedAt = KindRegistered, latchkey.TimeOf(s.now())
	var plain secret.Plaintext
	if c.TokenEndpointAuthMethod != "none" {
		// The client secret is a latchkey token that opens nothing but
		// this server's token endpoint: no scopes, bound to that endpoint.
		meta, _ := json.Marshal(map[string]any{"oauth": map[string]string{"client_id": c.ClientID, "kind": "client_secret"}})
		t, pt, err := s.Tokens.Create(ctx, latchkey.Actor{System: "oauth"}, client.CreateRequest{
			Name: "OAuth client secret", Subject: latchkey.OAuthClientSubject + c.ClientID, Scopes: []string{},
			Tags: []string{clientTag(c.ClientID)}, Meta: meta, Audience: []string{s.refreshAudience()}})
		if err != nil {
			fail(s.asError(err), "secret")
			return
		}
		c.SecretTokenID, plain = t.ID, pt
	}
	if err := s.putClient(ctx, c); err != nil {
		fail(s.asError(err), "unavailable")
		return
	}
	s.record(r, c.ClientID, func(ev *latchkey.AuditEvent) {
		ev.Kind, ev.Action, ev.Outcome, ev.Actor = latchkey.KindAdmin, latchkey.ActionOAuthRegister, latchkey.OutcomeOK, actor
		ev.Detail = detail("client_id", c.ClientID, "client_name", c.ClientName, "redirect_uris", c.RedirectURIs,
			"token_endpoint_auth_method", c.TokenEndpointAuthMethod)
	})
	resp := map[string]any{
		"client_id": c.ClientID, "client_id_issued_at": c.CreatedAt.Unix(), "redirect_uris": c.RedirectURIs,
		"token_endpoint_auth_method": c.TokenEndpointAuthMethod, "grant_types": c.GrantTypes, "response_types": []string{"code"},
	}
	if c.ClientName != "" {
		resp["client_name"] = c.ClientName
	}
	if c.ClientURI != "" {
		resp["client_uri"] = c.ClientURI
	}
	if c.Scope != "" {
		resp["scope"] = c.Scope
	}
	if !plain.IsZero() {
		resp["client_secret"], resp["client_secret_expires_at"] = plain.Reveal(), 0
	}
	writeJSON(w, http.StatusCreated, resp)
}

func (s *Server) putClient(ctx context.Context, c client.OAuthClient) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return s.Store.PutSetting(ctx, clientKey+c.ClientID, string(b))
}

// lookupClient finds a client: registered, or described by the document
// its id names. A revoked client is not found.
func (s *Server) lookupClient(ctx context.Context, id string) (client.OAuthClient, *Error) {
	if id == "" {
		return client.OAuthClient{}, oerr("invalid_client", "client_id is required")
	}
	if len(id) > MaxURILen {
		return client.OAuthClient{}, oerr("invalid_client", "client_id is too long")
	}
	v, ok, err := s.Store.GetSetting(ctx, clientKey+id)
	if err != nil {
		return client.OAuthClient{}, s.asError(err)
	}
	known := ok
	if ok {
		var c client.OAuthClient
		if err := json.Unmarshal([]byte(v), &c); err != nil {
			return client.OAuthClient{}, s.asError(err)
		}
		if !c.RevokedAt.IsZero() {
			return client.OAuthClient{}, oerr("invalid_client", "this client was revoked")
		}
		if c.Kind != KindDocument {
			return c, nil
		}
		// A document client's record only says when it was first seen
		// (and whether it was revoked): its document is fetched again.
	}
	if strings.HasPrefix(id, "https://") {
		c, e := s.fetcher().Client(ctx, id)
		if e != nil {
			return c, e
		}
		if !known { // remember the client (for the list and for revocation), once
			rec := c
			rec.CreatedAt = latchkey.TimeOf(s.now())
			if b, err := json.Marshal(rec); err == nil {
				s.Store.PutSettingIfAbsent(ctx, clientKey+id, string(b))
			}
		}
		return c, nil
	}
	return client.OAuthClient{}, oerr("invalid_client", "unknown client_id")
}

// Clients lists the clients the server knows, registered first.
func (s *Server) Clients(ctx context.Context) ([]client.OAuthClient, error) {
	m, err := s.Store.SettingsWithPrefix(ctx, clientKey)
	if err != nil {
		return nil, err
	}
	out := make([]client.OAuthClient, 0, len(m))
	for _, v := range m {
		var c client.OAuthClient
		if json.Unmarshal([]byte(v), &c) == nil {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ClientID < out[j].ClientID
	})
	return out, nil
}

// RevokeClient revokes a client: it can no longer authorize, exchange
// codes or refresh, and every token issued to it (and its secret) is
// revoked. A metadata-document client is refused from then on.
func (s *Server) RevokeClient(ctx context.Context, a latchkey.Actor, id string) (client.OAuthClient, int, error) {
	v, ok, err := s.Store.GetSetting(ctx, clientKey+id)
	if err != nil {
		return client.OAuthClient{}, 0, err
	}
	if !ok {
		return client.OAuthClient{}, 0, latchkey.Errorf(latchkey.ENotFound, "no client %q", id)
	}
	var c client.OAuthClient
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		return c, 0, err
	}
	if c.RevokedAt.IsZero() {
		c.RevokedAt, c.RevokedBy = latchkey.TimeOf(s.now()), a.TokenID
		if err := s.putClient(ctx, c); err != nil {
			return c, 0, err
		}
	}
	res, err := s.Tokens.RevokeMatching(ctx, latchkey.Actor{System: "oauth"}, latchkey.TokenSelector{Tag: clientTag(id), Descendants: true},
		"OAuth client "+id+" revoked", latchkey.BulkOptions{IncludeSelf: true})
	if err != nil {
		return c, 0, err
	}
	s.record(nil, id, func(ev *latchkey.AuditEvent) {
		ev.Kind, ev.Action, ev.Outcome, ev.Actor = latchkey.KindAdmin, latchkey.ActionOAuthClientRevoke, latchkey.OutcomeOK, a.TokenID
		ev.ClientIP, ev.RequestID = a.ClientIP, a.RequestID
		ev.Detail = detail("client_id", id, "tokens_revoked", res.Revoked)
	})
	return c, res.Revoked, nil
}
