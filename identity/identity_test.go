package identity

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var serverKey = []byte("0123456789abcdef0123456789abcdef")

func TestSignVerify(t *testing.T) {
	s, err := NewSigner(serverKey, time.Hour, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	jwt := s.Sign(Claims{Subject: "svc", TokenID: "AbCdEfGhIjKlMnOp", Scope: "a:read b:write", Audience: "billing"}, now)
	c, err := s.Verify(jwt, now.Add(10*time.Second), "billing")
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "svc" || c.TokenID != "AbCdEfGhIjKlMnOp" || len(c.Scopes()) != 2 || c.ExpiresAt-c.IssuedAt != 30 {
		t.Errorf("claims %+v", c)
	}
	if _, err := s.Verify(jwt, now.Add(40*time.Second), "billing"); err != ErrExpired {
		t.Errorf("after exp: %v", err)
	}
	if _, err := s.Verify(jwt, now, "other"); err != ErrAudience {
		t.Errorf("other audience: %v", err)
	}
	// Tampering: another payload under the same signature.
	parts := strings.Split(jwt, ".")
	evil, _ := json.Marshal(Claims{Issuer: Issuer, Subject: "admin", Audience: "billing", IssuedAt: now.Unix(), ExpiresAt: now.Unix() + 30})
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString(evil) + "." + parts[2]
	if _, err := s.Verify(forged, now, "billing"); err != ErrSignature {
		t.Errorf("forged payload: %v", err)
	}
	// alg=none is not accepted.
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"x"}`)) + "." + parts[1] + "."
	if _, err := s.Verify(none, now, "billing"); err != ErrMalformed {
		t.Errorf("alg none: %v", err)
	}
	// Another server key signs with other keys.
	other, _ := NewSigner([]byte("another-server-key-of-32-bytes!!"), time.Hour, 0)
	if _, err := s.Verify(other.Sign(Claims{Audience: "billing"}, now), now, "billing"); err != ErrUnknown {
		t.Errorf("another server's JWT: %v", err)
	}
}

// Rotation: a JWT signed just before the period changes still verifies
// after it (the old key stays published), and two signers sharing the
// server key agree.
func TestRotation(t *testing.T) {
	a, _ := NewSigner(serverKey, time.Hour, 0)
	b, _ := NewSigner(serverKey, time.Hour, 0)
	edge := time.Date(2026, 11, 29, 10, 59, 50, 0, time.UTC)
	jwt := a.Sign(Claims{Audience: "x"}, edge)
	after := edge.Add(30 * time.Second) // next period
	if _, err := b.Verify(jwt, after, "x"); err != nil {
		t.Fatalf("a JWT from the previous period, 30s later, on another node: %v", err)
	}
	if a.JWKS(edge).Keys[0].Kid == a.JWKS(after).Keys[0].Kid {
		t.Error("the key did not rotate with the period")
	}
}

func TestRemoteVerifier(t *testing.T) {
	s, _ := NewSigner(serverKey, time.Hour, 0)
	var fetches atomic.Int64
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		json.NewEncoder(w).Encode(s.JWKS(now))
	}))
	defer srv.Close()
	v := &Verifier{JWKSURL: srv.URL, Audience: "svc", Now: func() time.Time { return now }}
	for range 10 {
		jwt := s.Sign(Claims{Subject: "x", Audience: "svc"}, now)
		if _, err := v.Verify(context.Background(), jwt); err != nil {
			t.Fatal(err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("%d JWKS fetches for 10 verifications, want 1 (cached)", n)
	}
	// An unknown key triggers one refetch, then is refused.
	other, _ := NewSigner([]byte("another-server-key-of-32-bytes!!"), time.Hour, 0)
	now = now.Add(time.Minute)
	if _, err := v.Verify(context.Background(), other.Sign(Claims{Audience: "svc"}, now)); err != ErrUnknown {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := v.Verify(context.Background(), other.Sign(Claims{Audience: "svc"}, now)); err != ErrUnknown {
		t.Errorf("unknown key again: %v", err)
	}
	if n := fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2 (one refetch, then rate-limited)", n)
	}
}
