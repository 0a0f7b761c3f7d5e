package storetest

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// ScaleTokens is how many tokens BenchList's store holds:
// LATCHKEY_BENCH_TOKENS, 100,000 unless set (docs/benchmarks.md gives the
// figures at 1,000,000).
func ScaleTokens() int {
	if n, err := strconv.Atoi(os.Getenv("LATCHKEY_BENCH_TOKENS")); err == nil && n > 0 {
		return n
	}
	return 100_000
}

var (
	scaleWords = []string{"billing", "orders", "search", "payments", "ledger", "reports", "ingest", "mailer", "backup", "deploy",
		"catalog", "pricing", "shipping", "returns", "identity", "metrics", "alerts", "exports", "imports", "webhooks",
		"checkout", "inventory", "fraud", "support", "audit", "gateway", "scheduler", "notifier", "archive", "analytics",
		"profile", "session", "billing-eu", "orders-us", "cache", "queue", "worker", "crawler", "indexer", "thumbnails"}
	scaleEnvs = []string{"prod", "staging", "dev"}
)

// ScaleToken is the i-th token of a large population, relative to now:
// named "<service>-<env>-<i>" from 40 services and 3 environments, of 500
// teams, tagged with its environment (and "ci" one in ten), a fifth
// never expiring and the rest within a year, a quarter never used and
// the rest within 90 days (none before its creation), one in twenty
// revoked, created evenly over the two years up to now.
func ScaleToken(i, n int, now time.Time) *latchkey.Token {
	env := scaleEnvs[i%3]
	tags := []string{env}
	if i%10 == 0 {
		tags = append(tags, "ci")
	}
	t := &latchkey.Token{
		ID: fmt.Sprintf("Sc%014d", i), Prefix: "lk", Keyspace: latchkey.DefaultKeyspace,
		Name: fmt.Sprintf("%s-%s-%d", scaleWords[i%len(scaleWords)], env, i), Subject: fmt.Sprintf("team-%d", i%500),
		Scopes: []string{"invoices:read"}, Tags: tags, Meta: json.RawMessage(`{}`),
		CreatedAt: now.Add(-time.Duration(n-i) * (2 * 365 * 24 * time.Hour / time.Duration(n))).Truncate(time.Microsecond), CreatedBy: "bench", Status: latchkey.StatusActive,
		Version: 1, Hash: make([]byte, 32),
	}
	if i%5 != 0 {
		t.ExpiresAt = now.Add(time.Duration(i%365)*24*time.Hour + time.Duration(i)*time.Microsecond)
	}
	if i%4 != 0 {
		t.LastUsedAt = now.Add(-time.Duration(i%90)*24*time.Hour - time.Duration(i)*time.Microsecond)
		if t.LastUsedAt.Before(t.CreatedAt) {
			t.LastUsedAt = t.CreatedAt.Add(time.Duration(i%1000) * time.Microsecond)
		}
	}
	if i%20 == 0 {
		t.Status, t.RevokedAt = latchkey.StatusRevoked, now
	}
	return t
}

// BenchList measures, each as a sub-benchmark, the listings the
// dashboard offers against s, holding ScaleToken(0..n-1) as of now: a
// page of 50 in every order (the first page and one from the middle),
// the filters, searches of a rare, a 1-in-40, a 1-in-3 and a two-word
// term, and counts.
//
// With LATCHKEY_BENCH_EXPLAIN set, explain (when the store gives one) is
// asked for each listing's plan, which is logged.
func BenchList(b *testing.B, s latchkey.Store, n int, now time.Time, explain func(f latchkey.TokenFilter) (string, error)) {
	mid := ScaleToken(n/2, n, now)
	midSeq := int64(n/2 + 1) // the store's seq: tokens were inserted in order, from 1
	cursor := func(sort string, desc bool) string {
		return latchkey.EncodeListCursor(sort, desc, latchkey.SortKey(mid, sort, midSeq), midSeq)
	}
	rare := strconv.Itoa(n/2 + 7)
	for _, c := range []struct {
		name string
		f    latchkey.TokenFilter
	}{
		{"newest", latchkey.TokenFilter{}},
		{"newest/middle", latchkey.TokenFilter{Cursor: cursor(latchkey.SortCreated, true)}},
		{"expires", latchkey.TokenFilter{Sort: latchkey.SortExpires}},
		{"expires/middle", latchkey.TokenFilter{Sort: latchkey.SortExpires, Cursor: cursor(latchkey.SortExpires, false)}},
		{"last_used", latchkey.TokenFilter{Sort: latchkey.SortLastUsed}},
		{"last_used_asc/middle", latchkey.TokenFilter{Sort: latchkey.SortLastUsed, Order: "asc", Cursor: cursor(latchkey.SortLastUsed, false)}},
		{"expires_within_7d", latchkey.TokenFilter{ExpiresBefore: now.Add(7 * 24 * time.Hour), Now: now, Sort: latchkey.SortExpires}},
		{"unused_for_30d", latchkey.TokenFilter{UnusedBefore: now.Add(-30 * 24 * time.Hour), Sort: latchkey.SortLastUsed, Order: "asc"}},
		{"never_used", latchkey.TokenFilter{NeverUsed: true}},
		{"subject_by_expiry", latchkey.TokenFilter{Subject: "team-42", Sort: latchkey.SortExpires}},
		{"search_rare", latchkey.TokenFilter{Search: rare}},
		{"search_1in40", latchkey.TokenFilter{Search: "ledger"}},
		{"search_1in3", latchkey.TokenFilter{Search: "staging"}},
		{"search_two_words", latchkey.TokenFilter{Search: "ledger staging"}},
		{"search_1in40_by_expiry", latchkey.TokenFilter{Search: "ledger", Sort: latchkey.SortExpires}},
		{"count_all", latchkey.TokenFilter{Count: true, Limit: 1}},
		{"count_search_1in40", latchkey.TokenFilter{Search: "ledger", Count: true, Limit: 1}},
		{"count_never_used", latchkey.TokenFilter{NeverUsed: true, Count: true, Limit: 1}},
	} {
		if c.f.Limit == 0 {
			c.f.Limit = 50
		}
		if explain != nil && os.Getenv("LATCHKEY_BENCH_EXPLAIN") != "" {
			plan, err := explain(c.f)
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("%s:\n%s", c.name, plan)
		}
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				p, err := s.ListTokens(ctx(), c.f)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Tokens) == 0 {
					b.Fatalf("%s: no tokens", c.name)
				}
			}
		})
	}
}
