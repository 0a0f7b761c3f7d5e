package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/postgres"
	"github.com/latchkeyhq/latchkey/storetest"
)

// BenchmarkCreateToken16: 16 concurrent writers creating tokens, each with
// its audit record and change notification, straight on the store (no
// HTTP, no hashing): the store's own rate of durable creates.
func BenchmarkCreateToken16(b *testing.B) {
	ctx := context.Background()
	db, _ := openSchema(b)
	var n atomic.Int64
	b.SetParallelism(8) // 2 cores x 8 = 16 writers
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			id := fmt.Sprintf("bench%011d", i)
			tok := &latchkey.Token{ID: id, Prefix: "lk", Status: latchkey.StatusActive, Version: 1, CreatedAt: time.Now(), Hash: make([]byte, 32)}
			ev := &latchkey.AuditEvent{Time: time.Now(), Node: "n1", Kind: latchkey.KindAdmin, Action: latchkey.ActionTokenCreate, TokenID: id, Outcome: latchkey.OutcomeOK}
			if err := db.CreateToken(ctx, tok, ev); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "tokens/s")
}

// BenchmarkTokenList: the dashboard's listings of a store of
// storetest.ScaleTokens tokens (LATCHKEY_BENCH_TOKENS), copied in (COPY,
// then the terms index in one statement, then VACUUM ANALYZE, as
// autovacuum would; none of it timed). ns/op is per page of 50.
func BenchmarkTokenList(b *testing.B) {
	ctx := context.Background()
	db, dsn := openSchema(b)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(ctx)
	n, now := storetest.ScaleTokens(), time.Now().UTC().Truncate(time.Microsecond)
	i := 0
	micros := func(t time.Time) any {
		if t.IsZero() {
			return nil
		}
		return t.UnixMicro()
	}
	if _, err := c.CopyFrom(ctx, pgx.Identifier{"tokens"},
		[]string{"id", "prefix", "name", "subject", "scopes", "tags", "created_at", "created_by", "expires_at", "status", "revoked_at", "last_used_at", "version", "hash", "series_id", "terms"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i == n {
				return nil, nil
			}
			t := storetest.ScaleToken(i, n, now)
			i++
			tags, _ := json.Marshal(t.Tags)
			terms, _ := json.Marshal(latchkey.SearchTerms(t))
			return []any{t.ID, t.Prefix, t.Name, t.Subject, `["invoices:read"]`, string(tags), t.CreatedAt.UnixMicro(), t.CreatedBy,
				micros(t.ExpiresAt), string(t.Status), micros(t.RevokedAt), micros(t.LastUsedAt), t.Version, t.Hash, t.ID, string(terms)}, nil
		})); err != nil {
		b.Fatal(err)
	}
	for _, q := range []string{`INSERT INTO token_terms (term, seq) SELECT DISTINCT jsonb_array_elements_text(terms::jsonb), seq FROM tokens`,
		`VACUUM ANALYZE tokens`, `VACUUM ANALYZE token_terms`} {
		if _, err := c.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	storetest.BenchList(b, db, n, now, func(f latchkey.TokenFilter) (string, error) {
		q, args, err := postgres.ListingSQL(f)
		if err != nil {
			return "", err
		}
		rows, err := c.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+q, args...)
		if err != nil {
			return "", err
		}
		defer rows.Close()
		var plan []string
		for rows.Next() {
			var line string
			rows.Scan(&line)
			plan = append(plan, line)
		}
		return strings.Join(plan, "\n"), rows.Err()
	})
}
