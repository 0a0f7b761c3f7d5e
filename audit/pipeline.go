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
	"github.com/latchkeyhq/latchkey/secret"
)

// Sink stores a batch of events in one transaction. latchkey.Store
// satisfies it.
type Sink interface {
	AppendAudit(ctx context.Context, evs []latchkey.AuditEvent) error
}

// Pipeline batches audit events into a Sink. Set the fields, then call
// Start; zero values take the defaults given. Record is safe for
// concurrent use.
//
// Record appends to one of several mutex-striped buffers and wakes the
// writer only when a stripe holds a batch's worth; otherwise the writer
// collects on its FlushInterval tick. (A channel send per event would wake
// the writer goroutine for every verification, which costs more than the
// verification itself.)
type Pipeline struct {
	Sink Sink
	// BatchSize is the most events written in one transaction (default 512).
	BatchSize int
	// FlushInterval is the longest an event waits before it is written
	// (default 50ms); it bounds the loss window on a hard crash.
	FlushInterval time.Duration
	// QueueSize is how many events may wait (default 16384). When full,
	// Record blocks until the writer catches up.
	QueueSize int
	// Logger receives write failures (default slog.Default()).
	Logger *slog.Logger

	stripes   [numStripes]stripe
	perStripe int           // QueueSize / numStripes
	wakeAt    int           // stripe length that wakes the writer
	next      atomic.Uint32 // round-robin stripe choice
	wake      chan struct{} // capacity 1: "there is work"
	stop      chan struct{}
	done      chan struct{}
	started   sync.Once
	closing   sync.Once

	mu      sync.Mutex
	cond    *sync.Cond // broadcast when events are written or space frees
	written uint64     // guarded by mu

	stalls  atomic.Uint64
	failed  atomic.Uint64
	retries atomic.Uint64
}

const numStripes = 8

type stripe struct {
	mu       sync.Mutex
	buf      []latchkey.AuditEvent
	enqueued uint64 // events ever appended here
	closed   bool   // after Close, Record writes directly
	_        [32]byte
}

// Stats are the pipeline's counters.
type Stats struct {
	Enqueued uint64 // events accepted by Record
	Written  uint64 // events committed to the sink
	Stalls   uint64 // times Record waited on a full queue (backpressure)
	Retries  uint64 // failed batch writes that were retried
	Lost     uint64 // events abandoned because the sink kept failing at shutdown
}

// Stats returns the current counters.
func (p *Pipeline) Stats() Stats {
	p.mu.Lock()
	w := p.written
	p.mu.Unlock()
	return Stats{Enqueued: p.enqueued(), Written: w, Stalls: p.stalls.Load(), Retries: p.retries.Load(), Lost: p.failed.Load()}
}

func (p *Pipeline) enqueued() uint64 {
	var n uint64
	for i := range p.stripes {
		st := &p.stripes[i]
		st.mu.Lock()
		n += st.enqueued
		st.mu.Unlock()
	}
	return n
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
		p.perStripe = max(1, p.QueueSize/numStripes)
		p.wakeAt = max(1, p.perStripe/2)
		for i := range p.stripes {
			p.stripes[i].buf = make([]latchkey.AuditEvent, 0, p.perStripe)
		}
		p.wake = make(chan struct{}, 1)
		p.stop = make(chan struct{})
		p.done = make(chan struct{})
		p.cond = sync.NewCond(&p.mu)
		go p.run()
	})
}

func (p *Pipeline) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Record enqueues ev without waiting for the store. When the queue is full
// it blocks until the writer catches up, and counts the stall. After Close
// it writes ev directly, so a straggler is never lost.
func (p *Pipeline) Record(ev latchkey.AuditEvent) {
	st := &p.stripes[p.next.Add(1)%numStripes]
	st.mu.Lock()
	for len(st.buf) >= p.perStripe && !st.closed {
		st.mu.Unlock()
		p.waitForSpace(st)
		st.mu.Lock()
	}
	if st.closed {
		st.mu.Unlock()
		p.writeDirect(ev)
		return
	}
	st.buf = append(st.buf, ev)
	st.enqueued++
	full := len(st.buf) >= p.wakeAt
	st.mu.Unlock()
	if full {
		p.poke()
	}
}

func (p *Pipeline) waitForSpace(st *stripe) {
	p.stalls.Add(1)
	p.poke()
	p.mu.Lock()
	for {
		st.mu.Lock()
		ok := len(st.buf) < p.perStripe || st.closed
		st.mu.Unlock()
		if ok {
			break
		}
		p.cond.Wait()
	}
	p.mu.Unlock()
}

func (p *Pipeline) writeDirect(ev latchkey.AuditEvent) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Sink.AppendAudit(ctx, []latchkey.AuditEvent{ev}); err != nil {
		p.failed.Add(1)
		p.Logger.Error("audit: writing an event after shutdown failed; one event lost", "err", err)
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

// Flush waits until every event recorded before the call is committed (or
// counted lost), or ctx ends. Use it where a reader must see its own writes.
func (p *Pipeline) Flush(ctx context.Context) error {
	target := p.enqueued()
	p.poke()
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

// Close drains the queue and stops the writer, waiting at most until ctx
// ends. Events recorded afterwards are written directly. Events the sink
// still refuses at shutdown are counted as lost and logged.
func (p *Pipeline) Close(ctx context.Context) error {
	p.closing.Do(func() {
		// Closing each stripe under its lock leaves no window in which an
		// event could land in a buffer nobody will drain.
		for i := range p.stripes {
			st := &p.stripes[i]
			st.mu.Lock()
			st.closed = true
			st.mu.Unlock()
		}
		close(p.stop)
	})
	select {
	case <-p.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if n := p.failed.Load(); n > 0 {
		p.Logger.Error("audit: events could not be written", "lost", n)
	}
	return nil
}

func (p *Pipeline) run() {
	defer close(p.done)
	batch := make([]latchkey.AuditEvent, 0, p.BatchSize)
	var spare [numStripes][]latchkey.AuditEvent
	for i := range spare { // swapped in for the stripes' buffers: no growth on the hot path
		spare[i] = make([]latchkey.AuditEvent, 0, p.perStripe)
	}
	ticker := time.NewTicker(p.FlushInterval)
	defer ticker.Stop()
	for {
		draining := false
		select {
		case <-p.wake:
		case <-ticker.C:
		case <-p.stop:
			draining = true
		}
		// Swap each stripe's buffer for an empty one, then write what was
		// taken in full batches; the last partial batch goes out now too.
		for i := range p.stripes {
			st := &p.stripes[i]
			st.mu.Lock()
			taken := st.buf
			st.buf = spare[i][:0]
			st.mu.Unlock()
			for i := range taken {
				redact(&taken[i])
			}
			for rest := taken; len(rest) > 0; {
				n := min(len(rest), p.BatchSize-len(batch))
				batch = append(batch, rest[:n]...)
				rest = rest[n:]
				if len(batch) == p.BatchSize {
					batch = p.write(batch, draining)
				}
			}
			clear(taken) // drop references to request strings
			spare[i] = taken[:0]
		}
		if len(batch) > 0 {
			batch = p.write(batch, draining)
		}
		p.mu.Lock()
		p.cond.Broadcast() // space freed for stalled Record calls
		p.mu.Unlock()
		if draining {
			return
		}
	}
}

// write commits batch, retrying with backoff while the sink fails. Once
// shutting down it gives up after a few attempts and counts the loss.
func (p *Pipeline) write(batch []latchkey.AuditEvent, draining bool) []latchkey.AuditEvent {
	backoff := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := p.Sink.AppendAudit(ctx, batch)
		cancel()
		if err == nil {
			p.markWritten(len(batch))
			clear(batch)
			return batch[:0]
		}
		p.retries.Add(1)
		p.Logger.Error("audit: writing a batch failed; retrying", "events", len(batch), "attempt", attempt, "err", err)
		if draining && attempt >= 5 {
			p.failed.Add(uint64(len(batch)))
			p.markWritten(0)
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

// redact scrubs the free-text fields of a record, which echo request input
// (a path or user agent could carry a token by mistake). It runs in the
// writer goroutine, off the verification path.
func redact(ev *latchkey.AuditEvent) {
	ev.Path = secret.Redact(ev.Path)
	ev.UserAgent = secret.Redact(ev.UserAgent)
	ev.Method = secret.Redact(ev.Method)
}
