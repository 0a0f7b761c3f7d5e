package storetest

import (
	"cmp"
	"crypto/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/secret"
)

// listAll pages through f's listing, limit tokens a page, and returns the
// ids in order; it fails the test if a page repeats a token.
func listAll(t *testing.T, s latchkey.Store, f latchkey.TokenFilter, limit int) []string {
	t.Helper()
	f.Limit = limit
	var ids []string
	seen := map[string]bool{}
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("listing %+v does not end", f)
		}
		p, err := s.ListTokens(ctx(), f)
		if err != nil {
			t.Fatalf("ListTokens(%+v): %v", f, err)
		}
		if len(p.Tokens) > limit {
			t.Fatalf("page of %d tokens, limit %d", len(p.Tokens), limit)
		}
		for _, tk := range p.Tokens {
			if seen[tk.ID] {
				t.Fatalf("listing %+v repeats %s", f, tk.ID)
			}
			seen[tk.ID] = true
			ids = append(ids, tk.ID)
		}
		if p.Next == "" {
			return ids
		}
		f.Cursor = p.Next
	}
}

// testListSorted: every order, both directions, paged in small pages
// with ties and absent times, gives every token once in the right order,
// and a cursor keeps to the order that gave it.
func testListSorted(t *testing.T, s latchkey.Store) {
	var toks []*latchkey.Token
	for i := range 23 {
		toks = append(toks, create(t, s, func(tk *latchkey.Token) {
			if i%4 != 0 { // every fourth never expires; the rest in tied pairs
				tk.ExpiresAt = base.Add(time.Duration(i/2) * time.Hour)
			}
			if i%3 != 0 { // every third never used; the rest in tied triples
				tk.LastUsedAt = base.Add(-time.Duration(i/3) * time.Minute)
			}
		}))
	}
	// The expected order: by key, then by creation (the store's seq).
	expect := func(sort string, desc bool) []string {
		idx := make([]int, len(toks))
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(a, b int) int {
			c := cmp.Compare(latchkey.SortKey(toks[a], sort, int64(a)), latchkey.SortKey(toks[b], sort, int64(b)))
			if c == 0 {
				c = cmp.Compare(a, b)
			}
			if desc {
				c = -c
			}
			return c
		})
		ids := make([]string, len(idx))
		for i, j := range idx {
			ids[i] = toks[j].ID
		}
		return ids
	}
	for _, sort := range []string{"", latchkey.SortCreated, latchkey.SortExpires, latchkey.SortLastUsed} {
		for _, order := range []string{"", "asc", "desc"} {
			f := latchkey.TokenFilter{Sort: sort, Order: order}
			srt, desc, err := f.Ordering()
			if err != nil {
				t.Fatal(err)
			}
			if got, want := listAll(t, s, f, 4), expect(srt, desc); !slices.Equal(got, want) {
				t.Errorf("sort %q order %q:\n got %v\nwant %v", sort, order, got, want)
			}
		}
	}
	// The natural directions.
	p, _ := s.ListTokens(ctx(), latchkey.TokenFilter{Sort: latchkey.SortExpires, Limit: 1})
	if len(p.Tokens) != 1 || !p.Tokens[0].ExpiresAt.Equal(base) {
		t.Errorf("sort=expires starts with %+v, want the soonest expiry", p.Tokens)
	}
	p, _ = s.ListTokens(ctx(), latchkey.TokenFilter{Sort: latchkey.SortLastUsed, Limit: 1})
	if len(p.Tokens) != 1 || !p.Tokens[0].LastUsedAt.Equal(base) {
		t.Errorf("sort=last_used starts with %+v, want the latest use", p.Tokens)
	}
	// A cursor from one order is refused by another.
	p, _ = s.ListTokens(ctx(), latchkey.TokenFilter{Sort: latchkey.SortExpires, Limit: 2})
	for _, f := range []latchkey.TokenFilter{
		{Sort: latchkey.SortExpires, Order: "desc", Cursor: p.Next},
		{Sort: latchkey.SortLastUsed, Cursor: p.Next},
		{Cursor: p.Next},
		{Sort: "name"},
		{Order: "up"},
	} {
		if _, err := s.ListTokens(ctx(), f); latchkey.ErrorCode(err) != latchkey.EInvalid {
			t.Errorf("ListTokens(%+v) = %v, want %s", f, err, latchkey.EInvalid)
		}
	}
	// The count is of everything matching, whatever the page.
	p, err := s.ListTokens(ctx(), latchkey.TokenFilter{Sort: latchkey.SortExpires, Limit: 2, Count: true})
	if err != nil || p.Total != 23 {
		t.Errorf("count = %d, %v; want 23", p.Total, err)
	}
}

// testListSearch: a search finds tokens by the start of any word of their
// name, subject or tags, or of their id, whatever the case; all words must
// match; a change of tags is found at once; junk is refused.
func testListSearch(t *testing.T, s latchkey.Store) {
	// Ids begin with a digit, so that no word searched for below begins a
	// random id.
	named := func(name, subject string, tags ...string) *latchkey.Token {
		return create(t, s, func(tk *latchkey.Token) { tk.ID, tk.Name, tk.Subject, tk.Tags = "9"+tk.ID[1:], name, subject, tags })
	}
	billing := named("Billing API — prod", "service:payments", "team-Ops", "ci")
	deploy := named("ci-deploy", "user:ana@example.com")
	cafe := named("Café Ünïcode", "svc-a", "eu-west")
	plain := named("other", "svc-b")
	search := func(q string, extra ...func(*latchkey.TokenFilter)) []string {
		t.Helper()
		f := latchkey.TokenFilter{Search: q}
		for _, x := range extra {
			x(&f)
		}
		got := listAll(t, s, f, 2)
		slices.Sort(got)
		return got
	}
	ids := func(tks ...*latchkey.Token) []string {
		var out []string
		for _, tk := range tks {
			out = append(out, tk.ID)
		}
		slices.Sort(out)
		return out
	}
	for _, c := range []struct {
		q    string
		want []string
	}{
		{"bill", ids(billing)},
		{"BILLING prod", ids(billing)},
		{"  billing   api  ", ids(billing)},
		{"pay", ids(billing)},
		{"ops", ids(billing)},
		{"ci", ids(billing, deploy)},
		{"ci deploy", ids(deploy)},
		{"ana example", ids(deploy)},
		{"ana@example.com", ids(deploy)},
		{"café", ids(cafe)},
		{"CAF ünï", ids(cafe)},
		{"west", ids(cafe)},
		{"svc", ids(cafe, plain)},
		{"illing", nil}, // a word's start, not its middle
		{"billing deploy", nil},
		{"nothing", nil},
		{strings.ToLower(deploy.ID[:7]), ids(deploy)},
		{deploy.ID, ids(deploy)},
		{"", ids(billing, deploy, cafe, plain)},
		{"—", ids(billing, deploy, cafe, plain)}, // no word at all: no condition
	} {
		if got := search(c.q); !slices.Equal(got, c.want) {
			t.Errorf("search %q = %v, want %v", c.q, got, c.want)
		}
	}
	if got := search("ci", func(f *latchkey.TokenFilter) { f.Sort = latchkey.SortExpires; f.Subject = "service:payments" }); !slices.Equal(got, ids(billing)) {
		t.Errorf("search with a subject and a sort = %v", got)
	}
	p, err := s.ListTokens(ctx(), latchkey.TokenFilter{Search: "svc", Count: true, Limit: 1})
	if err != nil || p.Total != 2 || len(p.Tokens) != 1 {
		t.Errorf("counted search = %d tokens of %d, %v; want 1 of 2", len(p.Tokens), p.Total, err)
	}
	// Counted from the terms alone (a search and nothing else), and with
	// another filter (through the tokens).
	for _, c := range []struct {
		f    latchkey.TokenFilter
		want int64
	}{
		{latchkey.TokenFilter{Search: "ci"}, 2},
		{latchkey.TokenFilter{Search: "ci deploy"}, 1},
		{latchkey.TokenFilter{Search: "c"}, 3}, // ci, com, café: three tokens, however many of their words match
		{latchkey.TokenFilter{Search: "ci", Sort: latchkey.SortExpires}, 2},
		{latchkey.TokenFilter{Search: "ci", Subject: "user:ana@example.com"}, 1},
		{latchkey.TokenFilter{Search: "ci", Status: latchkey.StatusRevoked}, 0},
	} {
		c.f.Count = true
		if p, err := s.ListTokens(ctx(), c.f); err != nil || p.Total != c.want {
			t.Errorf("count of %+v = %d, %v; want %d", c.f, p.Total, err, c.want)
		}
	}

	// Tags changed: found by the new, no longer by the old.
	if _, err := s.UpdateToken(ctx(), plain.ID, func(tk *latchkey.Token) (*latchkey.AuditEvent, error) {
		tk.Tags = []string{"nightly"}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateToken(ctx(), billing.ID, func(tk *latchkey.Token) (*latchkey.AuditEvent, error) {
		tk.Tags = nil
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := search("nightly"); !slices.Equal(got, ids(plain)) {
		t.Errorf("search for a new tag = %v", got)
	}
	if got := search("ops"); got != nil {
		t.Errorf("search for a removed tag = %v", got)
	}
	if got := search("ci"); !slices.Equal(got, ids(deploy)) {
		t.Errorf("search after a tag's removal = %v", got)
	}

	pt, _, err := secret.Generate("lk", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	whole := pt.Reveal()
	for _, q := range []string{
		strings.Repeat("a", latchkey.MaxSearchLen+1),
		"a b c d e f g h i",
		whole,
		"find " + whole + " please",
		"\xff",
	} {
		if _, err := s.ListTokens(ctx(), latchkey.TokenFilter{Search: q}); latchkey.ErrorCode(err) != latchkey.EInvalid {
			t.Errorf("search %.40q = %v, want %s", q, err, latchkey.EInvalid)
		}
	}
}

// testListUsage: the filters by expiry and use.
func testListUsage(t *testing.T, s latchkey.Store) {
	now := base.Add(100 * 24 * time.Hour)
	day := 24 * time.Hour
	at := func(d time.Duration) time.Time { return now.Add(d) }
	soon := create(t, s, func(tk *latchkey.Token) { tk.ExpiresAt, tk.LastUsedAt = at(2*day), at(-time.Hour) })
	later := create(t, s, func(tk *latchkey.Token) { tk.ExpiresAt, tk.LastUsedAt = at(20*day), at(-40*day) })
	gone := create(t, s, func(tk *latchkey.Token) { tk.ExpiresAt = at(-day) })
	revoked := create(t, s, func(tk *latchkey.Token) {
		tk.ExpiresAt, tk.Status, tk.RevokedAt = at(day), latchkey.StatusRevoked, at(-day)
	})
	forever := create(t, s, func(tk *latchkey.Token) { tk.LastUsedAt = at(-400 * day) })
	fresh := create(t, s, func(tk *latchkey.Token) { tk.CreatedAt = at(-day) }) // never used, but new
	for _, c := range []struct {
		name string
		f    latchkey.TokenFilter
		want []*latchkey.Token
	}{
		{"expires within 7d", latchkey.TokenFilter{ExpiresBefore: at(7 * day), Now: now}, []*latchkey.Token{soon}},
		{"expires within 30d, soonest first", latchkey.TokenFilter{ExpiresBefore: at(30 * day), Now: now, Sort: latchkey.SortExpires}, []*latchkey.Token{soon, later}},
		{"unused for 30d", latchkey.TokenFilter{UnusedBefore: at(-30 * day), Sort: latchkey.SortLastUsed}, []*latchkey.Token{later, forever, revoked, gone}},
		{"unused for 2d", latchkey.TokenFilter{UnusedBefore: at(-2 * day), Sort: latchkey.SortLastUsed, Order: "asc"}, []*latchkey.Token{gone, revoked, forever, later}},
		{"never used", latchkey.TokenFilter{NeverUsed: true}, []*latchkey.Token{fresh, revoked, gone}},
		{"never used, active", latchkey.TokenFilter{NeverUsed: true, Status: latchkey.StatusActive}, []*latchkey.Token{fresh, gone}},
	} {
		var want []string
		for _, tk := range c.want {
			want = append(want, tk.ID)
		}
		if got := listAll(t, s, c.f, 1); !slices.Equal(got, want) {
			t.Errorf("%s = %v, want %v", c.name, got, want)
		}
		c.f.Count = true
		if p, err := s.ListTokens(ctx(), c.f); err != nil || p.Total != int64(len(want)) {
			t.Errorf("%s: count = %d, %v; want %d", c.name, p.Total, err, len(want))
		}
	}
}

// CheckMigratedSearch checks a store migrated from before the token
// search, which held n tokens named "svc-<i>" of the subject "team-ops",
// tagged "eu-west", with ids "OldToken<i, 8 digits>", the last named
// "Nightly Backup" and expiring first: every one is found by search at
// once, the sorted listing works on them, and a change of tags
// afterwards is found.
func CheckMigratedSearch(t *testing.T, s latchkey.Store, n int) {
	t.Helper()
	count := func(q string) int64 {
		t.Helper()
		page, err := s.ListTokens(ctx(), latchkey.TokenFilter{Search: q, Count: true, Limit: 1})
		if err != nil {
			t.Fatalf("search %q: %v", q, err)
		}
		return page.Total
	}
	for q, want := range map[string]int{"nightly": 1, "backup night": 1, "svc": n - 1, "ops": n, "west": n, "oldtoken00000003": 1} {
		if got := count(q); got != int64(want) {
			t.Errorf("after the migration, search %q finds %d; want %d", q, got, want)
		}
	}
	page, err := s.ListTokens(ctx(), latchkey.TokenFilter{Sort: latchkey.SortExpires, Limit: 1})
	if err != nil || len(page.Tokens) != 1 || page.Tokens[0].Name != "Nightly Backup" {
		t.Fatalf("sorted by expiry after the migration: %v, %v", page.Tokens, err)
	}
	if _, err := s.UpdateToken(ctx(), page.Tokens[0].ID, func(tk *latchkey.Token) (*latchkey.AuditEvent, error) {
		tk.Tags = []string{"weekly"}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	for q, want := range map[string]int64{"weekly": 1, "west": int64(n - 1)} {
		if got := count(q); got != want {
			t.Errorf("after a change of tags, search %q finds %d; want %d", q, got, want)
		}
	}
}
