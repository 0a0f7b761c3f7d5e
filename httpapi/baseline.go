package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

// BaselineVerify is the same-work baseline of `latchkey bench
// --scenarios verify-http`: it reads the body and writes the answer with
// the very code POST /v1/verify uses (decodeVerify, writeVerify), and
// decides nothing: no caller token, no verification, no audit record.
// latchkey's throughput over this handler's is what deciding costs. It is
// never mounted by the server.
func BaselineVerify(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") == "" {
		http.Error(w, `{"error":"unauthenticated"}`, http.StatusUnauthorized)
		return
	}
	var req client.VerifyRequest
	if err := decodeVerify(w, r, &req); err != nil || len(req.Token) < 19 {
		http.Error(w, `{"error":"invalid"}`, http.StatusBadRequest)
		return
	}
	writeVerify(w, &client.VerifyResponse{Valid: true, Code: latchkey.Valid, TokenID: req.Token[3:19], Scopes: req.Scopes, Meta: json.RawMessage(`{}`)})
}
