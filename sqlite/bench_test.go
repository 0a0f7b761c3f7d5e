package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/storetest"
)

// BenchmarkAppendAudit: verification records committed in batches of
// auditBatch, as the audit pipeline does by default (ns/op is per
// record): each with its own
// request id, clients from 250 addresses, 8 tokens of 2 subjects, a few
// outcomes, latencies that vary.
func BenchmarkAppendAudit(b *testing.B) { benchAppendAudit(b, 8) }

// BenchmarkAppendAuditManyTokens is BenchmarkAppendAudit with every record
// of a batch from a different token (the token index's worst case: a row
// per record instead of per token and chunk).
func BenchmarkAppendAuditManyTokens(b *testing.B) { benchAppendAudit(b, 1<<20) }

// auditBatch is the pipeline's default batch (audit.Pipeline.BatchSize);
// LATCHKEY_BENCH_AUDIT_BATCH measures another.
var auditBatch = func() int {
	if n, err := strconv.Atoi(os.Getenv("LATCHKEY_BENCH_AUDIT_BATCH")); err == nil && n > 0 {
		return n
	}
	return 2048
}()

func benchAppendAudit(b *testing.B, tokens int) {
	db, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "b.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	// Every record is made before the clock starts (and the garbage of
	// making them collected), so that neither the making nor its GC is
	// counted as the store's CPU.
	all := make([]latchkey.AuditEvent, (b.N+auditBatch-1)/auditBatch*auditBatch)
	now := time.Now()
	for k := range all {
		outcome, reason := "VALID", ""
		if k%50 == 0 {
			outcome, reason = "INSUFFICIENT_SCOPE", "missing_scope"
		}
		all[k] = latchkey.AuditEvent{Time: now.Add(time.Duration(k) * time.Microsecond), Node: "bench-node",
			RequestID: fmt.Sprintf("%016x", k), Kind: latchkey.KindVerify, Action: latchkey.ActionVerify,
			TokenID: fmt.Sprintf("AbCdEfGh%08d", k%tokens), Subject: []string{"svc-billing", "svc-orders"}[k%2],
			Outcome: outcome, Reason: reason, Scopes: []string{"invoices:read"}, ClientIP: fmt.Sprintf("198.51.100.%d", k%250+1),
			UserAgent: "Go-http-client/1.1", Method: "GET", Path: "/v1/invoices", Latency: time.Duration(300 + k%700)}
	}
	runtime.GC()
	b.ResetTimer()
	cpu0 := processCPU()
	n := 0
	for ; n < b.N; n += auditBatch {
		if err := db.AppendAudit(context.Background(), all[n:n+auditBatch]); err != nil {
			b.Fatal(err)
		}
	}
	cpu := processCPU() - cpu0
	// ns/op is wall time, fsync waits included; the figure the issue
	// targets is CPU (the writer's cost to the cores the verifier shares).
	b.ReportMetric(float64(cpu)/float64(n), "cpu-ns/record")
}

// processCPU is the process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkGetToken: one token read by primary key (a cache miss's store
// read).
func BenchmarkGetToken(b *testing.B) {
	db, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "b.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprintf("AbCdEfGhIj%06d", i)
		tok := &latchkey.Token{ID: ids[i], Prefix: "lk", Name: "billing", Subject: "svc-billing", Scopes: []string{"invoices:read", "invoices:write"},
			Status: latchkey.StatusActive, Version: 1, CreatedAt: time.Now(), Hash: make([]byte, 32)}
		if err := db.CreateToken(context.Background(), tok, &latchkey.AuditEvent{Time: time.Now(), Kind: latchkey.KindAdmin, Action: "token.created", Outcome: "OK"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := db.GetToken(context.Background(), ids[i%len(ids)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenList: the dashboard's listings of a store of
// storetest.ScaleTokens tokens (LATCHKEY_BENCH_TOKENS; the fill, through
// the store's own writes, is not timed). ns/op is per page of 50.
func BenchmarkTokenList(b *testing.B) {
	db, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "b.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	n, now := storetest.ScaleTokens(), time.Now().UTC().Truncate(time.Microsecond)
	for i := 0; i < n; i += 10000 {
		if err := db.WriteTx(context.Background(), func(tx latchkey.Tx) error {
			for j := i; j < min(i+10000, n); j++ {
				if err := tx.CreateToken(context.Background(), storetest.ScaleToken(j, n, now), nil); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	storetest.BenchList(b, db, n, now, nil)
}
