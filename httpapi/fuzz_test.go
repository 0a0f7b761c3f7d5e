package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/tokens"
)

// newAPI is the real stack behind the handler, with no trusted proxies
// and no expiry policy.
func newAPI(t testing.TB) (http.Handler, string) {
	api, e := wire(t, nil, tokens.Policy{})
	return api.Handler(), e.root
}

// FuzzAPI sends arbitrary methods, paths and bodies with a valid admin
// token: the server never panics or fails internally, and every answer is
// JSON in one of the two shapes.
func FuzzAPI(f *testing.F) {
	h, root := newAPI(f)
	f.Add("POST", "/v1/tokens", `{"name":"a","scopes":["invoices:read"],"ttl":"1h"}`)
	f.Add("POST", "/v1/tokens", `{"scopes":["a:*"],"meta":{"x":[1,{"y":null}]},"tags":["t"]}`)
	f.Add("POST", "/v1/tokens", `{"expires_at":"2030-01-01T00:00:00Z","not_before":"2029-01-01T00:00:00+02:00"}`)
	f.Add("POST", "/v1/verify", `{"token":"lk_x","scopes":["a:b"],"ip":"::1"}`)
	f.Add("GET", "/v1/tokens?status=active&limit=3", ``)
	f.Add("GET", "/v1/audit?since=2020-01-01T00:00:00Z&outcome=VALID", ``)
	f.Add("POST", "/v1/tokens/0123456789ABCDEF/revoke", `{"reason":"x"}`)
	f.Add("DELETE", "/v1/tokens", ``)
	f.Add("POST", "/v1/tokens", `{"scopes":["a:b"],"allowed_cidrs":["10.0.0.0/8","::1"],"allowed_methods":["GET"],"allowed_paths":["/v1/*/x/**"],"rate_limit":{"limit":5,"window":"1m"},"max_uses":3,"idle_timeout":"1h"}`)
	f.Add("POST", "/v1/tokens/0123456789ABCDEF/rotate", `{"grace":"24h"}`)
	f.Add("POST", "/v1/tokens/0123456789ABCDEF/derive", `{"scopes":["a:b"],"ttl":"1h"}`)
	f.Add("POST", "/v1/tokens/0123456789ABCDEF/suspend", `{"reason":"x"}`)
	f.Add("POST", "/v1/tokens/0123456789ABCDEF/resume", ``)
	f.Add("PATCH", "/v1/tokens/0123456789ABCDEF", `{"name":"n","tags":["a"],"scopes":["a:b"],"meta":{}}`)
	f.Add("POST", "/v1/revocations", `{"subject":"alice","reason":"gone"}`)
	f.Add("GET", "/v1/tokens?rotation_due=true&parent=0123456789ABCDEF", ``)
	f.Add("POST", "/v1/verify", `{"token":"lk_x","method":"GET","path":"/a/../b","ip":"10.0.0.1"}`)
	f.Fuzz(func(t *testing.T, method, path, body string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#") || len(method) == 0 || strings.ContainsAny(method, " \r\n\t/") {
			return
		}
		req, err := http.NewRequest(method, "http://x"+path, strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+root)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s %q: status %d: %s", method, path, body, rec.Code, rec.Body)
		}
		if method == "HEAD" || rec.Code/100 == 3 {
			return // no body, or ServeMux's redirect to a cleaned path
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s: response is not JSON: %q", method, path, rec.Body)
		}
		if rec.Code >= 400 {
			var eb client.ErrorBody
			if json.Unmarshal(rec.Body.Bytes(), &eb) != nil || eb.Error.Code == "" || eb.Error.Message == "" {
				t.Fatalf("%s %s: error without the error shape: %s", method, path, rec.Body)
			}
		}
		if bytes.Contains(rec.Body.Bytes(), []byte(root[20:60])) {
			t.Fatalf("the root token's secret appears in a response")
		}
	})
}
