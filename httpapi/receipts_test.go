package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/tokens"
)

// fakeReceipts answers every receipt with two nodes, one of them late.
type fakeReceipts struct{ asked []time.Duration }

func (f *fakeReceipts) Receipt(_ context.Context, timeout time.Duration) (latchkey.Receipt, error) {
	f.asked = append(f.asked, timeout)
	return latchkey.Receipt{Nodes: 3, Confirmed: 2, Missing: []string{"node-c"}, TimedOut: true, TookMS: 12.5, At: time.Now()}, nil
}

// A revocation, a suspension and a bulk revocation asked with wait=all
// answer with their receipt (one node: itself; a cluster: what the nodes
// said), and GET /v1/receipts lists them newest first. A wait that is not
// "all", a bound out of range, or a bound without a wait is refused before
// anything changes.
func TestRevocationReceipts(t *testing.T) {
	t.Parallel()
	api, e := wire(t, nil, tokens.Policy{})
	ts := httptest.NewServer(api.Handler())
	t.Cleanup(ts.Close)
	e.url = ts.URL
	c := e.client(e.root)
	ctx := context.Background()
	mk := func(subject string) *latchkey.Token {
		ct, err := c.CreateToken(ctx, client.CreateRequest{Name: "r", Subject: subject, Scopes: []string{"a:b"}})
		if err != nil {
			t.Fatal(err)
		}
		return ct.Token
	}
	tok := mk("alice")
	for _, q := range []string{"?wait=some", "?wait=all&wait_timeout=0s", "?wait=all&wait_timeout=31s", "?wait_timeout=1s", "?wait=all&x=1"} {
		if code, _, body := e.do(t, "POST", "/v1/tokens/"+tok.ID+"/revoke"+q, e.root, ""); code != 400 {
			t.Errorf("%s: %d %s", q, code, body)
		}
	}
	if got, _ := c.GetToken(ctx, tok.ID); got.Status != latchkey.StatusActive {
		t.Fatalf("a refused request changed the token: %s", got.Status)
	}
	var out struct {
		latchkey.Token
		Receipt latchkey.Receipt `json:"receipt"`
	}
	code, _, body := e.do(t, "POST", "/v1/tokens/"+tok.ID+"/revoke?wait=all", e.root, `{"reason":"test"}`)
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("revoke with wait: %d %s", code, body)
	}
	if out.ID != tok.ID || out.Status != latchkey.StatusRevoked || out.Receipt.Nodes != 1 || out.Receipt.Confirmed != 1 || out.Receipt.TimedOut {
		t.Errorf("one node's receipt: %s", body)
	}
	// Without wait the answer is the token, as before.
	sus := mk("bob")
	code, _, body = e.do(t, "POST", "/v1/tokens/"+sus.ID+"/suspend", e.root, "")
	if code != 200 || strings.Contains(body, "receipt") {
		t.Errorf("suspend without wait: %d %s", code, body)
	}

	// A cluster's receipt is what its nodes said, with the bound asked.
	fr := &fakeReceipts{}
	api.Receipts = fr
	sus2 := mk("carol")
	code, _, body = e.do(t, "POST", "/v1/tokens/"+sus2.ID+"/suspend?wait=all&wait_timeout=250ms", e.root, "")
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil || out.Receipt.Confirmed != 2 || out.Receipt.Missing[0] != "node-c" || !out.Receipt.TimedOut {
		t.Errorf("suspend with wait: %d %s", code, body)
	}
	mk("dave")
	var bulk client.RevocationResult
	code, _, body = e.do(t, "POST", "/v1/revocations?wait=all", e.root, `{"subject":"dave"}`)
	if code != 200 || json.Unmarshal([]byte(body), &bulk) != nil || bulk.Revoked != 1 || bulk.Receipt == nil || bulk.Receipt.Nodes != 3 {
		t.Errorf("bulk revocation with wait: %d %s", code, body)
	}
	code, _, body = e.do(t, "POST", "/v1/revocations?wait=all", e.root, `{"subject":"nobody","dry_run":true}`)
	if code != 200 || strings.Contains(body, "receipt") {
		t.Errorf("a dry run waits for nothing: %d %s", code, body)
	}
	if len(fr.asked) != 2 || fr.asked[0] != 250*time.Millisecond || fr.asked[1] != 5*time.Second {
		t.Errorf("the bounds asked: %v", fr.asked)
	}
	var page struct {
		Receipts []latchkey.Receipt `json:"receipts"`
	}
	code, _, body = e.do(t, "GET", "/v1/receipts", e.root, "")
	if code != 200 || json.Unmarshal([]byte(body), &page) != nil || len(page.Receipts) != 3 {
		t.Fatalf("receipts: %d %s", code, body)
	}
	if r := page.Receipts; r[0].Action != latchkey.ActionTokenRevoke || r[0].TokenID != "" || r[1].Action != latchkey.ActionTokenSuspend ||
		r[1].TokenID != sus2.ID || r[2].TokenID != tok.ID {
		t.Errorf("receipts, newest first: %+v", r)
	}
	// Receipts name token ids: a token without audit:read may not list them.
	weak, err := c.CreateToken(ctx, client.CreateRequest{Name: "w", Scopes: []string{latchkey.ScopeTokensWrite}})
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := e.do(t, "GET", "/v1/receipts", weak.Plaintext, ""); code != 403 {
		t.Errorf("receipts without audit:read: %d", code)
	}
}
