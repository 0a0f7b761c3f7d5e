package client_test

import (
	"context"
	"fmt"
	"os"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

// Issue a token, verify it for a scope, and revoke it.
func Example() {
	ctx := context.Background()
	c := &client.Client{BaseURL: "http://127.0.0.1:7480", Token: os.Getenv("LATCHKEY_TOKEN")}
	tok, err := c.CreateToken(ctx, client.CreateRequest{Subject: "svc-billing", Scopes: []string{"invoices:read"}, TTL: "30d"})
	if err != nil {
		fmt.Println(latchkey.ErrorCode(err), latchkey.ErrorMessage(err))
		return
	}
	res, err := c.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, Scopes: []string{"invoices:read"}})
	if err == nil && res.Valid {
		fmt.Println("valid for", res.Subject)
	}
	_, _ = c.RevokeToken(ctx, tok.ID, "example done")
}
