package detect

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// memShared is an in-memory Shared: the windows of a whole cluster, with
// exactly one caller told to act per key.
type memShared struct {
	mu    sync.Mutex
	fails map[string]int64
	nets  map[string]map[string]bool
	fired map[string]bool
	down  bool
}

func newMemShared() *memShared {
	return &memShared{fails: map[string]int64{}, nets: map[string]map[string]bool{}, fired: map[string]bool{}}
}

func (m *memShared) AddFailures(_ context.Context, src string, n int64, _ time.Duration, threshold int) (int64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return 0, false, errors.New("down")
	}
	m.fails[src] += n
	fire := m.fails[src] >= int64(threshold) && !m.fired["f"+src]
	if fire {
		m.fired["f"+src] = true
	}
	return m.fails[src], fire, nil
}

func (m *memShared) AddNetworks(_ context.Context, tok string, nets []string, _ time.Duration, threshold int) (int64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return 0, false, errors.New("down")
	}
	if m.nets[tok] == nil {
		m.nets[tok] = map[string]bool{}
	}
	for _, n := range nets {
		m.nets[tok][n] = true
	}
	n := int64(len(m.nets[tok]))
	fire := n >= int64(threshold) && !m.fired["n"+tok]
	if fire {
		m.fired["n"+tok] = true
	}
	return n, fire, nil
}

func (m *memShared) Networks(_ context.Context, tok string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for n := range m.nets[tok] {
		out = append(out, n)
	}
	return out, nil
}

// An attacker spreading failures over three nodes, under each node's
// threshold, is blocked by one of them (the store then tells the others);
// a token used from many networks through different nodes is caught once.
func TestSharedWindowsAcrossNodes(t *testing.T) {
	sh := newMemShared()
	type node struct {
		d *Detector
		c *collector
	}
	var nodes []node
	for range 3 {
		d, c := newDet(Config{Shared: sh})
		nodes = append(nodes, node{d, c})
	}
	attacker := netip.MustParseAddr("203.0.113.9")
	for i := range 21 { // 7 per node, threshold 20
		nodes[i%3].d.Refused(attacker, latchkey.NotFound, "unknown_id", "", ns(time.Duration(i)*time.Second))
	}
	const tok = "AAAAAAAAAAAAAAAB"
	for i := range 12 { // 4 networks per node, threshold 10
		ev := latchkey.AuditEvent{Kind: latchkey.KindVerify, Outcome: "VALID", TokenID: tok, Time: t0,
			ClientIP: netip.AddrFrom4([4]byte{10, byte(i), 0, 1}).String()}
		nodes[i%3].d.Valid([]latchkey.AuditEvent{ev})
	}
	blocks, spreads := 0, 0
	for _, n := range nodes {
		for _, f := range n.c.findings(n.d) { // Close: the last shared round runs first
			switch f.Rule {
			case RuleSourceFailures:
				blocks++
				if f.Source != "203.0.113.9" {
					t.Errorf("blocked %s", f.Source)
				}
			case RuleNetworkSpread:
				spreads++
				if f.TokenID != tok || f.Evidence["counted"] != "cluster" {
					t.Errorf("spread finding %+v", f)
				}
			}
		}
	}
	if blocks != 1 || spreads != 1 {
		t.Errorf("%d block findings and %d spread findings across the cluster, want 1 and 1", blocks, spreads)
	}
	// Without the shared windows, no node alone would have acted.
	sh2 := newMemShared()
	sh2.down = true
	d, c := newDet(Config{Shared: sh2})
	for i := range 7 {
		d.Refused(attacker, latchkey.NotFound, "unknown_id", "", ns(time.Duration(i)*time.Second))
	}
	if fs := c.findings(d); len(fs) != 0 {
		t.Errorf("7 failures on one node with the shared windows down: %v", fs)
	}
	if d.Stats().SharedFailures == 0 {
		t.Error("shared failures not counted")
	}
}

// RefusedNow counts each failure in the cluster's window before it
// returns: three nodes together answer exactly the threshold's number of
// failures, every later one on any node is reported over (to be answered
// BLOCKED), every node blocks the source in memory, and one finding is
// made for the cluster. With the shared windows down it counts locally,
// and reports nothing over.
func TestRefusedNowExactAcrossNodes(t *testing.T) {
	sh := newMemShared()
	var dets []*Detector
	var cols []*collector
	for range 3 {
		d, c := newDet(Config{Shared: sh})
		dets, cols = append(dets, d), append(cols, c)
	}
	attacker := netip.MustParseAddr("203.0.113.10")
	over := 0
	for i := range 30 {
		blocked, _ := dets[i%3].RefusedNow(context.Background(), attacker, latchkey.NotFound, "unknown_id", "", ns(time.Duration(i)*time.Millisecond))
		if blocked != (i >= 20) {
			t.Errorf("failure %d (node %d): over %v", i, i%3, blocked)
		}
		if blocked {
			over++
		}
	}
	if over != 10 {
		t.Errorf("%d of 30 failures over the threshold of 20, want 10", over)
	}
	findings := 0
	for i, d := range dets {
		if !d.Blocked(attacker, ns(time.Second)) {
			t.Errorf("node %d does not block the source", i)
		}
		for _, f := range cols[i].findings(d) {
			if f.Rule == RuleSourceFailures {
				findings++
			}
		}
	}
	if findings != 1 {
		t.Errorf("%d block findings across the cluster, want 1", findings)
	}
	// A request cancelled at once (the attacker hung up) is counted all the
	// same.
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	sh2 := &ctxShared{memShared: newMemShared()}
	d2, _ := newDet(Config{Shared: sh2})
	other := netip.MustParseAddr("203.0.113.11")
	for i := range 25 {
		d2.RefusedNow(gone, other, latchkey.NotFound, "unknown_id", "", ns(time.Duration(i)*time.Millisecond))
	}
	if n := sh2.fails[SourceString(other)]; n != 25 {
		t.Errorf("%d of 25 failures from cancelled requests counted in the shared window", n)
	}
	down := newMemShared()
	down.down = true
	d, _ := newDet(Config{Shared: down})
	for i := range 30 {
		if blocked, _ := d.RefusedNow(context.Background(), attacker, latchkey.NotFound, "unknown_id", "", ns(time.Duration(i)*time.Millisecond)); blocked {
			t.Fatal("over the threshold with the shared windows down")
		}
	}
	if !d.Blocked(attacker, ns(time.Second)) || d.Stats().SharedFailures != 30 {
		t.Errorf("with the shared windows down: blocked %v, shared failures %d; want the local window to block",
			d.Blocked(attacker, ns(time.Second)), d.Stats().SharedFailures)
	}
}

// ctxShared is a memShared that refuses calls whose context is done, as a
// real client does.
type ctxShared struct{ *memShared }

func (c *ctxShared) AddFailures(ctx context.Context, src string, n int64, w time.Duration, threshold int) (int64, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	return c.memShared.AddFailures(ctx, src, n, w, threshold)
}
