package security

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/latchkeyhq/latchkey/client"
	"go.yaml.in/yaml/v3"
)

// clientRequest is what a client sends to the proxy.
type clientRequest struct {
	method, uri string
	hdr         http.Header
}

// TestTraefikReadmeShape sends forward auth exactly what Traefik's
// ForwardAuth sends with the README's settings (every client header, then
// X-Forwarded-* written from the request itself unless trustForwardHeader
// is true), for the attacks a client can make through it.
func TestTraefikReadmeShape(t *testing.T) {
	t.Parallel()
	var conf struct {
		HTTP struct {
			Middlewares map[string]struct {
				ForwardAuth *struct {
					Address             string   `yaml:"address"`
					TrustForwardHeader  bool     `yaml:"trustForwardHeader"`
					AuthResponseHeaders []string `yaml:"authResponseHeaders"`
				} `yaml:"forwardAuth"`
				Headers *struct {
					CustomRequestHeaders map[string]string `yaml:"customRequestHeaders"`
				} `yaml:"headers"`
			} `yaml:"middlewares"`
		} `yaml:"http"`
	}
	if err := yaml.Unmarshal([]byte(readmeBlock(t, "yaml", "forwardAuth:")), &conf); err != nil {
		t.Fatal(err)
	}
	fa := conf.HTTP.Middlewares["latchkey"].ForwardAuth
	strip := conf.HTTP.Middlewares["latchkey-strip-credential"].Headers
	if fa == nil || strip == nil {
		t.Fatalf("the Traefik snippet lacks the latchkey or latchkey-strip-credential middleware: %+v", conf)
	}
	for _, h := range []string{"Authorization", "X-API-Key"} {
		if v, ok := strip.CustomRequestHeaders[h]; !ok || v != "" {
			t.Errorf("the Traefik snippet does not remove %s on the way to the upstream", h)
		}
	}
	addr, _ := url.Parse(fa.Address)
	lk, tok := shapeServer(t)
	traefik := func(c clientRequest) *http.Response {
		u := "http://" + lk.api + addr.RequestURI()
		req, _ := http.NewRequest("GET", u, nil)
		req.Header = c.hdr.Clone() // Traefik passes every client header on
		set := func(k, v string) {
			if !fa.TrustForwardHeader || req.Header.Get(k) == "" {
				req.Header.Set(k, v)
			}
		}
		set("X-Forwarded-Method", c.method)
		set("X-Forwarded-Uri", c.uri)
		set("X-Forwarded-Host", "api.example.com")
		set("X-Forwarded-Proto", "http")
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	shapeAttacks(t, tok, traefik)
	for _, h := range []string{"X-Latchkey-Token-Id", "X-Latchkey-Subject", "X-Latchkey-Scopes", "X-Latchkey-Identity"} {
		if !contains(fa.AuthResponseHeaders, h) {
			t.Errorf("authResponseHeaders lacks %s", h)
		}
	}
}

// TestEnvoyReadmeShape sends forward auth what Envoy's ext_authz sends with
// the README's settings: the original method and Host, path_prefix plus
// the original path and query, and only the allowed client headers.
func TestEnvoyReadmeShape(t *testing.T) {
	t.Parallel()
	type patterns struct {
		Patterns []map[string]string `yaml:"patterns"`
	}
	var top struct {
		Filters *[]struct {
			TypedConfig struct {
				HTTPService struct {
					PathPrefix string `yaml:"path_prefix"`
					Request    struct {
						Allowed patterns `yaml:"allowed_headers"`
					} `yaml:"authorization_request"`
					Response struct {
						Upstream patterns `yaml:"allowed_upstream_headers"`
						Client   patterns `yaml:"allowed_client_headers"`
					} `yaml:"authorization_response"`
				} `yaml:"http_service"`
			} `yaml:"typed_config"`
		} `yaml:"http_filters"`
	}
	if err := yaml.Unmarshal([]byte(readmeBlock(t, "yaml", "ext_authz")), &top); err != nil || top.Filters == nil || len(*top.Filters) == 0 {
		t.Fatalf("the Envoy snippet: %v", err)
	}
	svc := (*top.Filters)[0].TypedConfig.HTTPService
	match := func(p patterns, name string) bool {
		name = strings.ToLower(name)
		for _, m := range p.Patterns {
			if v, ok := m["exact"]; ok && v == name {
				return true
			}
			if v, ok := m["prefix"]; ok && strings.HasPrefix(name, v) {
				return true
			}
		}
		return false
	}
	for _, h := range []string{"Retry-After", "WWW-Authenticate"} {
		if !match(svc.Response.Client, h) {
			t.Errorf("allowed_client_headers lacks %s: a client would not see it", h)
		}
	}
	if !match(svc.Response.Upstream, "x-latchkey-identity") {
		t.Error("allowed_upstream_headers does not pass X-Latchkey-Identity")
	}
	lk, tok := shapeServer(t)
	envoy := func(c clientRequest) *http.Response {
		req, _ := http.NewRequest(c.method, "http://"+lk.api+svc.PathPrefix, nil)
		req.URL.Opaque = svc.PathPrefix + c.uri // the original path as sent, query included
		req.Host = "api.example.com"
		req.Header = http.Header{}
		for k, vs := range c.hdr {
			if match(svc.Request.Allowed, k) {
				req.Header[k] = vs
			}
		}
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	shapeAttacks(t, tok, envoy)
	// The client's query is the client's: it never names a scope.
	if r := envoy(clientRequest{"GET", "/v1/projects/43?scope=projects.42:read", hdr("Authorization", "Bearer "+tok)}); r.StatusCode != 403 {
		t.Errorf("Envoy: ?scope= in the client's query: HTTP %d, want 403", r.StatusCode)
	}
}

// shapeServer is latchkey with the proxies' route file and a token for
// project 42 and invoices.
func shapeServer(t *testing.T) (*server, string) {
	lk := startLatchkey(t, proxyRoutes, "http://127.0.0.1:9")
	tok, err := lk.client(lk.root).CreateToken(ctx, client.CreateRequest{Scopes: []string{"invoices:read", "projects.42:read"}})
	if err != nil {
		t.Fatal(err)
	}
	return lk, tok.Plaintext
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = append(h[kv[i]], kv[i+1]) // as sent: underscores kept
	}
	return h
}

// shapeAttacks runs the client-side attacks through a proxy's shape.
func shapeAttacks(t *testing.T, tok string, via func(clientRequest) *http.Response) {
	t.Helper()
	b := "Bearer " + tok
	if r := via(clientRequest{"GET", "/v1/projects/42/x", hdr("Authorization", b)}); r.StatusCode != 200 {
		t.Fatalf("allowed request: HTTP %d", r.StatusCode)
	}
	for _, a := range []struct {
		name string
		c    clientRequest
	}{
		{"spoofed X-Forwarded-*", clientRequest{"DELETE", "/v1/projects/43/x", hdr("Authorization", b, "X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/v1/projects/42/x")}},
		{"spoofed X-Original-*", clientRequest{"DELETE", "/v1/projects/43/x", hdr("Authorization", b, "X-Original-Method", "GET", "X-Original-Uri", "/v1/projects/42/x", "X-Original-Host", "api.example.com")}},
		{"identity header", clientRequest{"GET", "/v1/projects/42", hdr("Authorization", b, "X-Latchkey-Scopes", "*")}},
		{"identity header, underscores", clientRequest{"GET", "/v1/projects/42", hdr("Authorization", b, "X_Latchkey_Subject", "root")}},
		{"method override", clientRequest{"GET", "/v1/projects/42", hdr("Authorization", b, "X-Http-Method-Override", "DELETE")}},
		{"dot segments", clientRequest{"GET", "/v1/projects/42/../43", hdr("Authorization", b)}},
		{"encoded dot segments", clientRequest{"GET", "/v1/projects/42/%2e%2e/43", hdr("Authorization", b)}},
		{"encoded slash", clientRequest{"GET", "/v1/projects/42%2F..%2F43", hdr("Authorization", b)}},
		{"not routed", clientRequest{"GET", "/admin/users", hdr("Authorization", b)}},
		{"method not routed", clientRequest{"DELETE", "/v1/projects/42", hdr("Authorization", b)}},
	} {
		if r := via(a.c); r.StatusCode != 400 && r.StatusCode != 403 {
			t.Errorf("%s: HTTP %d, want 400 or 403", a.name, r.StatusCode)
		}
	}
}

// noRedirects is a client that, like a proxy asking forward auth, takes
// the answer it gets.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func contains(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}
