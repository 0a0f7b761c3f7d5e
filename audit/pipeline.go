// Package audit moves audit events from the hot path to the store: the
// verifier enqueues a record without waiting, and one writer goroutine
// commits them in batches (group commit).
//
// Nothing is dropped silently. A full queue makes Record wait
// (backpressure) and counts the wait; a failing store is retried with
// backoff, and events still unwritten when Close gives up are counted and
// logged.
package audit

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// Sink stores a batch of events in one transaction. latchkey.Store
// satisfies it.
type Sink interface {
	AppendAudit(ctx context.Context, evs []latchkey.AuditEvent) error
}

// Pipeline batches audit events into a Sink. Set the fields, then call
// Start; zero values take the defaults given. Record is safe for
// concurrent use.
type Pipeline struct {
	Sink Sink
	// BatchSize is the most events written in one transaction (default 512).
	BatchSize int
	// FlushInterval is the longest an event waits for its batch to fill
	// (default 50ms); it bounds the loss window on a hard crash.
	FlushInterval time.Duration
	// QueueSize is how many events may wait (default 16384). When full,
	// Record blocks until the writer catches up.
	QueueSize int
	// Logger receives write failures (default slog.Default()).
	Logger *slog.Logger

	ch      chan latchkey.AuditEvent
	done    chan struct{}
	stop    chan struct{}
	closed  atomic.Bool
	started sync.Once

	enqueued atomic.Uint64
	mu       sync.Mutex
	cond     *sync.Cond
	written  uint64 // guarded by mu

	stalls  atomic.Uint64
	failed  atomic.Uint64
	retries atomic.Uint64
}

// Stats are the pipeline's counters.
type Stats struct {
	Enqueued uint64 // events accepted by Record
	Written  uint64 // events committed to the sink
	Stalls   uint64 // times Record waited on a full queue (backpressure)
	Retries  uint64 // failed batch writes that were retried
	Lost     uint64 // events abandoned at Close because the sink kept failing
}

// Stats returns the current counters.
func (p *Pipeline) Stats() Stats {
	p.mu.Lock()
	w := p.written
	p.mu.Unlock()
	return Stats{Enqueued: p.enqueued.Load(), Written: w, Stalls: p.stalls.Load(), Retries: p.retries.Load(), Lost: p.failed.Load()}
}

// Start launches the writer goroutine. It must be called once before Record.
func (p *Pipeline) Start() {
	p.started.Do(func() {
		if p.BatchSize <= 0 {
			p.BatchSize = 512
		}
		if p.FlushInterval <= 0 {
			p.FlushInterval = 50 * time.Millisecond
		}
		if p.QueueSize <= 0 {
			p.QueueSize = 16384
		}
		if p.Logger == nil {
			p.Logger = slog.Default()
		}
		p.ch = make(chan latchkey.AuditEvent, p.QueueSize)
		p.done = make(chan struct{})
		p.stop = make(chan struct{})
		p.cond = sync.NewCond(&p.mu)
		go p.run()
	})
}

// Record enqueues ev without waiting for the store. When the queue is full
// it waits (and counts the stall). After Close it writes ev directly, so a
// straggler is never lost.
func (p *Pipeline) Record(ev latchkey.AuditEvent) {
	if p.closed.Load() {
		p.writeDirect(ev)
		return
	}
	p.enqueued.Add(1)
	select {
	case p.ch <- ev:
	default:
		p.stalls.Add(1)
		p.ch <- ev
	}
}

func (p *Pipeline) writeDirect(ev latchkey.AuditEvent) {
	p.enqueued.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Sink.AppendAudit(ctx, []latchkey.AuditEvent{ev}); err != nil {
		p.failed.Add(1)
		p.Logger.Error("audit: writing a late event failed; one event lost", "err", err)
		return
	}
	p.markWritten(1)
}

func (p *Pipeline) markWritten(n int) {
	p.mu.Lock()
	p.written += uint64(n)
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Flush waits until every event recorded before the call is committed, or
// ctx ends. Use it where a reader must see its own writes (tests, sync
// durability).
func (p *Pipeline) Flush(ctx context.Context) error {
	target := p.enqueued.Load()
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.written+p.failed.Load() < target {
		if err := ctx.Err(); err != nil {
			return err
		}
		p.cond.Wait()
	}
	return nil
}

// Close stops the writer after draining the queue, waiting at most until
// ctx ends. Events the sink still refuses by then are counted as lost and
// logged, never silently discarded.
func (p *Pipeline) Close(ctx context.Context) error {
	if !p.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(p.stop)
	select {
	case <-p.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if n := p.failed.Load(); n > 0 {
		p.Logger.Error("audit: events could not be written before shutdown", "lost", n)
	}
	return nil
}

func (p *Pipeline) run() {
	defer close(p.done)
	batch := make([]latchkey.AuditEvent, 0, p.BatchSize)
	timer := time.NewTimer(p.FlushInterval)
	defer timer.Stop()
	for {
		select {
		case ev := <-p.ch:
			batch = append(batch, ev)
			// Take whatever else is already waiting, up to a full batch.
			for len(batch) < p.BatchSize {
				select {
				case ev := <-p.ch:
					batch = append(batch, ev)
					continue
				default:
				}
				break
			}
			if len(batch) >= p.BatchSize {
				batch = p.write(batch, false)
			}
		case <-timer.C:
			if len(batch) > 0 {
				batch = p.write(batch, false)
			}
			timer.Reset(p.FlushInterval)
		case <-p.stop:
			for {
				select {
				case ev := <-p.ch:
					batch = append(batch, ev)
					if len(batch) >= p.BatchSize {
						batch = p.write(batch, true)
					}
					continue
				default:
				}
				break
			}
			if len(batch) > 0 {
				p.write(batch, true)
			}
			return
		}
	}
}

// write commits batch, retrying with backoff while the sink fails. While
// draining at shutdown it gives up after a few attempts and counts the loss.
func (p *Pipeline) write(batch []latchkey.AuditEvent, draining bool) []latchkey.AuditEvent {
	backoff := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := p.Sink.AppendAudit(ctx, batch)
		cancel()
		if err == nil {
			p.markWritten(len(batch))
			clear(batch) // drop references to request strings
			return batch[:0]
		}
		p.retries.Add(1)
		p.Logger.Error("audit: writing a batch failed; retrying", "events", len(batch), "attempt", attempt, "err", err)
		if draining && attempt >= 5 {
			p.failed.Add(uint64(len(batch)))
			p.mu.Lock()
			p.cond.Broadcast()
			p.mu.Unlock()
			clear(batch)
			return batch[:0]
		}
		if draining {
			time.Sleep(backoff)
		} else {
			select {
			case <-time.After(backoff):
			case <-p.stop:
				draining = true // shutting down: a bounded number of tries
			}
		}
		backoff = min(2*backoff, time.Second)
	}
}
