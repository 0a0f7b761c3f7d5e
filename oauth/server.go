// Package oauth is latchkey's OAuth 2.1 authorization server (docs/architecture.md
// §10): the door through which agents and apps obtain latchkey tokens the
// standard way.
//
//   - Metadata (RFC 8414) at /.well-known/oauth-authorization-server and
//     /.well-known/openid-configuration.
//   - Clients register themselves (RFC 7591, open or gated by an initial
//     access token) or are described by a Client ID Metadata Document
//     (a client_id that is an HTTPS URL), fetched with size and time
//     limits and never from a private address.
//   - Authorization code with PKCE (S256 only): the person consents in the
//     dashboard, signed in with their own latchkey token, and the access
//     token is a token derived from theirs: never broader, revoked with
//     it, bound to the resource (RFC 8707) and short-lived. Refresh tokens
//     are latchkey tokens too, replaced on every use; a reused one revokes
//     the whole grant, as does a reused code.
//   - Client credentials for machine clients, whose client secret is a
//     latchkey token; token exchange (RFC 8693) for delegation to a
//     sub-agent, with the act chain in the child's metadata.
//
// Every request to the token endpoint, every consent, denial and
// registration is on record. The package holds no token state of its
// own: clients, pending requests, codes and grants are store settings,
// so every node sharing the store serves every step.
package oauth

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/secret"
)

// Endpoint paths, under the issuer.
const (
	PathAuthorize      = "/oauth2/authorize"
	PathToken          = "/oauth2/token"
	PathRegister       = "/oauth2/register"
	PathIntrospect     = "/oauth2/introspect"
	PathRevoke         = "/oauth2/revoke"
	PathMetadata       = "/.well-known/oauth-authorization-server"
	PathOpenIDMetadata = "/.well-known/openid-configuration"
	// ConsentPage is the dashboard's consent view; the request id follows.
	ConsentPage = "/ui/#/consent/"
)

// Defaults for the zero fields of Server.
const (
	DefaultAccessTTL    = time.Hour
	DefaultMaxAccessTTL = 24 * time.Hour
	DefaultRefreshTTL   = 30 * 24 * time.Hour
	DefaultCodeTTL      = 60 * time.Second
	DefaultRequestTTL   = 10 * time.Minute
	DefaultMaxClients   = 1000
)

// Registration modes (Server.Registration).
const (
	RegistrationOpen  = "open"  // anyone may register a client
	RegistrationToken = "token" // only with an initial access token holding latchkey:oauth:register
	RegistrationOff   = "off"   // only metadata-document clients and token clients
)

// Grant types.
const (
	GrantCode          = "authorization_code"
	GrantRefresh       = "refresh_token"
	GrantClientCreds   = "client_credentials"
	GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeAccess    = "urn:ietf:params:oauth:token-type:access_token"
)

// Tokens is the token service the server issues and revokes through
// (*tokens.Service).
type Tokens interface {
	Create(ctx context.Context, a latchkey.Actor, req client.CreateRequest) (*latchkey.Token, secret.Plaintext, error)
	Derive(ctx context.Context, a latchkey.Actor, parentID string, req client.CreateRequest) (*latchkey.Token, secret.Plaintext, error)
	Get(ctx context.Context, id string) (*latchkey.Token, error)
	Revoke(ctx context.Context, a latchkey.Actor, id, reason string) (*latchkey.Token, error)
	RevokeMatching(ctx context.Context, a latchkey.Actor, sel latchkey.TokenSelector, reason string, opt latchkey.BulkOptions) (client.RevocationResult, error)
}

// Store keeps clients, pending requests, codes and grants (latchkey.Store
// satisfies it).
type Store interface {
	GetSetting(ctx context.Context, key string) (string, bool, error)
	PutSetting(ctx context.Context, key, value string) error
	PutSettingIfAbsent(ctx context.Context, key, value string) (string, error)
	SettingsWithPrefix(ctx context.Context, prefix string) (map[string]string, error)
	DeleteSetting(ctx context.Context, key string) error
}

// Recorder takes audit records, in order per key (audit.Pipeline).
type Recorder interface {
	RecordOn(key uint64, fill func(ev *latchkey.AuditEvent))
}

// Server is the authorization server. Issuer, Verifier, Tokens, Store and
// Audit are required; every other zero field works.
type Server struct {
	// Issuer is the server's issuer identifier (RFC 8414 §2): an https
	// URL (http only on loopback) with no path, query or fragment. The
	// endpoints live under it.
	Issuer         *url.URL
	Verifier       latchkey.Verifier
	Tokens         Tokens
	Store          Store
	Audit          Recorder
	TrustedProxies latchkey.TrustedProxies
	Log            *slog.Logger
	Node           string

	// Resources lists the resources tokens may be issued for (RFC 8707
	// resource indicators, e.g. the MCP gateway's server URLs). A request
	// naming any other is refused with invalid_target.
	Resources func() []string
	// ScopesSupported is published in the metadata.
	ScopesSupported func() []string
	// Registration is RegistrationOpen (default), RegistrationToken or
	// RegistrationOff.
	Registration string
	// MaxClients caps registered clients (default DefaultMaxClients).
	MaxClients int
	// AccessTTL is an access token's lifetime (default 1 h), MaxAccessTTL
	// its cap (default 24 h), RefreshTTL a refresh token's (default 30 d;
	// never past the consenting token's expiry).
	AccessTTL, MaxAccessTTL, RefreshTTL time.Duration
	// CodeTTL bounds an authorization code's life (default 60 s);
	// RequestTTL a request waiting for consent (default 10 min).
	CodeTTL, RequestTTL time.Duration
	// Metadata fetches Client ID Metadata Documents (default: a fetcher
	// that refuses private addresses).
	Metadata *Fetcher
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Rand is the source of codes and ids (default crypto/rand).
	Rand func(b []byte)
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) random(n int) string {
	b := make([]byte, n)
	if s.Rand != nil {
		s.Rand(b)
	} else {
		rand.Read(b)
	}
	return b64(b)
}

func durOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (s *Server) accessTTL() time.Duration {
	return min(durOr(s.AccessTTL, DefaultAccessTTL), durOr(s.MaxAccessTTL, DefaultMaxAccessTTL))
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// url is the issuer's URL of path.
func (s *Server) url(path string) string { return s.Issuer.String() + path }

// refreshAudience is what a refresh token is bound to: the token
// endpoint. No door serves it, so a refresh token opens nothing but
// another refresh.
func (s *Server) refreshAudience() string { return s.url(PathToken) }

// TokenEndpoint is the token endpoint's URL: the audience of refresh
// tokens and client secrets.
func (s *Server) TokenEndpoint() string { return s.refreshAudience() }

// CheckIssuer validates an issuer URL (RFC 8414 §2).
func CheckIssuer(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "":
		return nil, errors.New("the issuer must be an absolute URL, e.g. https://auth.example.com")
	case u.Scheme != "https" && !(u.Scheme == "http" && loopbackHost(u.Hostname())):
		return nil, errors.New("the issuer must be an https URL (http only on a loopback address)")
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "", u.User != nil:
		return nil, errors.New("the issuer must have no path, query, fragment or user information")
	}
	u.Path = ""
	return u, nil
}

// Paths lists the paths Handler serves, for the API's router.
func Paths() []string {
	return []string{PathMetadata, PathOpenIDMetadata, PathAuthorize, PathToken, PathRegister}
}

// Handler serves the metadata, authorization, token and registration
// endpoints. (Introspection and revocation are the API's.)
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathMetadata, s.serveMetadata)
	mux.HandleFunc("GET "+PathOpenIDMetadata, s.serveMetadata)
	mux.HandleFunc("GET "+PathAuthorize, s.authorize)
	mux.HandleFunc("POST "+PathAuthorize, s.authorize)
	mux.HandleFunc("POST "+PathToken, s.token)
	mux.HandleFunc("POST "+PathRegister, s.register)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &Error{Code: "invalid_request", Description: "method " + r.Method + " is not allowed here", Status: http.StatusMethodNotAllowed})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, r)
	})
}

// Metadata is the RFC 8414 document.
type Metadata struct {
	Issuer                            string   `json:"issuer"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	RegistrationEndpoint              string   `json:"registration_endpoint,omitempty"`
	IntrospectionEndpoint             string   `json:"introspection_endpoint"`
	RevocationEndpoint                string   `json:"revocation_endpoint"`
	ScopesSupported                   []string `json:"scopes_supported"`
	ResponseTypesSupported            []string `json:"response_types_supported"`
	ResponseModesSupported            []string `json:"response_modes_supported"`
	GrantTypesSupported               []string `json:"grant_types_supported"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthMethods  []string `json:"introspection_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethods     []string `json:"revocation_endpoint_auth_methods_supported"`
	CodeChallengeMethodsSupported     []string `json:"code_challenge_methods_supported"`
	AuthorizationResponseIssParameter bool     `json:"authorization_response_iss_parameter_supported"`
	ClientIDMetadataDocumentSupported bool     `json:"client_id_metadata_document_supported"`
	RequestURIParameterSupported      bool     `json:"request_uri_parameter_supported"`
}

// Meta returns the server's metadata.
func (s *Server) Meta() Metadata {
	basic := []string{"client_secret_basic", "client_secret_post"}
	m := Metadata{
		Issuer:                            s.Issuer.String(),
		AuthorizationEndpoint:             s.url(PathAuthorize),
		TokenEndpoint:                     s.url(PathToken),
		IntrospectionEndpoint:             s.url(PathIntrospect),
		RevocationEndpoint:                s.url(PathRevoke),
		ScopesSupported:                   []string{},
		ResponseTypesSupported:            []string{"code"},
		ResponseModesSupported:            []string{"query"},
		GrantTypesSupported:               []string{GrantCode, GrantRefresh, GrantClientCreds, GrantTokenExchange},
		TokenEndpointAuthMethodsSupported: []string{"none", "client_secret_basic", "client_secret_post"},
		IntrospectionEndpointAuthMethods:  basic,
		RevocationEndpointAuthMethods:     append([]string{"none"}, basic...),
		CodeChallengeMethodsSupported:     []string{"S256"},
		AuthorizationResponseIssParameter: true,
		ClientIDMetadataDocumentSupported: true,
	}
	if s.Registration != RegistrationOff {
		m.RegistrationEndpoint = s.url(PathRegister)
	}
	if s.ScopesSupported != nil {
		m.ScopesSupported = append(m.ScopesSupported, s.ScopesSupported()...)
	}
	return m
}

func (s *Server) serveMetadata(w http.ResponseWriter, r *http.Request) {
	b, _ := json.Marshal(s.Meta())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(b)
}

// Error is an error answer of RFC 6749 §5.2 (and §4.1.2.1 for the
// authorization endpoint).
type Error struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
	Status      int    `json:"-"`
	// Basic: the client tried HTTP Basic; a 401 names that scheme.
	Basic bool `json:"-"`
}

func (e *Error) Error() string { return "oauth: " + e.Code + ": " + e.Description }

func oerr(code, format string, args ...any) *Error {
	e := &Error{Code: code, Description: format, Status: http.StatusBadRequest}
	if len(args) > 0 {
		// A description may quote input, and input may hold a token.
		e.Description = secret.Redact(fmt.Sprintf(format, args...))
	}
	switch code {
	case "invalid_client":
		e.Status = http.StatusUnauthorized
	case "server_error":
		e.Status = http.StatusInternalServerError
	case "temporarily_unavailable":
		e.Status = http.StatusServiceUnavailable
	}
	return e
}

// asError turns any error into an *Error: ours as they are, the token
// service's by their code, anything else a server_error (detail logged).
func (s *Server) asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch latchkey.ErrorCode(err) {
	case latchkey.EUnavailable:
		return oerr("temporarily_unavailable", "the store is unavailable; try again shortly")
	case latchkey.EInvalid, latchkey.EPermissionDenied, latchkey.EConflict, latchkey.ENotFound:
		return oerr("invalid_grant", "%s", latchkey.ErrorMessage(err))
	}
	s.log().Error("oauth: internal error", "err", err)
	return oerr("server_error", "internal error")
}

// WriteError answers e in the form of RFC 6749 §5.2.
func writeError(w http.ResponseWriter, e *Error) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if e.Status == http.StatusUnauthorized {
		if e.Basic {
			h.Set("WWW-Authenticate", `Basic realm="latchkey"`)
		} else {
			h.Set("WWW-Authenticate", `Bearer realm="latchkey"`)
		}
	}
	if e.Status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(e.Status)
	b, _ := json.Marshal(e)
	w.Write(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, oerr("server_error", "internal error"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

var recordSeed = maphash.MakeSeed()

// record writes one audit record; key orders the records of one client.
func (s *Server) record(r *http.Request, clientID string, fill func(ev *latchkey.AuditEvent)) {
	if s.Audit == nil {
		return
	}
	t := s.now()
	var ip, ua, rid, path, method string
	if r != nil {
		ip = edge.ClientAddr(r, s.TrustedProxies).IP
		ua, rid, path, method = secret.Redact(edge.Clip(r.UserAgent(), 512)), edge.RequestID(r.Header), secret.Redact(r.URL.Path), r.Method
	}
	s.Audit.RecordOn(maphash.String(recordSeed, clientID), func(ev *latchkey.AuditEvent) {
		ev.Time, ev.Node, ev.ClientIP, ev.UserAgent, ev.RequestID = t, s.Node, ip, ua, rid
		ev.Method, ev.Path = method, path
		fill(ev)
	})
}

// detail renders an audit detail object.
func detail(kv ...any) json.RawMessage {
	m := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		switch x := v.(type) {
		case string:
			if x == "" {
				continue
			}
			v = secret.Redact(x)
		case []string:
			if len(x) == 0 {
				continue
			}
			r := make([]string, len(x))
			for j := range x {
				r[j] = secret.Redact(x[j])
			}
			v = r
		}
		m[kv[i].(string)] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// loopbackHost reports whether host names the loopback interface.
func loopbackHost(host string) bool {
	host = strings.Trim(host, "[]")
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}
