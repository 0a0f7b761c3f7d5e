package storetest

import (
	"errors"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
)

func create(t *testing.T, s latchkey.Store, mutate ...func(*latchkey.Token)) *latchkey.Token {
	t.Helper()
	tok := NewToken(t, mutate...)
	if err := s.CreateToken(ctx(), tok, nil); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return tok
}

func testLifecycleRoundTrip(t *testing.T, s latchkey.Store) {
	parent := create(t, s)
	tok := NewToken(t, func(tk *latchkey.Token) {
		tk.Constraints = latchkey.Constraints{
			IdleTimeout:    latchkey.Duration(72 * time.Hour),
			AllowedCIDRs:   []string{"10.0.0.0/8", "2001:db8::/32"},
			AllowedMethods: []string{"GET", "POST"},
			AllowedPaths:   []string{"/v1/invoices/**"},
			RateLimit:      &latchkey.RateLimit{Limit: 100, Window: latchkey.Duration(time.Minute)},
			MaxUses:        10,
		}
		tk.Status = latchkey.StatusSuspended
		tk.SuspendedAt, tk.SuspendedBy, tk.SuspendedReason, tk.SuspendedVia = base.Add(time.Hour), "root", "audit", parent.ID
		tk.ParentID, tk.Ancestors = parent.ID, []string{parent.ID}
		tk.PredecessorID, tk.SuccessorID, tk.RotatedAt = "pppppppppppppppp", "ssssssssssssssss", base.Add(2*time.Hour)
		tk.SeriesID = "pppppppppppppppp"
		tk.Inherited = []latchkey.Inherited{{SeriesID: parent.ID, RateLimit: &latchkey.RateLimit{Limit: 5, Window: latchkey.Duration(time.Second)}, MaxUses: 3}}
	})
	if err := s.CreateToken(ctx(), tok, nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetToken(ctx(), tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	got.Meta, tok.Meta = nil, nil
	if !reflect.DeepEqual(got, tok) {
		t.Errorf("GetToken = %+v\nwant       %+v", got, tok)
	}
	// And the same after an update through a transaction.
	err = s.WriteTx(ctx(), func(tx latchkey.Tx) error {
		cur, err := tx.GetToken(ctx(), tok.ID)
		if err != nil {
			return err
		}
		cur.Name = "renamed"
		return tx.UpdateToken(ctx(), cur, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetToken(ctx(), tok.ID)
	got.Meta = nil
	tok.Name, tok.Version = "renamed", 2
	if !reflect.DeepEqual(got, tok) {
		t.Errorf("after update = %+v\nwant          %+v", got, tok)
	}
}

func testWriteTx(t *testing.T, s latchkey.Store) {
	a, b := NewToken(t), NewToken(t)
	existing := create(t, s)
	refusal := errors.New("refused")
	err := s.WriteTx(ctx(), func(tx latchkey.Tx) error {
		if err := tx.CreateToken(ctx(), a, adminEvent(latchkey.ActionTokenCreate, a.ID)); err != nil {
			return err
		}
		cur, err := tx.GetToken(ctx(), existing.ID)
		if err != nil {
			return err
		}
		cur.Status = latchkey.StatusRevoked
		if err := tx.UpdateToken(ctx(), cur, adminEvent(latchkey.ActionTokenRevoke, cur.ID)); err != nil {
			return err
		}
		return refusal
	})
	if err != refusal {
		t.Fatalf("WriteTx error = %v, want fn's error unchanged", err)
	}
	if _, err := s.GetToken(ctx(), a.ID); latchkey.ErrorCode(err) != latchkey.ENotFound {
		t.Errorf("a refused transaction created a token (err %v)", err)
	}
	if got, _ := s.GetToken(ctx(), existing.ID); got.Status != latchkey.StatusActive || got.Version != 1 {
		t.Errorf("a refused transaction changed a token: %+v", got)
	}
	if page, _ := s.ListAudit(ctx(), latchkey.AuditFilter{}); len(page.Events) != 0 {
		t.Errorf("a refused transaction wrote %d audit events", len(page.Events))
	}

	err = s.WriteTx(ctx(), func(tx latchkey.Tx) error {
		for _, tk := range []*latchkey.Token{a, b} {
			if err := tx.CreateToken(ctx(), tk, adminEvent(latchkey.ActionTokenCreate, tk.ID)); err != nil {
				return err
			}
		}
		cur, err := tx.GetToken(ctx(), existing.ID)
		if err != nil {
			return err
		}
		cur.SuccessorID = a.ID
		if err := tx.UpdateToken(ctx(), cur, nil); err != nil {
			return err
		}
		if cur.Version != 2 {
			t.Errorf("UpdateToken left Version %d, want 2", cur.Version)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{a.ID, b.ID} {
		if _, err := s.GetToken(ctx(), id); err != nil {
			t.Errorf("token created in a committed transaction: %v", err)
		}
	}
	if got, _ := s.GetToken(ctx(), existing.ID); got.SuccessorID != a.ID || got.Version != 2 {
		t.Errorf("committed update not stored: %+v", got)
	}
	if page, _ := s.ListAudit(ctx(), latchkey.AuditFilter{}); len(page.Events) != 2 {
		t.Errorf("committed transaction wrote %d audit events, want 2", len(page.Events))
	}
}

func testSelectTokens(t *testing.T, s latchkey.Store) {
	// root → child → grandchild → great-grandchild, plus unrelated tokens.
	root := create(t, s, func(tk *latchkey.Token) { tk.Subject, tk.Tags = "alice", []string{"ci"} })
	child := create(t, s, func(tk *latchkey.Token) { tk.ParentID, tk.Subject = root.ID, "alice" })
	grand := create(t, s, func(tk *latchkey.Token) { tk.ParentID = child.ID })
	great := create(t, s, func(tk *latchkey.Token) { tk.ParentID, tk.Prefix = grand.ID, "acme" })
	other := create(t, s, func(tk *latchkey.Token) { tk.Subject, tk.Tags = "bob", []string{"ci", "prod"} })

	cases := []struct {
		name string
		sel  latchkey.TokenSelector
		want []string
	}{
		{"ids", latchkey.TokenSelector{IDs: []string{other.ID, child.ID}}, []string{child.ID, other.ID}},
		{"ids+descendants", latchkey.TokenSelector{IDs: []string{child.ID}, Descendants: true}, []string{child.ID, grand.ID, great.ID}},
		{"subject", latchkey.TokenSelector{Subject: "alice"}, []string{root.ID, child.ID}},
		{"subject+descendants", latchkey.TokenSelector{Subject: "alice", Descendants: true}, []string{root.ID, child.ID, grand.ID, great.ID}},
		{"tag", latchkey.TokenSelector{Tag: "prod"}, []string{other.ID}},
		{"tag ci", latchkey.TokenSelector{Tag: "ci"}, []string{root.ID, other.ID}},
		{"prefix", latchkey.TokenSelector{Prefix: "acme"}, []string{great.ID}},
		{"parent", latchkey.TokenSelector{Parent: root.ID}, []string{child.ID, grand.ID, great.ID}},
		{"parent of leaf", latchkey.TokenSelector{Parent: great.ID}, nil},
		{"unknown id", latchkey.TokenSelector{IDs: []string{"0000000000000000"}}, nil},
	}
	for _, c := range cases {
		var got []string
		err := s.WriteTx(ctx(), func(tx latchkey.Tx) error {
			toks, err := tx.SelectTokens(ctx(), c.sel)
			for _, tk := range toks {
				got = append(got, tk.ID)
			}
			return err
		})
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: selected %v, want %v (oldest first)", c.name, got, c.want)
		}
	}
	err := s.WriteTx(ctx(), func(tx latchkey.Tx) error {
		_, err := tx.SelectTokens(ctx(), latchkey.TokenSelector{})
		return err
	})
	if latchkey.ErrorCode(err) != latchkey.EInvalid {
		t.Errorf("empty selector: %v, want %s", err, latchkey.EInvalid)
	}
}

func testConsumeUseExact(t *testing.T, s latchkey.Store) {
	const budget, workers, tries = 50, 100, 3
	tok := create(t, s, func(tk *latchkey.Token) { tk.MaxUses = budget })
	var ok, refused atomic.Int64
	seen := make([]atomic.Int32, budget)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range tries {
				left, granted, err := s.ConsumeUse(ctx(), []string{tok.ID})
				if err != nil {
					t.Error(err)
					return
				}
				if !granted {
					refused.Add(1)
					continue
				}
				ok.Add(1)
				if left < 0 || left >= budget {
					t.Errorf("remaining %d out of range", left)
					return
				}
				seen[left].Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != budget || refused.Load() != workers*tries-budget {
		t.Fatalf("%d concurrent consumers: %d uses granted, %d refused; want exactly %d granted", workers, ok.Load(), refused.Load(), budget)
	}
	for i := range seen {
		if n := seen[i].Load(); n != 1 {
			t.Errorf("remaining=%d reported %d times, want once", i, n)
		}
	}
	got, _ := s.GetToken(ctx(), tok.ID)
	if got.Uses != budget || got.Version != 1 {
		t.Errorf("after spending: uses %d version %d, want %d and 1 (a use is not a change)", got.Uses, got.Version, budget)
	}
	if _, granted, _ := s.ConsumeUse(ctx(), []string{tok.ID}); granted {
		t.Error("a spent budget granted another use")
	}
	unlimited := create(t, s)
	if _, granted, _ := s.ConsumeUse(ctx(), []string{unlimited.ID}); granted {
		t.Error("ConsumeUse granted a use from a token without a budget")
	}
}

func testConsumeUseAllOrNothing(t *testing.T, s latchkey.Store) {
	parent := create(t, s, func(tk *latchkey.Token) { tk.MaxUses = 2 })
	child := create(t, s, func(tk *latchkey.Token) { tk.MaxUses = 5; tk.ParentID = parent.ID })
	chain := []string{child.ID, parent.ID}
	for i, want := range []int64{1, 0} {
		left, ok, err := s.ConsumeUse(ctx(), chain)
		if err != nil || !ok || left != want {
			t.Fatalf("use %d: remaining %d ok %v err %v; want %d (the smallest budget)", i+1, left, ok, err, want)
		}
	}
	if _, ok, _ := s.ConsumeUse(ctx(), chain); ok {
		t.Fatal("granted a use although the parent's budget is spent")
	}
	got, _ := s.GetToken(ctx(), child.ID)
	if got.Uses != 2 {
		t.Errorf("child uses = %d after a refused use, want 2 (all or nothing)", got.Uses)
	}
}

func testConsumeUseSeries(t *testing.T, s latchkey.Store) {
	first := create(t, s, func(tk *latchkey.Token) { tk.MaxUses = 3 })
	succ := create(t, s, func(tk *latchkey.Token) { tk.MaxUses = 3; tk.SeriesID = first.ID })
	s.ConsumeUse(ctx(), []string{first.ID})
	got, _ := s.GetToken(ctx(), succ.ID)
	if got.Uses != 1 || got.SeriesID != first.ID {
		t.Errorf("successor shows uses %d series %q, want the series' count 1 and %q", got.Uses, got.SeriesID, first.ID)
	}
}

func testTouchTokens(t *testing.T, s latchkey.Store) {
	a, b := create(t, s), create(t, s)
	t1, t2 := base.Add(time.Hour), base.Add(2*time.Hour)
	if err := s.TouchTokens(ctx(), []latchkey.TokenUse{{ID: a.ID, At: t2}, {ID: b.ID, At: t1}, {ID: "0000000000000000", At: t1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchTokens(ctx(), []latchkey.TokenUse{{ID: a.ID, At: t1}}); err != nil { // older: ignored
		t.Fatal(err)
	}
	ga, _ := s.GetToken(ctx(), a.ID)
	gb, _ := s.GetToken(ctx(), b.ID)
	if !ga.LastUsedAt.Equal(t2) || !gb.LastUsedAt.Equal(t1) {
		t.Errorf("last_used_at = %v, %v; want %v, %v (never lowered)", ga.LastUsedAt, gb.LastUsedAt, t2, t1)
	}
	if ga.Version != 1 {
		t.Errorf("TouchTokens bumped the version to %d", ga.Version)
	}
	// An update through a transaction does not overwrite it.
	s.UpdateToken(ctx(), a.ID, func(tk *latchkey.Token) (*latchkey.AuditEvent, error) {
		tk.LastUsedAt = time.Time{}
		tk.Name = "x"
		return nil, nil
	})
	if ga, _ = s.GetToken(ctx(), a.ID); !ga.LastUsedAt.Equal(t2) {
		t.Errorf("an update overwrote last_used_at: %v", ga.LastUsedAt)
	}
}

func testListLineage(t *testing.T, s latchkey.Store) {
	parent := create(t, s)
	kid := create(t, s, func(tk *latchkey.Token) { tk.ParentID = parent.ID })
	old := create(t, s, func(tk *latchkey.Token) { tk.CreatedAt = base.Add(-100 * 24 * time.Hour) })
	rotated := create(t, s, func(tk *latchkey.Token) { // old but already rotated
		tk.CreatedAt = base.Add(-100 * 24 * time.Hour)
		tk.SuccessorID = kid.ID
	})
	expired := create(t, s, func(tk *latchkey.Token) { // old but expired
		tk.CreatedAt = base.Add(-100 * 24 * time.Hour)
		tk.ExpiresAt = base.Add(-time.Hour)
	})
	create(t, s, func(tk *latchkey.Token) { // old but revoked
		tk.CreatedAt = base.Add(-100 * 24 * time.Hour)
		tk.Status = latchkey.StatusRevoked
	})
	ids := func(f latchkey.TokenFilter) []string {
		page, err := s.ListTokens(ctx(), f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, tk := range page.Tokens {
			out = append(out, tk.ID)
		}
		return out
	}
	if got := ids(latchkey.TokenFilter{ParentID: parent.ID}); !slices.Equal(got, []string{kid.ID}) {
		t.Errorf("children of parent = %v, want [%s]", got, kid.ID)
	}
	due := ids(latchkey.TokenFilter{RotationDueBefore: base.Add(-90 * 24 * time.Hour), Now: base})
	if !slices.Equal(due, []string{old.ID}) {
		t.Errorf("rotation due = %v, want only [%s] (not rotated, expired or revoked ones)", due, old.ID)
	}
	if got := ids(latchkey.TokenFilter{Expired: true, Now: base}); !slices.Equal(got, []string{expired.ID}) {
		t.Errorf("expired = %v, want only [%s]", got, expired.ID)
	}
	if got := ids(latchkey.TokenFilter{Rotated: true, Now: base}); !slices.Equal(got, []string{rotated.ID}) {
		t.Errorf("rotated = %v, want only [%s]", got, rotated.ID)
	}
}
