package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/latchkeyhq/latchkey"
)

type memSink struct {
	mu      sync.Mutex
	evs     []latchkey.AuditEvent
	batches int
	fail    atomic.Int32 // fail this many calls first
	gate    chan struct{}
}

func (m *memSink) AppendAudit(ctx context.Context, evs []latchkey.AuditEvent) error {
	if m.gate != nil {
		<-m.gate
	}
	if m.fail.Load() > 0 {
		m.fail.Add(-1)
		return errors.New("disk full")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evs = append(m.evs, evs...)
	m.batches++
	return nil
}

func (m *memSink) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.evs)
}

func ev(i int) latchkey.AuditEvent {
	return latchkey.AuditEvent{RequestID: fmt.Sprint(i), Kind: latchkey.KindVerify, Outcome: "VALID"}
}

func TestBatchesAndFlush(t *testing.T) {
	s := &memSink{}
	p := &Pipeline{Sink: s, BatchSize: 100, FlushInterval: time.Hour}
	p.Start()
	defer p.Close(context.Background())
	for i := 0; i < 1000; i++ {
		e := ev(i)
		p.Record(&e)
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.len() != 1000 {
		t.Fatalf("after Flush %d of 1000 events written", s.len())
	}
	if s.batches > 20 {
		t.Errorf("1000 events took %d transactions; batching is not working", s.batches)
	}
	seen := map[string]bool{}
	for _, e := range s.evs {
		seen[e.RequestID] = true
	}
	if len(seen) != 1000 {
		t.Errorf("%d distinct events written, want 1000 (duplicates or losses)", len(seen))
	}
}

func TestFlushInterval(t *testing.T) {
	s := &memSink{}
	p := &Pipeline{Sink: s, FlushInterval: 10 * time.Millisecond}
	p.Start()
	defer p.Close(context.Background())
	e := ev(1)
	p.Record(&e)
	deadline := time.Now().Add(2 * time.Second)
	for s.len() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s.len() != 1 {
		t.Error("a lone event was not written within the flush interval")
	}
}

func TestCloseDrains(t *testing.T) {
	s := &memSink{}
	p := &Pipeline{Sink: s, FlushInterval: time.Hour}
	p.Start()
	for i := 0; i < 5000; i++ {
		e := ev(i)
		p.Record(&e)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.len() != 5000 {
		t.Fatalf("Close wrote %d of 5000 queued events", s.len())
	}
	e := ev(5000)
	p.Record(&e) // after Close: written directly, not lost
	if s.len() != 5001 {
		t.Error("an event recorded after Close was lost")
	}
	if st := p.Stats(); st.Written != 5001 || st.Enqueued != 5001 || st.Lost != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestBackpressureCounted(t *testing.T) {
	s := &memSink{gate: make(chan struct{})}
	p := &Pipeline{Sink: s, QueueSize: 64, BatchSize: 8, FlushInterval: time.Millisecond}
	p.Start()
	done := make(chan struct{})
	go func() {
		for i := 0; i < 5000; i++ {
			e := ev(i)
			p.Record(&e)
		}
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("5000 events were accepted by a small queue whose sink is stuck: no backpressure")
	case <-time.After(100 * time.Millisecond):
	}
	close(s.gate)
	<-done
	p.Close(context.Background())
	if s.len() != 5000 {
		t.Errorf("%d of 5000 written", s.len())
	}
	if p.Stats().Stalls == 0 {
		t.Error("stalls were not counted")
	}
}

func TestRetriesFailingSink(t *testing.T) {
	s := &memSink{}
	s.fail.Store(3)
	p := &Pipeline{Sink: s, FlushInterval: time.Millisecond}
	p.Start()
	e := ev(1)
	p.Record(&e)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	p.Close(context.Background())
	if s.len() != 1 || p.Stats().Retries != 3 {
		t.Errorf("written %d, retries %d; want 1 and 3", s.len(), p.Stats().Retries)
	}
}

func TestRedactsFreeText(t *testing.T) {
	s := &memSink{}
	p := &Pipeline{Sink: s}
	p.Start()
	tok := "lk_0123456789ABCDEF_" + "0123456789012345678901234567890123456789012" + "ABCDEF"
	p.Record(&latchkey.AuditEvent{Path: "/x/" + tok, UserAgent: "ua " + tok})
	p.Close(context.Background())
	if e := s.evs[0]; e.Path == "/x/"+tok || e.UserAgent == "ua "+tok {
		t.Errorf("a token in path or user agent reached the sink: %+v", e)
	}
}

type nopSink struct{}

func (nopSink) AppendAudit(context.Context, []latchkey.AuditEvent) error { return nil }

func BenchmarkRecord(b *testing.B) {
	p := &Pipeline{Sink: nopSink{}}
	p.Start()
	defer p.Close(context.Background())
	e := latchkey.AuditEvent{Kind: latchkey.KindVerify, Action: "verify", Outcome: "MALFORMED", Reason: "bad_checksum", ClientIP: "203.0.113.9"}
	b.ReportAllocs()
	for b.Loop() {
		p.Record(&e)
	}
}

func TestStripeLayout(t *testing.T) {
	if n := unsafe.Sizeof(stripe{}); n != 64 {
		t.Errorf("a stripe is %d bytes; keep it at one cache line (64)", n)
	}
}

// Compact attempts fill chunks of their own beside full records: a full
// chunk of them, and a partly filled one, both reach the sink expanded,
// with every field they carry, and none is lost or doubled.
func TestRecordMalformed(t *testing.T) {
	t.Parallel()
	sink := &memSink{}
	p := &Pipeline{Sink: sink, Node: "node-a", BatchSize: 8, QueueSize: 80}
	p.Start()
	const n = 8*3 + 5
	for i := range n {
		p.RecordMalformed(&Attempt{Time: int64(i) * 1000, Action: "verify", ClientIP: "192.0.2.1", RequestID: fmt.Sprint("r", i), Reason: 4})
		if i%7 == 0 {
			p.Record(&latchkey.AuditEvent{Kind: latchkey.KindVerify, Action: "verify", Outcome: "VALID", RequestID: fmt.Sprint("v", i)})
		}
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	valid := 0
	sink.mu.Lock()
	all := append([]latchkey.AuditEvent(nil), sink.evs...)
	sink.mu.Unlock()
	for _, ev := range all {
		if ev.Outcome == "VALID" {
			valid++
			continue
		}
		var i int
		if _, err := fmt.Sscanf(ev.RequestID, "r%d", &i); err != nil || seen[ev.RequestID] {
			t.Fatalf("unexpected or doubled record %+v", ev)
		}
		seen[ev.RequestID] = true
		if ev.Node != "node-a" || ev.Kind != latchkey.KindVerify || ev.Outcome != "MALFORMED" || ev.Reason != "bad_checksum" ||
			ev.ClientIP != "192.0.2.1" || ev.Time.UnixNano() != int64(i)*1000 {
			t.Errorf("attempt %d: %+v", i, ev)
		}
	}
	if len(seen) != n || valid != (n+6)/7 {
		t.Errorf("%d attempts and %d full records reached the sink, want %d and %d", len(seen), valid, n, (n+6)/7)
	}
	if i, ok := AttemptReason("bad_checksum"); !ok || AttemptReasons[i] != "bad_checksum" {
		t.Errorf("AttemptReason(bad_checksum) = %d %v", i, ok)
	}
	if _, ok := AttemptReason("something_else"); ok {
		t.Error("an unknown reason has an index")
	}
}

func TestAttemptLayout(t *testing.T) {
	if n := unsafe.Sizeof(Attempt{}); n != 64 {
		t.Errorf("an Attempt is %d bytes; keep it at one cache line (64)", n)
	}
}

// Full chunks wake the writer once a quarter of the queue waits, without
// its tick (an hour here): a burst is written at once, and backpressure
// never waits for the tick.
func TestFullChunksWakeTheWriter(t *testing.T) {
	t.Parallel()
	sink := &memSink{}
	p := &Pipeline{Sink: sink, BatchSize: 4, QueueSize: 40, FlushInterval: time.Hour} // 10 chunks: a wake at 2 full
	p.Start()
	defer p.Close(context.Background())
	written := p.Written()
	for range 8 * 4 { // more than the queue holds, from one goroutine
		p.Record(&latchkey.AuditEvent{Kind: latchkey.KindVerify, Action: "verify", Outcome: "VALID"})
	}
	select {
	case <-written:
	case <-time.After(10 * time.Second):
		t.Fatal("full chunks waited for the writer's tick")
	}
	if st := p.Stats(); st.Written == 0 || st.Enqueued != 32 {
		t.Errorf("stats %+v", st)
	}
}
