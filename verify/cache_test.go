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
			c.putIfCurrent(k, entry{info: tok, staleAt: 1 << 62, expiresAt: v}, c.begin(k), 0)
			ref[*k] = v
		case 1:
			c.invalidateBefore(k, 0)
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
		c.putIfCurrent(&k, e, c.begin(&k), 0)
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
		c2.putIfCurrent(&k, entry{info: tok, staleAt: 10}, c2.begin(&k), 0)
	}
	c2.putIfCurrent(&k, entry{info: tok, staleAt: 1 << 62}, c2.begin(&k), 20)
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

// Issue 12 item 14: unknown ids (anyone can send them) fill at most a
// small share of the cache, and are reclaimed on schedule once stale,
// table memory included; real tokens are not pushed out by them.
func TestNegativeEntriesBounded(t *testing.T) {
	t.Parallel()
	const max = 64 * 1024
	c := newCache(max)
	r := mrand.New(mrand.NewPCG(5, 6))
	tok := &tokenInfo{}
	rnd := func() (k key) {
		for j := range k {
			k[j] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[r.IntN(62)]
		}
		return k
	}
	real := make([]key, 2000)
	for i := range real {
		real[i] = rnd()
		c.putIfCurrent(&real[i], entry{info: tok, staleAt: 1 << 62}, c.begin(&real[i]), 0)
	}
	const sec = int64(1e9)
	now := int64(1000) * sec
	for i := 0; i < 200000; i++ { // a flood of forged ids, 2 s negative TTL
		k := rnd()
		c.putIfCurrent(&k, entry{staleAt: now + 2*sec}, c.begin(&k), now)
		now += sec / 1000
	}
	neg := 0
	for i := range c.shards {
		neg += int(c.shards[i].neg)
	}
	if limit := max / NegativeShare; neg > limit {
		t.Errorf("%d negative entries, more than 1/%d of the cache (%d)", neg, NegativeShare, limit)
	}
	for i := range real {
		if _, ok := c.get(&real[i], now); !ok {
			t.Fatalf("a real token was pushed out by forged ids")
		}
	}
	// Once the flood stops and the entries are stale, the next sweep of
	// each shard drops them and gives the table memory back.
	now += 60 * sec
	for i := range real {
		c.putIfCurrent(&real[i], entry{info: tok, staleAt: 1 << 62}, c.begin(&real[i]), now)
	}
	slots, neg := 0, 0
	for i := range c.shards {
		slots += len(c.shards[i].slots)
		neg += int(c.shards[i].neg)
	}
	if neg != 0 || c.len() != len(real) || slots > 4*len(real)+64*minSlots {
		t.Errorf("after the sweep: %d entries (%d negative) in %d slots", c.len(), neg, slots)
	}
}
