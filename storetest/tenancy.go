package storetest

import (
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/latchkeyhq/latchkey"
)

// A token's keyspace and roles round-trip; a token stored without a
// keyspace is in the default one; listing, selecting and the audit log
// filter by keyspace.
func testKeyspaces(t *testing.T, s latchkey.Store) {
	old := NewToken(t, func(tok *latchkey.Token) { tok.Keyspace = "" })
	acme := NewToken(t, func(tok *latchkey.Token) {
		tok.Keyspace, tok.Roles, tok.Subject = "acme", []string{"reader", "writer"}, "cust"
	})
	acmeKid := NewToken(t, func(tok *latchkey.Token) {
		tok.Keyspace, tok.ParentID, tok.Ancestors, tok.Subject = "acme", acme.ID, []string{acme.ID}, "cust"
	})
	for _, tok := range []*latchkey.Token{old, acme, acmeKid} {
		if err := s.CreateToken(ctx(), tok, adminEvent("token.create", tok.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := s.GetToken(ctx(), old.ID); got.Keyspace != latchkey.DefaultKeyspace || got.Roles != nil {
		t.Errorf("a token stored without a keyspace reads back in %q with roles %v", got.Keyspace, got.Roles)
	}
	got, err := s.GetToken(ctx(), acme.ID)
	if err != nil || got.Keyspace != "acme" || len(got.Roles) != 2 || got.Roles[1] != "writer" {
		t.Fatalf("keyspace and roles = %q %v, %v", got.Keyspace, got.Roles, err)
	}
	got, err = s.UpdateToken(ctx(), acme.ID, func(tok *latchkey.Token) (*latchkey.AuditEvent, error) {
		tok.Roles = []string{"reader"}
		return nil, nil
	})
	if err != nil || len(got.Roles) != 1 {
		t.Fatalf("roles after update = %v, %v", got.Roles, err)
	}
	for _, c := range []struct {
		f    latchkey.TokenFilter
		want int
	}{{latchkey.TokenFilter{Keyspace: "acme"}, 2}, {latchkey.TokenFilter{Keyspace: latchkey.DefaultKeyspace}, 1},
		{latchkey.TokenFilter{Keyspace: "nope"}, 0}, {latchkey.TokenFilter{Keyspace: "acme", Subject: "svc-a"}, 0}} {
		page, err := s.ListTokens(ctx(), c.f)
		if err != nil || len(page.Tokens) != c.want {
			t.Errorf("ListTokens(%+v) = %d tokens, %v; want %d", c.f, len(page.Tokens), err, c.want)
		}
	}
	// A selector confined to a keyspace picks nothing outside it, not even
	// a descendant.
	err = s.WriteTx(ctx(), func(tx latchkey.Tx) error {
		toks, err := tx.SelectTokens(ctx(), latchkey.TokenSelector{Keyspace: latchkey.DefaultKeyspace, Subject: "cust", Descendants: true})
		if err != nil || len(toks) != 0 {
			t.Errorf("a default-keyspace selection found %d acme tokens, %v", len(toks), err)
		}
		toks, err = tx.SelectTokens(ctx(), latchkey.TokenSelector{Keyspace: "acme", IDs: []string{acme.ID, old.ID}, Descendants: true})
		if err != nil || len(toks) != 2 {
			t.Errorf("an acme selection found %d tokens, want acme and its child: %v", len(toks), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ev := verifyEvent(1)
	ev.TokenID = acme.ID
	own := verifyEvent(2)
	own.Kind, own.Action, own.Subject, own.Outcome = latchkey.KindAdmin, latchkey.ActionRolePut, latchkey.KeyspaceSubject("acme"), latchkey.OutcomeOK
	stranger := verifyEvent(3)
	stranger.TokenID = old.ID
	if err := s.AppendAudit(ctx(), []latchkey.AuditEvent{ev, own, stranger}); err != nil {
		t.Fatal(err)
	}
	page, err := s.ListAudit(ctx(), latchkey.AuditFilter{Keyspace: "acme", Kind: latchkey.KindVerify})
	if err != nil || len(page.Events) != 1 || page.Events[0].TokenID != acme.ID {
		t.Errorf("acme's verify records = %+v, %v", page.Events, err)
	}
	page, err = s.ListAudit(ctx(), latchkey.AuditFilter{Keyspace: "acme"})
	if err != nil || len(page.Events) != 4 { // acme's and its child's creations, its verification, its role change
		t.Errorf("acme's records = %d, %v; want 4", len(page.Events), err)
	}
	for _, e := range page.Events {
		if e.TokenID == old.ID {
			t.Errorf("acme's view shows a default-keyspace record: %+v", e)
		}
	}
}

// ChangeSetting writes its value and its audit record together, and
// neither when fn refuses; del removes the key.
func testChangeSetting(t *testing.T, s latchkey.Store) {
	ev := adminEvent(latchkey.ActionRolePut, "")
	ev.Subject = latchkey.KeyspaceSubject("acme")
	err := s.ChangeSetting(ctx(), "tenancy/role/acme/r", func(old string, ok bool) (string, bool, *latchkey.AuditEvent, error) {
		if ok || old != "" {
			t.Errorf("absent key seen as %q, %v", old, ok)
		}
		return `{"v":1}`, false, ev, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	refused := errors.New("no")
	err = s.ChangeSetting(ctx(), "tenancy/role/acme/r", func(old string, ok bool) (string, bool, *latchkey.AuditEvent, error) {
		if !ok || old != `{"v":1}` {
			t.Errorf("present key seen as %q, %v", old, ok)
		}
		return `{"v":2}`, false, adminEvent(latchkey.ActionRolePut, ""), refused
	})
	if err != refused {
		t.Errorf("fn's error came back as %v", err)
	}
	if v, _, _ := s.GetSetting(ctx(), "tenancy/role/acme/r"); v != `{"v":1}` {
		t.Errorf("a refused change wrote %q", v)
	}
	page, _ := s.ListAudit(ctx(), latchkey.AuditFilter{Action: latchkey.ActionRolePut})
	if len(page.Events) != 1 || page.Events[0].Subject != "keyspace:acme" {
		t.Errorf("audit after one change and one refusal: %+v", page.Events)
	}
	if err := s.ChangeSetting(ctx(), "tenancy/role/acme/r", func(string, bool) (string, bool, *latchkey.AuditEvent, error) {
		return "", true, nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.GetSetting(ctx(), "tenancy/role/acme/r"); ok {
		t.Error("del left the key")
	}
}

// Concurrent read-modify-writes of one key lose nothing (two approvers
// approving at once), the first write of a new key included.
func testChangeSettingConcurrent(t *testing.T, s latchkey.Store) {
	const n = 20
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := s.ChangeSetting(ctx(), "access/request/x", func(old string, ok bool) (string, bool, *latchkey.AuditEvent, error) {
				var list []int
				if ok {
					json.Unmarshal([]byte(old), &list)
				}
				b, _ := json.Marshal(append(list, i))
				return string(b), false, nil, nil
			})
			if err != nil {
				failed.Add(1)
				t.Errorf("change %d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	v, _, _ := s.GetSetting(ctx(), "access/request/x")
	var list []int
	json.Unmarshal([]byte(v), &list)
	if len(list) != n-int(failed.Load()) {
		t.Errorf("%d concurrent changes left %d entries: %s", n, len(list), v)
	}
}

// A shared budget is spent exactly once per use under concurrency, with
// the token budgets it is named with, all or none.
func testSharedBudget(t *testing.T, s latchkey.Store) {
	key := latchkey.BudgetPrefix + "acme/cust"
	if _, ok, err := s.ConsumeUse(ctx(), []string{key}); ok || err != nil {
		t.Errorf("an unset budget was spent: %v %v", ok, err)
	}
	if err := s.SetBudget(ctx(), key, 30); err != nil {
		t.Fatal(err)
	}
	tok := NewToken(t, func(tok *latchkey.Token) { tok.MaxUses = 1000 })
	if err := s.CreateToken(ctx(), tok, nil); err != nil {
		t.Fatal(err)
	}
	var ok atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, spent, err := s.ConsumeUse(ctx(), []string{tok.ID, key}); err == nil && spent {
				ok.Add(1)
			} else if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 30 {
		t.Errorf("%d uses of a budget of 30", ok.Load())
	}
	if n, err := s.BudgetUses(ctx(), key); n != 30 || err != nil {
		t.Errorf("BudgetUses = %d, %v", n, err)
	}
	got, _ := s.GetToken(ctx(), tok.ID)
	if got.Uses != 30 {
		t.Errorf("the token's own budget was spent %d times, want 30 (all or none)", got.Uses)
	}
	// Resizing keeps what was spent; 0 removes it.
	if err := s.SetBudget(ctx(), key, 31); err != nil {
		t.Fatal(err)
	}
	if left, spent, _ := s.ConsumeUse(ctx(), []string{key}); !spent || left != 0 {
		t.Errorf("after resizing to 31: spent %v, left %d", spent, left)
	}
	if err := s.SetBudget(ctx(), key, 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.BudgetUses(ctx(), key); n != 0 {
		t.Errorf("a removed budget still counts %d", n)
	}
}
