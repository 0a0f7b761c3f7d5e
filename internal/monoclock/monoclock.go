// Package monoclock is a cheap monotonic clock for measuring short
// intervals on the verification hot path.
//
// time.Since costs about 25 ns on a VM (Go calls the vDSO on the system
// stack); reading the CPU's time-stamp counter directly costs about 10 ns.
// Nanos reads the counter when the kernel itself trusts it (its current
// clocksource is "tsc", so the counter is invariant and synchronised across
// CPUs) and converts it with a rate measured against the runtime's
// monotonic clock. Until a rate is known, and on other platforms, it falls
// back to the runtime's clock.
package monoclock

import (
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// origin anchors the fallback clock.
var origin = time.Now()

func fallback() int64 { return int64(time.Since(origin)) }

// calib converts counter ticks to nanoseconds since origin.
type calib struct {
	ticks0    int64   // counter at the anchor
	nanos0    int64   // fallback clock at the anchor
	nsPerTick float64 // measured rate
}

var (
	state   atomic.Pointer[calib]
	first   atomic.Pointer[calib] // the first anchor; rates are measured from it
	checked sync.Once
	usable  bool
)

// Nanos returns nanoseconds since an arbitrary origin. Differences of two
// readings measure elapsed time; it never goes backwards within a
// calibration and is re-anchored by Recalibrate.
func Nanos() int64 {
	if c := state.Load(); c != nil {
		return c.nanos0 + int64(float64(ticks()-c.ticks0)*c.nsPerTick)
	}
	return fallback()
}

// Recalibrate measures the counter's rate against the runtime's monotonic
// clock over the time since the first call, and re-anchors Nanos at now.
// Call it now and then (the verifier does, once a second); the first call
// only records an anchor, and Nanos uses the counter from the second on.
func Recalibrate() {
	checked.Do(func() { usable = hasTSC && kernelTrustsTSC() })
	if !usable {
		return
	}
	t, n := ticks(), fallback()
	f := first.Load()
	if f == nil {
		first.CompareAndSwap(nil, &calib{ticks0: t, nanos0: n})
		return
	}
	dt, dn := t-f.ticks0, n-f.nanos0
	if dt <= 0 || dn < int64(100*time.Millisecond) {
		return // too short an interval for a precise rate
	}
	state.Store(&calib{ticks0: t, nanos0: n, nsPerTick: float64(dn) / float64(dt)})
}

func kernelTrustsTSC() bool {
	b, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	return err == nil && strings.TrimSpace(string(b)) == "tsc"
}
