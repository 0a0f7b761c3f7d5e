package gateway

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/latchkeyhq/latchkey"
)

// ForwardAuth is the gateway's decision as an endpoint for proxies that
// ask before they forward: nginx auth_request, Traefik ForwardAuth, Caddy
// forward_auth and Envoy ext_authz (HTTP). It answers any method (proxies
// send the original one) with 200 and the identity headers, or 401, 403 or
// 429.
//
// It reads the original request from the headers the proxies send:
// X-Forwarded-Method (or X-Original-Method), X-Forwarded-Uri (or
// X-Original-URI), X-Forwarded-Host and X-Forwarded-For (believed from
// trusted proxies only). Envoy instead appends the original path to the
// endpoint's: /v1/forward-auth/<original path>. Required scopes come from
// ?scope= (repeatable) or, when a route file is loaded, from the route the
// original request matches.
type ForwardAuth struct {
	Auth *Authorizer
	// Table, when set, returns the route file in force.
	Table func() *Table
	// TokenHeader is read besides Authorization (default: the route
	// file's token_header).
	TokenHeader string

	Prefix string // the endpoint's path, default /v1/forward-auth
}

func (f *ForwardAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	prefix := f.Prefix
	if prefix == "" {
		prefix = "/v1/forward-auth"
	}
	var table *Table
	if f.Table != nil {
		table = f.Table()
	}
	method := firstHeader(r, "X-Forwarded-Method", "X-Original-Method")
	if method == "" {
		method = r.Method
	}
	uri := firstHeader(r, "X-Forwarded-Uri", "X-Original-URI", "X-Original-Url")
	if uri == "" {
		if rest := strings.TrimPrefix(r.URL.Path, prefix); rest != r.URL.Path && rest != "" {
			uri = rest // Envoy: path_prefix + the original path
			if r.URL.RawQuery != "" && !strings.Contains(r.URL.RawQuery, "scope=") {
				uri += "?" + r.URL.RawQuery
			}
		}
	}
	if uri == "" {
		uri = "/"
	}
	path, rawQuery, _ := strings.Cut(uri, "?")
	if p, err := url.PathUnescape(path); err == nil {
		path = p
	}
	host := firstHeader(r, "X-Forwarded-Host")
	if host == "" {
		host = r.Host
	}
	if TokenInQuery(rawQuery) {
		writeError(w, http.StatusBadRequest, `{"error":"invalid_request","error_description":"credentials in the URL are refused: URLs end up in logs; send Authorization: Bearer <token>"}`)
		return
	}
	scopes := r.URL.Query()["scope"]
	aud := "forward-auth"
	if len(scopes) == 0 && table != nil {
		if m, ok := table.Lookup(host, method, path); ok {
			s, ok := m.Scopes()
			if !ok {
				Deny(w, Outcome{Decision: latchkey.Decision{Code: latchkey.Forbidden}}, false)
				return
			}
			scopes, aud = s, m.Route.Name
		}
	}
	for _, sc := range scopes {
		if latchkey.ValidateScope(sc) != nil {
			writeError(w, http.StatusBadRequest, `{"error":"invalid_request","error_description":"a scope= parameter is not a valid scope"}`)
			return
		}
	}
	th := f.TokenHeader
	if th == "" && table != nil {
		th = table.TokenHeader
	}
	token, present := TokenFrom(r, th)
	if !present {
		Deny(w, Outcome{}, true)
		return
	}
	ip, src := ClientAddr(r, f.Auth.TrustedProxies)
	o := f.Auth.Check(r.Context(), token, scopes, ip, src, method, path, r.UserAgent(), r.Header.Get("X-Request-Id"), "forward_auth")
	if o.Err != nil || !o.Decision.Valid() {
		Deny(w, o, false)
		return
	}
	f.Auth.Identify(w.Header(), o.Decision, aud)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

func firstHeader(r *http.Request, names ...string) string {
	for _, n := range names {
		if v := r.Header.Get(n); v != "" {
			return v
		}
	}
	return ""
}
