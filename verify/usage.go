package verify

import (
	"context"
	"sync"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// idleNoteEvery is how finely uses are noted for tokens that can expire
// when idle: idle expiry is exact to this.
const idleNoteEvery = time.Second

// usage notes when tokens are used and writes last_used_at behind the hot
// path: each token's latest use is kept in memory and written in one
// batch per interval, so a token is written at most once per interval
// however often it is verified, and no verification waits for a write.
type usage struct {
	mu      sync.Mutex
	pending map[key]int64 // token id → latest use noted (Unix nanoseconds)
	flusher background    // writes them every TouchInterval
}

// note records a use of k at now (after the cache slot was touched).
func (u *usage) note(k key, now int64) {
	u.mu.Lock()
	if u.pending == nil {
		u.pending = map[key]int64{}
	}
	if u.pending[k] < now {
		u.pending[k] = now
	}
	u.mu.Unlock()
}

// latest returns the pending use of k, 0 if none.
func (u *usage) latest(k key) int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.pending[k]
}

// take removes and returns every pending use.
func (u *usage) take() []latchkey.TokenUse {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.pending) == 0 {
		return nil
	}
	out := make([]latchkey.TokenUse, 0, len(u.pending))
	for k, at := range u.pending {
		out = append(out, latchkey.TokenUse{ID: string(k[:]), At: time.Unix(0, at).UTC()})
	}
	clear(u.pending)
	return out
}

// putBack returns uses whose write failed, for the next round.
func (u *usage) putBack(uses []latchkey.TokenUse) {
	for _, x := range uses {
		u.note(keyOf(x.ID), x.At.UnixNano())
	}
}

// noteUse marks the token (and its ancestors) used at now: in the cache,
// so idle expiry sees it at once, and in the write-behind set.
func (v *Verifier) noteUse(k *key, e *entry, now int64) {
	sec := uint32((now + int64(time.Second) - 1) / int64(time.Second))
	v.cache.touch(k, sec)
	v.usage.note(*k, now)
	if c := e.info.cons; c != nil {
		for i := range c.ancestors {
			a := &c.ancestors[i]
			v.cache.touch(a, sec)
			v.usage.note(*a, now)
		}
	}
	v.startFlusher()
}

func (v *Verifier) startFlusher() {
	if v.store == nil {
		return
	}
	v.usage.flusher.start(v.cfg.TouchInterval, func() { v.FlushUsage(context.Background()) })
}

// FlushUsage writes every pending last use now. Uses whose write fails
// are kept for the next attempt.
func (v *Verifier) FlushUsage(ctx context.Context) error {
	uses := v.usage.take()
	if len(uses) == 0 || v.store == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, v.cfg.LoadTimeout)
	defer cancel()
	if err := v.store.TouchTokens(ctx, uses); err != nil {
		v.usage.putBack(uses)
		return err
	}
	return nil
}

// Close stops the background writer and writes what is pending: last
// uses, and the counts of sampled refusals not yet on record.
func (v *Verifier) Close(ctx context.Context) error {
	v.flushRefusals()
	v.usage.flusher.close()
	return v.FlushUsage(ctx)
}
