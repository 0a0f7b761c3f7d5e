package verify

import (
	"sync/atomic"
	"unsafe"
)

// Cache counters are striped by the calling goroutine's stack address, so
// concurrent verifications rarely share a cache line: an increment costs
// an uncontended atomic add.
const numCounterStripes = 8

type counterStripe struct {
	lookups atomic.Uint64
	misses  atomic.Uint64
	_       [48]byte // one stripe per cache line
}

type counters struct {
	s [numCounterStripes]counterStripe
}

func (c *counters) stripe() *counterStripe {
	var here byte
	return &c.s[int(uintptr(unsafe.Pointer(&here))>>13)%numCounterStripes]
}

// Stats are the verifier's counters.
type Stats struct {
	// Lookups counts verifications that looked their token up (everything
	// past the format check and the block check).
	Lookups uint64
	// Misses counts lookups the cache could not answer (a store read, or
	// waiting for one already in flight).
	Misses uint64
	// Cached is how many entries the cache holds.
	Cached int
	// SharedFailures counts rate-limit checks the shared limiter (Redis)
	// could not answer: each was counted by the node alone, or refused
	// with SharedFailClosed.
	SharedFailures uint64
}

// Stats returns the counters; the cache hit ratio is 1 - Misses/Lookups.
func (v *Verifier) Stats() Stats {
	var st Stats
	for i := range v.counters.s {
		st.Lookups += v.counters.s[i].lookups.Load()
		st.Misses += v.counters.s[i].misses.Load()
	}
	st.Cached = v.cache.len()
	st.SharedFailures = v.sharedFailures.Load()
	return st
}
