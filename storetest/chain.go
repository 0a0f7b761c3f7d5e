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
		if len(batch[i].Hash) != 2*latchkey.ChainHashLen {
			t.Fatalf("AppendAudit left event %d without a hash: %q", i, batch[i].Hash)
		}
	}
	r, err := audit.VerifyChain(ctx(), s)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK || r.Checked != 11 || len(r.Nodes) != 2 {
		t.Fatalf("chain report %+v %+v, want intact with 11 records on 2 nodes", r, r.Broken)
	}
	// The first record of n2 links to nothing; the second to the first.
	page, _ := s.ListAudit(ctx(), latchkey.AuditFilter{Node: "n2", Ascending: true})
	if page.Events[0].Hash != latchkey.ChainHash("", &page.Events[0]) || page.Events[1].Hash != latchkey.ChainHash(page.Events[0].Hash, &page.Events[1]) {
		t.Error("stored hashes do not follow ChainHash")
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
