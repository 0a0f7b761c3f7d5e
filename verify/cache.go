package verify

import (
	"encoding/json"
	"hash/maphash"
	"strings"
	"sync"
	"time"
	"unique"
	"unsafe"

	"github.com/latchkeyhq/latchkey"
)

const numShards = 64

// key is a token id as a fixed array: map lookups hash and compare it in
// place, with no pointer to chase into a separately allocated string.
type key [16]byte

// entry is one cached lookup, stored by value in its table slot. info is
// nil for a negative entry (unknown id). Times are Unix nanoseconds; 0
// means unset.
//
// A slot (key + entry) is 64 bytes, one cache line: everything a
// verification of a plain, valid token reads first (the id, the keyed
// hash, staleness, expiry, status) is in it. The hash is kept to its first
// 16 bytes (a 128-bit truncated HMAC). The rest of the token's facts sit
// behind info, one small allocation per token whose scope list and
// metadata are shared with other tokens that have the same ones: at a
// million cached tokens, that is about 210 bytes of heap each (see
// "latchkey bench --scenarios memory").
type entry struct {
	hash      [16]byte
	staleAt   int64 // when this cache entry must be reloaded
	expiresAt int64 // the token's expires_at (cut to the grace end once rotated)
	info      *tokenInfo
	usedSec   uint32 // last use noted, Unix seconds rounded up (0: never)
	state     state
	flags     uint8
	_         [2]byte
}

// Entry flags.
const (
	flagRotated           = 1 << iota // the token has a successor: expiry means the grace ended
	flagAncestorSuspended             // suspended because an ancestor was
)

// tokenInfo is what a cached token needs beyond its slot.
type tokenInfo struct {
	rotateAt  int64                 // when rotation falls due (0: no policy, or rotated)
	createdAt int64                 // Unix nanoseconds
	scopes    unique.Handle[string] // NUL-joined, interned: what the scope check reads
	scopeList *[]string             // the same as a list, shared (interned) for decisions
	prefix    unique.Handle[string]
	subject   unique.Handle[string]
	keyspace  string           // interned
	meta      *json.RawMessage // shared (interned)
	cons      *constraints     // nil for tokens without constraints
	version   int64
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

// cache is a sharded hash table from token id to entry: open addressing
// with linear probing, entries stored inline in their slots.
//
// It replaces a map[key]entry because with a million cached tokens the
// verification cost is memory latency: a Go map reads a control word and
// then the slot (three or four cache lines, on pages scattered over the
// heap), while a probe here usually reads the two lines of one slot, and
// large tables are backed by transparent huge pages where the kernel
// allows, so they rarely miss the TLB either. A load that raced with a
// change to its token is not stored (loads): it may predate the change.
//
// Negative entries (ids nobody holds) come from whoever presents a token,
// without credentials, so they are kept to a small share of the cache
// (maxNegPerShard: 1/16 of it) and swept on schedule: a shard drops its
// stale entries, and shrinks its table, at most every sweepEvery seconds
// when something is stored in it, and whenever its negative share fills.
type cache struct {
	shards         [numShards]shard
	loads          [numShards]loads // loads[i] is guarded by shards[i].mu
	maxPerShard    int
	maxNegPerShard int
	seed           maphash.Seed
}

type shard struct {
	mu      sync.RWMutex
	slots   []slot // power-of-two length; a zero key marks an empty slot
	n       int32  // occupied slots
	neg     int32  // of which negative entries
	gen     uint32 // bumped by every change without a version, and by purge (wraps; a load spans far fewer)
	sweepAt uint32 // Unix seconds after which the next store sweeps stale entries
} // 64 bytes: one cache line per shard (TestCacheLayout)

// loads are one shard's reads of the store in flight, and the versioned
// changes announced there while any was. A load stores what it read unless
// the shard's generation moved (a change of unknown version, a purge) or a
// change newer than the version it read was announced for its id while
// it ran. A change the read already saw (its creation, announced a
// moment after the commit; a notification that overtook the read) does
// not throw it away, and neither does a change to another token that
// happens to share the shard.
type loads struct {
	n       int32
	changed map[key]int64 // id -> highest version announced while n > 0
}

// maxChanged bounds loads.changed: past it, the shard's generation moves
// instead, and the loads in flight there are not stored.
const maxChanged = 1024

// NegativeShare is the part of the cache negative entries may fill.
const NegativeShare = 16

// sweepEvery is how often, in seconds, a shard that is written to drops
// its stale entries.
const sweepEvery = 10

type slot struct {
	k key // zero: empty (a real id is base62 text, never all zero bytes)
	e entry
}

const minSlots = 64

func newCache(maxEntries int) *cache {
	c := &cache{maxPerShard: max(16, maxEntries/numShards), seed: maphash.MakeSeed()}
	c.maxNegPerShard = max(4, c.maxPerShard/NegativeShare)
	for i := range c.shards {
		c.shards[i].slots = makeSlots(minSlots)
	}
	return c
}

func keyOf(id string) (k key) {
	copy(k[:], id)
	return k
}

// hash is keyed with a random seed: ids of negative entries come from
// whoever presents a token, and must not be able to aim at one probe chain.
func (c *cache) hash(k *key) uint64 { return maphash.Comparable(c.seed, *k) }

func (c *cache) shardOf(h uint64) *shard { return &c.shards[h>>(64-6)] } // numShards = 64

func (c *cache) loadsOf(h uint64) *loads { return &c.loads[h>>(64-6)] }

// find returns the index of k's slot, or of the empty slot ending its
// probe chain. The caller holds the shard's lock.
func (s *shard) find(k *key, h uint64) (int, bool) {
	mask := uint64(len(s.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &s.slots[i]
		if sl.k == *k {
			return int(i), true
		}
		if sl.k == (key{}) {
			return int(i), false
		}
	}
}

// get returns the live entry for k; ok is false if absent or stale.
func (c *cache) get(k *key, now int64) (entry, bool) {
	h := c.hash(k)
	s := c.shardOf(h)
	s.mu.RLock()
	i, ok := s.find(k, h)
	var e entry
	if ok {
		e = s.slots[i].e
	}
	s.mu.RUnlock()
	if !ok || now >= e.staleAt {
		return entry{}, false
	}
	return e, true
}

// begin notes a load of k starting and returns its shard's generation,
// for putIfCurrent or abandon, one of which must follow.
func (c *cache) begin(k *key) uint32 {
	h := c.hash(k)
	s := c.shardOf(h)
	s.mu.Lock()
	c.loadsOf(h).n++
	g := s.gen
	s.mu.Unlock()
	return g
}

// abandon ends a load begun with begin that stores nothing.
func (c *cache) abandon(k *key) {
	h := c.hash(k)
	s := c.shardOf(h)
	s.mu.Lock()
	c.loadsOf(h).done()
	s.mu.Unlock()
}

func (l *loads) done() {
	if l.n--; l.n == 0 {
		l.changed = nil
	}
}

// putIfCurrent ends a load begun with begin and stores e, unless e may
// predate a change announced while it ran (loads): then it is discarded.
func (c *cache) putIfCurrent(k *key, e entry, gen uint32, now int64) {
	h := c.hash(k)
	s := c.shardOf(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	l := c.loadsOf(h)
	newer, changed := l.changed[*k]
	l.done()
	if s.gen != gen || changed && (e.info == nil || e.info.version < newer) {
		return
	}
	negative := e.info == nil
	if sec := uint32(now / int64(time.Second)); sec >= s.sweepAt || (negative && int(s.neg) >= c.maxNegPerShard) {
		c.sweepLocked(s, now)
		s.sweepAt = sec + sweepEvery
	}
	i, ok := s.find(k, h)
	if ok {
		if old := s.slots[i].e.info == nil; old != negative {
			if negative {
				s.neg++
			} else {
				s.neg--
			}
		}
		s.slots[i].e = e
		return
	}
	if negative && int(s.neg) >= c.maxNegPerShard {
		return // the share is full of live negative entries: the next miss reads the store again
	}
	if int(s.n) >= c.maxPerShard {
		c.evictLocked(s, now)
	} else if (int(s.n)+1)*8 > len(s.slots)*7 {
		c.rehashLocked(s, len(s.slots)*2, func(*slot) bool { return true })
	}
	i, _ = s.find(k, h)
	s.slots[i] = slot{k: *k, e: e}
	s.n++
	if negative {
		s.neg++
	}
}

// sweepLocked drops the shard's stale entries, and shrinks its table when
// what is left would fit in half of it.
func (c *cache) sweepLocked(s *shard, now int64) {
	stale := 0
	for j := range s.slots {
		if sl := &s.slots[j]; sl.k != (key{}) && now >= sl.e.staleAt {
			stale++
		}
	}
	if stale == 0 {
		return
	}
	live := int(s.n) - stale
	size := len(s.slots)
	for size > minSlots && (live+1)*8 <= (size/2)*7/2 {
		size /= 2
	}
	c.rehashLocked(s, size, func(sl *slot) bool { return now < sl.e.staleAt })
}

// rehashLocked rebuilds the shard's table with size slots, keeping the
// slots keep accepts.
func (c *cache) rehashLocked(s *shard, size int, keep func(*slot) bool) {
	old := s.slots
	s.slots, s.n, s.neg = makeSlots(size), 0, 0
	mask := uint64(size - 1)
	for j := range old {
		sl := &old[j]
		if sl.k == (key{}) || !keep(sl) {
			continue
		}
		i := c.hash(&sl.k) & mask
		for s.slots[i].k != (key{}) {
			i = (i + 1) & mask
		}
		s.slots[i] = *sl
		s.n++
		if sl.e.info == nil {
			s.neg++
		}
	}
}

// evictLocked makes room in a full shard: it drops every stale entry, then,
// if the shard is still over 7/8 of its cap, negative entries, then
// arbitrary ones (in slot order, which follows the keyed hash).
func (c *cache) evictLocked(s *shard, now int64) {
	target := c.maxPerShard * 7 / 8
	live := 0
	for j := range s.slots {
		if sl := &s.slots[j]; sl.k != (key{}) && now < sl.e.staleAt {
			live++
		}
	}
	keepNegative := live <= target
	budget := target
	c.rehashLocked(s, len(s.slots), func(sl *slot) bool {
		if now >= sl.e.staleAt || (sl.e.info == nil && !keepNegative) || budget == 0 {
			return false
		}
		budget--
		return true
	})
}

// touch raises the last-use time of k's entry, if cached, to sec.
func (c *cache) touch(k *key, sec uint32) {
	h := c.hash(k)
	s := c.shardOf(h)
	s.mu.Lock()
	if i, ok := s.find(k, h); ok && s.slots[i].e.usedSec < sec {
		s.slots[i].e.usedSec = sec
	}
	s.mu.Unlock()
}

// invalidateBefore removes k, shifting later members of its probe chain back so
// that no lookup stops early at the hole (backward-shift deletion).
// An entry already at version or later stays (version 0: any entry goes).
// A load of k in flight is not stored unless it read version or later;
// with version 0, no load in flight in the shard is stored.
func (c *cache) invalidateBefore(k *key, version int64) {
	h := c.hash(k)
	s := c.shardOf(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch l := c.loadsOf(h); {
	case version <= 0:
		s.gen++
	case l.n == 0:
	case len(l.changed) >= maxChanged:
		// Every load in flight here is dropped; those that begin
		// later read this change.
		s.gen++
		l.changed = nil
	default:
		if l.changed == nil {
			l.changed = map[key]int64{}
		}
		l.changed[*k] = max(l.changed[*k], version)
	}
	i, ok := s.find(k, h)
	if !ok {
		return
	}
	if in := s.slots[i].e.info; version > 0 && in != nil && in.version >= version {
		return
	}
	if s.slots[i].e.info == nil {
		s.neg--
	}
	mask := len(s.slots) - 1
	for j := (i + 1) & mask; s.slots[j].k != (key{}); j = (j + 1) & mask {
		home := int(c.hash(&s.slots[j].k)) & mask
		// Move slot j into the hole at i unless its home lies cyclically
		// in (i, j]: then it is reachable from its home without passing i.
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			s.slots[i] = s.slots[j]
			i = j
		}
	}
	s.slots[i] = slot{}
	s.n--
}

// purge empties the cache. Loads in flight do not repopulate it.
func (c *cache) purge() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.gen++
		s.slots, s.n, s.neg = makeSlots(minSlots), 0, 0
		s.mu.Unlock()
	}
}

func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += int(s.n)
		s.mu.RUnlock()
	}
	return n
}

// makeSlots allocates a table, asking for huge pages when it is large.
func makeSlots(n int) []slot {
	slots := make([]slot, n)
	if size := n * int(unsafe.Sizeof(slot{})); size >= 2<<20 {
		adviseHugePages(unsafe.Pointer(&slots[0]), size)
	}
	return slots
}

// interned shares equal values between cached tokens: scope lists and
// metadata are usually the same for every token of a role. It holds at
// most max distinct values (they are kept until the process ends, so the
// table is bounded); past that, each token keeps its own copy.
type interned[V any] struct {
	mu  sync.RWMutex
	m   map[string]*V
	max int
}

func (t *interned[V]) get(k string, mk func() V) *V {
	t.mu.RLock()
	v, ok := t.m[k]
	t.mu.RUnlock()
	if ok {
		return v
	}
	nv := mk()
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.m[k]; ok {
		return v
	}
	if t.m == nil {
		t.m = map[string]*V{}
	}
	if len(t.m) >= t.max {
		return &nv
	}
	t.m[strings.Clone(k)] = &nv
	return &nv
}

var (
	scopeLists = interned[[]string]{max: 1 << 16}
	metas      = interned[json.RawMessage]{max: 1 << 16}
)

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
