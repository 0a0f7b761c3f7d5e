package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/detect"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/webhook"
)

func verifyFrom(t *testing.T, ts *testServer, tok, ip string, hdr ...string) latchkey.Code {
	t.Helper()
	body := `{"token":"` + tok + `"}`
	if ip != "" {
		body = `{"token":"` + tok + `","ip":"` + ip + `"}`
	}
	req, _ := http.NewRequest("POST", ts.url+"/v1/verify", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+ts.root)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var vr client.VerifyResponse
	if err := json.NewDecoder(resp.Body).Decode(&vr); err != nil {
		t.Fatalf("verify: HTTP %d: %v", resp.StatusCode, err)
	}
	return vr.Code
}

// The scripted attack: 1,000 forged tokens from one client address. That
// address is BLOCKED once it reaches the threshold, while real tokens from
// other addresses keep verifying throughout.
func TestAttackIsBlocked(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	c := ts.client(ts.root)
	real, err := c.CreateToken(ctx, client.CreateRequest{Scopes: []string{"a:read"}})
	if err != nil {
		t.Fatal(err)
	}
	const attacker = "203.0.113.66"
	codes := map[latchkey.Code]int{}
	var mu sync.Mutex
	var realRefused atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() { // real traffic during the attack, from other clients
		for i := range 300 {
			if code := verifyFrom(t, ts, real.Plaintext, fmt.Sprintf("198.51.100.%d", i%200+1)); code != latchkey.Valid {
				realRefused.Add(1)
			}
		}
	})
	// Half of them well-formed (an attacker can compute the checksum) with
	// made-up ids, half with a broken checksum.
	forged := []string{forgeToken(t), real.Plaintext[:len(real.Plaintext)-6] + "AAAAAA"}
	for i := range 1000 {
		code := verifyFrom(t, ts, forged[i%2], attacker)
		mu.Lock()
		codes[code]++
		mu.Unlock()
	}
	wg.Wait()
	if codes[latchkey.Blocked] < 1000-20 || codes[latchkey.Malformed]+codes[latchkey.NotFound] > 20 {
		t.Errorf("attack outcomes %v: want BLOCKED for all but the first 20", codes)
	}
	if n := realRefused.Load(); n != 0 {
		t.Errorf("%d real verifications from other clients were refused during the attack", n)
	}
	// Even a real token is BLOCKED from the attacker's address.
	if code := verifyFrom(t, ts, real.Plaintext, attacker); code != latchkey.Blocked {
		t.Errorf("a real token from the blocked address: %s", code)
	}
	// The block is on record with its evidence, and listed.
	ts.flush(t)
	evs, _ := c.ListAudit(ctx, latchkey.AuditFilter{Kind: latchkey.KindDetect})
	if len(evs.Events) != 1 {
		t.Fatalf("detector records %+v", evs.Events)
	}
	if evs.Events[0].Action != latchkey.ActionSourceBlocked || evs.Events[0].ClientIP != attacker ||
		!strings.Contains(string(evs.Events[0].Detail), `"failures":20`) {
		t.Fatalf("detector records %+v", evs.Events)
	}
	code, out, _ := cli(t, ts.url, ts.root, "blocks", "list")
	if code != 0 || !strings.Contains(out, attacker) || !strings.Contains(out, "source_failures") {
		t.Errorf("blocks list: %d %q", code, out)
	}
	if code, _, errs := cli(t, ts.url, ts.root, "blocks", "remove", attacker); code != 0 {
		t.Fatalf("blocks remove: %s", errs)
	}
	if code := verifyFrom(t, ts, real.Plaintext, attacker); code != latchkey.Valid {
		t.Errorf("after the block was removed: %s", code)
	}
	if code, _, _ := cli(t, ts.url, ts.root, "blocks", "remove", attacker); code != exitAPIError {
		t.Errorf("removing a missing block: exit %d", code)
	}
	// Blocks are persisted: a restart keeps them.
	for range 20 {
		verifyFrom(t, ts, "lk_again", "203.0.113.77")
	}
	ts.flush(t)
	waitFor(t, func() bool { l, _ := c.ListBlocks(ctx); return l != nil && len(l.Blocks) == 1 })
	ts.stop(t)
	ts2 := startServer(t, ts.dir)
	if code := verifyFrom(t, ts2, real.Plaintext, "203.0.113.77"); code != latchkey.Blocked {
		t.Errorf("after a restart the block is gone: %s", code)
	}
}

// The relays are never blocked on their own account: a backend calling
// /v1/verify without a client ip, and a trusted proxy forwarding clients.
func TestRelaysAreNeverBlocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir, TrustedProxies: latchkey.LoopbackProxies}, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(ctx)
	ts := &testServer{d: d, dir: dir, url: "http://" + d.addr, root: readRoot(t, dir), out: &syncBuffer{}}
	real, err := ts.client(ts.root).CreateToken(ctx, client.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// A backend relays 200 forged tokens without saying who sent them.
	for range 200 {
		verifyFrom(t, ts, "lk_forged", "")
	}
	if code := verifyFrom(t, ts, real.Plaintext, ""); code != latchkey.Valid {
		t.Fatalf("the backend that relays everyone was blocked: %s", code)
	}
	// Through a trusted proxy (loopback here), the client named in
	// X-Forwarded-For is blocked; the proxy and other clients are not.
	for range 25 {
		verifyFrom(t, ts, "lk_forged", "", "X-Forwarded-For", "192.0.2.50")
	}
	if code := verifyFrom(t, ts, real.Plaintext, "", "X-Forwarded-For", "192.0.2.50"); code != latchkey.Blocked {
		t.Errorf("the forwarded attacker: %s, want BLOCKED", code)
	}
	if code := verifyFrom(t, ts, real.Plaintext, "", "X-Forwarded-For", "192.0.2.51"); code != latchkey.Valid {
		t.Errorf("another client through the same proxy: %s", code)
	}
	if code := verifyFrom(t, ts, real.Plaintext, ""); code != latchkey.Valid {
		t.Errorf("the proxy itself: %s", code)
	}
	// Admin calls from the trusted proxy with bad credentials: never blocked.
	for range 30 {
		req, _ := http.NewRequest("GET", ts.url+"/v1/tokens", nil)
		req.Header.Set("Authorization", "Bearer lk_wrong")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	d.det.Close() // carry out every finding queued so far
	if l, err := ts.client(ts.root).ListBlocks(ctx); err != nil || len(l.Blocks) != 1 || l.Blocks[0].Source != "192.0.2.50" {
		t.Errorf("blocks %+v %v: want only the forwarded attacker", l, err)
	}
}

// A signed leak report revokes the real token within the request; a bad
// signature changes nothing.
func TestLeakReport(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	doc, _ := json.Marshal(map[string]any{"public_keys": []map[string]any{{"key_identifier": "k1", "key": pemKey, "is_current": true}}})
	os.WriteFile(keysFile, doc, 0o600)
	keys, err := loadLeakKeys(keysFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir, LeakKeys: keys}, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(ctx)
	u, root := "http://"+d.addr, readRoot(t, dir)
	c := &client.Client{BaseURL: u, Token: root}
	leaked, _ := c.CreateToken(ctx, client.CreateRequest{Name: "leaky"})
	child, _ := c.DeriveToken(ctx, leaked.ID, client.CreateRequest{})
	body, _ := json.Marshal([]client.LeakReport{
		{Token: leaked.Plaintext, Type: "latchkey_api_token", URL: "https://example.com/repo/blob/x/.env", Source: "content"},
		{Token: leaked.Plaintext[:len(leaked.Plaintext)-6] + "AAAAAA", Type: "latchkey_api_token", URL: "https://example.com/y"},
	})
	post := func(body []byte, keyID, sig string) (int, string) {
		req, _ := http.NewRequest("POST", u+"/v1/leaks", bytes.NewReader(body))
		req.Header.Set("Github-Public-Key-Identifier", keyID)
		req.Header.Set("Github-Public-Key-Signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	sign := func(b []byte, k *ecdsa.PrivateKey) string {
		sum := sha256.Sum256(b)
		sig, _ := ecdsa.SignASN1(rand.Reader, k, sum[:])
		return base64.StdEncoding.EncodeToString(sig)
	}
	// A bad signature: another key, a tampered body, an unknown key id.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, bad := range []struct {
		body    []byte
		id, sig string
	}{
		{body, "k1", sign(body, other)},
		{append([]byte(" "), body...), "k1", sign(body, key)},
		{body, "k2", sign(body, key)},
		{body, "k1", "not base64!"},
	} {
		if status, _ := post(bad.body, bad.id, bad.sig); status != http.StatusUnauthorized {
			t.Errorf("bad signature: HTTP %d, want 401", status)
		}
	}
	if v, _ := c.Verify(ctx, client.VerifyRequest{Token: leaked.Plaintext}); !v.Valid {
		t.Fatalf("a rejected report changed the token: %s", v.Code)
	}
	status, out := post(body, "k1", sign(body, key))
	if status != 200 {
		t.Fatalf("signed report: HTTP %d %s", status, out)
	}
	var res []client.LeakResult
	json.Unmarshal([]byte(out), &res)
	sum := sha256.Sum256([]byte(leaked.Plaintext))
	if len(res) != 2 || res[0].Label != "true_positive" || res[0].TokenHash != fmt.Sprintf("%x", sum) || res[0].TokenID != leaked.ID ||
		res[1].Label != "false_positive" {
		t.Fatalf("results %+v", res)
	}
	if strings.Contains(out, leaked.Plaintext[20:]) {
		t.Error("the response echoes the leaked secret")
	}
	// Revoked within the request, with what was derived from it.
	for _, tok := range []string{leaked.Plaintext, child.Plaintext} {
		if v, _ := c.Verify(ctx, client.VerifyRequest{Token: tok}); v.Code != latchkey.Revoked {
			t.Errorf("after the report: %s, want REVOKED", v.Code)
		}
	}
	got, _ := c.GetToken(ctx, leaked.ID)
	if got.RevokedBy != "latchkey:leak-report" || !strings.Contains(got.RevokedReason, "example.com/repo") {
		t.Errorf("revocation record: by %q reason %q", got.RevokedBy, got.RevokedReason)
	}
	// Reported again: still true_positive, nothing more to do. And an admin
	// may send the same body with a bearer token.
	res2, err := c.ReportLeaks(ctx, []client.LeakReport{{Token: leaked.Plaintext, Type: "t", URL: "u"}})
	if err != nil || len(res2) != 1 || res2[0].Label != "true_positive" {
		t.Errorf("admin report of an already revoked token: %+v %v", res2, err)
	}
	if _, err := (&client.Client{BaseURL: u, Token: child.Plaintext}).ReportLeaks(ctx, []client.LeakReport{{Token: "x"}}); err == nil {
		t.Error("a report with neither a signature nor an admin token was accepted")
	}
	d.pipe.Flush(ctx)
	evs, _ := c.ListAudit(ctx, latchkey.AuditFilter{Kind: latchkey.KindDetect})
	n := 0
	for _, e := range evs.Events {
		if e.Action == latchkey.ActionLeakReported {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d leak.reported records, want 3", n)
	}
}

// forgeToken makes a well-formed token (valid checksum) for an id that
// does not exist.
func forgeToken(t *testing.T) string {
	pt, _, err := secret.Generate("lk", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pt.Reveal()
}

// GET /metrics: the promised metrics are there, counting what happened,
// and no label carries a token or a token id.
func TestMetrics(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	c := ts.client(ts.root)
	tok, _ := c.CreateToken(ctx, client.CreateRequest{Scopes: []string{"a:b"}})
	for range 3 {
		c.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext})
	}
	c.Verify(ctx, client.VerifyRequest{Token: "lk_bad"})
	ts.flush(t)
	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	for _, want := range []string{
		`latchkey_verifications_total{code="VALID"} 3`,
		`latchkey_verifications_total{code="MALFORMED"} 1`,
		`latchkey_verifications_total{code="BLOCKED"} 0`,
		"latchkey_verify_duration_seconds_bucket", "latchkey_cache_hit_ratio", "latchkey_cache_lookups_total",
		"latchkey_audit_queue_depth", "latchkey_audit_batch_commit_seconds_bucket", "latchkey_audit_backpressure_total",
		"latchkey_detector_findings_total", "latchkey_blocked_sources", "go_goroutines",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(text, tok.ID) || strings.Contains(text, tok.Plaintext[20:40]) {
		t.Error("/metrics mentions a token")
	}
}

// Webhooks from the daemon: signed, and sent for admin changes and
// detector actions, not for verifications.
func TestWebhooksFromDaemon(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []webhook.Event
	secretKey := "a-webhook-secret-of-enough-length"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify([]byte(secretKey), r.Header.Get(webhook.SignatureHeader), body, time.Now(), time.Minute); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var ev webhook.Event
		json.Unmarshal(body, &ev)
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
	}))
	defer srv.Close()
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir, Webhooks: []string{srv.URL}, WebhookSecret: secretKey,
		Detect: detectConfig(5)}, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(ctx)
	ts := &testServer{d: d, dir: dir, url: "http://" + d.addr, root: readRoot(t, dir), out: &syncBuffer{}}
	c := ts.client(ts.root)
	tok, _ := c.CreateToken(ctx, client.CreateRequest{Name: "hooked"})
	c.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext})
	c.RevokeToken(ctx, tok.ID, "done")
	for range 5 {
		verifyFrom(t, ts, "lk_x", "203.0.113.200")
	}
	types := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		m := map[string]int{}
		for _, e := range got {
			m[e.Type]++
		}
		return m
	}
	waitFor(t, func() bool { m := types(); return m["token.revoked"] == 1 && m["source.blocked"] == 1 })
	m := types()
	if m["token.created"] != 1 {
		t.Errorf("webhook types %v", m)
	}
	for typ := range m {
		if strings.HasPrefix(typ, "verify") {
			t.Errorf("a verification was sent as a webhook: %v", m)
		}
	}
}

func detectConfig(failures int) detect.Config {
	return detect.Config{SourceFailures: detect.Rule{Count: failures, Window: time.Minute}}
}

// rotation.due: recorded once per token past the rotation age.
func TestRotationDueAnnounced(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir, Policy: tokens.Policy{RotationAge: time.Millisecond}}, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(ctx)
	c := &client.Client{BaseURL: "http://" + d.addr, Token: readRoot(t, dir)}
	tok, _ := c.CreateToken(ctx, client.CreateRequest{Name: "old"})
	time.Sleep(5 * time.Millisecond) // older than the 1ms rotation age
	for range 2 {                    // idempotent
		if err := d.svc.AnnounceRotationDue(ctx); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := c.ListAudit(ctx, latchkey.AuditFilter{TokenID: tok.ID, Action: latchkey.ActionRotationDue})
	if err != nil || len(evs.Events) != 1 {
		t.Fatalf("rotation_due records for the token: %+v %v, want exactly one", evs, err)
	}
}
