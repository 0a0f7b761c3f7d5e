package verify

import (
	"context"
	"crypto/rand"
	mrand "math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/secret"
)

// discardSink accepts audit batches and keeps nothing: the benchmarks
// measure the enqueue on the hot path, not the database.
type discardSink struct{}

func (discardSink) AppendAudit(context.Context, []latchkey.AuditEvent) error { return nil }

func benchVerifier(b *testing.B) (*fixture, *audit.Pipeline) {
	f := newFixture(b)
	p := &audit.Pipeline{Sink: discardSink{}}
	p.Start()
	b.Cleanup(func() { p.Close(context.Background()) })
	// The verifier reads the real clock here: tokens are issued now, not
	// at the fixture's fixed date (else a 30-day idle timeout runs out
	// once the calendar passes it).
	f.now = time.Now()
	f.v = New(f.loader, f.hasher, p, Config{PositiveTTL: time.Hour})
	return f, p
}

// BenchmarkVerify: a cache hit on a valid token with one required scope,
// audit enqueue included.
func BenchmarkVerify(b *testing.B) {
	f, _ := benchVerifier(b)
	tok, _ := f.issue(b)
	req := &latchkey.VerifyRequest{Token: tok, Scopes: []string{"invoices:read"}, ClientIP: "203.0.113.9", UserAgent: "bench"}
	ctx := context.Background()
	if d, _ := f.v.Verify(ctx, req); d.Code != latchkey.Valid {
		b.Fatal(d.Code)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d, _ := f.v.Verify(ctx, req); d.Code != latchkey.Valid {
			b.Fatal(d.Code)
		}
	}
}

// BenchmarkVerifyConstrained: a cache hit on a token bound to networks
// (IPv4 and IPv6), methods and paths, with a rate limit (never reached
// here) and two required scopes, audit enqueue included. Every check of
// steps 5 to 8 runs except the usage budget, which is a store write.
func BenchmarkVerifyConstrained(b *testing.B) {
	f, _ := benchVerifier(b)
	tok, _ := f.issue(b, func(t *latchkey.Token) {
		t.Scopes = []string{"billing.*:read", "invoices:read", "projects.42:*"}
		c, err := latchkey.Constraints{
			AllowedCIDRs:   []string{"10.0.0.0/8", "192.168.0.0/16", "203.0.113.0/24", "2001:db8::/32"},
			AllowedMethods: []string{"GET", "POST"},
			AllowedPaths:   []string{"/v1/users/*", "/v1/invoices/**"},
			RateLimit:      &latchkey.RateLimit{Limit: 1_000_000_000, Window: latchkey.Duration(time.Second)},
			IdleTimeout:    latchkey.Duration(30 * 24 * time.Hour),
		}.Normalize()
		if err != nil {
			b.Fatal(err)
		}
		t.Constraints = c
	})
	req := &latchkey.VerifyRequest{Token: tok, Scopes: []string{"invoices:read", "billing.eu:read"}, ClientIP: "203.0.113.9",
		UserAgent: "bench", Method: "GET", Path: "/v1/invoices/2026/11"}
	ctx := context.Background()
	if d, _ := f.v.Verify(ctx, req); d.Code != latchkey.Valid {
		b.Fatal(d.Code, d.Reason)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d, _ := f.v.Verify(ctx, req); d.Code != latchkey.Valid {
			b.Fatal(d.Code, d.Reason)
		}
	}
}

// tokLen is the length of a token with the default prefix.
const tokLen = 69

// million is the 1M-token fixture, built once: the benchmark function runs
// several times with growing b.N and must not rebuild it each time.
var million struct {
	once sync.Once
	f    *fixture
	p    *audit.Pipeline
	all  string // every presented token, tokLen bytes each
}

// BenchmarkVerifyParallel: 1M cached tokens, random access from every
// core, audit enqueue included.
func BenchmarkVerifyParallel(b *testing.B) {
	const n = 1 << 20
	million.once.Do(func() {
		f := newFixture(b)
		p := &audit.Pipeline{Sink: discardSink{}}
		p.Start() // lives for the test binary, like a server's
		f.v = New(f.loader, f.hasher, p, Config{PositiveTTL: time.Hour})
		// The presented tokens sit in one contiguous arena, as request
		// bodies would sit in a few hot buffers: the harness should not add
		// a page-table walk of its own to every verification.
		arena := make([]byte, 0, n*tokLen)
		adviseHugePages(unsafe.Pointer(unsafe.SliceData(arena)), n*tokLen)
		for range n {
			pt, parts, err := secret.Generate("lk", rand.Reader)
			if err != nil {
				b.Fatal(err)
			}
			f.loader.toks[parts.ID] = &latchkey.Token{ID: parts.ID, Prefix: "lk", Scopes: []string{"invoices:read"},
				Status: latchkey.StatusActive, Version: 1, Hash: f.hasher.Sum(parts.ID, &parts.Secret)}
			arena = append(arena, pt.Reveal()...)
		}
		all := unsafe.String(&arena[0], len(arena))
		for i := range n { // warm the cache
			tok := all[i*tokLen : (i+1)*tokLen]
			if d, _ := f.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: tok}); d.Code != latchkey.Valid {
				b.Fatal(d.Code)
			}
		}
		million.f, million.p, million.all = f, p, all
	})
	f, all := million.f, million.all
	if got := f.v.CacheLen(); got != n {
		b.Fatalf("cache holds %d of %d tokens", got, n)
	}
	ctx := context.Background()
	loads := f.loader.loads.Load()
	runtime.GC() // finish marking the fixture before timing
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := mrand.New(mrand.NewPCG(mrand.Uint64(), 1))
		req := latchkey.VerifyRequest{Scopes: []string{"invoices:read"}, ClientIP: "203.0.113.9"}
		for pb.Next() {
			i := r.IntN(n)
			req.Token = all[i*tokLen : (i+1)*tokLen]
			if d, _ := f.v.Verify(ctx, &req); d.Code != latchkey.Valid {
				b.Error(d.Code)
				return
			}
		}
	})
	b.StopTimer()
	if extra := f.loader.loads.Load() - loads; extra != 0 {
		b.Errorf("%d store loads during the run: the cache did not hold", extra)
	}
}

// BenchmarkVerifyMalformed: a token with a bad checksum, refused before
// any lookup, audit enqueue included.
func BenchmarkVerifyMalformed(b *testing.B) {
	f, _ := benchVerifier(b)
	tok, _ := f.issue(b)
	bad := tok[:len(tok)-6] + "AAAAAA"
	req := &latchkey.VerifyRequest{Token: bad, ClientIP: "203.0.113.9"}
	ctx := context.Background()
	b.ReportAllocs()
	before := f.v.rec.Stats().Stalls
	for b.Loop() {
		if d, _ := f.v.Verify(ctx, req); d.Code != latchkey.Malformed {
			b.Fatal(d.Code)
		}
	}
	b.ReportMetric(float64(f.v.rec.Stats().Stalls-before), "stalls")
	if f.loader.loads.Load() != 0 {
		b.Error("a malformed token reached the store")
	}
}

// BenchmarkVerifyNoAudit is BenchmarkVerify without the audit enqueue: the
// difference between the two is what recording costs the hot path.
func BenchmarkVerifyNoAudit(b *testing.B) {
	f := newFixture(b)
	f.v = New(f.loader, f.hasher, nil, Config{})
	tok, _ := f.issue(b)
	req := &latchkey.VerifyRequest{Token: tok, Scopes: []string{"invoices:read"}, ClientIP: "203.0.113.9", UserAgent: "bench"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d, _ := f.v.Verify(ctx, req); d.Code != latchkey.Valid {
			b.Fatal(d.Code)
		}
	}
}
