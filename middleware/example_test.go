package middleware_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/internal/demo"
	"github.com/latchkeyhq/latchkey/middleware"
)

// invoices is the service being protected: it learns who called from the
// request's context.
var invoices = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	id, _ := middleware.FromContext(r.Context())
	fmt.Fprintf(w, "invoices for %s", id.Subject)
})

// get calls url with a bearer token and prints the answer.
func get(url, token string) {
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(b))
}

// A service that asks a latchkey server (POST /v1/verify) about every
// request: the token needs invoices:read; the handler learns who called.
func ExampleRemote() {
	srv, _ := demo.Start() // your latchkey server
	defer srv.Close()
	admin := &client.Client{BaseURL: srv.URL, Token: srv.Root}
	v := middleware.Remote(admin) // the client's token needs latchkey:verify (here: the root token)

	mux := http.NewServeMux()
	mux.Handle("/invoices", middleware.Require(v, "invoices:read")(invoices))
	app := httptest.NewServer(mux)
	defer app.Close()

	reader, _ := admin.CreateToken(context.Background(), client.CreateRequest{Subject: "svc-billing", Scopes: []string{"invoices:read"}})
	writer, _ := admin.CreateToken(context.Background(), client.CreateRequest{Subject: "svc-mailer", Scopes: []string{"mail:send"}})
	get(app.URL+"/invoices", reader.Plaintext)
	get(app.URL+"/invoices", writer.Plaintext)
	get(app.URL+"/invoices", "")
	// Output:
	// 200 invoices for svc-billing
	// 403 {"error":"insufficient_scope"}
	// 401 {"error":"invalid_request"}
}

// A service with latchkey's verifier in its own process: no network hop
// per request.
func ExampleLocal() {
	srv, _ := demo.Start()
	defer srv.Close()
	v := middleware.Local(srv.Verifier)

	app := httptest.NewServer(middleware.Require(v, "invoices:read")(invoices))
	defer app.Close()
	admin := &client.Client{BaseURL: srv.URL, Token: srv.Root}
	tok, _ := admin.CreateToken(context.Background(), client.CreateRequest{Subject: "svc-billing", Scopes: []string{"invoices:*"}})
	get(app.URL, tok.Plaintext)
	admin.RevokeToken(context.Background(), tok.ID, "rotated out")
	get(app.URL, tok.Plaintext)
	// Output:
	// 200 invoices for svc-billing
	// 401 {"error":"invalid_token"}
}
