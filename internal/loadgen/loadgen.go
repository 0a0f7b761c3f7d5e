// Package loadgen drives HTTP load for latchkey's benchmarks: closed-loop
// throughput (N connections as fast as they go) and open-loop latency (a
// steady rate, whatever the answers), plus the statistics to compare a
// system with a baseline measured in the same run.
package loadgen

import (
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Client returns an HTTP client that keeps conc connections per host
// open, so that the load measures the server, not connection set-up.
func Client(conc int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 4 * conc, MaxIdleConnsPerHost: 4 * conc, IdleConnTimeout: time.Minute,
		DisableCompression: true,
	}}
}

// Closed runs conc workers calling do back to back for d and returns the
// successful calls per second and the failed calls. do is given the
// worker's number and its call count, to vary requests without shared
// state.
func Closed(conc int, d time.Duration, do func(worker, i int) bool) (perSec float64, failed int64) {
	var ok, bad atomic.Int64
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				if do(w, i) {
					ok.Add(1)
				} else {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return float64(ok.Load()) / time.Since(start).Seconds(), bad.Load()
}

// Open sends calls at a steady rate (per second) for d, each on its own
// goroutine, and returns the latencies of those that succeeded and the
// number that failed. Calls go out in small batches every millisecond; a
// late tick is not made up for with a burst, so a stalled generator does
// not queue calls behind itself.
func Open(rate float64, d time.Duration, do func(i int) bool) (lat []time.Duration, failed int64) {
	var mu sync.Mutex
	var bad atomic.Int64
	var wg sync.WaitGroup
	perTick := rate / 1000
	owed := 0.0
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(d)
	n := 0
	for now := range tick.C {
		if now.After(end) {
			break
		}
		owed = min(owed+perTick, 2*perTick+1)
		for ; owed >= 1; owed-- {
			i := n
			n++
			wg.Go(func() {
				t0 := time.Now()
				if !do(i) {
					bad.Add(1)
					return
				}
				took := time.Since(t0)
				mu.Lock()
				lat = append(lat, took)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return lat, bad.Load()
}

// Percentile returns the p-th percentile (0..100) of lat, 0 if empty.
func Percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// Median returns the median of xs (the upper one of an even count), 0 if
// empty.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
