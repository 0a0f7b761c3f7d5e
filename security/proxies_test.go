package security

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/identity"
	"github.com/latchkeyhq/latchkey/secret"
)

// The route file behind the proxies: forward auth answers for what the
// gateway would route, and the snippets' ?scope=invoices:read adds to it.
const proxyRoutes = `
routes:
  - name: projects
    path: /v1/projects/{id}
    methods: [GET]
    upstream: UPSTREAM
    scopes: ["projects.{id}:read"]
  - name: invoices
    path: /invoices
    upstream: UPSTREAM
`

// TestNginxReadmeSnippet runs the README's nginx snippet verbatim (only
// the addresses changed) in front of an upstream and attacks it.
func TestNginxReadmeSnippet(t *testing.T) {
	t.Parallel()
	nginx := requireService(t, "nginx")
	snippet := readmeBlock(t, "nginx", "auth_request")
	attackProxy(t, func(t *testing.T, listen, lk, up string) {
		prefix := t.TempDir()
		os.MkdirAll(filepath.Join(prefix, "tmp"), 0o700)
		conf := fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/tmp;
    proxy_temp_path %[1]s/tmp;
    fastcgi_temp_path %[1]s/tmp;
    uwsgi_temp_path %[1]s/tmp;
    scgi_temp_path %[1]s/tmp;
    upstream backend { server %[2]s; }
    server {
        listen %[3]s;
%[4]s
    }
}
`, prefix, up, listen, strings.ReplaceAll(snippet, "127.0.0.1:7480", lk))
		path := filepath.Join(prefix, "nginx.conf")
		os.WriteFile(path, []byte(conf), 0o600)
		out := start(t, exec.Command(nginx, "-p", prefix, "-c", path, "-e", filepath.Join(prefix, "error.log")))
		waitListening(t, listen, func() string {
			b, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			return out.String() + string(b)
		})
	})
}

// TestCaddyReadmeSnippet does the same with the README's Caddyfile.
func TestCaddyReadmeSnippet(t *testing.T) {
	t.Parallel()
	caddy := requireService(t, "caddy")
	snippet := readmeBlock(t, "caddyfile", "forward_auth")
	attackProxy(t, func(t *testing.T, listen, lk, up string) {
		dir := t.TempDir()
		conf := "{\n\tadmin off\n\tauto_https off\n}\n\n" + strings.NewReplacer(
			"example.com", "http://"+listen, "127.0.0.1:7480", lk, "backend:8080", up).Replace(snippet)
		path := filepath.Join(dir, "Caddyfile")
		os.WriteFile(path, []byte(conf), 0o600)
		cmd := exec.Command(caddy, "run", "--config", path, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		out := start(t, cmd)
		waitListening(t, listen, out.String)
	})
}

// attackProxy starts latchkey (with the route file) and an upstream, has
// startProxy start the proxy in front, and runs every attack through it.
func attackProxy(t *testing.T, startProxy func(t *testing.T, listen, lk, upstream string)) {
	up := &upstream{}
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	lk := startLatchkey(t, proxyRoutes, upSrv.URL)
	c := lk.client(lk.root)
	good, err := c.CreateToken(ctx, client.CreateRequest{Subject: "billing-svc", Scopes: []string{"invoices:read", "projects.42:read"}})
	if err != nil {
		t.Fatal(err)
	}
	limited, _ := c.CreateToken(ctx, client.CreateRequest{Subject: "slow", Scopes: []string{"invoices:read"}, RateLimit: &client.RateRequest{Limit: 1, Window: "1m"}})
	weak, _ := c.CreateToken(ctx, client.CreateRequest{Subject: "other", Scopes: []string{"reports:read"}})
	proxy := freeAddr(t)
	startProxy(t, proxy, lk.api, strings.TrimPrefix(upSrv.URL, "http://"))

	send := func(method, path, tok string, hdr ...string) (int, http.Header) {
		t.Helper()
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, path, proxy)
		if tok != "" {
			fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", tok)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
		}
		b.WriteString("\r\n")
		code, h, _ := raw(t, proxy, b.String())
		return code, h
	}

	// Allowed: the identity reaches the upstream, the credential does not.
	if code, _ := send("GET", "/invoices/7", good.Plaintext, "X-API-Key", "some-client-key"); code != 200 || len(up.reqs) == 0 {
		t.Fatalf("allowed request: HTTP %d\n%s", code, lk.out.String())
	}
	seen := up.take()
	if len(seen) != 1 {
		t.Fatalf("the upstream saw %d requests", len(seen))
	}
	h := seen[0].Header
	if h.Get("X-Latchkey-Token-Id") != good.ID || h.Get("X-Latchkey-Subject") != "billing-svc" || h.Get("Authorization") != "" || h.Get("X-Api-Key") != "" {
		t.Errorf("at the upstream: %v", h)
	}
	v := &identity.Verifier{JWKSURL: "http://" + lk.api + "/.well-known/jwks.json", Audience: "invoices"}
	if cl, err := v.Verify(ctx, h.Get("X-Latchkey-Identity")); err != nil || cl.TokenID != good.ID {
		t.Errorf("identity JWT at the upstream: %+v %v", cl, err)
	}

	// Spoofed identity headers never reach the upstream as the client
	// wrote them: the request is refused, or latchkey's values replace them.
	send("GET", "/invoices/7", good.Plaintext, "X-Latchkey-Subject", "root", "X-Latchkey-Scopes", "*", "X-Latchkey-Role", "admin",
		"X_Latchkey_Subject", "root", "x_latchkey_scopes", "*")
	for _, r := range up.take() {
		for k, vs := range r.Header {
			n := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
			if strings.HasPrefix(n, "x-latchkey-") && (strings.Contains(strings.Join(vs, ","), "root") || strings.Join(vs, ",") == "*" ||
				n == "x-latchkey-role") {
				t.Errorf("a spoofed identity header reached the upstream: %s: %v", k, vs)
			}
		}
	}

	// Each of these must be refused before the upstream.
	attacks := []struct {
		name, method, path string
		tok                string
		hdr                []string
		want               int // 0: any refusal
	}{
		{"no token", "GET", "/invoices/7", "", nil, 401},
		{"unknown id", "GET", "/invoices/7", forgedWithChecksum(), nil, 401},
		{"missing scope", "GET", "/invoices/7", weak.Plaintext, nil, 403},
		{"forged token", "GET", "/invoices/7", "lk_AAAAAAAAAAAAAAAA_" + strings.Repeat("A", 49), nil, 401},
		{"truncated token", "GET", "/invoices/7", good.Plaintext[:len(good.Plaintext)-3], nil, 401},
		{"not routed", "GET", "/admin/users", good.Plaintext, nil, 403},
		{"method not routed", "DELETE", "/v1/projects/42", good.Plaintext, nil, 403},
		{"spoofed X-Forwarded-Method/-Uri", "DELETE", "/v1/projects/43/x", good.Plaintext,
			[]string{"X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/v1/projects/42/x", "X-Forwarded-Host", "api.example.com"}, 0},
		{"spoofed X-Original-Method/-URI", "DELETE", "/v1/projects/43/x", good.Plaintext,
			[]string{"X-Original-Method", "GET", "X-Original-URI", "/v1/projects/42/x", "X-Original-Host", "api.example.com"}, 0},
		{"dot segments", "GET", "/v1/projects/42/../43/x", good.Plaintext, nil, 0},
		{"encoded dot segments", "GET", "/v1/projects/42/%2e%2e/43/x", good.Plaintext, nil, 0},
		{"mixed-case encoded dots", "GET", "/v1/projects/42/.%2E/43/x", good.Plaintext, nil, 0},
		{"encoded slash", "GET", "/v1/projects/42%2F..%2F43", good.Plaintext, nil, 0},
		{"tomcat ..;", "GET", "/v1/projects/42/..;/43/x", good.Plaintext, nil, 0},
		{"method override", "GET", "/v1/projects/42", good.Plaintext, []string{"X-HTTP-Method-Override", "DELETE"}, 400},
		{"token in the query", "GET", "/invoices/7?access_token=" + good.Plaintext, "", nil, 0},
	}
	for _, a := range attacks {
		code, hdr := send(a.method, a.path, a.tok, a.hdr...)
		if code < 400 || (a.want != 0 && code != a.want) {
			t.Errorf("%s: HTTP %d, want %v", a.name, code, map[bool]any{true: "a refusal", false: a.want}[a.want == 0])
		}
		if code == 401 && hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", a.name)
		}
		for _, r := range up.take() {
			t.Errorf("%s: the upstream received %s %s", a.name, r.Method, r.URL.RequestURI())
		}
	}

	// A rate-limited token: its 429 reaches the client as 429, with
	// Retry-After.
	if code, _ := send("GET", "/invoices/1", limited.Plaintext); code != 200 {
		t.Fatalf("within the rate: %d", code)
	}
	code, hdr := send("GET", "/invoices/2", limited.Plaintext)
	if ra, err := strconv.Atoi(hdr.Get("Retry-After")); code != 429 || err != nil || ra < 1 {
		t.Errorf("over the rate: HTTP %d, Retry-After %q", code, hdr.Get("Retry-After"))
	}
	up.take()

	// A revocation holds at once.
	if _, err := c.RevokeToken(ctx, good.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if code, _ := send("GET", "/invoices/7", good.Plaintext); code != 401 {
		t.Errorf("right after a revoke: HTTP %d", code)
	}
	if n := len(up.take()); n != 0 {
		t.Errorf("the upstream saw %d requests after the revocation", n)
	}

	// Every attempt is on record with the end client's address, the
	// refusals before a decision included.
	page, err := c.ListAudit(ctx, latchkey.AuditFilter{Action: "forward_auth", Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]bool{}
	for _, ev := range page.Events {
		reasons[ev.Outcome+"/"+ev.Reason] = true
		if ev.ClientIP != "127.0.0.1" {
			t.Errorf("audit record with client %q: %+v", ev.ClientIP, ev)
		}
	}
	for _, want := range []string{"VALID/", "REVOKED/revoked", "REFUSED/no_credential", "REFUSED/no_route", "RATE_LIMITED/rate_limited", "NOT_FOUND/unknown_id", "MALFORMED/bad_checksum"} {
		if !reasons[want] {
			t.Errorf("no %s record among %v", want, reasons)
		}
	}
}

// forgedWithChecksum is a well-formed token no one issued: it passes the
// offline checks and is refused by lookup.
func forgedWithChecksum() string {
	pt, _, err := secret.Generate("lk", rand.Reader)
	if err != nil {
		panic(err)
	}
	return pt.Reveal()
}
