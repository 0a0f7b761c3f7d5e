package gateway_test

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/gateway"
	"github.com/latchkeyhq/latchkey/identity"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/verify"
)

// stubTransport answers every request at once, in memory: the benchmarks
// below measure the proxy's own work, not the network's.
type stubTransport struct{}

func (stubTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(`{"ok":true}`)), ContentLength: 11, Request: r}, nil
}

// BenchmarkProxyWork compares the in-process cost of one proxied request
// through a bare ReverseProxy and through the gateway (token check,
// identity headers, JWT from cache; no audit log).
func BenchmarkProxyWork(b *testing.B) {
	ctx := context.Background()
	db, _ := sqlite.Open(ctx, filepath.Join(b.TempDir(), "m.db"))
	defer db.Close()
	key := make([]byte, 32)
	rand.Read(key)
	h, _ := secret.NewHasher(key)
	v := verify.New(db, h, nil, verify.Config{})
	defer v.Close(ctx)
	signer, _ := identity.NewSigner(key, 0, 0)
	table, _ := gateway.ParseConfig([]byte("routes:\n  - name: a\n    path: /v1\n    upstream: http://upstream.invalid\n    scopes: [\"a:read\"]\n"))
	gw := gateway.New(&gateway.Authorizer{Verifier: v, Refuser: v, Signer: signer, TrustedProxies: latchkey.LoopbackProxies}, table, nil)
	gateway.SetTransport(gw, stubTransport{})
	svc := &tokens.Service{Store: db, Hasher: h, Invalidate: v.Invalidate}
	_, pt, _ := svc.Create(ctx, latchkey.Actor{}, client.CreateRequest{Scopes: []string{"a:read"}})
	up, _ := url.Parse("http://upstream.invalid")
	bare := &httputil.ReverseProxy{Transport: stubTransport{}, Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(up); pr.SetXForwarded() }}
	for _, c := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"gateway", gw}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("GET", "http://api.example.com/v1/invoices/7", nil)
				req.RemoteAddr = "203.0.113.7:5555"
				req.Header.Set("Authorization", "Bearer "+pt.Reveal())
				req.Header.Set("User-Agent", "bench")
				w := httptest.NewRecorder()
				c.h.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatal(w.Code, w.Body.String())
				}
			}
		})
	}
}
