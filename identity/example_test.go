package identity_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/identity"
	"github.com/latchkeyhq/latchkey/internal/demo"
)

// An upstream service checks the identity JWT the gateway (or forward
// auth) puts in X-Latchkey-Identity, with the keys the latchkey server
// publishes: it learns who is calling without trusting the network in
// between, and without seeing the caller's token.
func ExampleVerifier() {
	srv, _ := demo.Start()
	defer srv.Close()
	admin := &client.Client{BaseURL: srv.URL, Token: srv.Root}
	tok, _ := admin.CreateToken(context.Background(), client.CreateRequest{Subject: "svc-billing", Scopes: []string{"invoices:read"}})

	// What a proxy does: ask forward auth about the request, and pass
	// the identity header on to the upstream.
	req, _ := http.NewRequest("GET", srv.URL+"/v1/forward-auth?scope=invoices:read", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Plaintext)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	jwt := resp.Header.Get(identity.Header)

	// What the upstream does.
	v := &identity.Verifier{JWKSURL: srv.URL + "/.well-known/jwks.json", Audience: "forward-auth"}
	claims, err := v.Verify(context.Background(), jwt)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(claims.Subject, claims.TokenID == tok.ID, claims.Scopes())
	_, err = v.Verify(context.Background(), jwt[:len(jwt)-4]+"AAAA") // a forged signature
	fmt.Println(err)
	// Output:
	// svc-billing true [invoices:read]
	// identity: bad signature
}
