package verify

import (
	"sync"
	"time"
)

// background is a loop the verifier starts the first time it has work
// for it (so a verifier that never needs it runs no goroutine) and stops
// once, in Close. The zero value is ready.
type background struct {
	mu         sync.Mutex
	started    bool // running, or closed: never started again
	stop, done chan struct{}
}

// start runs fn every interval on a goroutine of its own, unless the loop
// runs already or was closed.
func (b *background) start(every time.Duration, fn func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return
	}
	b.started = true
	b.stop, b.done = make(chan struct{}), make(chan struct{})
	go func(stop, done chan struct{}) {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				fn()
			}
		}
	}(b.stop, b.done)
}

// close stops the loop, waiting for a round in progress; it never starts
// again.
func (b *background) close() {
	b.mu.Lock()
	stop, done := b.stop, b.done
	b.started, b.stop = true, nil
	b.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}
