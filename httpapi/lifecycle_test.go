package httpapi_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/httpapi"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/verify"
)

type apiEnv struct {
	url  string
	root string
	db   *sqlite.DB
	pipe *audit.Pipeline
}

// wire builds the real stack (SQLite in a temp dir) behind an API server.
func wire(t testing.TB, proxies latchkey.TrustedProxies, policy tokens.Policy) (*httpapi.Server, *apiEnv) {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key := make([]byte, 32)
	rand.Read(key)
	h, _ := secret.NewHasher(key)
	pipe := &audit.Pipeline{Sink: db}
	pipe.Start()
	t.Cleanup(func() { pipe.Close(context.Background()) })
	v := verify.New(db, h, pipe, verify.Config{RotationAge: policy.RotationAge})
	t.Cleanup(func() { v.Close(context.Background()) })
	svc := &tokens.Service{Store: db, Hasher: h, Invalidate: v.Invalidate, Policy: policy, FlushUsage: v.FlushUsage}
	root, _, err := svc.Bootstrap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	api := &httpapi.Server{Verifier: v, Tokens: svc, Audit: db, FlushAudit: pipe.Flush, TrustedProxies: proxies}
	return api, &apiEnv{root: root.Reveal(), db: db, pipe: pipe}
}

func newServer(t *testing.T, proxies latchkey.TrustedProxies, policy tokens.Policy) *apiEnv {
	t.Helper()
	api, e := wire(t, proxies, policy)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

func (e *apiEnv) client(tok string) *client.Client {
	return &client.Client{BaseURL: e.url, Token: tok}
}

func (e *apiEnv) do(t *testing.T, method, path, tok, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func verifyCode(t *testing.T, body string) (latchkey.Code, client.VerifyResponse) {
	t.Helper()
	var vr client.VerifyResponse
	if err := json.Unmarshal([]byte(body), &vr); err != nil {
		t.Fatalf("verify response %q: %v", body, err)
	}
	return vr.Code, vr
}

// X-Forwarded-For is believed only from a trusted proxy: from anyone else
// a spoofed header does not move the client into an allowed network.
func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	for _, c := range []struct {
		name    string
		proxies latchkey.TrustedProxies
		xff     []string
		want    latchkey.Code
		ip      string
	}{
		{"untrusted peer, spoofed header", nil, []string{"203.0.113.5"}, latchkey.IPNotAllowed, "127.0.0.1"},
		{"trusted peer", latchkey.LoopbackProxies, []string{"203.0.113.5"}, latchkey.Valid, "203.0.113.5"},
		{"trusted peer, client spoofs the left end", latchkey.LoopbackProxies, []string{"203.0.113.5, 198.51.100.9"}, latchkey.IPNotAllowed, "198.51.100.9"},
		{"trusted chain of proxies", latchkey.TrustedProxies{latchkey.LoopbackProxies[0], mustPrefix("10.0.0.0/8")}, []string{"203.0.113.5", "10.1.1.1"}, latchkey.Valid, "203.0.113.5"},
		{"garbage in the header", latchkey.LoopbackProxies, []string{"not-an-ip"}, latchkey.IPNotAllowed, "127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newServer(t, c.proxies, tokens.Policy{})
			cl := e.client(e.root)
			tok, err := cl.CreateToken(context.Background(), client.CreateRequest{Scopes: []string{"a:read"}, AllowedCIDRs: []string{"203.0.113.0/24"}})
			if err != nil {
				t.Fatal(err)
			}
			var hdr []string
			for _, v := range c.xff {
				hdr = append(hdr, "X-Forwarded-For", v)
			}
			// /v1/verify without "ip": the connection's client is used.
			_, _, body := e.do(t, "POST", "/v1/verify", e.root, `{"token":"`+tok.Plaintext+`"}`, hdr...)
			if code, _ := verifyCode(t, body); code != c.want {
				t.Fatalf("verify: %s, want %s", code, c.want)
			}
			e.pipe.Flush(context.Background())
			page, _ := e.db.ListAudit(context.Background(), latchkey.AuditFilter{TokenID: tok.ID, Kind: latchkey.KindVerify})
			if len(page.Events) == 0 || page.Events[0].ClientIP != c.ip {
				t.Errorf("audit client_ip %v, want %s", page.Events, c.ip)
			}
			// The same rule guards admin calls made with a bound token.
			adm, _ := cl.CreateToken(context.Background(), client.CreateRequest{Scopes: []string{latchkey.ScopeTokensRead}, AllowedCIDRs: []string{"203.0.113.0/24"}})
			status, _, _ := e.do(t, "GET", "/v1/tokens", adm.Plaintext, "", hdr...)
			if want := map[bool]int{true: 200, false: 403}[c.want == latchkey.Valid]; status != want {
				t.Errorf("admin call: status %d, want %d", status, want)
			}
		})
	}
	// The "ip" field of /v1/verify is the caller's statement and wins.
	e := newServer(t, nil, tokens.Policy{})
	tok, _ := e.client(e.root).CreateToken(context.Background(), client.CreateRequest{AllowedCIDRs: []string{"203.0.113.0/24"}})
	_, _, body := e.do(t, "POST", "/v1/verify", e.root, `{"token":"`+tok.Plaintext+`","ip":"203.0.113.77"}`)
	if code, _ := verifyCode(t, body); code != latchkey.Valid {
		t.Errorf("with ip field: %s", code)
	}
}

func mustPrefix(s string) netip.Prefix {
	pp, err := latchkey.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return pp
}

func TestLifecycleOverHTTP(t *testing.T) {
	e := newServer(t, nil, tokens.Policy{RotationAge: 90 * 24 * time.Hour})
	ctx := context.Background()
	cl := e.client(e.root)
	tok, err := cl.CreateToken(ctx, client.CreateRequest{Name: "svc", Subject: "billing", Scopes: []string{"invoices:*"}, TTL: "30d",
		AllowedMethods: []string{"GET", "POST"}, AllowedPaths: []string{"/api/**"}, MaxUses: 100,
		RateLimit: &client.RateRequest{Limit: 50, Window: "1m"}})
	if err != nil {
		t.Fatal(err)
	}
	vreq := client.VerifyRequest{Token: tok.Plaintext, Scopes: []string{"invoices:read"}, IP: "10.0.0.1", Method: "GET", Path: "/api/invoices"}
	vr, err := cl.Verify(ctx, vreq)
	if err != nil || !vr.Valid || vr.Remaining == nil || *vr.Remaining != 99 || vr.RateLimit == nil ||
		vr.RateLimit.Limit != 50 || vr.RateLimit.Remaining != 49 || vr.RateLimit.Reset.IsZero() || len(vr.Warnings) != 0 {
		t.Fatalf("verify: %+v %v", vr, err)
	}
	vr, _ = cl.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, Method: "DELETE", Path: "/api/invoices"})
	if vr.Code != latchkey.Forbidden || vr.Valid || vr.Remaining != nil {
		t.Errorf("forbidden method: %+v", vr)
	}

	// Rotate with a grace period: 201, a new plaintext, both linked.
	rot, err := cl.RotateToken(ctx, tok.ID, "24h")
	if err != nil {
		t.Fatal(err)
	}
	if rot.Plaintext == "" || rot.ID == tok.ID || rot.PredecessorID != tok.ID || rot.Predecessor.SuccessorID != rot.ID {
		t.Fatalf("rotate answer: %+v", rot)
	}
	if vr, _ := cl.Verify(ctx, vreq); !vr.Valid {
		t.Errorf("old token within grace: %s", vr.Code)
	}
	status, _, body := e.do(t, "POST", "/v1/tokens/"+tok.ID+"/rotate", e.root, `{"grace":"1h"}`)
	if status != 409 || !strings.Contains(body, "already rotated") {
		t.Errorf("rotating twice: %d %s", status, body)
	}
	status, _, body = e.do(t, "POST", "/v1/tokens/"+rot.ID+"/rotate", e.root, `{"grace":"soon"}`)
	if status != 400 || !strings.Contains(body, "grace") {
		t.Errorf("bad grace: %d %s", status, body)
	}

	// Derive, authenticated as the token itself (no admin scope).
	child, err := e.client(rot.Plaintext).DeriveToken(ctx, rot.ID, client.CreateRequest{Scopes: []string{"invoices:read"}, TTL: "1h"})
	if err != nil {
		t.Fatalf("self-derive: %v", err)
	}
	if child.ParentID != rot.ID || !slices.Equal(child.Scopes, []string{"invoices:read"}) {
		t.Errorf("child: %+v", child.Token)
	}
	// A token may not derive from another token without tokens:write.
	if _, err := e.client(child.Plaintext).DeriveToken(ctx, rot.ID, client.CreateRequest{}); latchkey.ErrorCode(err) == "" {
		t.Error("a child derived from its parent by presenting itself")
	}
	_, err = e.client(rot.Plaintext).DeriveToken(ctx, rot.ID, client.CreateRequest{Scopes: []string{"invoices:write", "admin:*"}})
	if latchkey.ErrorCode(err) != latchkey.EPermissionDenied {
		t.Errorf("broader child: %v", err)
	}

	// Suspend cascades to the child; resume lifts both.
	if _, err := cl.SuspendToken(ctx, rot.ID, "investigating"); err != nil {
		t.Fatal(err)
	}
	if vr, _ := cl.Verify(ctx, client.VerifyRequest{Token: child.Plaintext, Method: "GET", Path: "/api/x"}); vr.Code != latchkey.Suspended {
		t.Errorf("child of a suspended token: %s", vr.Code)
	}
	if _, err := cl.ResumeToken(ctx, rot.ID); err != nil {
		t.Fatal(err)
	}
	if vr, _ := cl.Verify(ctx, client.VerifyRequest{Token: child.Plaintext, Method: "GET", Path: "/api/x"}); vr.Code != latchkey.Valid {
		t.Errorf("child after resume: %s", vr.Code)
	}

	// PATCH: rename and narrow; widen refused.
	name := "renamed"
	up, err := cl.UpdateToken(ctx, rot.ID, client.UpdateRequest{Name: &name})
	if err != nil || up.Name != name {
		t.Fatalf("patch: %+v %v", up, err)
	}
	status, _, body = e.do(t, "PATCH", "/v1/tokens/"+rot.ID, e.root, `{"scopes":["*"]}`)
	if status != 403 || !strings.Contains(body, "narrowed") {
		t.Errorf("widening: %d %s", status, body)
	}
	status, _, body = e.do(t, "PATCH", "/v1/tokens/"+rot.ID, e.root, `{"nmae":"x"}`)
	if status != 400 || !strings.Contains(body, "nmae") {
		t.Errorf("unknown field: %d %s", status, body)
	}

	// Lists: children of a parent; rotation due (none yet).
	kids, err := cl.ListTokens(ctx, latchkey.TokenFilter{ParentID: rot.ID})
	if err != nil || len(kids.Tokens) != 1 || kids.Tokens[0].ID != child.ID {
		t.Errorf("children: %+v %v", kids, err)
	}
	due, err := cl.ListTokens(ctx, latchkey.TokenFilter{RotationDue: true})
	if err != nil || len(due.Tokens) != 0 {
		t.Errorf("rotation due: %+v %v", due, err)
	}
	status, _, _ = e.do(t, "GET", "/v1/tokens?rotation_due=maybe", e.root, "")
	if status != 400 {
		t.Errorf("rotation_due=maybe: %d", status)
	}

	// Bulk revocation by subject takes the series, the child and all.
	res, err := cl.Revoke(ctx, client.RevocationRequest{Subject: "billing", Reason: "offboarded"})
	if err != nil || res.Revoked != 3 {
		t.Fatalf("revocations: %+v %v, want 3", res, err)
	}
	for _, body := range []string{`{}`, `{"subject":"a","tag":"b"}`, `{"subject":"a","extra":1}`, `not json`} {
		if status, _, _ := e.do(t, "POST", "/v1/revocations", e.root, body); status != 400 {
			t.Errorf("revocations %s: %d, want 400", body, status)
		}
	}
}

// An admin token over its rate limit gets 429 with Retry-After.
func TestAdminRateLimited(t *testing.T) {
	e := newServer(t, nil, tokens.Policy{})
	adm, err := e.client(e.root).CreateToken(context.Background(), client.CreateRequest{Scopes: []string{latchkey.ScopeTokensRead},
		RateLimit: &client.RateRequest{Limit: 2, Window: "1h"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if status, _, _ := e.do(t, "GET", "/v1/tokens", adm.Plaintext, ""); status != 200 {
			t.Fatalf("within the limit: %d", status)
		}
	}
	status, hdr, body := e.do(t, "GET", "/v1/tokens", adm.Plaintext, "")
	if status != 429 || hdr.Get("Retry-After") != "1800" || !strings.Contains(body, "resource_exhausted") {
		t.Errorf("over the limit: %d Retry-After %q %s", status, hdr.Get("Retry-After"), body)
	}
	// And /v1/verify reports the limit of a verified token.
	tok, _ := e.client(e.root).CreateToken(context.Background(), client.CreateRequest{RateLimit: &client.RateRequest{Limit: 1, Window: "1m"}})
	e.do(t, "POST", "/v1/verify", e.root, `{"token":"`+tok.Plaintext+`"}`)
	_, _, body = e.do(t, "POST", "/v1/verify", e.root, `{"token":"`+tok.Plaintext+`"}`)
	code, vr := verifyCode(t, body)
	if code != latchkey.RateLimited || vr.RateLimit == nil || vr.RateLimit.RetryAfter != 60 || vr.RateLimit.Remaining != 0 {
		t.Errorf("RATE_LIMITED answer: %s", body)
	}
}

// A path that is not canonical is refused (400), not redirected to the
// cleaned path as ServeMux would: the API answers like the doors.
func TestNonCanonicalPathRefused(t *testing.T) {
	t.Parallel()
	e := newServer(t, nil, tokens.Policy{})
	for _, p := range []string{"/v1//tokens", "/v1/tokens/./x", "/v1/x/../tokens", "/v1/tokens/%2e%2e/tokens"} {
		req, _ := http.NewRequest("GET", e.url+p, nil)
		req.URL.Opaque = p // sent as written
		req.Header.Set("Authorization", "Bearer "+e.root)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), "not canonical") {
			t.Errorf("GET %s = %d %s (Location %q), want 400", p, resp.StatusCode, b, resp.Header.Get("Location"))
		}
	}
	if status, _, body := e.do(t, "GET", "/v1/tokens", e.root, ""); status != 200 {
		t.Errorf("GET /v1/tokens = %d %s", status, body)
	}
}
