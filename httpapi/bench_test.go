package httpapi_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/tokens"
)

// BenchmarkVerifyHandler: POST /v1/verify through the whole handler stack
// (routing, caller authentication, JSON in and out, the decision, the
// audit record), without a network: what the server adds per request.
func BenchmarkVerifyHandler(b *testing.B) {
	api, e := wire(b, nil, tokens.Policy{})
	h := api.Handler()
	admin := latchkey.Actor{System: "bench", Scopes: []string{latchkey.AdminScope}}
	_, caller, err := api.Tokens.(*tokens.Service).Create(context.Background(), admin, client.CreateRequest{Scopes: []string{latchkey.ScopeVerify}})
	if err != nil {
		b.Fatal(err)
	}
	_, tok, err := api.Tokens.(*tokens.Service).Create(context.Background(), admin, client.CreateRequest{Scopes: []string{"a:b"}})
	if err != nil {
		b.Fatal(err)
	}
	_ = e
	body := fmt.Sprintf(`{"token":%q,"scopes":["a:b"],"ip":"198.51.100.7"}`, tok.Reveal())
	auth := "Bearer " + caller.Reveal()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		req := httptest.NewRequest("POST", "/v1/verify", strings.NewReader(body))
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body.String())
		}
	}
}
