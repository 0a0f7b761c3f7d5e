// Package ratelimit enforces per-token rate limits in one process with the
// generic cell rate algorithm (GCRA): one verification is allowed every
// Window/Limit, with bursts of up to Limit. A limiter's whole state is one
// integer (the theoretical arrival time), updated with a compare-and-swap,
// so a check costs a few nanoseconds and never takes a lock.
//
// Limits shared by several nodes need a shared counter (Redis); that
// limiter will sit beside this one (docs/architecture.md §9).
package ratelimit

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// dead marks a limiter removed from its table: whoever still holds it
// must fetch the current one.
const dead = math.MinInt64

// Limiter is the state of one rate limit. Times are Unix nanoseconds.
type Limiter struct {
	tat      atomic.Int64 // theoretical arrival time: when the bucket is full again
	limit    int64
	interval int64 // nanoseconds one verification costs
	window   int64 // interval × limit: the burst tolerance plus one interval
}

// New returns a limiter allowing r.Limit per r.Window.
func New(r latchkey.RateLimit) *Limiter {
	iv := int64(r.Interval())
	return &Limiter{limit: r.Limit, interval: iv, window: iv * r.Limit}
}

// Allow spends one verification at now if the limit allows it. ok=false
// with st.RetryAfter set means refused. gone reports that the limiter was
// removed from its table (idle): fetch the current one and ask again.
func (l *Limiter) Allow(now int64) (ok bool, st latchkey.RateStatus, gone bool) {
	for {
		tat := l.tat.Load()
		if tat == dead {
			return false, st, true
		}
		next := max(tat, now) + l.interval
		if next-now > l.window {
			return false, latchkey.RateStatus{Limit: l.limit, Remaining: 0, Reset: tat,
				RetryAfter: time.Duration(next - l.window - now)}, false
		}
		if l.tat.CompareAndSwap(tat, next) {
			return true, latchkey.RateStatus{Limit: l.limit, Remaining: (l.window - (next - now)) / l.interval, Reset: next}, false
		}
	}
}

// Peek reports whether Allow would allow one verification at now, without
// spending it.
func (l *Limiter) Peek(now int64) (ok, gone bool) {
	tat := l.tat.Load()
	if tat == dead {
		return false, true
	}
	return max(tat, now)+l.interval-now <= l.window, false
}

// Table holds the limiters of one process, one per key (a token's rotation
// series and its limit), so that a token's rate survives cache reloads and
// rotation. Limiters whose bucket has refilled are swept out as the table
// grows: a fresh limiter behaves exactly like a full one.
type Table struct {
	mu        sync.Mutex
	m         map[string]*Limiter
	nextSweep int
	now       func() int64
}

// NewTable returns an empty table. now returns Unix nanoseconds (nil:
// the system clock).
func NewTable(now func() int64) *Table {
	if now == nil {
		now = func() int64 { return time.Now().UnixNano() }
	}
	return &Table{m: map[string]*Limiter{}, nextSweep: 1024, now: now}
}

// Get returns the limiter for series with rate r, creating it if needed.
func (t *Table) Get(series string, r latchkey.RateLimit) *Limiter {
	k := fmt.Sprintf("%s/%d/%d", series, r.Limit, int64(r.Window))
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := t.m[k]; l != nil {
		return l
	}
	if len(t.m) >= t.nextSweep {
		t.sweepLocked(t.now())
		t.nextSweep = max(1024, 2*len(t.m))
	}
	l := New(r)
	t.m[k] = l
	return l
}

// Len reports how many limiters the table holds.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// Sweep removes the limiters that are full at now.
func (t *Table) Sweep(now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked(now)
}

func (t *Table) sweepLocked(now int64) {
	for k, l := range t.m {
		tat := l.tat.Load()
		// Only a full limiter goes, and only if nobody spent from it since
		// it was read; holders then see it dead and fetch a fresh one.
		if tat <= now && l.tat.CompareAndSwap(tat, dead) {
			delete(t.m, k)
		}
	}
}
