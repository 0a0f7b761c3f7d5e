package middleware_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/httpapi"
	"github.com/latchkeyhq/latchkey/middleware"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/verify"
)

func TestRequire(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := make([]byte, 32)
	rand.Read(key)
	h, _ := secret.NewHasher(key)
	v := verify.New(db, h, nil, verify.Config{})
	defer v.Close(ctx)
	svc := &tokens.Service{Store: db, Hasher: h, Invalidate: v.Invalidate}
	root, _, _ := svc.Bootstrap(ctx)
	_, pt, _ := svc.Create(ctx, latchkey.Actor{}, client.CreateRequest{Subject: "svc-a", Scopes: []string{"invoices:read"}})
	api := httptest.NewServer((&httpapi.Server{Verifier: v, Tokens: svc, Audit: db}).Handler())
	defer api.Close()

	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := middleware.FromContext(r.Context())
		if !ok {
			http.Error(w, "no identity", 500)
			return
		}
		fmt.Fprintf(w, "hello %s (%s)", id.Subject, strings.Join(id.Scopes, ","))
	})
	for name, c := range map[string]middleware.Checker{
		"local":  middleware.Local(v),
		"remote": middleware.Remote(&client.Client{BaseURL: api.URL, Token: root.Reveal()}),
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(middleware.Require(c, "invoices:read")(app))
			defer srv.Close()
			strict := httptest.NewServer(middleware.Require(c, "invoices:write")(app))
			defer strict.Close()
			call := func(url, tok string) (int, string) {
				req, _ := http.NewRequest("GET", url+"/invoices", nil)
				if tok != "" {
					req.Header.Set("Authorization", "Bearer "+tok)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b := make([]byte, 200)
				n, _ := resp.Body.Read(b)
				return resp.StatusCode, string(b[:n])
			}
			if code, body := call(srv.URL, pt.Reveal()); code != 200 || body != "hello svc-a (invoices:read)" {
				t.Errorf("allowed: %d %q", code, body)
			}
			if code, _ := call(srv.URL, ""); code != 401 {
				t.Errorf("no token: %d", code)
			}
			if code, _ := call(srv.URL, "lk_forged"); code != 401 {
				t.Errorf("forged: %d", code)
			}
			if code, _ := call(strict.URL, pt.Reveal()); code != 403 {
				t.Errorf("missing scope: %d", code)
			}
		})
	}
}
