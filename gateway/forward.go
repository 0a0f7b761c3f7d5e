package gateway

import (
	"net/http"
	"strings"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/secret"
)

// ForwardAuth is the gateway's decision as an endpoint for proxies that
// ask before they forward: nginx auth_request, Traefik ForwardAuth, Caddy
// forward_auth and Envoy ext_authz (HTTP). It answers any method (proxies
// send the original one) with 200 and the identity headers, or 401, 403,
// 429 or 400.
//
// It reads the original request from exactly one family of headers, set
// by the proxy and believed only from a trusted proxy (--trusted-proxy,
// the same rule as X-Forwarded-For):
//
//   - nginx: X-Original-Method, X-Original-URI, X-Original-Host;
//   - Traefik and Caddy: X-Forwarded-Method, X-Forwarded-Uri,
//     X-Forwarded-Host;
//   - Envoy: no header; the original path is appended to the endpoint's
//     (/v1/forward-auth/<path>), with the original method and Host.
//
// A request carrying both families, or one from an untrusted peer, or a
// family without its method or URI, is refused: a client can add headers
// the proxy passes on, and the one the proxy did not set must not be the
// one believed.
//
// Required scopes come from the route the original request matches when
// a route file is loaded, and a request that matches no route (or not
// with its method) is refused, as the gateway would refuse it. ?scope=
// on the endpoint's own URL (repeatable) adds to the route's scopes, and
// is the only source without a route file. In Envoy's form the query is
// the client's own and never names a scope.
type ForwardAuth struct {
	Auth *Authorizer
	// Table, when set, returns the route file in force.
	Table func() *Table
	// TokenHeader is read besides Authorization (default: the route
	// file's token_header).
	TokenHeader string

	Prefix string // the endpoint's path, default /v1/forward-auth
}

// The header families of the proxies forward auth serves.
var (
	nginxFamily     = [3]string{"X-Original-Method", "X-Original-Uri", "X-Original-Host"}
	forwardedFamily = [3]string{"X-Forwarded-Method", "X-Forwarded-Uri", "X-Forwarded-Host"}
)

// original is the request the proxy asks about.
type original struct {
	method, host string
	escapedPath  string
	rawQuery     string
	envoy        bool // the path came appended to the endpoint's
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
	ca := edge.ClientAddr(r, f.Auth.TrustedProxies)
	vr := latchkey.VerifyRequest{ClientIP: ca.IP, Source: ca.Source, Method: r.Method, Path: r.URL.Path, UserAgent: r.UserAgent(),
		RequestID: edge.PlainRequestID(r.Header), Action: "forward_auth"}
	acc := edge.AccessOf(r.Context())
	acc.At("", ca.IP)
	refuse := func(reason, body string) {
		// nginx's auth_request passes only 2xx, 401 and 403 on; the
		// README's snippet turns its 500 back into this 400.
		f.Auth.Refuse(r.Context(), w, &vr, reason, http.StatusBadRequest, body)
	}
	th := f.TokenHeader
	if th == "" && table != nil {
		th = table.TokenHeader
	}
	for k := range r.Header {
		if edge.IsIdentityHeader(k, "") {
			// The proxy forwards the client's headers here; this one would
			// reach the upstream as latchkey's word unless the proxy strips
			// it, so the request is refused whatever the proxy does.
			refuse(edge.ReasonIdentityHeader, edge.AnswerIdentityHeader)
			return
		}
	}
	o, reason, msg := f.original(r, prefix, table != nil)
	if reason != "" {
		refuse(reason, msg)
		return
	}
	vr.Method = o.method
	tg, reason, answer := edge.CheckTarget(o.escapedPath, o.host, r.Header, o.rawQuery, r.URL.RawQuery)
	if tg.Path != "" {
		vr.Path = tg.Path
	}
	if reason != "" {
		refuse(reason, answer)
		return
	}
	q := r.URL.Query() // parsed once: scope=, keyspace=, resource=
	var scopes []string
	if !o.envoy {
		scopes = q["scope"]
		for _, sc := range scopes {
			if latchkey.ValidateScope(sc) != nil || secret.LooksLikeToken(sc) {
				refuse(edge.ReasonBadScope, `{"error":"invalid_request","error_description":"a scope= parameter is not a valid scope"}`)
				return
			}
		}
	}
	aud := "forward-auth"
	if table != nil {
		m, ok := table.Lookup(tg.Host, o.method, tg.Path)
		var rs []string
		if ok {
			rs, ok = m.Scopes()
		}
		if !ok {
			// The gateway would not route it: nothing is allowed through.
			vr.Scopes = scopes
			f.Auth.refused(r.Context(), &vr, edge.ReasonNoRoute)
			edge.Deny(w, latchkey.Decision{Code: latchkey.Forbidden}, nil)
			return
		}
		scopes, aud = append(rs, scopes...), m.Route.Name
		acc.At(m.Route.Name, "")
		vr.Resource, vr.Keyspace = m.Route.Resource, m.Route.Keyspace
	}
	if ks := q.Get("keyspace"); ks != "" && !o.envoy && vr.Keyspace == "" {
		// Like scope=, set by the proxy's configuration, never the client.
		if latchkey.ValidateName("keyspace", ks) != nil {
			refuse(edge.ReasonBadKeyspace, `{"error":"invalid_request","error_description":"the keyspace= parameter is not a keyspace name"}`)
			return
		}
		vr.Keyspace = ks
	}
	if res := q.Get("resource"); res != "" && !o.envoy && vr.Resource == "" {
		// Like scope=, set by the proxy's configuration, never the client.
		if latchkey.ValidateResource(res) != nil {
			refuse(edge.ReasonBadResource, `{"error":"invalid_request","error_description":"the resource= parameter is not an absolute URL"}`)
			return
		}
		vr.Resource = res
	}
	vr.Scopes = scopes
	token, present := edge.Credential(r, th)
	if !present {
		f.Auth.refused(r.Context(), &vr, edge.ReasonNoCredential)
		edge.Challenge(w)
		return
	}
	vr.Token = token
	d, err := f.Auth.Check(r.Context(), &vr)
	if err != nil || !d.Valid() {
		edge.Deny(w, d, err)
		return
	}
	f.Auth.Identify(w.Header(), d, aud, "")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// original reads the request the proxy asks about from one header family,
// or from Envoy's appended path. routed says a route file is loaded: then
// the original request must be described in full (host included), since
// a guess could match a looser route.
func (f *ForwardAuth) original(r *http.Request, prefix string, routed bool) (o original, reason, msg string) {
	has := func(fam [3]string) bool {
		for _, n := range fam {
			if len(r.Header.Values(n)) > 0 {
				return true
			}
		}
		return false
	}
	nginx, fwd := has(nginxFamily), has(forwardedFamily)
	suffix, envoy := strings.CutPrefix(r.URL.EscapedPath(), prefix)
	envoy = envoy && suffix != "" && suffix != "/"
	const (
		errAmbiguous = `{"error":"invalid_request","error_description":"the original request is described twice (X-Original-* and X-Forwarded-*, or headers with an appended path): have the proxy set one family and clear the other"}`
		errUntrusted = `{"error":"invalid_request","error_description":"original-request headers are believed only from a trusted proxy (--trusted-proxy)"}`
		errMissing   = `{"error":"invalid_request","error_description":"the original request is not described: the proxy must send its method and URI (X-Original-Method and X-Original-URI, or X-Forwarded-Method and X-Forwarded-Uri) and, with a route file, its host"}`
		errDuplicate = `{"error":"invalid_request","error_description":"an original-request header is sent more than once"}`
	)
	switch {
	case nginx && fwd, (nginx || fwd) && envoy:
		return o, edge.ReasonForwardedHeaders, errAmbiguous
	case nginx || fwd:
		if peer := edge.PeerAddr(r); !peer.IsValid() || !f.Auth.TrustedProxies.Trusts(peer) {
			return o, edge.ReasonForwardedHeaders, errUntrusted
		}
		fam := forwardedFamily
		if nginx {
			fam = nginxFamily
		}
		var v [3]string
		for i, n := range fam {
			vs := r.Header.Values(n)
			if len(vs) > 1 {
				return o, edge.ReasonForwardedHeaders, errDuplicate
			}
			if len(vs) == 1 {
				v[i] = vs[0]
			}
		}
		if v[0] == "" || v[1] == "" || (routed && v[2] == "") {
			return o, edge.ReasonForwardedHeaders, errMissing
		}
		o.method, o.host = v[0], v[2]
		if o.host == "" {
			o.host = r.Host
		}
		// The URI as the client sent it (origin form): its path is checked
		// escaped, as CanonicalPath wants it.
		if !strings.HasPrefix(v[1], "/") {
			return o, edge.ReasonNonCanonical, edge.AnswerNonCanonical
		}
		o.escapedPath, o.rawQuery, _ = strings.Cut(v[1], "?")
	case envoy:
		o.method, o.host, o.envoy = r.Method, r.Host, true
		o.escapedPath, o.rawQuery = suffix, r.URL.RawQuery
	default:
		if routed {
			return o, edge.ReasonForwardedHeaders, errMissing
		}
		// No route file: authentication (and ?scope=) only.
		o.method, o.host, o.escapedPath = r.Method, r.Host, "/"
	}
	return o, "", ""
}
