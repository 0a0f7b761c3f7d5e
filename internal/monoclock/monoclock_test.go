package monoclock

import (
	"testing"
	"time"
)

func TestNanosTracksRuntimeClock(t *testing.T) {
	Recalibrate()
	time.Sleep(150 * time.Millisecond)
	Recalibrate()
	if usable && state.Load() == nil {
		t.Fatal("the counter is usable but no rate was measured")
	}
	t.Logf("counter in use: %v", state.Load() != nil)
	for i := 0; i < 5; i++ {
		a, s := Nanos(), time.Now()
		time.Sleep(20 * time.Millisecond)
		got, want := Nanos()-a, time.Since(s)
		if diff := time.Duration(got) - want; diff < -time.Millisecond || diff > time.Millisecond {
			t.Errorf("Nanos measured %v for an interval of %v", time.Duration(got), want)
		}
	}
	prev := Nanos()
	for i := 0; i < 100000; i++ {
		n := Nanos()
		if n < prev {
			t.Fatalf("Nanos went backwards: %d after %d", n, prev)
		}
		prev = n
	}
}

func BenchmarkNanos(b *testing.B) {
	Recalibrate()
	time.Sleep(110 * time.Millisecond)
	Recalibrate()
	var s int64
	for b.Loop() {
		s += Nanos()
	}
	_ = s
}

func BenchmarkTimeSince(b *testing.B) {
	t := time.Now()
	var s time.Duration
	for b.Loop() {
		s += time.Since(t)
	}
	_ = s
}
