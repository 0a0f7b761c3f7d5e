package audit

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

func TestActivity(t *testing.T) {
	var a Activity
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.Local)
	ev := func(ago time.Duration, kind, outcome string) latchkey.AuditEvent {
		return latchkey.AuditEvent{Time: now.Add(-ago), Kind: kind, Outcome: outcome}
	}
	a.Observe([]latchkey.AuditEvent{
		ev(0, latchkey.KindVerify, "VALID"), ev(0, latchkey.KindVerify, "VALID"),
		ev(0, latchkey.KindVerify, "REVOKED"), ev(time.Second, latchkey.KindVerify, "NOT_FOUND"),
		ev(2*time.Second, latchkey.KindVerify, "BLOCKED"),
		ev(0, latchkey.KindAdmin, "OK"),                  // not an attempt
		ev(0, latchkey.KindVerify, "ERROR"),              // not a verdict
		ev(10*time.Minute, latchkey.KindVerify, "VALID"), // today, but outside the window
	})
	s := a.Summary(now)
	if s.Today.Valid != 3 || s.Today.Refused != 2 || s.Today.Blocked != 1 {
		t.Errorf("today %+v, want 3 valid, 2 refused, 1 blocked", s.Today)
	}
	n := ActivityWindow - 1
	if len(s.Series.Valid) != ActivityWindow || !s.Series.Start.Equal(now.Add(-time.Duration(n)*time.Second)) {
		t.Fatalf("series of %d from %s", len(s.Series.Valid), s.Series.Start)
	}
	if s.Series.Valid[n] != 2 || s.Series.Refused[n] != 1 || s.Series.Refused[n-1] != 1 || s.Series.Blocked[n-2] != 1 {
		t.Errorf("last seconds: valid %v refused %v blocked %v", s.Series.Valid[n-2:], s.Series.Refused[n-2:], s.Series.Blocked[n-2:])
	}
	var total uint64
	for i := range s.Series.Valid {
		total += s.Series.Valid[i] + s.Series.Refused[i] + s.Series.Blocked[i]
	}
	if total != 5 {
		t.Errorf("%d attempts in the window, want 5 (the one 10 minutes ago is outside)", total)
	}
	// Six minutes on, the window has moved past them all; the day has not.
	s = a.Summary(now.Add(6 * time.Minute))
	total = 0
	for i := range s.Series.Valid {
		total += s.Series.Valid[i] + s.Series.Refused[i] + s.Series.Blocked[i]
	}
	if total != 0 || s.Today.Valid != 3 {
		t.Errorf("six minutes later: %d in the window, today %+v", total, s.Today)
	}
	// A new day starts from zero.
	s = a.Summary(now.Add(13 * time.Hour))
	if s.Today.Valid+s.Today.Refused+s.Today.Blocked != 0 || !s.Today.Since.After(now) {
		t.Errorf("next day: %+v", s.Today)
	}
}

// BenchmarkActivityObserve is the cost per committed record of keeping
// the dashboard's counts (on the audit writer, not the verify path).
func BenchmarkActivityObserve(b *testing.B) {
	var a Activity
	evs := make([]latchkey.AuditEvent, 512)
	now := time.Now()
	for i := range evs {
		evs[i] = latchkey.AuditEvent{Time: now, Kind: latchkey.KindVerify, Outcome: []string{"VALID", "NOT_FOUND", "BLOCKED"}[i%3]}
	}
	b.ResetTimer()
	for b.Loop() {
		a.Observe(evs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(evs)), "ns/record")
}

func TestMergeActivity(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.Local)
	var a, b, c Activity
	a.Node, b.Node, c.Node = "a", "b", "c"
	a.Observe([]latchkey.AuditEvent{{Time: now, Kind: latchkey.KindVerify, Outcome: "VALID"}})
	b.Observe([]latchkey.AuditEvent{
		{Time: now.Add(-2 * time.Second), Kind: latchkey.KindVerify, Outcome: "VALID"},
		{Time: now.Add(-2 * time.Second), Kind: latchkey.KindVerify, Outcome: "BLOCKED"},
	})
	c.Observe([]latchkey.AuditEvent{{Time: now.Add(-24 * time.Hour), Kind: latchkey.KindVerify, Outcome: "VALID"}})
	// b published a second ago, so its window starts a second earlier.
	bs := b.Summary(now.Add(-time.Second))
	cs := c.Summary(now.Add(-24 * time.Hour))
	base, _ := a.Counts(context.Background(), now)
	m := MergeActivity(base, []client.ActivitySummary{bs, cs})
	n := ActivityWindow - 1
	if m.Series.Valid[n] != 1 || m.Series.Valid[n-2] != 1 || m.Series.Blocked[n-2] != 1 {
		t.Errorf("merged series end: valid %v blocked %v", m.Series.Valid[n-3:], m.Series.Blocked[n-3:])
	}
	if m.Today.Valid != 2 || m.Today.Blocked != 1 {
		t.Errorf("merged today %+v: want a's and b's, not c's (yesterday)", m.Today)
	}
	if len(m.Nodes) != 3 || m.Node != "a" {
		t.Errorf("nodes %v (answering %q)", m.Nodes, m.Node)
	}
}

// memBoard is a settings table in memory.
type memBoard map[string]string

func (m memBoard) PutSetting(_ context.Context, k, v string) error { m[k] = v; return nil }
func (m memBoard) SettingsWithPrefix(_ context.Context, p string) (map[string]string, error) {
	out := map[string]string{}
	for k, v := range m {
		if strings.HasPrefix(k, p) {
			out[k] = v
		}
	}
	return out, nil
}

func TestActivityBoard(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	store := memBoard{"other:x": "not counts"}
	a := &ActivityBoard{Local: &Activity{Node: "a"}, Store: store}
	b := &ActivityBoard{Local: &Activity{Node: "b"}, Store: store}
	gone := &ActivityBoard{Local: &Activity{Node: "gone"}, Store: store}
	a.Local.Observe([]latchkey.AuditEvent{{Time: now, Kind: latchkey.KindVerify, Outcome: "VALID"}})
	b.Local.Observe([]latchkey.AuditEvent{{Time: now, Kind: latchkey.KindVerify, Outcome: "NOT_FOUND"}})
	gone.Local.Observe([]latchkey.AuditEvent{{Time: now, Kind: latchkey.KindVerify, Outcome: "VALID"}})
	for _, n := range []*ActivityBoard{a, b} {
		if err := n.Publish(ctx, now); err != nil {
			t.Fatal(err)
		}
	}
	gone.Publish(ctx, now.Add(-time.Minute)) // stopped a minute ago
	a.Local.Observe([]latchkey.AuditEvent{{Time: now, Kind: latchkey.KindVerify, Outcome: "VALID"}})
	s, err := a.Counts(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	// a's live counts (2 valid), b's published (1 refused), not gone's.
	if s.Today.Valid != 2 || s.Today.Refused != 1 || strings.Join(s.Nodes, ",") != "a,b" {
		t.Errorf("board counts %+v from %v", s.Today, s.Nodes)
	}
}

// After a restart the node takes back today's counts and the seconds
// still inside the window.
func TestActivityRestore(t *testing.T) {
	ctx := context.Background()
	store := memBoard{}
	now := time.Now()
	before := &ActivityBoard{Local: &Activity{Node: "a"}, Store: store}
	before.Local.Observe([]latchkey.AuditEvent{
		{Time: now.Add(-10 * time.Second), Kind: latchkey.KindVerify, Outcome: "VALID"},
		{Time: now.Add(-10 * time.Second), Kind: latchkey.KindVerify, Outcome: "BLOCKED"},
	})
	if err := before.Publish(ctx, now.Add(-5*time.Second)); err != nil {
		t.Fatal(err)
	}
	after := &ActivityBoard{Local: &Activity{Node: "a"}, Store: store}
	if err := after.Restore(ctx, now); err != nil {
		t.Fatal(err)
	}
	after.Local.Observe([]latchkey.AuditEvent{{Time: now, Kind: latchkey.KindVerify, Outcome: "VALID"}})
	s := after.Local.Summary(now)
	n := ActivityWindow - 1
	if s.Today.Valid != 2 || s.Today.Blocked != 1 || s.Series.Valid[n-10] != 1 || s.Series.Blocked[n-10] != 1 || s.Series.Valid[n] != 1 {
		t.Errorf("restored %+v; valid %v", s.Today, s.Series.Valid[n-11:])
	}
	// Another node's row is not taken.
	other := &ActivityBoard{Local: &Activity{Node: "b"}, Store: store}
	other.Restore(ctx, now)
	if s := other.Local.Summary(now); s.Today.Valid != 0 {
		t.Errorf("node b took a's counts: %+v", s.Today)
	}
}

// countingBoard counts the writes to a memBoard.
type countingBoard struct {
	memBoard
	puts int
}

func (c *countingBoard) PutSetting(ctx context.Context, k, v string) error {
	c.puts++
	return c.memBoard.PutSetting(ctx, k, v)
}

// An idle node writes its counts only now and then, not every second.
func TestActivityBoardPublishesOnChange(t *testing.T) {
	ctx := context.Background()
	store := &countingBoard{memBoard: memBoard{}}
	b := &ActivityBoard{Local: &Activity{Node: "a"}, Store: store}
	now := time.Now()
	for i := range 4 { // four idle seconds: the first write only
		b.Publish(ctx, now.Add(time.Duration(i)*time.Second))
	}
	if store.puts != 1 {
		t.Errorf("%d writes in four idle seconds, want 1", store.puts)
	}
	b.Local.Observe([]latchkey.AuditEvent{{Time: now, Kind: latchkey.KindVerify, Outcome: "VALID"}})
	b.Publish(ctx, now.Add(4*time.Second))
	if store.puts != 2 {
		t.Errorf("a counted attempt was not published (%d writes)", store.puts)
	}
	b.Publish(ctx, now.Add(4*time.Second+quietRepublish))
	if store.puts != 3 {
		t.Errorf("an idle node stopped republishing (%d writes): it would drop out of the cluster's counts", store.puts)
	}
}
