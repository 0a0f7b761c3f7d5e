// Package identity is the signed identity latchkey hands to upstream
// services (docs/architecture.md §7): a short-lived JWT, signed with Ed25519 (EdDSA),
// in the X-Latchkey-Identity header, so a service can tell who is calling
// without trusting the network between it and the gateway.
//
// Signing keys are derived from the server key and the rotation period
// they belong to, so every node sharing the server key signs with the same
// key and no key has to be stored or distributed. The JWKS publishes three
// keys: the current period's, the previous one's (a JWT lives at most 60 s,
// far less than a period, so every JWT in flight can be checked) and the
// next one's (so a node whose clock is a little ahead signs with a key
// that verifiers holding a slightly older JWKS already have).
//
// Upstream services verify with Verifier, which fetches and caches the
// JWKS from /.well-known/jwks.json.
package identity

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Header is where the gateway and forward-auth put the JWT.
const Header = "X-Latchkey-Identity"

// MaxTTL bounds a JWT's lifetime.
const MaxTTL = 60 * time.Second

// Issuer is the iss claim.
const Issuer = "latchkey"

// Claims are what a JWT says.
type Claims struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"`
	TokenID   string `json:"tid"`
	Scope     string `json:"scope"` // space-separated, as in OAuth
	Audience  string `json:"aud"`
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
	ID        string `json:"jti"`
}

// Scopes returns the scope claim as a list.
func (c Claims) Scopes() []string { return strings.Fields(c.Scope) }

// Signer signs identity JWTs with keys derived from the server key.
type Signer struct {
	secret []byte
	period time.Duration
	ttl    time.Duration

	mu   sync.Mutex
	keys map[int64]*key // by period number
}

type key struct {
	kid  string
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

// NewSigner derives signing keys from serverKey, rotating every period
// (default 24h; at least 10 minutes), for JWTs living ttl (default and
// maximum 60s).
func NewSigner(serverKey []byte, period, ttl time.Duration) (*Signer, error) {
	if len(serverKey) < 32 {
		return nil, errors.New("identity: the server key is too short")
	}
	if period == 0 {
		period = 24 * time.Hour
	}
	if period < 10*time.Minute {
		return nil, errors.New("identity: the key rotation period must be at least 10 minutes")
	}
	if ttl <= 0 || ttl > MaxTTL {
		ttl = MaxTTL
	}
	return &Signer{secret: append([]byte(nil), serverKey...), period: period, ttl: ttl, keys: map[int64]*key{}}, nil
}

// keyFor returns the key of period n, deriving it once.
func (s *Signer) keyFor(n int64) *key {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.keys[n]; k != nil {
		return k
	}
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("latchkey identity signing key v1\x00"))
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	seed := m.Sum(nil)
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	k := &key{kid: base64.RawURLEncoding.EncodeToString(sum[:12]), priv: priv, pub: pub}
	for old := range s.keys { // keep the table small
		if old < n-2 {
			delete(s.keys, old)
		}
	}
	s.keys[n] = k
	return k
}

func (s *Signer) period0(now time.Time) int64 { return now.Unix() / int64(s.period/time.Second) }

// TTL is how long a JWT lives.
func (s *Signer) TTL() time.Duration { return s.ttl }

var jwtHeaderPrefix = `{"alg":"EdDSA","typ":"JWT","kid":"`

// Sign returns a compact JWT for c, with iss, iat and exp set from now.
func (s *Signer) Sign(c Claims, now time.Time) string {
	k := s.keyFor(s.period0(now))
	c.Issuer, c.IssuedAt, c.ExpiresAt = Issuer, now.Unix(), now.Add(s.ttl).Unix()
	h := base64.RawURLEncoding.EncodeToString([]byte(jwtHeaderPrefix + k.kid + `"}`))
	p, _ := json.Marshal(c)
	signing := h + "." + base64.RawURLEncoding.EncodeToString(p)
	sig := ed25519.Sign(k.priv, []byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// JWK is one public key of a JWKS (RFC 8037: OKP, Ed25519).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// JWKS is a JSON Web Key Set.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// JWKS returns the keys to publish at now: the current period's, the
// previous one's (its JWTs may still be live) and the next one's (so a
// verifier whose clock runs a little behind ours knows it already).
func (s *Signer) JWKS(now time.Time) JWKS {
	n := s.period0(now)
	var set JWKS
	for _, p := range []int64{n, n - 1, n + 1} {
		k := s.keyFor(p)
		set.Keys = append(set.Keys, JWK{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(k.pub), Kid: k.kid, Alg: "EdDSA", Use: "sig"})
	}
	return set
}

// Errors from Verify.
var (
	ErrMalformed = errors.New("identity: not a well-formed EdDSA JWT")
	ErrUnknown   = errors.New("identity: signed by a key not in the JWKS")
	ErrSignature = errors.New("identity: bad signature")
	ErrExpired   = errors.New("identity: expired, or not yet valid")
	ErrAudience  = errors.New("identity: meant for another audience")
)

// verifyWith checks a JWT against keys (by kid), the time and the
// audience ("" accepts any).
func verifyWith(jwt string, keys map[string]ed25519.PublicKey, now time.Time, audience string, leeway time.Duration) (Claims, error) {
	var c Claims
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return c, ErrMalformed
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	pb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return c, ErrMalformed
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if json.Unmarshal(hb, &h) != nil || h.Alg != "EdDSA" {
		return c, ErrMalformed // no "none", no algorithm confusion
	}
	pub, ok := keys[h.Kid]
	if !ok {
		return c, ErrUnknown
	}
	if !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
		return c, ErrSignature
	}
	if json.Unmarshal(pb, &c) != nil || c.Issuer != Issuer {
		return c, ErrMalformed
	}
	t := now.Unix()
	l := int64(leeway / time.Second)
	if t > c.ExpiresAt+l || t+l < c.IssuedAt || c.ExpiresAt-c.IssuedAt > int64(MaxTTL/time.Second) {
		return c, ErrExpired
	}
	if audience != "" && c.Audience != audience {
		return c, ErrAudience
	}
	return c, nil
}

// PublicKeys turns a JWKS into keys by kid, ignoring what is not Ed25519.
func (set JWKS) PublicKeys() map[string]ed25519.PublicKey {
	out := map[string]ed25519.PublicKey{}
	for _, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" {
			continue
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			continue
		}
		out[k.Kid] = ed25519.PublicKey(x)
	}
	return out
}

// Verify checks a JWT against the signer's own published keys (for tests
// and in-process use).
func (s *Signer) Verify(jwt string, now time.Time, audience string) (Claims, error) {
	return verifyWith(jwt, s.JWKS(now).PublicKeys(), now, audience, 5*time.Second)
}

// String describes claims for logs.
func (c Claims) String() string {
	return fmt.Sprintf("%s (token %s) for %s", c.Subject, c.TokenID, c.Audience)
}

// JWKSJSON is the JWKS at now, encoded.
func (s *Signer) JWKSJSON(now time.Time) []byte {
	b, _ := json.Marshal(s.JWKS(now))
	return b
}
