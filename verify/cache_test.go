package verify

import (
	mrand "math/rand/v2"
	"testing"
	"unsafe"
)

// The open-addressing table agrees with a Go map under random puts,
// invalidations and lookups, through growth and backward-shift deletions.
func TestCacheMatchesMap(t *testing.T) {
	c := newCache(1 << 20)
	ref := map[key]int64{}
	r := mrand.New(mrand.NewPCG(1, 2))
	keys := make([]key, 3000)
	for i := range keys {
		for j := range keys[i] {
			keys[i][j] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[r.IntN(62)]
		}
	}
	tok := &tokenInfo{}
	for op := 0; op < 200000; op++ {
		k := &keys[r.IntN(len(keys))]
		switch r.IntN(3) {
		case 0:
			v := int64(op + 1)
			c.putIfCurrent(k, entry{info: tok, staleAt: 1 << 62, expiresAt: v}, c.generation(k), 0)
			ref[*k] = v
		case 1:
			c.invalidate(k)
			delete(ref, *k)
		default:
			e, ok := c.get(k, 0)
			want, wok := ref[*k]
			if ok != wok || (ok && e.expiresAt != want) {
				t.Fatalf("op %d: get = %v, %v; want %v, %v", op, e.expiresAt, ok, want, wok)
			}
		}
	}
	if c.len() != len(ref) {
		t.Fatalf("cache holds %d entries, map %d", c.len(), len(ref))
	}
	for k, want := range ref {
		if e, ok := c.get(&k, 0); !ok || e.expiresAt != want {
			t.Fatalf("final get(%s) = %v, %v; want %v", k[:], e.expiresAt, ok, want)
		}
	}
}

func TestCacheEviction(t *testing.T) {
	c := newCache(64 * 100) // 100 per shard
	r := mrand.New(mrand.NewPCG(3, 4))
	tok := &tokenInfo{}
	var k key
	for i := 0; i < 50000; i++ {
		for j := range k {
			k[j] = byte('A' + r.IntN(26))
		}
		e := entry{staleAt: 1 << 62}
		if i%2 == 0 {
			e.info = tok
		}
		c.putIfCurrent(&k, e, c.generation(&k), 0)
	}
	for i := range c.shards {
		if n := c.shards[i].n; n > 100 {
			t.Fatalf("shard %d holds %d entries, cap 100", i, n)
		}
	}
	// Stale entries go first.
	c2 := newCache(64 * 10)
	for i := 0; i < 5000; i++ {
		for j := range k {
			k[j] = byte('A' + r.IntN(26))
		}
		c2.putIfCurrent(&k, entry{info: tok, staleAt: 10}, c2.generation(&k), 0)
	}
	c2.putIfCurrent(&k, entry{info: tok, staleAt: 1 << 62}, c2.generation(&k), 20)
	if _, ok := c2.get(&k, 20); !ok {
		t.Fatal("a fresh entry was not stored after evicting stale ones")
	}
}

func TestCacheLayout(t *testing.T) {
	if n := unsafe.Sizeof(shard{}); n != 64 {
		t.Errorf("a shard is %d bytes; keep it at one cache line (64)", n)
	}
	if n := unsafe.Sizeof(slot{}); n != 64 {
		t.Errorf("a slot is %d bytes; keep it at 64 (one cache line)", n)
	}
}
