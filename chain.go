package latchkey

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"time"
)

// The audit log is a hash chain per node (docs/architecture.md §5): each record's
// hash is SHA-256(previous record's hash || canonical record), the
// previous hash being 32 zero bytes for a node's first record, or the
// hash an anchor kept when older records were pruned. Editing, deleting
// or reordering a record breaks every link after it.

// ChainHashLen is the length of a chain hash in bytes.
const ChainHashLen = sha256.Size

// canonicalVersion starts every canonical record, so a later encoding
// can never be confused with this one.
const canonicalVersion = "latchkey-audit-v1"

// AppendCanonical appends the canonical encoding of ev to b: every field
// but Seq and Hash, in a fixed order, each as a 4-byte big-endian length
// and its bytes. Times are Unix microseconds, what every store keeps.
func (ev *AuditEvent) AppendCanonical(b []byte) []byte {
	field := func(s string) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	num := func(n int64) {
		var d [20]byte
		field(string(strconv.AppendInt(d[:0], n, 10)))
	}
	field(canonicalVersion)
	num(TimeOf(ev.Time).UnixMicro())
	for _, s := range []string{ev.Node, ev.RequestID, ev.Kind, ev.Action, ev.Actor, ev.TokenID, ev.Subject, ev.Outcome, ev.Reason} {
		field(s)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(ev.Scopes)))
	for _, s := range ev.Scopes {
		field(s)
	}
	for _, s := range []string{ev.ClientIP, ev.UserAgent, ev.Method, ev.Path} {
		field(s)
	}
	num(int64(ev.Latency))
	b = binary.BigEndian.AppendUint32(b, uint32(len(ev.Detail)))
	b = append(b, ev.Detail...)
	return b
}

// ChainHash returns the hex hash of ev linked to prev (hex; "" for a
// node's first record).
func ChainHash(prev string, ev *AuditEvent) string {
	var buf [1024]byte
	b := buf[:ChainHashLen]
	if prev != "" {
		hex.Decode(b, []byte(prev)) // a malformed prev hashes as zeros and breaks the link, as it should
	}
	b = ev.AppendCanonical(b)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// AuditAnchor is where a node's chain resumes after older records were
// pruned: the sequence number and hash of the last pruned record.
type AuditAnchor struct {
	Node string `json:"node"`
	// Lane is the node's chain the anchor is in (PostgreSQL spreads a
	// node's records over lanes, each a chain; 0 elsewhere).
	Lane int       `json:"lane,omitempty"`
	Seq  int64     `json:"seq"`
	Hash string    `json:"hash"`
	At   time.Time `json:"at"`
}

// ChainBreak names the first record whose link does not hold.
type ChainBreak struct {
	Node string `json:"node"`
	// Lane is the node's chain the break is in (PostgreSQL; 0 elsewhere).
	Lane int   `json:"lane,omitempty"`
	Seq  int64 `json:"seq"`
	// LastSeq, when set, ends the run of records the break is in (Seq to
	// LastSeq): a store that chains whole chunks (SQLite) finds an edit to
	// the chunk, not to the record.
	LastSeq int64  `json:"last_seq,omitempty"`
	Reason  string `json:"reason"`
}

// ChainReport is the result of checking the audit chain.
type ChainReport struct {
	OK      bool          `json:"ok"`
	Checked int64         `json:"checked"`
	Nodes   []string      `json:"nodes"`
	Anchors []AuditAnchor `json:"anchors,omitempty"`
	Broken  *ChainBreak   `json:"broken,omitempty"`
}

// AnchorKey names a chain: a node's lane (lane 0 where a store keeps one
// chain per node).
type AnchorKey struct {
	Node string
	Lane int
}

// StartChainReport begins a chain check of s: the report with its nodes
// and anchors, and the anchors by chain, where each chain resumes.
func StartChainReport(ctx context.Context, s interface {
	AuditNodes(ctx context.Context) ([]string, error)
	AuditAnchors(ctx context.Context) ([]AuditAnchor, error)
}) (ChainReport, map[AnchorKey]AuditAnchor, error) {
	var r ChainReport
	nodes, err := s.AuditNodes(ctx)
	if err != nil {
		return r, nil, err
	}
	anchors, err := s.AuditAnchors(ctx)
	if err != nil {
		return r, nil, err
	}
	r.Nodes, r.Anchors = nodes, anchors
	start := make(map[AnchorKey]AuditAnchor, len(anchors))
	for _, a := range anchors {
		start[AnchorKey{a.Node, a.Lane}] = a
	}
	return r, start, nil
}
