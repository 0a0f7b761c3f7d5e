package webhook_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/internal/itest"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/webhook"
)

// delivery is one request a receiver got, as the verifier script reads it.
type delivery struct {
	Secret  string            `json:"secret"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// Deliveries signed the Standard Webhooks way verify with that project's
// own library (npm standardwebhooks); a tampered body or another secret
// does not. "both" keeps the latchkey signature valid as well.
func TestStandardWebhooksVerifier(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		itest.Require(t, "node")
		t.Skip("node is not installed")
	}
	dir, _ := filepath.Abs("testdata/standardwebhooks")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "standardwebhooks")); err != nil {
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			itest.Require(t, "the npm registry")
			t.Skipf("npm ci: %v: %s", err, out)
		}
	}
	ctx := context.Background()
	var mu sync.Mutex
	var got []delivery
	var legacy []error
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := map[string]string{}
		for _, k := range []string{webhook.StandardIDHeader, webhook.StandardTimestampHeader, webhook.StandardSignatureHeader} {
			h[k] = r.Header.Get(k)
		}
		mu.Lock()
		got = append(got, delivery{Headers: h, Body: string(body)})
		if sig := r.Header.Get(webhook.SignatureHeader); sig != "" {
			legacy = append(legacy, webhook.Verify(secret, sig, body, time.Now(), time.Minute))
		}
		mu.Unlock()
	}))
	defer srv.Close()
	for _, scheme := range []string{webhook.SignStandard, webhook.SignBoth} {
		db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "w.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		d, err := webhook.New(webhook.Config{URLs: []string{srv.URL}, Secret: secret, Signature: scheme, Poll: 10 * time.Millisecond}, db)
		if err != nil {
			t.Fatal(err)
		}
		d.Start()
		db.AppendAudit(ctx, []latchkey.AuditEvent{adminEvent(latchkey.ActionTokenCreate, "Tok0000000000001"), adminEvent(latchkey.ActionTokenRevoke, "Tok0000000000001")})
		waitFor(t, func() bool { return d.Stats()["delivered"] == 2 })
		d.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 4 || len(legacy) != 2 {
		t.Fatalf("%d deliveries (%d with the latchkey header), want 4 (2)", len(got), len(legacy))
	}
	for _, err := range legacy {
		if err != nil {
			t.Errorf("signature both: the latchkey signature: %v", err)
		}
	}
	var lines []string
	for _, d := range got {
		d.Secret = webhook.StandardSecret(secret)
		b, _ := json.Marshal(d)
		lines = append(lines, string(b))
	}
	tampered := got[0]
	tampered.Secret = webhook.StandardSecret(secret)
	tampered.Body = strings.Replace(tampered.Body, "Tok0000000000001", "Tok0000000000002", 1)
	tampered.Headers = map[string]string{webhook.StandardIDHeader: "tampered", webhook.StandardTimestampHeader: got[0].Headers[webhook.StandardTimestampHeader],
		webhook.StandardSignatureHeader: got[0].Headers[webhook.StandardSignatureHeader]}
	other := got[1]
	other.Secret = webhook.StandardSecret([]byte("another secret of enough length"))
	other.Headers = map[string]string{webhook.StandardIDHeader: "other", webhook.StandardTimestampHeader: got[1].Headers[webhook.StandardTimestampHeader],
		webhook.StandardSignatureHeader: got[1].Headers[webhook.StandardSignatureHeader]}
	for _, d := range []delivery{tampered, other} {
		b, _ := json.Marshal(d)
		lines = append(lines, string(b))
	}
	cmd := exec.Command(node, filepath.Join(dir, "verify.mjs"))
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	res := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(res) != 6 {
		t.Fatalf("verifier output:\n%s", out)
	}
	for i, r := range res[:4] {
		if !strings.HasPrefix(r, "ok evt_") || !strings.Contains(r, "token.") {
			t.Errorf("delivery %d did not verify: %s", i, r)
		}
	}
	if !strings.HasPrefix(res[4], "fail tampered") || !strings.HasPrefix(res[5], "fail other") {
		t.Errorf("a tampered body or another secret verified:\n%s", out)
	}
}

func TestStandardSecret(t *testing.T) {
	t.Parallel()
	if s := webhook.StandardSecret([]byte("0123456789abcdef")); s != "whsec_MDEyMzQ1Njc4OWFiY2RlZg==" {
		t.Errorf("StandardSecret: %s", s)
	}
	// A whsec_ secret signs with the bytes it encodes: the same signature
	// as the raw secret.
	now := time.Unix(1700000000, 0)
	a := webhook.SignStandardHeaders([]byte("0123456789abcdef"), "evt_1", now, []byte("{}"))
	b := webhook.SignStandardHeaders([]byte("whsec_MDEyMzQ1Njc4OWFiY2RlZg=="), "evt_1", now, []byte("{}"))
	if a[webhook.StandardSignatureHeader] != b[webhook.StandardSignatureHeader] || a[webhook.StandardTimestampHeader] != "1700000000" {
		t.Errorf("%v %v", a, b)
	}
	if _, err := webhook.New(webhook.Config{URLs: []string{"https://x"}, Secret: []byte("whsec_c2hvcnQ="), Signature: webhook.SignStandard}, nil); err == nil {
		t.Error("a whsec_ secret of 5 bytes was accepted")
	}
	if _, err := webhook.New(webhook.Config{URLs: []string{"https://x"}, Secret: []byte("0123456789abcdef"), Signature: "hmac"}, nil); err == nil {
		t.Error("an unknown scheme was accepted")
	}
}

// With a tracer, each delivery attempt is a client span whose trace
// context reaches the receiver in traceparent.
func TestDeliverySpans(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTextMapPropagator(propagation.TraceContext{})
	var mu sync.Mutex
	var parents []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		parents = append(parents, r.Header.Get("Traceparent"))
		mu.Unlock()
	}))
	defer srv.Close()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "w.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d, err := webhook.New(webhook.Config{URLs: []string{srv.URL}, Secret: secret, Poll: 10 * time.Millisecond, Tracer: tp.Tracer("test")}, db)
	if err != nil {
		t.Fatal(err)
	}
	d.Start()
	db.AppendAudit(ctx, []latchkey.AuditEvent{adminEvent(latchkey.ActionTokenCreate, "Tok0000000000001")})
	waitFor(t, func() bool { return d.Stats()["delivered"] == 1 })
	d.Close()
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "webhook.deliver token.created" {
		t.Fatalf("spans %v", spans)
	}
	mu.Lock()
	defer mu.Unlock()
	sc := spans[0].SpanContext
	if want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"; len(parents) != 1 || parents[0] != want {
		t.Errorf("traceparent %v, want %s", parents, want)
	}
}
