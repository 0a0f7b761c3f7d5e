package postgres_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
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
