package verify

import (
	"strings"
	"sync"
	"unique"

	"github.com/latchkeyhq/latchkey"
)

const numShards = 64

// key is a token id as a fixed array: map lookups hash and compare it in
// place, with no pointer to chase into a separately allocated string.
type key [16]byte

// entry is one cached lookup, stored by value in the map: everything the
// hot path reads sits in the map slot itself (a Go map keeps values of up
// to 128 bytes inline), so a verification of a cold token touches few
// cache lines. tok is nil for a negative entry (unknown id). Times are
// Unix nanoseconds; 0 means unset.
type entry struct {
	tok       *latchkey.Token
	subject   string
	prefix    string
	scopes    unique.Handle[string] // NUL-joined, interned
	hash      [32]byte
	expiresAt int64 // the token's expires_at
	notBefore int64 // the token's not_before
	staleAt   int64 // when this cache entry must be reloaded
	state     state
}

// state is a token's status as a byte: comparing the Status string would
// read its bytes, which live in a separate allocation per token.
type state uint8

const (
	stateUnknown state = iota
	stateActive
	stateSuspended
	stateRevoked
)

func stateOf(s latchkey.Status) state {
	switch s {
	case latchkey.StatusActive:
		return stateActive
	case latchkey.StatusSuspended:
		return stateSuspended
	case latchkey.StatusRevoked:
		return stateRevoked
	}
	return stateUnknown
}

// cache is a sharded map from token id to entry. Each shard counts its
// invalidations, so a load that raced with an invalidation is not stored.
type cache struct {
	shards      [numShards]shard
	maxPerShard int
}

type shard struct {
	mu  sync.RWMutex
	m   map[key]entry
	gen uint64   // bumped by every invalidation in this shard
	_   [32]byte // keep shards on separate cache lines
}

func newCache(maxEntries int) *cache {
	c := &cache{maxPerShard: max(16, maxEntries/numShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[key]entry)
	}
	return c
}

func keyOf(id string) (k key) {
	copy(k[:], id)
	return k
}

// shardOf picks a shard from the id's last characters, which are random.
func (c *cache) shardOf(k *key) *shard {
	h := uint(k[15])*31 + uint(k[14])
	return &c.shards[h%numShards]
}

// get returns the live entry for k; ok is false if absent or stale.
func (c *cache) get(k *key, now int64) (entry, bool) {
	s := c.shardOf(k)
	s.mu.RLock()
	e, ok := s.m[*k]
	s.mu.RUnlock()
	if !ok || now >= e.staleAt {
		return entry{}, false
	}
	return e, true
}

// generation returns the invalidation count of k's shard.
func (c *cache) generation(k *key) uint64 {
	s := c.shardOf(k)
	s.mu.RLock()
	g := s.gen
	s.mu.RUnlock()
	return g
}

// putIfCurrent stores e unless the shard saw an invalidation since gen was
// read: then e may predate a change and is discarded.
func (c *cache) putIfCurrent(k *key, e entry, gen uint64, now int64) {
	s := c.shardOf(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		return
	}
	if _, ok := s.m[*k]; !ok && len(s.m) >= c.maxPerShard {
		s.evictLocked(now)
	}
	s.m[*k] = e
}

// evictLocked makes room: first every stale entry, then, if the shard is
// still over 7/8 full, negative entries, then arbitrary ones (map
// iteration order is random).
func (s *shard) evictLocked(now int64) {
	for k, e := range s.m {
		if now >= e.staleAt {
			delete(s.m, k)
		}
	}
	target := len(s.m) * 7 / 8
	for k, e := range s.m {
		if len(s.m) <= target {
			return
		}
		if e.tok == nil {
			delete(s.m, k)
		}
	}
	for k := range s.m {
		if len(s.m) <= target {
			return
		}
		delete(s.m, k)
	}
}

func (c *cache) invalidate(k *key) {
	s := c.shardOf(k)
	s.mu.Lock()
	delete(s.m, *k)
	s.gen++
	s.mu.Unlock()
}

func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// prefixes interns token prefixes, so the prefix comparison on the hot
// path reads one shared, always-cached string rather than one per token.
var prefixes sync.Map

func intern(s string) string {
	if v, ok := prefixes.Load(s); ok {
		return v.(string)
	}
	v, _ := prefixes.LoadOrStore(s, s)
	return v.(string)
}

// internScopes returns a handle to the token's scopes joined by NUL.
// Tokens issued for the same role share one canonical string, so the scope
// check reads memory that is already in cache instead of a separate
// allocation per token: with many cached tokens that saves a cache miss
// per verification. The unique package drops a set once no entry holds it.
func internScopes(scopes []string) unique.Handle[string] {
	return unique.Make(strings.Join(scopes, "\x00"))
}

// coversAll reports whether the NUL-joined granted scopes cover every
// required scope. It does not allocate.
func coversAll(granted string, required []string) bool {
	for _, r := range required {
		ok := false
		for rest := granted; rest != "" && !ok; {
			g, tail, _ := strings.Cut(rest, "\x00")
			ok = latchkey.ScopeCovers(g, r)
			rest = tail
		}
		if !ok {
			return false
		}
	}
	return true
}
