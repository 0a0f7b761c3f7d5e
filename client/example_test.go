package client_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/internal/demo"
)

// Issue a token for a service, verify it for a scope, and revoke it. The
// examples run against a whole latchkey server started in process (in
// your code, BaseURL is your server and Token an admin token, e.g. from
// LATCHKEY_TOKEN).
func Example() {
	srv, err := demo.Start()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	ctx := context.Background()
	c := &client.Client{BaseURL: srv.URL, Token: srv.Root}

	tok, err := c.CreateToken(ctx, client.CreateRequest{Subject: "svc-billing", Scopes: []string{"invoices:read"}, TTL: "30d"})
	if err != nil {
		fmt.Println(latchkey.ErrorCode(err), latchkey.ErrorMessage(err))
		return
	}
	res, _ := c.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, Scopes: []string{"invoices:read"}})
	fmt.Println(res.Code, res.Subject)
	c.RevokeToken(ctx, tok.ID, "example done")
	res, _ = c.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext})
	fmt.Println(res.Code)
	// Output:
	// VALID svc-billing
	// REVOKED
}

// Create a token bound to what it needs: a scope, a lifetime, a network
// and a rate. Its plaintext is in the answer once, and never again.
func ExampleClient_CreateToken() {
	srv, _ := demo.Start()
	defer srv.Close()
	c := &client.Client{BaseURL: srv.URL, Token: srv.Root}
	tok, err := c.CreateToken(context.Background(), client.CreateRequest{
		Name: "billing worker", Subject: "svc-billing", Scopes: []string{"invoices:read", "invoices:write"},
		TTL: "90d", AllowedCIDRs: []string{"10.0.0.0/8"}, RateLimit: &client.RateRequest{Limit: 100, Window: "1m"},
	})
	if err != nil {
		fmt.Println(latchkey.ErrorMessage(err))
		return
	}
	fmt.Println(strings.HasPrefix(tok.Plaintext, "lk_"+tok.ID+"_"), tok.Status, strings.Join(tok.Scopes, " "))
	// Output: true active invoices:read invoices:write
}

// Verify a token for the scopes a request needs: a refusal is a code,
// not an error.
func ExampleClient_Verify() {
	srv, _ := demo.Start()
	defer srv.Close()
	ctx := context.Background()
	c := &client.Client{BaseURL: srv.URL, Token: srv.Root}
	tok, _ := c.CreateToken(ctx, client.CreateRequest{Subject: "svc-billing", Scopes: []string{"invoices:read"}})
	for _, scope := range []string{"invoices:read", "invoices:write"} {
		res, err := c.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, Scopes: []string{scope}})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(scope, res.Valid, res.Code)
	}
	res, _ := c.Verify(ctx, client.VerifyRequest{Token: "lk_not_a_token"})
	fmt.Println(res.Code)
	// Output:
	// invoices:read true VALID
	// invoices:write false INSUFFICIENT_SCOPE
	// MALFORMED
}

// Revoke a token for good: every node refuses it at once, and its
// descendants with it.
func ExampleClient_RevokeToken() {
	srv, _ := demo.Start()
	defer srv.Close()
	ctx := context.Background()
	c := &client.Client{BaseURL: srv.URL, Token: srv.Root}
	tok, _ := c.CreateToken(ctx, client.CreateRequest{Subject: "svc-billing", Scopes: []string{"invoices:read"}})
	gone, err := c.RevokeToken(ctx, tok.ID, "key committed to a public repository")
	if err != nil {
		fmt.Println(latchkey.ErrorMessage(err))
		return
	}
	res, _ := c.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext})
	fmt.Println(gone.Status, gone.RevokedReason, res.Code)
	// Output: revoked key committed to a public repository REVOKED
}
