package audit

import (
	"context"
	"fmt"

	"github.com/latchkeyhq/latchkey"
)

// ChainSource is what VerifyChain reads. latchkey.Store satisfies it.
type ChainSource interface {
	AuditNodes(ctx context.Context) ([]string, error)
	AuditAnchors(ctx context.Context) ([]latchkey.AuditAnchor, error)
	ListAudit(ctx context.Context, f latchkey.AuditFilter) (latchkey.AuditPage, error)
}

// ChainVerifier is a store that checks its own chain (SQLite chains whole
// chunks of records; PostgreSQL spreads a node's records over lanes, each
// a chain). VerifyChain defers to it.
type ChainVerifier interface {
	VerifyAuditChain(ctx context.Context) (latchkey.ChainReport, error)
}

// VerifyChain recomputes every node's hash chain from its anchor (or its
// start) and reports the first record whose stored hash does not match:
// an edited, deleted, inserted or reordered record breaks the link at or
// right after it.
func VerifyChain(ctx context.Context, src ChainSource) (latchkey.ChainReport, error) {
	if cc, ok := src.(ChainVerifier); ok {
		return cc.VerifyAuditChain(ctx)
	}
	r, start, err := latchkey.StartChainReport(ctx, src)
	if err != nil {
		return r, err
	}
	for _, node := range r.Nodes {
		a := start[latchkey.AnchorKey{Node: node}]
		prev, after := a.Hash, a.Seq
		for {
			page, err := src.ListAudit(ctx, latchkey.AuditFilter{Node: node, After: after, Ascending: true, Limit: latchkey.MaxPageLimit})
			if err != nil {
				return r, err
			}
			for i := range page.Events {
				ev := &page.Events[i]
				r.Checked++
				if want := latchkey.ChainHash(prev, ev); ev.Hash != want {
					reason := "the record does not match its hash: it was changed, or a record before it was removed or inserted"
					if ev.Hash == "" {
						reason = "the record has no hash"
					}
					r.Broken = &latchkey.ChainBreak{Node: node, Seq: ev.Seq, Reason: reason}
					return r, nil
				}
				prev, after = ev.Hash, ev.Seq
			}
			if len(page.Events) < latchkey.MaxPageLimit {
				break
			}
		}
	}
	r.OK = true
	return r, nil
}

// Summary says in one line what a report found.
func Summary(r latchkey.ChainReport) string {
	if r.OK {
		return fmt.Sprintf("audit chain intact: %d records on %d node(s)", r.Checked, len(r.Nodes))
	}
	b := r.Broken
	if b.Lane != 0 {
		return fmt.Sprintf("audit chain BROKEN at record %d (node %q, lane %d): %s", b.Seq, b.Node, b.Lane, b.Reason)
	}
	if b.LastSeq > b.Seq {
		return fmt.Sprintf("audit chain BROKEN in records %d-%d (node %q): %s", b.Seq, b.LastSeq, b.Node, b.Reason)
	}
	return fmt.Sprintf("audit chain BROKEN at record %d (node %q): %s", b.Seq, b.Node, b.Reason)
}
