// Package storetest is the conformance suite every latchkey.Store runs
// unchanged: sqlite/ always, postgres/ when a database is reachable.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/secret"
)

// Run runs the suite. open must return a new, empty store for each call;
// Run closes it.
func Run(t *testing.T, open func(t *testing.T) latchkey.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s latchkey.Store)
	}{
		{"CreateGet", testCreateGet},
		{"GetUnknown", testGetUnknown},
		{"CreateDuplicate", testCreateDuplicate},
		{"CreateWritesAudit", testCreateWritesAudit},
		{"Update", testUpdate},
		{"UpdateRefusedChangesNothing", testUpdateRefused},
		{"UpdateUnknown", testUpdateUnknown},
		{"UpdateConcurrent", testUpdateConcurrent},
		{"ListFiltersAndPages", testList},
		{"ListBadCursor", testListBadCursor},
		{"ListSorted", testListSorted},
		{"ListSearch", testListSearch},
		{"ListUsage", testListUsage},
		{"AuditAppendList", testAudit},
		{"AuditFilters", testAuditFilters},
		{"AuditSources", testAuditSources},
		{"Settings", testSettings},
		{"LifecycleFieldsRoundTrip", testLifecycleRoundTrip},
		{"WriteTxAllOrNothing", testWriteTx},
		{"SelectTokens", testSelectTokens},
		{"ConsumeUseExact", testConsumeUseExact},
		{"ConsumeUseAllOrNothing", testConsumeUseAllOrNothing},
		{"ConsumeUseSharedBySeries", testConsumeUseSeries},
		{"TouchTokens", testTouchTokens},
		{"ListLineageAndRotationDue", testListLineage},
		{"AuditChain", testAuditChain},
		{"AuditPruneAnchors", testAuditPrune},
		{"Blocks", testBlocks},
		{"AuditTimeRange", testAuditTimeRange},
		{"KeyspacesAndRoles", testKeyspaces},
		{"ChangeSetting", testChangeSetting},
		{"ChangeSettingConcurrent", testChangeSettingConcurrent},
		{"SharedBudgetExact", testSharedBudget},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tt.fn(t, s)
		})
	}
}

var base = time.Date(2026, 11, 1, 12, 0, 0, 123456000, time.UTC)

// NewToken returns a valid token record with a fresh id, for tests.
func NewToken(t testing.TB, mutate ...func(*latchkey.Token)) *latchkey.Token {
	t.Helper()
	_, parts, err := secret.Generate("lk", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tok := &latchkey.Token{
		ID:        parts.ID,
		Prefix:    parts.Prefix,
		Keyspace:  latchkey.DefaultKeyspace,
		Name:      "test",
		Subject:   "svc-a",
		Scopes:    []string{"invoices:read"},
		Tags:      []string{},
		Meta:      json.RawMessage(`{}`),
		CreatedAt: base,
		CreatedBy: "root",
		Status:    latchkey.StatusActive,
		Version:   1,
		Hash:      make([]byte, secret.HashLen),
	}
	rand.Read(tok.Hash) // any 32 bytes: the store treats the hash as opaque
	for _, m := range mutate {
		m(tok)
	}
	return tok
}

func ctx() context.Context { return context.Background() }

func testCreateGet(t *testing.T, s latchkey.Store) {
	tok := NewToken(t, func(tk *latchkey.Token) {
		tk.Prefix = "acme_live"
		tk.Name, tk.Subject = "billing", "team-billing"
		tk.Scopes = []string{"invoices:read", "billing.*:write"}
		tk.Tags = []string{"prod", "billing"}
		tk.Meta = json.RawMessage(`{"owner":"ana","n":3}`)
		tk.ExpiresAt = base.Add(30 * 24 * time.Hour)
		tk.NotBefore = base.Add(time.Minute)
		tk.LastUsedAt = base.Add(2 * time.Minute)
	})
	if err := s.CreateToken(ctx(), tok, nil); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	got, err := s.GetToken(ctx(), tok.ID)
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	var gm, wm any
	json.Unmarshal(got.Meta, &gm)
	json.Unmarshal(tok.Meta, &wm)
	if !reflect.DeepEqual(gm, wm) {
		t.Errorf("meta = %s, want %s", got.Meta, tok.Meta)
	}
	got.Meta, tok.Meta = nil, nil
	if !reflect.DeepEqual(got, tok) {
		t.Errorf("GetToken = %+v\nwant       %+v", got, tok)
	}
}

func testGetUnknown(t *testing.T, s latchkey.Store) {
	_, err := s.GetToken(ctx(), "0000000000000000")
	if latchkey.ErrorCode(err) != latchkey.ENotFound {
		t.Errorf("GetToken(unknown) error = %v, want code %s", err, latchkey.ENotFound)
	}
}

func testCreateDuplicate(t *testing.T, s latchkey.Store) {
	tok := NewToken(t)
	if err := s.CreateToken(ctx(), tok, nil); err != nil {
		t.Fatal(err)
	}
	err := s.CreateToken(ctx(), NewToken(t, func(tk *latchkey.Token) { tk.ID = tok.ID }), nil)
	if latchkey.ErrorCode(err) != latchkey.EConflict {
		t.Errorf("duplicate CreateToken error = %v, want code %s", err, latchkey.EConflict)
	}
}

func adminEvent(action, id string) *latchkey.AuditEvent {
	return &latchkey.AuditEvent{Time: base, Kind: latchkey.KindAdmin, Action: action, Actor: "root", TokenID: id,
		Outcome: latchkey.OutcomeOK, Detail: json.RawMessage(`{"k":"v"}`)}
}

func testCreateWritesAudit(t *testing.T, s latchkey.Store) {
	tok := NewToken(t)
	if err := s.CreateToken(ctx(), tok, adminEvent(latchkey.ActionTokenCreate, tok.ID)); err != nil {
		t.Fatal(err)
	}
	page, err := s.ListAudit(ctx(), latchkey.AuditFilter{TokenID: tok.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 1 || page.Events[0].Action != latchkey.ActionTokenCreate || page.Events[0].Seq == 0 {
		t.Fatalf("audit after create = %+v, want one token.create event", page.Events)
	}
	if string(page.Events[0].Detail) != `{"k":"v"}` {
		t.Errorf("detail = %s", page.Events[0].Detail)
	}
	// A failed create writes no audit record either.
	dup := NewToken(t, func(tk *latchkey.Token) { tk.ID = tok.ID })
	s.CreateToken(ctx(), dup, adminEvent(latchkey.ActionTokenCreate, tok.ID))
	page, _ = s.ListAudit(ctx(), latchkey.AuditFilter{TokenID: tok.ID})
	if len(page.Events) != 1 {
		t.Errorf("a refused create left %d audit events, want 1", len(page.Events))
	}
}

func testUpdate(t *testing.T, s latchkey.Store) {
	tok := NewToken(t)
	if err := s.CreateToken(ctx(), tok, nil); err != nil {
		t.Fatal(err)
	}
	at := base.Add(time.Hour)
	got, err := s.UpdateToken(ctx(), tok.ID, func(tk *latchkey.Token) (*latchkey.AuditEvent, error) {
		tk.Status = latchkey.StatusRevoked
		tk.RevokedAt, tk.RevokedBy, tk.RevokedReason = at, "root", "leaked"
		return adminEvent(latchkey.ActionTokenRevoke, tk.ID), nil
	})
	if err != nil {
		t.Fatalf("UpdateToken: %v", err)
	}
	if got.Version != 2 || got.Status != latchkey.StatusRevoked {
		t.Errorf("UpdateToken returned version %d status %s, want 2 revoked", got.Version, got.Status)
	}
	again, _ := s.GetToken(ctx(), tok.ID)
	if again.Version != 2 || again.Status != latchkey.StatusRevoked || !again.RevokedAt.Equal(at) ||
		again.RevokedBy != "root" || again.RevokedReason != "leaked" {
		t.Errorf("stored after update = %+v", again)
	}
	page, _ := s.ListAudit(ctx(), latchkey.AuditFilter{TokenID: tok.ID})
	if len(page.Events) != 1 || page.Events[0].Action != latchkey.ActionTokenRevoke {
		t.Errorf("audit after update = %+v", page.Events)
	}
}

func testUpdateRefused(t *testing.T, s latchkey.Store) {
	tok := NewToken(t)
	s.CreateToken(ctx(), tok, nil)
	refusal := latchkey.Errorf(latchkey.EConflict, "no")
	_, err := s.UpdateToken(ctx(), tok.ID, func(tk *latchkey.Token) (*latchkey.AuditEvent, error) {
		tk.Status = latchkey.StatusRevoked
		return adminEvent(latchkey.ActionTokenRevoke, tk.ID), refusal
	})
	if err != refusal {
		t.Errorf("UpdateToken error = %v, want fn's error unchanged", err)
	}
	got, _ := s.GetToken(ctx(), tok.ID)
	if got.Version != 1 || got.Status != latchkey.StatusActive {
		t.Errorf("a refused update changed the token: %+v", got)
	}
	page, _ := s.ListAudit(ctx(), latchkey.AuditFilter{TokenID: tok.ID})
	if len(page.Events) != 0 {
		t.Errorf("a refused update wrote %d audit events", len(page.Events))
	}
}

func testUpdateUnknown(t *testing.T, s latchkey.Store) {
	_, err := s.UpdateToken(ctx(), "0000000000000000", func(*latchkey.Token) (*latchkey.AuditEvent, error) {
		t.Error("fn called for an unknown token")
		return nil, nil
	})
	if latchkey.ErrorCode(err) != latchkey.ENotFound {
		t.Errorf("UpdateToken(unknown) = %v, want %s", err, latchkey.ENotFound)
	}
}

func testUpdateConcurrent(t *testing.T, s latchkey.Store) {
	tok := NewToken(t)
	s.CreateToken(ctx(), tok, nil)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Go(func() {
			_, err := s.UpdateToken(ctx(), tok.ID, func(tk *latchkey.Token) (*latchkey.AuditEvent, error) {
				tk.Tags = append(tk.Tags, fmt.Sprint("t", i))
				return nil, nil
			})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent UpdateToken: %v", err)
		}
	}
	got, _ := s.GetToken(ctx(), tok.ID)
	if got.Version != n+1 || len(got.Tags) != n {
		t.Errorf("after %d concurrent updates: version %d, %d tags; want %d and %d (a lost update)", n, got.Version, len(got.Tags), n+1, n)
	}
}

func testList(t *testing.T, s latchkey.Store) {
	var all []*latchkey.Token
	for i := 0; i < 25; i++ {
		tok := NewToken(t, func(tk *latchkey.Token) {
			tk.Subject = []string{"a", "b"}[i%2]
			if i%5 == 0 {
				tk.Status = latchkey.StatusRevoked
			}
			if i%3 == 0 {
				tk.Tags = []string{"x", "prod"}
			}
			if i == 7 {
				tk.Prefix = "other"
			}
		})
		if err := s.CreateToken(ctx(), tok, nil); err != nil {
			t.Fatal(err)
		}
		all = append(all, tok)
	}
	// Paging through everything gives each token once, newest first.
	var seen []string
	f := latchkey.TokenFilter{Limit: 7}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		p, err := s.ListTokens(ctx(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range p.Tokens {
			seen = append(seen, tk.ID)
		}
		if p.Next == "" {
			break
		}
		f.Cursor = p.Next
	}
	if len(seen) != len(all) {
		t.Fatalf("paged listing returned %d tokens, want %d", len(seen), len(all))
	}
	for i, id := range seen {
		if want := all[len(all)-1-i].ID; id != want {
			t.Fatalf("listing position %d = %s, want %s (newest first)", i, id, want)
		}
	}
	count := func(f latchkey.TokenFilter) int {
		f.Limit = 1000
		p, err := s.ListTokens(ctx(), f)
		if err != nil {
			t.Fatal(err)
		}
		return len(p.Tokens)
	}
	for _, c := range []struct {
		f    latchkey.TokenFilter
		want int
	}{
		{latchkey.TokenFilter{Subject: "a"}, 13},
		{latchkey.TokenFilter{Status: latchkey.StatusRevoked}, 5},
		{latchkey.TokenFilter{Tag: "prod"}, 9},
		{latchkey.TokenFilter{Tag: "pro"}, 0},
		{latchkey.TokenFilter{Prefix: "other"}, 1},
		{latchkey.TokenFilter{Subject: "a", Status: latchkey.StatusActive, Tag: "x"}, 4},
	} {
		if got := count(c.f); got != c.want {
			t.Errorf("ListTokens(%+v) = %d tokens, want %d", c.f, got, c.want)
		}
	}
}

func testListBadCursor(t *testing.T, s latchkey.Store) {
	if _, err := s.ListTokens(ctx(), latchkey.TokenFilter{Cursor: "nonsense"}); latchkey.ErrorCode(err) != latchkey.EInvalid {
		t.Errorf("ListTokens(bad cursor) = %v, want %s", err, latchkey.EInvalid)
	}
	if _, err := s.ListAudit(ctx(), latchkey.AuditFilter{Cursor: "nonsense"}); latchkey.ErrorCode(err) != latchkey.EInvalid {
		t.Errorf("ListAudit(bad cursor) = %v, want %s", err, latchkey.EInvalid)
	}
}

func verifyEvent(i int) latchkey.AuditEvent {
	return latchkey.AuditEvent{
		Time: base.Add(time.Duration(i) * time.Second), Node: "n1", RequestID: fmt.Sprint("r", i),
		Kind: latchkey.KindVerify, Action: latchkey.ActionVerify, TokenID: []string{"tokA", "tokB"}[i%2],
		Subject: []string{"alice", "bob"}[i%2], Outcome: []string{"VALID", "NOT_FOUND", "REVOKED"}[i%3],
		Reason: "r", Scopes: []string{"a:b"}, ClientIP: "203.0.113.7", UserAgent: "curl/8",
		Method: "GET", Path: "/x", Latency: 1234 * time.Nanosecond,
	}
}

func testAudit(t *testing.T, s latchkey.Store) {
	evs := make([]latchkey.AuditEvent, 30)
	for i := range evs {
		evs[i] = verifyEvent(i)
	}
	if err := s.AppendAudit(ctx(), evs[:10]); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx(), evs[10:]); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq <= evs[i-1].Seq {
			t.Fatalf("AppendAudit seqs not increasing: %d then %d", evs[i-1].Seq, evs[i].Seq)
		}
	}
	p, err := s.ListAudit(ctx(), latchkey.AuditFilter{Limit: 1})
	if err != nil || len(p.Events) != 1 {
		t.Fatalf("ListAudit = %v, %v", p, err)
	}
	got, want := p.Events[0], evs[29]
	if want.Hash == "" { // AppendAudit need not set it; reading back does
		want.Hash = got.Hash
	}
	if !reflect.DeepEqual(got, want) || len(got.Hash) != 2*latchkey.ChainHashLen {
		t.Errorf("newest event = %+v\nwant %+v", got, want)
	}
	// Pages cover everything once, newest first.
	var seqs []int64
	f := latchkey.AuditFilter{Limit: 8}
	for {
		p, err := s.ListAudit(ctx(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Events {
			seqs = append(seqs, e.Seq)
		}
		if p.Next == "" {
			break
		}
		f.Cursor = p.Next
	}
	if len(seqs) != 30 || seqs[0] != evs[29].Seq || seqs[29] != evs[0].Seq {
		t.Errorf("paged audit = %d events (%v), want 30 newest first", len(seqs), seqs)
	}
	// After follows the log oldest first.
	p, _ = s.ListAudit(ctx(), latchkey.AuditFilter{After: evs[25].Seq})
	if len(p.Events) != 4 || p.Events[0].Seq != evs[26].Seq || p.Events[3].Seq != evs[29].Seq {
		t.Errorf("ListAudit(After) = %d events, want the 4 after, oldest first", len(p.Events))
	}
}

func testAuditFilters(t *testing.T, s latchkey.Store) {
	evs := make([]latchkey.AuditEvent, 12)
	for i := range evs {
		evs[i] = verifyEvent(i)
	}
	s.AppendAudit(ctx(), evs)
	for _, c := range []struct {
		f    latchkey.AuditFilter
		want int
	}{
		{latchkey.AuditFilter{TokenID: "tokA"}, 6},
		{latchkey.AuditFilter{Subject: "bob"}, 6},
		{latchkey.AuditFilter{Outcome: "REVOKED"}, 4},
		{latchkey.AuditFilter{Kind: latchkey.KindAdmin}, 0},
		{latchkey.AuditFilter{Since: base.Add(3 * time.Second), Until: base.Add(6 * time.Second)}, 3},
		{latchkey.AuditFilter{TokenID: "tokA", Outcome: "VALID"}, 2},
	} {
		p, err := s.ListAudit(ctx(), c.f)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) != c.want {
			t.Errorf("ListAudit(%+v) = %d events, want %d", c.f, len(p.Events), c.want)
		}
	}
}

// testAuditSources: records from several addresses (IPv4, IPv6, none),
// across more than one write; a source filter by address and by prefix
// (from the index), and the tally by source.
func testAuditSources(t *testing.T, s latchkey.Store) {
	ips := []string{"203.0.113.7", "203.0.113.9", "198.51.100.1", "2001:db8::1", "2001:db8:1::5", ""}
	var evs []latchkey.AuditEvent
	for i := range 24 {
		ev := verifyEvent(i)
		ev.ClientIP = ips[i%len(ips)]
		ev.TokenID = "tokS"
		evs = append(evs, ev)
	}
	// Another token's record from one of the addresses, later.
	other := verifyEvent(30)
	other.TokenID, other.ClientIP = "tokT", "203.0.113.7"
	if err := s.AppendAudit(ctx(), evs[:10]); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx(), append(evs[10:], other)); err != nil {
		t.Fatal(err)
	}
	count := func(f latchkey.AuditFilter) int {
		t.Helper()
		n := 0
		for {
			p, err := s.ListAudit(ctx(), f)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range p.Events {
				if !latchkey.InSource(f.Source, ev.ClientIP) {
					t.Errorf("ListAudit(source %v) returned a record from %q", f.Source, ev.ClientIP)
				}
			}
			n += len(p.Events)
			if p.Next == "" {
				return n
			}
			f.Cursor = p.Next
		}
	}
	src := func(v string) netip.Prefix {
		p, err := latchkey.ParseSource(v)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		f    latchkey.AuditFilter
		want int
	}{
		{latchkey.AuditFilter{Source: src("203.0.113.7")}, 5},
		{latchkey.AuditFilter{Source: src("203.0.113.7"), TokenID: "tokS"}, 4},
		{latchkey.AuditFilter{Source: src("::ffff:203.0.113.7")}, 5},
		{latchkey.AuditFilter{Source: src("203.0.113.0/24")}, 9},
		{latchkey.AuditFilter{Source: src("203.0.113.0/24"), Limit: 2}, 9}, // paged
		{latchkey.AuditFilter{Source: src("0.0.0.0/0")}, 13},
		{latchkey.AuditFilter{Source: src("2001:db8::/32")}, 8},
		{latchkey.AuditFilter{Source: src("2001:db8::1")}, 4},
		{latchkey.AuditFilter{Source: src("192.0.2.1")}, 0},
		{latchkey.AuditFilter{Source: src("203.0.113.9"), Outcome: "NOT_FOUND"}, 4}, // records 1, 7, 13, 19
		{latchkey.AuditFilter{Source: src("203.0.113.9"), Outcome: "VALID"}, 0},
	} {
		if got := count(c.f); got != c.want {
			t.Errorf("ListAudit(source %v, token %q, outcome %q) = %d records, want %d", c.f.Source, c.f.TokenID, c.f.Outcome, got, c.want)
		}
	}
	r, err := s.AuditSources(ctx(), latchkey.AuditFilter{TokenID: "tokS"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Total != 6 || r.Records != 24 || r.Truncated || len(r.Sources) != 6 {
		t.Fatalf("AuditSources = %d sources, %d records, truncated %v; want 6, 24, false", r.Total, r.Records, r.Truncated)
	}
	byIP := map[string]latchkey.SourceUsage{}
	for _, u := range r.Sources {
		byIP[u.Address] = u
	}
	u := byIP["203.0.113.7"] // records 0, 6, 12, 18
	wantOut := map[string]int64{}
	for _, i := range []int{0, 6, 12, 18} {
		wantOut[evs[i].Outcome]++
	}
	if u.Attempts != 4 || !u.FirstSeen.Equal(evs[0].Time) || !u.LastSeen.Equal(evs[18].Time) || !reflect.DeepEqual(u.Outcomes, wantOut) {
		t.Errorf("203.0.113.7 = %+v; want 4 attempts from %v to %v, outcomes %v", u, evs[0].Time, evs[18].Time, wantOut)
	}
	if u := byIP[""]; u.Attempts != 4 {
		t.Errorf("records without an address = %+v, want 4 attempts", u)
	}
	r, err = s.AuditSources(ctx(), latchkey.AuditFilter{Source: src("203.0.113.0/24"), Since: evs[6].Time})
	if err != nil {
		t.Fatal(err)
	}
	// From record 6 on: .7 at 6, 12, 18 and tokT's; .9 at 7, 13, 19.
	if r.Total != 2 || r.Records != 7 || r.Sources[0].Address != "203.0.113.7" || r.Sources[0].Attempts != 4 {
		t.Errorf("AuditSources(203.0.113.0/24 since record 6) = %+v", r)
	}
}

func testSettings(t *testing.T, s latchkey.Store) {
	if _, ok, err := s.GetSetting(ctx(), "k"); ok || err != nil {
		t.Errorf("GetSetting(absent) = ok %v, err %v", ok, err)
	}
	v, err := s.PutSettingIfAbsent(ctx(), "k", "first")
	if err != nil || v != "first" {
		t.Errorf("PutSettingIfAbsent = %q, %v", v, err)
	}
	v, _ = s.PutSettingIfAbsent(ctx(), "k", "second")
	if v != "first" {
		t.Errorf("second PutSettingIfAbsent = %q, want the first value kept", v)
	}
	if v, ok, _ := s.GetSetting(ctx(), "k"); !ok || v != "first" {
		t.Errorf("GetSetting = %q %v", v, ok)
	}
	if err := s.Ping(ctx()); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if err := s.PutSetting(ctx(), "k2", "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSetting(ctx(), "k2", "b"); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := s.GetSetting(ctx(), "k2"); !ok || v != "b" {
		t.Errorf("PutSetting did not replace: %q %v", v, ok)
	}
	for k, v := range map[string]string{"activity:a": "1", "activity:b": "2", "activityx": "3", "act%": "4"} {
		if err := s.PutSetting(ctx(), k, v); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.SettingsWithPrefix(ctx(), "activity:")
	if err != nil || len(got) != 2 || got["activity:a"] != "1" || got["activity:b"] != "2" {
		t.Errorf("SettingsWithPrefix(activity:) = %v, %v", got, err)
	}
	// The prefix is taken literally, not as a LIKE pattern.
	if got, err := s.SettingsWithPrefix(ctx(), "act%"); err != nil || len(got) != 1 {
		t.Errorf("SettingsWithPrefix(act%%) = %v, %v", got, err)
	}
	if err := s.DeleteSetting(ctx(), "activity:a"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSetting(ctx(), "never-set"); err != nil {
		t.Errorf("DeleteSetting(absent): %v", err)
	}
	if _, ok, _ := s.GetSetting(ctx(), "activity:a"); ok {
		t.Error("DeleteSetting left the setting")
	}
	if _, ok, _ := s.GetSetting(ctx(), "activity:b"); !ok {
		t.Error("DeleteSetting took another setting")
	}
}
