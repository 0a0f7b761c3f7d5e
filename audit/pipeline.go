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
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/secret"
)

// Sink stores a batch of events in one transaction. latchkey.Store
// satisfies it.
type Sink interface {
	AppendAudit(ctx context.Context, evs []latchkey.AuditEvent) error
}

// BatchSink is a Sink that tells a retried batch from a new one: key is
// the same for every attempt at one batch, so a batch whose commit
// succeeded but whose answer was lost (the connection dropped after
// COMMIT) is not written twice. The pipeline uses it when its Sink has it
// (postgres.DB does; an embedded SQLite commit has no answer to lose).
type BatchSink interface {
	AppendAuditBatch(ctx context.Context, key string, evs []latchkey.AuditEvent) error
}

// Pipeline batches audit events into a Sink. Set the fields, then call
// Start; zero values take the defaults given. Record is safe for
// concurrent use.
//
// Record appends to a chunk of BatchSize events owned by one of several
// mutex-striped slots; a full chunk goes to the writer on a channel, which
// commits it as one transaction without copying it, and the slot takes an
// empty chunk from a free list. Chunks are recycled, and the writer
// goroutine wakes once per chunk (or per FlushInterval, when it gathers the
// partly filled chunks into one transaction), not once per event. When
// every chunk is waiting to be written, Record blocks: that is the
// backpressure, and it is counted.
type Pipeline struct {
	Sink Sink
	// Node names this server in the records expanded from Attempts.
	Node string
	// BatchSize is the most events written in one transaction (default
	// 2048: each commit costs the store an fsync and its WAL work, ~0.4 ms
	// of CPU on SQLite, so fewer, larger ones are cheaper per record).
	BatchSize int
	// FlushInterval is the longest an event waits before it is written
	// (default 50ms); it bounds the loss window on a hard crash.
	FlushInterval time.Duration
	// QueueSize is how many events may wait (default 16384; rounded up to
	// whole chunks of BatchSize events, at least 10 chunks). When full,
	// Record blocks until the writer catches up.
	QueueSize int
	// Logger receives write failures (default slog.Default()).
	Logger *slog.Logger
	// Observe, when set, sees every batch right after it is committed, on
	// the writer goroutine (the detector's VALID rules). It must not keep
	// the slice, and must be quick: the queue waits for it.
	Observe func(evs []latchkey.AuditEvent)
	// OnCommit, when set, is told the size and duration of every committed
	// batch (for the batch commit latency metric).
	OnCommit func(n int, took time.Duration)

	stripes [numStripes]stripe
	wakeAt  int         // full chunks that wake the writer before its tick
	free    chan *chunk // empty chunks
	full    chan *chunk // chunks waiting for the writer
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	started sync.Once
	closing sync.Once

	mu      sync.Mutex
	cond    *sync.Cond    // broadcast when events are written
	written uint64        // guarded by mu
	changed chan struct{} // closed (and replaced) when events are written; guarded by mu

	stalls  atomic.Uint64
	failed  atomic.Uint64
	retries atomic.Uint64
	direct  atomic.Uint64 // events written directly, after Close
}

const numStripes = 8

type chunk struct {
	evs      []latchkey.AuditEvent // cap BatchSize
	attempts []Attempt             // cap BatchSize
}

// Attempt is the compact record of a verification refused before any
// lookup, because its token does not parse (MALFORMED): a fixed-size value
// of one cache line, where an AuditEvent is five. That is what lets a
// flood of made-up tokens be recorded at close to the parser's speed
// (RecordMalformed). The writer expands it into the full record: Kind
// verify, Outcome MALFORMED, Node the pipeline's. It keeps when, from
// where, which request and which door, and why; not the path, method,
// user agent, scopes or detail (the access log has the request line).
type Attempt struct {
	Time                        int64 // Unix nanoseconds
	Action, ClientIP, RequestID string
	Reason                      uint8 // an index into AttemptReasons
	_                           [7]byte
}

// AttemptReasons are the reasons an Attempt can carry (secret.Parse's
// errors); AttemptReason gives the index of one.
var AttemptReasons = [...]string{string(secret.ErrLength), string(secret.ErrPrefix), string(secret.ErrShape),
	string(secret.ErrCharset), string(secret.ErrChecksum), string(secret.ErrRange)}

// AttemptReason returns the index of reason in AttemptReasons (ok false:
// not one of them, so the attempt needs a full record).
func AttemptReason(reason string) (i uint8, ok bool) {
	for i, r := range AttemptReasons {
		if r == reason {
			return uint8(i), true
		}
	}
	return 0, false
}

// expand writes the full record of a.
func (a *Attempt) expand(ev *latchkey.AuditEvent, node string) {
	*ev = latchkey.AuditEvent{Time: time.Unix(0, a.Time), Node: node, RequestID: a.RequestID, Kind: latchkey.KindVerify,
		Action: a.Action, Outcome: latchkey.Malformed.String(), Reason: AttemptReasons[a.Reason%uint8(len(AttemptReasons))],
		ClientIP: a.ClientIP}
}

type stripe struct {
	mu       sync.Mutex
	cur      *chunk   // nil until Record takes one from the free list
	enqueued uint64   // events ever appended here
	closed   bool     // after Close, Record writes directly
	_        [32]byte // 64 bytes: one stripe per cache line (TestStripeLayout)
}

// Stats are the pipeline's counters. Enqueued - Written - Lost is the
// queue depth.
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
	n := p.direct.Load()
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
			p.BatchSize = 2048
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
		n := max(numStripes+2, (p.QueueSize+p.BatchSize-1)/p.BatchSize)
		p.wakeAt = max(1, n/4)
		p.free = make(chan *chunk, n)
		p.full = make(chan *chunk, n)
		for range n {
			p.free <- &chunk{evs: make([]latchkey.AuditEvent, 0, p.BatchSize), attempts: make([]Attempt, 0, p.BatchSize)}
		}
		p.wake = make(chan struct{}, 1)
		p.stop = make(chan struct{})
		p.done = make(chan struct{})
		p.cond = sync.NewCond(&p.mu)
		go p.run()
	})
}

// stripeOf picks a stripe from an address on the calling goroutine's
// stack: each goroutine keeps to one stripe, so concurrent callers rarely
// share a lock or a cache line, and no shared counter is touched.
func stripeOf(stackAddr unsafe.Pointer) int {
	return int(uintptr(stackAddr)>>13) % numStripes
}

// Record enqueues a copy of ev without waiting for the store. When the
// queue is full it blocks until the writer catches up, and counts the
// stall. After Close it writes ev directly, so a straggler is never lost.
func (p *Pipeline) Record(ev *latchkey.AuditEvent) {
	p.RecordFunc(func(dst *latchkey.AuditEvent) { *dst = *ev })
}

// RecordFunc is Record for the hot path: fill writes the event straight
// into its slot in the queue (zeroed beforehand), which saves building it
// elsewhere and copying it in. fill runs under a lock and must be quick.
func (p *Pipeline) RecordFunc(fill func(ev *latchkey.AuditEvent)) {
	var here byte // on the caller's goroutine stack: picks its stripe
	p.record(&p.stripes[stripeOf(unsafe.Pointer(&here))], fill)
}

// RecordOn is RecordFunc for a stream whose order matters (the statements
// of one database session): every record with the same key goes through
// the same stripe, so they are written in the order they were made.
// (RecordFunc picks the stripe by stack address, and a goroutine's stack
// moves when it grows.)
func (p *Pipeline) RecordOn(key uint64, fill func(ev *latchkey.AuditEvent)) {
	p.record(&p.stripes[key%uint64(len(p.stripes))], fill)
}

// RecordMalformed is RecordFunc for an attempt whose token did not parse:
// it enqueues the compact Attempt, a copy of *a.
func (p *Pipeline) RecordMalformed(a *Attempt) {
	var here byte
	st := &p.stripes[stripeOf(unsafe.Pointer(&here))]
	c := p.lock(st)
	if c == nil {
		var ev latchkey.AuditEvent
		a.expand(&ev, p.Node)
		p.writeDirect(ev)
		return
	}
	n := len(c.attempts)
	c.attempts = c.attempts[:n+1]
	c.attempts[n] = *a
	p.added(st, c, n+1 == cap(c.attempts))
}

func (p *Pipeline) record(st *stripe, fill func(ev *latchkey.AuditEvent)) {
	c := p.lock(st)
	if c == nil {
		var ev latchkey.AuditEvent
		fill(&ev)
		p.writeDirect(ev)
		return
	}
	n := len(c.evs)
	c.evs = c.evs[:n+1]
	c.evs[n] = latchkey.AuditEvent{}
	fill(&c.evs[n])
	p.added(st, c, n+1 == cap(c.evs))
}

// lock locks st and returns its current chunk, taking one from the free
// list (waiting, when there is none: backpressure). After Close it
// returns nil, unlocked: the caller writes directly.
func (p *Pipeline) lock(st *stripe) *chunk {
	st.mu.Lock()
	for st.cur == nil && !st.closed {
		select {
		case st.cur = <-p.free:
		default:
			// Backpressure. Wait without the stripe lock: the writer takes
			// that lock to collect partial chunks, and must not be stuck.
			st.mu.Unlock()
			p.stalls.Add(1)
			p.poke()
			c := <-p.free
			st.mu.Lock()
			if st.cur == nil && !st.closed {
				st.cur = c
			} else {
				p.free <- c // never blocks: the channel holds every chunk there is
			}
		}
	}
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	return st.cur
}

// added counts a record just written into c, sends c to the writer when
// it is full, and unlocks st.
func (p *Pipeline) added(st *stripe, c *chunk, full bool) {
	st.enqueued++
	if full {
		st.cur = nil
		p.full <- c // never blocks: the channel holds every chunk there is
		if len(p.full) >= p.wakeAt {
			// The writer takes full chunks at its next tick; it is woken
			// only once a quarter of the queue waits, not once a chunk
			// (a wake is a futex call on the recording goroutine's bill).
			p.poke()
		}
	}
	st.mu.Unlock()
}

func (p *Pipeline) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *Pipeline) writeDirect(ev latchkey.AuditEvent) {
	p.direct.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	redact(&ev)
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
	if n > 0 && p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
	p.mu.Unlock()
}

// Written returns a channel that is closed the next time events are
// committed, for readers following the log (the SSE stream).
func (p *Pipeline) Written() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	return p.changed
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
	p.closing.Do(func() { close(p.stop) })
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

// writer is the writer goroutine's state: the batch of partly filled
// chunks being gathered.
type writer struct {
	p     *Pipeline
	batch []latchkey.AuditEvent
}

// writeChunk commits a full chunk as one transaction, without copying it,
// and returns it to the free list.
func (w *writer) writeChunk(c *chunk, draining bool) {
	if len(c.attempts) > 0 {
		// Attempts are expanded into the batch; the chunk's full records
		// go with them (one transaction).
		w.gather(c, draining)
		w.flush(draining)
		return
	}
	for i := range c.evs {
		redact(&c.evs[i])
	}
	w.p.write(c.evs, draining)
	c.evs = c.evs[:0]
	w.p.free <- c
}

// gather copies a partly filled chunk into the batch, writing whenever the
// batch fills, and returns the chunk to the free list.
func (w *writer) gather(c *chunk, draining bool) {
	for i := range c.evs {
		redact(&c.evs[i])
	}
	for rest := c.evs; len(rest) > 0; {
		n := min(len(rest), w.p.BatchSize-len(w.batch))
		w.batch = append(w.batch, rest[:n]...)
		rest = rest[n:]
		if len(w.batch) == w.p.BatchSize {
			w.batch = w.p.write(w.batch, draining)
		}
	}
	for i := range c.attempts {
		n := len(w.batch)
		w.batch = w.batch[:n+1]
		c.attempts[i].expand(&w.batch[n], w.p.Node)
		redact(&w.batch[n])
		if n+1 == w.p.BatchSize {
			w.batch = w.p.write(w.batch, draining)
		}
	}
	clear(c.attempts) // drop the references to request memory
	c.evs, c.attempts = c.evs[:0], c.attempts[:0]
	w.p.free <- c
}

func (w *writer) flush(draining bool) {
	if len(w.batch) > 0 {
		w.batch = w.p.write(w.batch, draining)
	}
}

// takeFull writes every full chunk already waiting.
func (w *writer) takeFull(draining bool) {
	for {
		select {
		case c := <-w.p.full:
			w.writeChunk(c, draining)
		default:
			return
		}
	}
}

// takePartial gathers the stripes' partly filled chunks into one batch;
// when closing, it also marks each stripe closed under its lock, so no
// event can land in a chunk nobody will drain.
func (w *writer) takePartial(closing bool) {
	for i := range w.p.stripes {
		st := &w.p.stripes[i]
		st.mu.Lock()
		c := st.cur
		if c != nil && (len(c.evs) > 0 || len(c.attempts) > 0 || closing) {
			st.cur = nil
		} else {
			c = nil
		}
		if closing {
			st.closed = true
		}
		st.mu.Unlock()
		if c != nil {
			// A chunk this stripe filled before c is already in full (it is
			// sent under the lock): write it first, so that the stripe's
			// records keep their order.
			w.takeFull(closing)
			w.gather(c, closing)
		}
	}
	w.flush(closing)
}

func (p *Pipeline) run() {
	defer close(p.done)
	w := &writer{p: p, batch: make([]latchkey.AuditEvent, 0, p.BatchSize)}
	ticker := time.NewTicker(p.FlushInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			w.takeFull(false)
			w.takePartial(false)
		case <-p.wake:
			w.takeFull(false)
			w.takePartial(false)
		case <-p.stop:
			w.takeFull(true)
			w.takePartial(true)
			w.takeFull(true) // chunks filled while the stripes were closing
			return
		}
	}
}

// write commits batch, retrying with backoff while the sink fails. Once
// shutting down it gives up after a few attempts and counts the loss.
func (p *Pipeline) write(batch []latchkey.AuditEvent, draining bool) []latchkey.AuditEvent {
	backoff := 10 * time.Millisecond
	bs, keyed := p.Sink.(BatchSink)
	var key string
	if keyed {
		b := make([]byte, 16)
		rand.Read(b)
		key = hex.EncodeToString(b) // one key for every attempt at this batch
	}
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		var err error
		if keyed {
			err = bs.AppendAuditBatch(ctx, key, batch)
		} else {
			err = p.Sink.AppendAudit(ctx, batch)
		}
		cancel()
		if err == nil {
			if p.OnCommit != nil {
				p.OnCommit(len(batch), time.Since(start))
			}
			if p.Observe != nil {
				p.Observe(batch)
			}
			p.markWritten(len(batch))
			return batch[:0] // stale references are overwritten by the next batch
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
