package postgres_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/postgres"
)

// ackLoser is a TCP proxy in front of PostgreSQL that, when armed, lets
// the next COMMIT through and drops the connection before the server's
// answer reaches the client: the transaction is committed, and the client
// cannot know it.
type ackLoser struct {
	ln    net.Listener
	to    string
	armed atomic.Bool
	lost  atomic.Int32
	wg    sync.WaitGroup
}

func newAckLoser(t *testing.T, to string) *ackLoser {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &ackLoser{ln: ln, to: to}
	p.wg.Go(p.serve)
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *ackLoser) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.to)
		if err != nil {
			c.Close()
			continue
		}
		p.wg.Go(func() { io.Copy(c, s); c.Close() })
		p.wg.Go(func() { p.clientToServer(c, s) })
	}
}

// commitMsg is a simple-protocol Query for "commit", as pgx sends it.
var commitMsg = append([]byte{'Q', 0, 0, 0, 11}, "commit\x00"...)

func (p *ackLoser) clientToServer(c, s net.Conn) {
	defer s.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if bytes.Contains(chunk, commitMsg) && p.armed.CompareAndSwap(true, false) {
				// Cut the client off first, so that no answer reaches it; then
				// hand the server the COMMIT and give it time to run it.
				p.lost.Add(1)
				c.Close()
				s.Write(chunk)
				time.Sleep(100 * time.Millisecond)
				s.Close()
				return
			}
			if _, werr := s.Write(chunk); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// A batch whose COMMIT succeeded but whose answer was lost is retried by
// the audit writer with the same key, and written once: no record twice,
// the chain intact.
func TestAuditBatchAckLoss(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, dsn := openSchema(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newAckLoser(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	q := u.Query()
	q.Set("pool_max_conns", "2")
	u.RawQuery = q.Encode()
	via, err := postgres.Open(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer via.Close()

	// The store alone: the lost answer is an error; the retry with the
	// same key writes nothing more.
	evs := func(n int, node string) []latchkey.AuditEvent {
		out := make([]latchkey.AuditEvent, n)
		for i := range out {
			out[i] = latchkey.AuditEvent{Time: time.Now(), Node: node, Kind: latchkey.KindVerify, Action: latchkey.ActionVerify,
				Outcome: "VALID", TokenID: "AckLoss000000000"}
		}
		return out
	}
	proxy.armed.Store(true)
	if err := via.AppendAuditBatch(ctx, "batch-1", evs(5, "ack")); err == nil {
		t.Fatal("the commit's answer was lost, yet the write reported success")
	}
	if proxy.lost.Load() != 1 {
		t.Fatal("the proxy did not drop a commit's answer")
	}
	count := func(node string) int {
		page, err := db.ListAudit(ctx, latchkey.AuditFilter{Node: node, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return len(page.Events)
	}
	// The batch was committed all the same (that is the case at issue).
	for count("ack") != 5 {
		select {
		case <-ctx.Done():
			t.Fatal("the batch whose answer was lost was not committed: the test does not test the case")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := via.AppendAuditBatch(ctx, "batch-1", evs(5, "ack")); err != nil {
		t.Fatal(err)
	}
	if n := count("ack"); n != 5 {
		t.Fatalf("%d records after the retry, want 5 (written once)", n)
	}

	// Through the pipeline: it retries on its own, with one key a batch.
	p := &audit.Pipeline{Sink: via, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	p.Start()
	proxy.armed.Store(true)
	for _, ev := range evs(50, "pipe") {
		p.Record(&ev)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	p.Close(ctx)
	if proxy.lost.Load() != 2 || p.Stats().Retries == 0 {
		t.Fatalf("lost answers %d, retries %d: the pipeline's commit was not cut", proxy.lost.Load(), p.Stats().Retries)
	}
	if n := count("pipe"); n != 50 {
		t.Errorf("%d records written by the pipeline for 50 recorded, want 50", n)
	}
	if r, err := audit.VerifyChain(ctx, db); err != nil || !r.OK {
		t.Errorf("the chain after the lost answers: %+v %v", r, err)
	}
	// The keys are pruned with the change log.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var keys int
	conn.QueryRow(ctx, `SELECT count(*) FROM audit_batches`).Scan(&keys)
	if keys < 2 {
		t.Errorf("%d batch keys recorded, want one per batch", keys)
	}
	if err := db.PruneChanges(ctx, 0); err != nil {
		t.Fatal(err)
	}
	conn.QueryRow(ctx, `SELECT count(*) FROM audit_batches`).Scan(&keys)
	if keys != 0 {
		t.Errorf("%d batch keys left after pruning", keys)
	}
}
