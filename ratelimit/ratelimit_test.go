package ratelimit

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
)

func rl(limit int64, window time.Duration) latchkey.RateLimit {
	return latchkey.RateLimit{Limit: limit, Window: latchkey.Duration(window)}
}

func TestBurstThenSteady(t *testing.T) {
	l := New(rl(100, time.Minute)) // one every 600ms, burst 100
	now := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC).UnixNano()
	for i := range 100 {
		ok, st, _ := l.Allow(now)
		if !ok {
			t.Fatalf("request %d of a burst of 100 refused", i+1)
		}
		if st.Limit != 100 || st.Remaining != int64(99-i) {
			t.Fatalf("request %d: limit %d remaining %d, want 100 and %d", i+1, st.Limit, st.Remaining, 99-i)
		}
	}
	ok, st, _ := l.Allow(now)
	if ok {
		t.Fatal("request 101 within the window allowed")
	}
	if st.Remaining != 0 || st.RetryAfter != 600*time.Millisecond {
		t.Errorf("refusal: remaining %d retry after %v, want 0 and 600ms", st.Remaining, st.RetryAfter)
	}
	if want := now + int64(time.Minute); st.Reset != want {
		t.Errorf("reset = %v, want a full bucket one window later", time.Duration(st.Reset-now))
	}
	// Just before the retry time: still refused. At it: allowed, once.
	if ok, _, _ := l.Allow(now + int64(600*time.Millisecond) - 1); ok {
		t.Error("allowed 1ns before retry_after")
	}
	if ok, _, _ := l.Allow(now + int64(600*time.Millisecond)); !ok {
		t.Error("refused at retry_after")
	}
	if ok, _, _ := l.Allow(now + int64(600*time.Millisecond)); ok {
		t.Error("two allowed for one interval")
	}
	// After a full idle window the whole burst is back.
	later := now + int64(2*time.Minute)
	for i := range 100 {
		if ok, _, _ := l.Allow(later); !ok {
			t.Fatalf("after idling: request %d refused", i+1)
		}
	}
}

func TestSteadyRateHolds(t *testing.T) {
	// Over a long run at twice the rate, exactly limit per window plus the
	// initial burst get through.
	l := New(rl(10, time.Second))
	start := int64(1e18)
	allowed := 0
	for i := range 2000 { // 50ms apart = 20/s for 100s
		if ok, _, _ := l.Allow(start + int64(i)*int64(50*time.Millisecond)); ok {
			allowed++
		}
	}
	if want := 10 + 10*100 - 1; allowed < want-1 || allowed > want+1 {
		t.Errorf("allowed %d of 2000 at 20/s over 100s with 10/s, want about %d", allowed, want)
	}
}

func TestPeekDoesNotSpend(t *testing.T) {
	l := New(rl(1, time.Hour))
	now := int64(1e18)
	for range 3 {
		if ok, _ := l.Peek(now); !ok {
			t.Fatal("Peek refused a fresh limiter")
		}
	}
	l.Allow(now)
	if ok, _ := l.Peek(now); ok {
		t.Error("Peek allowed after the only slot was spent")
	}
}

func TestConcurrentExact(t *testing.T) {
	l := New(rl(1000, time.Hour))
	now := int64(1e18)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for range 100 {
				if a, _, _ := l.Allow(now); a {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1000 {
		t.Errorf("5000 concurrent requests against a burst of 1000: %d allowed", ok.Load())
	}
}

func TestTableSweepAndDead(t *testing.T) {
	now := int64(1e18)
	tab := NewTable(func() int64 { return now })
	r := rl(2, time.Second)
	a := tab.Get("s1", r)
	if tab.Get("s1", r) != a {
		t.Fatal("Get returned a different limiter for the same series")
	}
	if tab.Get("s1", rl(3, time.Second)) == a {
		t.Fatal("a different rate shares the limiter")
	}
	busy := tab.Get("s2", r)
	busy.Allow(now)
	tab.Sweep(now)
	if tab.Len() != 1 {
		t.Fatalf("after sweep %d limiters, want 1 (only the one in use)", tab.Len())
	}
	if _, _, gone := a.Allow(now); !gone {
		t.Error("a swept limiter still answers")
	}
	if tab.Get("s2", r) != busy {
		t.Error("the limiter in use was swept")
	}
}

func BenchmarkAllow(b *testing.B) {
	l := New(rl(1_000_000_000, time.Second))
	now := time.Now().UnixNano()
	for b.Loop() {
		l.Allow(now)
	}
}
