package latchkey

import (
	"context"
	"time"
)

// A Receipt says which live nodes have applied a change (docs/architecture.md
// §4): a revocation, suspension or bulk revocation asked with wait=all is
// answered once every live node has confirmed that it evicted what the
// change touched, or once the wait's bound ran out. The node that made the
// change evicts before it answers, and counts as confirmed.
type Receipt struct {
	// Nodes is how many live nodes were asked, this one included.
	Nodes int `json:"nodes"`
	// Confirmed is how many of them confirmed within the bound.
	Confirmed int `json:"confirmed"`
	// Missing names the nodes that did not confirm in time.
	Missing []string `json:"missing,omitempty"`
	// TookMS is how long the wait took, in milliseconds.
	TookMS float64 `json:"took_ms"`
	// TimedOut is true when the bound ran out before every node confirmed.
	TimedOut bool `json:"timed_out,omitempty"`
	// At is when the wait ended; Action and TokenID say what it was for
	// (the dashboard's list of receipts).
	At      time.Time `json:"at"`
	Action  string    `json:"action,omitempty"`
	TokenID string    `json:"token_id,omitempty"`
}

// Receipter collects receipts from the nodes that share a store.
// *postgres.Follower implements it; a store with one node (SQLite) needs
// none: that node's own eviction is the whole receipt.
type Receipter interface {
	// Receipt asks every live node to confirm that it has applied every
	// change announced before the call, and waits for their answers at
	// most timeout.
	Receipt(ctx context.Context, timeout time.Duration) (Receipt, error)
}

// MaxReceiptWait bounds the wait a caller may ask for.
const MaxReceiptWait = 30 * time.Second
