package secret

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"hash"
	"sync"
)

// HashLen is the length of a keyed hash.
const HashLen = sha256.Size

// MinKeyLen is the shortest server key accepted.
const MinKeyLen = 32

// Hasher computes the keyed hash stored in place of a token's secret:
// HMAC-SHA256(server key, id || secret bytes), 48 bytes of input, one
// SHA-256 block. It is safe for concurrent use.
//
// crypto/hmac precomputes the inner and outer pad states and restores them
// on Reset, so each hash costs two SHA-256 compressions; pooling the hmac
// states and their scratch buffers keeps the hot path free of allocations.
type Hasher struct {
	pool sync.Pool
}

type hashState struct {
	h   hash.Hash
	in  [IDLen + 32]byte
	out [HashLen]byte
}

// NewHasher returns a Hasher for key, which must be at least MinKeyLen bytes.
func NewHasher(key []byte) (*Hasher, error) {
	if len(key) < MinKeyLen {
		return nil, errors.New("secret: server key must be at least 32 bytes")
	}
	k := append([]byte(nil), key...)
	hs := &Hasher{}
	hs.pool.New = func() any { return &hashState{h: hmac.New(sha256.New, k)} }
	return hs, nil
}

// sum hashes id || secret into st.out.
func (hs *Hasher) sum(st *hashState, id string, secret *[32]byte) []byte {
	copy(st.in[:IDLen], id)
	copy(st.in[IDLen:], secret[:])
	st.h.Reset()
	st.h.Write(st.in[:])
	return st.h.Sum(st.out[:0])
}

// Sum returns the keyed hash of a token's id and secret. id must be IDLen
// bytes (as from Parse).
func (hs *Hasher) Sum(id string, secret *[32]byte) []byte {
	st := hs.pool.Get().(*hashState)
	out := append([]byte(nil), hs.sum(st, id, secret)...)
	hs.pool.Put(st)
	return out
}

// Equal reports, in constant time, whether the keyed hash of id and secret
// equals want. It does not allocate.
func (hs *Hasher) Equal(id string, secret *[32]byte, want []byte) bool {
	st := hs.pool.Get().(*hashState)
	ok := subtle.ConstantTimeCompare(hs.sum(st, id, secret), want) == 1
	hs.pool.Put(st)
	return ok
}

// EqualPrefix is Equal against a truncated hash: want holds the first
// len(want) bytes of it, at least 16 (128 bits, as truncated HMACs go,
// RFC 2104 §5). The verifier's cache keeps 16 to fit a slot in one cache
// line.
func (hs *Hasher) EqualPrefix(id string, secret *[32]byte, want []byte) bool {
	if len(want) < 16 || len(want) > sha256.Size {
		return false
	}
	st := hs.pool.Get().(*hashState)
	ok := subtle.ConstantTimeCompare(hs.sum(st, id, secret)[:len(want)], want) == 1
	hs.pool.Put(st)
	return ok
}

// Fingerprint returns a short public identifier of key, stored by the
// server so that a node started with a different key refuses to run
// (instead of answering NOT_FOUND for every token). It reveals nothing
// usable about the key.
func Fingerprint(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("latchkey server key fingerprint v1"))
	sum := m.Sum(nil)
	const hexd = "0123456789abcdef"
	out := make([]byte, 16)
	for i := 0; i < 8; i++ {
		out[2*i], out[2*i+1] = hexd[sum[i]>>4], hexd[sum[i]&15]
	}
	return string(out)
}
