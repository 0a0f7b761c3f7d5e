package verify

import (
	"sync"

	"github.com/latchkeyhq/latchkey"
)

const numShards = 64

// entry is one cached lookup. tok is nil for a negative entry (unknown id).
// Times are Unix nanoseconds; 0 means unset. Entries are immutable once
// published.
type entry struct {
	id        string
	tok       *latchkey.Token
	expiresAt int64 // token's expires_at
	notBefore int64 // token's not_before
	staleAt   int64 // when this cache entry must be reloaded
}

// cache is a sharded map from token id to entry. Each shard counts its
// invalidations, so a load that raced with an invalidation is not stored.
type cache struct {
	shards      [numShards]shard
	maxPerShard int
}

type shard struct {
	mu  sync.RWMutex
	m   map[string]*entry
	gen uint64   // bumped by every invalidation in this shard
	_   [24]byte // keep hot shards on separate cache lines
}

func newCache(maxEntries int) *cache {
	c := &cache{maxPerShard: max(16, maxEntries/numShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[string]*entry)
	}
	return c
}

// shardOf picks a shard from the id's last characters, which are random.
func (c *cache) shardOf(id string) *shard {
	if len(id) < 2 {
		return &c.shards[0]
	}
	h := uint(id[len(id)-1])*31 + uint(id[len(id)-2])
	return &c.shards[h%numShards]
}

// get returns the live entry for id, or nil if absent or stale.
func (c *cache) get(id string, now int64) *entry {
	s := c.shardOf(id)
	s.mu.RLock()
	e := s.m[id]
	s.mu.RUnlock()
	if e == nil || now >= e.staleAt {
		return nil
	}
	return e
}

// generation returns the shard's invalidation count for id.
func (c *cache) generation(id string) uint64 {
	s := c.shardOf(id)
	s.mu.RLock()
	g := s.gen
	s.mu.RUnlock()
	return g
}

// putIfCurrent stores e unless the shard saw an invalidation since gen was
// read: then e may predate a change and is discarded.
func (c *cache) putIfCurrent(e *entry, gen uint64, now int64) {
	s := c.shardOf(e.id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		return
	}
	if len(s.m) >= c.maxPerShard {
		s.evictLocked(now)
	}
	s.m[e.id] = e
}

// evictLocked makes room: first every stale entry, then, if the shard is
// still full, negative entries, then arbitrary ones (map order is random).
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

func (c *cache) invalidate(id string) {
	s := c.shardOf(id)
	s.mu.Lock()
	delete(s.m, id)
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
