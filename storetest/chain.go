package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
)

func chainEvent(node string, i int, at time.Time) latchkey.AuditEvent {
	return latchkey.AuditEvent{Time: at, Node: node, Kind: latchkey.KindVerify, Action: latchkey.ActionVerify,
		TokenID: fmt.Sprintf("tok%013d", i), Outcome: "VALID", Scopes: []string{"a:b"}, ClientIP: "10.0.0.1", Latency: time.Duration(i)}
}

// Records are linked per node, in commit order, across batches and across
// admin transactions.
func testAuditChain(t *testing.T, s latchkey.Store) {
	var batch []latchkey.AuditEvent
	for i := range 10 {
		batch = append(batch, chainEvent([]string{"n1", "n2"}[i%2], i, base.Add(time.Duration(i)*time.Second)))
	}
	if err := s.AppendAudit(ctx(), batch[:6]); err != nil {
		t.Fatal(err)
	}
	tok := NewToken(t)
	ev := adminEvent(latchkey.ActionTokenCreate, tok.ID)
	ev.Node = "n1"
	if err := s.CreateToken(ctx(), tok, ev); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx(), batch[6:]); err != nil {
		t.Fatal(err)
	}
	for i := range batch {
		if batch[i].Seq == 0 {
			t.Fatalf("AppendAudit left event %d without a seq", i)
		}
	}
	r, err := audit.VerifyChain(ctx(), s)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK || r.Checked != 11 || len(r.Nodes) != 2 {
		t.Fatalf("chain report %+v %+v, want intact with 11 records on 2 nodes", r, r.Broken)
	}
	// Records read back carry their hashes, all different, and the ones
	// AppendAudit gave them where it did (each store chains in its own
	// format: PostgreSQL with latchkey.ChainHash, SQLite over its compact
	// encoding).
	page, _ := s.ListAudit(ctx(), latchkey.AuditFilter{Ascending: true})
	bySeq := map[int64]string{}
	for _, ev := range batch {
		bySeq[ev.Seq] = ev.Hash
	}
	seen := map[string]bool{}
	for _, ev := range page.Events {
		if len(ev.Hash) != 2*latchkey.ChainHashLen {
			t.Errorf("record %d reads back without a hash: %q", ev.Seq, ev.Hash)
		}
		if want, ok := bySeq[ev.Seq]; ok && want != "" && ev.Hash != want {
			t.Errorf("record %d reads back with hash %s, AppendAudit gave %s", ev.Seq, ev.Hash, want)
		}
		if seen[ev.Hash] {
			t.Errorf("record %d repeats a hash", ev.Seq)
		}
		seen[ev.Hash] = true
	}
}

// Pruning deletes old records, never younger ones, and the chain stays
// verifiable from the anchor.
func testAuditPrune(t *testing.T, s latchkey.Store) {
	var batch []latchkey.AuditEvent
	for i := range 20 {
		batch = append(batch, chainEvent([]string{"n1", "n2"}[i%2], i, base.Add(time.Duration(i)*time.Hour)))
	}
	if err := s.AppendAudit(ctx(), batch); err != nil {
		t.Fatal(err)
	}
	var archived []latchkey.AuditEvent
	n, err := s.PruneAudit(ctx(), base.Add(10*time.Hour), func(evs []latchkey.AuditEvent) error {
		archived = append(archived, evs...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 10 || len(archived) != 10 {
		t.Fatalf("pruned %d, archived %d; want the 10 records older than the cut", n, len(archived))
	}
	for _, ev := range archived {
		if !ev.Time.Before(base.Add(10 * time.Hour)) {
			t.Errorf("pruned a record from %v, after the cut", ev.Time)
		}
	}
	page, _ := s.ListAudit(ctx(), latchkey.AuditFilter{Limit: 100})
	if len(page.Events) != 10 {
		t.Errorf("%d records left, want 10", len(page.Events))
	}
	anchors, _ := s.AuditAnchors(ctx())
	if len(anchors) != 2 {
		t.Fatalf("anchors %+v, want one per node", anchors)
	}
	r, err := audit.VerifyChain(ctx(), s)
	if err != nil || !r.OK || r.Checked != 10 {
		t.Fatalf("after pruning: %+v %v", r, err)
	}
	// New records continue the chain after the anchor; pruning again moves it.
	more := []latchkey.AuditEvent{chainEvent("n1", 99, base.Add(30*time.Hour))}
	if err := s.AppendAudit(ctx(), more); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PruneAudit(ctx(), base.Add(25*time.Hour), nil); err != nil {
		t.Fatal(err)
	}
	if r, _ := audit.VerifyChain(ctx(), s); !r.OK || r.Checked != 1 {
		t.Errorf("after a second prune: %+v", r)
	}
	// A node with every record pruned keeps its anchor, and its next
	// record links to it.
	if err := s.AppendAudit(ctx(), []latchkey.AuditEvent{chainEvent("n2", 100, base.Add(40*time.Hour))}); err != nil {
		t.Fatal(err)
	}
	if r, _ := audit.VerifyChain(ctx(), s); !r.OK || r.Checked != 2 {
		t.Errorf("after writing to a fully pruned node: %+v", r)
	}
}

func testBlocks(t *testing.T, s latchkey.Store) {
	ev := &latchkey.AuditEvent{Time: base, Kind: latchkey.KindDetect, Action: latchkey.ActionSourceBlocked, ClientIP: "203.0.113.7", Outcome: latchkey.OutcomeOK}
	b := latchkey.Block{Source: "203.0.113.7", Until: base.Add(time.Hour), Rule: "source_failures", Reason: "20 failures in 1m", CreatedAt: base}
	if err := s.PutBlock(ctx(), b, ev); err != nil {
		t.Fatal(err)
	}
	v6 := latchkey.Block{Source: "2001:db8:1:2::/64", Until: base.Add(2 * time.Hour), Rule: "manual", CreatedAt: base}
	if err := s.PutBlock(ctx(), v6, nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListBlocks(ctx(), base)
	if err != nil || len(got) != 2 || got[0] != b || got[1] != v6 {
		t.Fatalf("ListBlocks = %+v, %v", got, err)
	}
	// Blocking again never shortens a block.
	shorter := b
	shorter.Until = base.Add(time.Minute)
	s.PutBlock(ctx(), shorter, nil)
	if got, _ := s.ListBlocks(ctx(), base); !got[0].Until.Equal(b.Until) {
		t.Errorf("a second block shortened the first to %v", got[0].Until)
	}
	if got, _ := s.ListBlocks(ctx(), base.Add(90*time.Minute)); len(got) != 1 || got[0].Source != v6.Source {
		t.Errorf("an expired block is still listed: %+v", got)
	}
	ok, err := s.DeleteBlock(ctx(), b.Source, &latchkey.AuditEvent{Time: base, Kind: latchkey.KindAdmin, Action: latchkey.ActionSourceUnblocked, Outcome: latchkey.OutcomeOK})
	if err != nil || !ok {
		t.Fatalf("DeleteBlock = %v, %v", ok, err)
	}
	if ok, _ := s.DeleteBlock(ctx(), b.Source, ev); ok {
		t.Error("deleting a missing block reported success")
	}
	page, _ := s.ListAudit(ctx(), latchkey.AuditFilter{Kind: latchkey.KindDetect})
	if len(page.Events) != 1 {
		t.Errorf("block audit events: %d, want 1 (the refused delete writes none)", len(page.Events))
	}
}

// Time bounds over many records, newest first and oldest first.
func testAuditTimeRange(t *testing.T, s latchkey.Store) {
	var evs []latchkey.AuditEvent
	for i := range 3000 {
		evs = append(evs, chainEvent("n1", i, base.Add(time.Duration(i)*time.Second)))
	}
	if err := s.AppendAudit(ctx(), evs); err != nil {
		t.Fatal(err)
	}
	count := func(f latchkey.AuditFilter) int {
		n := 0
		f.Limit = latchkey.MaxPageLimit
		for {
			page, err := s.ListAudit(ctx(), f)
			if err != nil {
				t.Fatal(err)
			}
			n += len(page.Events)
			for _, ev := range page.Events {
				if (!f.Since.IsZero() && ev.Time.Before(f.Since)) || (!f.Until.IsZero() && !ev.Time.Before(f.Until)) {
					t.Fatalf("record at %v outside [%v, %v)", ev.Time, f.Since, f.Until)
				}
			}
			if f.Ascending {
				if len(page.Events) < f.Limit {
					return n
				}
				f.After = page.Events[len(page.Events)-1].Seq
			} else {
				if page.Next == "" {
					return n
				}
				f.Cursor = page.Next
			}
		}
	}
	since, until := base.Add(1000*time.Second), base.Add(2500*time.Second)
	if n := count(latchkey.AuditFilter{Since: since, Until: until}); n != 1500 {
		t.Errorf("newest first within the range: %d records, want 1500", n)
	}
	if n := count(latchkey.AuditFilter{Since: since, Until: until, Ascending: true}); n != 1500 {
		t.Errorf("oldest first within the range: %d, want 1500", n)
	}
	if n := count(latchkey.AuditFilter{Since: base.Add(2999 * time.Second)}); n != 1 {
		t.Errorf("since the last record: %d, want 1", n)
	}
	if n := count(latchkey.AuditFilter{Until: base.Add(time.Second)}); n != 1 {
		t.Errorf("until the second record: %d, want 1", n)
	}
	if n := count(latchkey.AuditFilter{Since: base.Add(time.Hour)}); n != 0 {
		t.Errorf("since after the last: %d", n)
	}
}
