package identity

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Verifier checks identity JWTs for an upstream service, with the keys
// published at a latchkey server's /.well-known/jwks.json. Keys are cached;
// a JWT signed by an unknown key makes it refetch (at most once per
// MinRefresh), which is how a rotation reaches it.
type Verifier struct {
	// JWKSURL is e.g. "https://latchkey.internal:7480/.well-known/jwks.json".
	JWKSURL string
	// Audience, when set, is the aud every JWT must carry (the gateway
	// route's name).
	Audience string
	// Client fetches the JWKS (default: 10s timeout).
	Client *http.Client
	// MinRefresh bounds refetches on unknown keys (default 30s).
	MinRefresh time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time

	mu      sync.Mutex
	keys    map[string]ed25519.PublicKey
	fetched time.Time
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Verify checks jwt and returns its claims.
func (v *Verifier) Verify(ctx context.Context, jwt string) (Claims, error) {
	keys, err := v.current(ctx, false)
	if err != nil {
		return Claims{}, err
	}
	c, err := verifyWith(jwt, keys, v.now(), v.Audience, 5*time.Second)
	if err == ErrUnknown {
		if keys, err = v.current(ctx, true); err != nil {
			return Claims{}, err
		}
		c, err = verifyWith(jwt, keys, v.now(), v.Audience, 5*time.Second)
	}
	return c, err
}

// FromRequest verifies the identity header of r.
func (v *Verifier) FromRequest(r *http.Request) (Claims, error) {
	h := r.Header.Get(Header)
	if h == "" {
		return Claims{}, fmt.Errorf("identity: no %s header", Header)
	}
	return v.Verify(r.Context(), h)
}

func (v *Verifier) current(ctx context.Context, refresh bool) (map[string]ed25519.PublicKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	min := v.MinRefresh
	if min <= 0 {
		min = 30 * time.Second
	}
	stale := v.keys == nil || v.now().Sub(v.fetched) > 10*time.Minute
	if !stale && !(refresh && v.now().Sub(v.fetched) >= min) {
		return v.keys, nil
	}
	keys, err := v.fetch(ctx)
	if err != nil {
		if v.keys != nil {
			return v.keys, nil // keep serving with the keys we have
		}
		return nil, err
	}
	v.keys, v.fetched = keys, v.now()
	return keys, nil
}

func (v *Verifier) fetch(ctx context.Context) (map[string]ed25519.PublicKey, error) {
	hc := v.Client
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, "GET", v.JWKSURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("identity: fetching the JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("identity: fetching the JWKS: HTTP %d", resp.StatusCode)
	}
	var set JWKS
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("identity: the JWKS: %w", err)
	}
	return set.PublicKeys(), nil
}
