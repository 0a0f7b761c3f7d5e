package verify

import (
	"context"
	"crypto/rand"
	"errors"
	"hash/crc32"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/secret"
)

// memLoader is a token table in memory, counting reads.
type memLoader struct {
	mu    sync.Mutex
	toks  map[string]*latchkey.Token
	loads atomic.Int64
	gate  chan struct{} // when set, each load waits for it
	err   error

	touchGate chan struct{}
	touches   []latchkey.TokenUse
}

func (m *memLoader) GetToken(ctx context.Context, id string) (*latchkey.Token, error) {
	m.loads.Add(1)
	if m.gate != nil {
		<-m.gate
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	t, ok := m.toks[id]
	if !ok {
		return nil, latchkey.ErrNotFound
	}
	return t.Clone(), nil
}

// ConsumeUse spends from the budgets of the named series, all or none.
func (m *memLoader) ConsumeUse(_ context.Context, series []string) (int64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return 0, false, m.err
	}
	left := int64(-1)
	for _, id := range series {
		t := m.toks[id]
		if t == nil || t.MaxUses == 0 || t.Uses >= t.MaxUses {
			return 0, false, nil
		}
	}
	for _, id := range series {
		t := m.toks[id]
		t.Uses++
		if l := t.MaxUses - t.Uses; left < 0 || l < left {
			left = l
		}
	}
	return left, true, nil
}

// TouchTokens records last uses; it waits for touchGate when set.
func (m *memLoader) TouchTokens(_ context.Context, uses []latchkey.TokenUse) error {
	if m.touchGate != nil {
		<-m.touchGate
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.touches = append(m.touches, uses...)
	for _, u := range uses {
		if t := m.toks[u.ID]; t != nil && u.At.After(t.LastUsedAt) {
			t.LastUsedAt = latchkey.TimeOf(u.At)
		}
	}
	return nil
}

func (m *memLoader) put(t *latchkey.Token) {
	m.mu.Lock()
	m.toks[t.ID] = t
	m.mu.Unlock()
}

// memSink keeps audit events in memory.
type memSink struct {
	mu  sync.Mutex
	evs []latchkey.AuditEvent
}

func (m *memSink) AppendAudit(_ context.Context, evs []latchkey.AuditEvent) error {
	m.mu.Lock()
	m.evs = append(m.evs, evs...)
	m.mu.Unlock()
	return nil
}

// recorder is a real audit pipeline writing to memory.
type recorder struct {
	p    *audit.Pipeline
	sink *memSink
}

func newRecorder(t testing.TB) *recorder {
	r := &recorder{sink: &memSink{}}
	r.p = &audit.Pipeline{Sink: r.sink}
	r.p.Start()
	t.Cleanup(func() { r.p.Close(context.Background()) })
	return r
}

func (r *recorder) count() int {
	r.p.Flush(context.Background())
	r.sink.mu.Lock()
	defer r.sink.mu.Unlock()
	return len(r.sink.evs)
}

// lastFor is the newest record of token id. The pipeline queues records
// in stripes chosen by stack address, which can change between two calls
// of one goroutine (a stack that grew was moved), so the newest record of
// all is not always the last written; per token, under a test's clock
// that advances between its attempts, it is.
func (r *recorder) lastFor(id string) latchkey.AuditEvent {
	r.p.Flush(context.Background())
	r.sink.mu.Lock()
	defer r.sink.mu.Unlock()
	var last latchkey.AuditEvent
	for _, ev := range r.sink.evs {
		if ev.TokenID == id && !ev.Time.Before(last.Time) {
			last = ev
		}
	}
	return last
}

func (r *recorder) last() latchkey.AuditEvent {
	r.p.Flush(context.Background())
	r.sink.mu.Lock()
	defer r.sink.mu.Unlock()
	return r.sink.evs[len(r.sink.evs)-1]
}

type fixture struct {
	v      *Verifier
	loader *memLoader
	rec    *recorder
	hasher *secret.Hasher
	now    time.Time
	nowMu  sync.Mutex
}

func newFixture(t testing.TB) *fixture {
	h, err := secret.NewHasher(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{loader: &memLoader{toks: map[string]*latchkey.Token{}}, rec: newRecorder(t), hasher: h,
		now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	f.v = New(f.loader, h, f.rec.p, Config{Now: f.clock, Node: "n1"})
	return f
}

func (f *fixture) clock() time.Time {
	f.nowMu.Lock()
	defer f.nowMu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.nowMu.Lock()
	f.now = f.now.Add(d)
	f.nowMu.Unlock()
}

// issue stores a token and returns its plaintext.
func (f *fixture) issue(t testing.TB, mutate ...func(*latchkey.Token)) (string, *latchkey.Token) {
	pt, parts, err := secret.Generate("lk", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tok := &latchkey.Token{ID: parts.ID, Prefix: parts.Prefix, Subject: "svc", Scopes: []string{"invoices:read", "billing.*:write"},
		Status: latchkey.StatusActive, Version: 1, CreatedAt: f.now, Hash: f.hasher.Sum(parts.ID, &parts.Secret)}
	for _, m := range mutate {
		m(tok)
	}
	f.loader.put(tok)
	return pt.Reveal(), tok
}

func (f *fixture) verify(t testing.TB, tok string, scopes ...string) latchkey.Decision {
	t.Helper()
	d, err := f.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: tok, Scopes: scopes, ClientIP: "198.51.100.4", UserAgent: "test"})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return d
}

// secretWithChecksum appends a valid checksum to body, so a token changed
// on purpose still parses.
func secretWithChecksum(body string) string {
	v := crc32.Checksum([]byte(body), crc32.MakeTable(crc32.Castagnoli))
	var sum [secret.ChecksumLen]byte
	for i := len(sum) - 1; i >= 0; i-- {
		sum[i] = secret.Alphabet[v%62]
		v /= 62
	}
	return body + string(sum[:])
}

func TestDecisions(t *testing.T) {
	f := newFixture(t)
	valid, _ := f.issue(t)
	revoked, _ := f.issue(t, func(tk *latchkey.Token) { tk.Status = latchkey.StatusRevoked })
	suspended, _ := f.issue(t, func(tk *latchkey.Token) { tk.Status = latchkey.StatusSuspended })
	expired, _ := f.issue(t, func(tk *latchkey.Token) { tk.ExpiresAt = f.now.Add(-time.Second) })
	expiresNow, _ := f.issue(t, func(tk *latchkey.Token) { tk.ExpiresAt = f.now })
	future, _ := f.issue(t, func(tk *latchkey.Token) { tk.NotBefore = f.now.Add(time.Hour) })
	everything, _ := f.issue(t, func(tk *latchkey.Token) { tk.Scopes = []string{"*"} })
	farFuture, _ := f.issue(t, func(tk *latchkey.Token) { tk.ExpiresAt = time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC) })

	pt, parts, _ := secret.Generate("lk", rand.Reader)
	unknown := pt.Reveal()
	_ = parts
	// Same id as valid, different secret, valid checksum.
	other, _, _ := secret.Generate("lk", rand.Reader)
	mismatch := secretWithChecksum(valid[:20] + other.Reveal()[20:63])
	wrongPrefix := secretWithChecksum("acme" + valid[2:63])
	oneChar := valid[:30] + string(rune(valid[30]^1)) + valid[31:]

	tests := []struct {
		name   string
		token  string
		scopes []string
		code   latchkey.Code
		reason string
	}{
		{"valid", valid, []string{"invoices:read"}, latchkey.Valid, ""},
		{"valid no scopes", valid, nil, latchkey.Valid, ""},
		{"wildcard scope", valid, []string{"billing.payouts:write"}, latchkey.Valid, ""},
		{"expiry beyond 2262", farFuture, nil, latchkey.Valid, ""},
		{"star covers all", everything, []string{"anything:at.all"}, latchkey.Valid, ""},
		{"star does not cover admin", everything, []string{"latchkey:admin"}, latchkey.InsufficientScope, "missing_scope"},
		{"one char changed", oneChar, nil, latchkey.Malformed, "bad_checksum"},
		{"garbage", "hello", nil, latchkey.Malformed, "bad_length"},
		{"unknown id", unknown, nil, latchkey.NotFound, "unknown_id"},
		{"secret mismatch", mismatch, nil, latchkey.NotFound, "secret_mismatch"},
		{"prefix mismatch", wrongPrefix, nil, latchkey.NotFound, "prefix_mismatch"},
		{"revoked", revoked, nil, latchkey.Revoked, "revoked"},
		{"suspended", suspended, nil, latchkey.Suspended, "suspended"},
		{"expired", expired, nil, latchkey.Expired, "expired"},
		{"expires exactly now", expiresNow, nil, latchkey.Expired, "expired"},
		{"not yet valid", future, nil, latchkey.NotYetValid, "not_yet_valid"},
		{"missing scope", valid, []string{"invoices:read", "invoices:write"}, latchkey.InsufficientScope, "missing_scope"},
		{"revoked beats scope", revoked, []string{"nope:nope"}, latchkey.Revoked, "revoked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := f.verify(t, tt.token, tt.scopes...)
			if d.Code != tt.code || d.Reason != tt.reason {
				t.Fatalf("Verify = %v (%q), want %v (%q)", d.Code, d.Reason, tt.code, tt.reason)
			}
			ev := f.rec.last()
			if ev.Outcome != tt.code.String() || ev.Reason != tt.reason || ev.ClientIP != "198.51.100.4" ||
				ev.Kind != latchkey.KindVerify || ev.Action != latchkey.ActionVerify || ev.Node != "n1" || ev.Latency < 0 {
				t.Errorf("audit event = %+v", ev)
			}
			if tt.code != latchkey.Malformed && ev.TokenID == "" {
				t.Errorf("audit event lacks the token id")
			}
			if tt.code == latchkey.Valid && ev.Subject != "svc" {
				t.Errorf("audit subject = %q, want svc", ev.Subject)
			}
		})
	}
}

func TestExpiryIsLive(t *testing.T) {
	f := newFixture(t)
	tok, _ := f.issue(t, func(tk *latchkey.Token) { tk.ExpiresAt = f.now.Add(time.Minute) })
	if d := f.verify(t, tok); d.Code != latchkey.Valid {
		t.Fatalf("before expiry: %v", d.Code)
	}
	f.advance(time.Minute) // cached entry, but the clock has passed expires_at
	if d := f.verify(t, tok); d.Code != latchkey.Expired {
		t.Fatalf("after expiry: %v, want EXPIRED", d.Code)
	}
}

func TestInvalidate(t *testing.T) {
	f := newFixture(t)
	tok, rec := f.issue(t)
	f.verify(t, tok)
	changed := rec.Clone()
	changed.Status, changed.Version = latchkey.StatusRevoked, 2
	f.loader.put(changed)
	if d := f.verify(t, tok); d.Code != latchkey.Valid {
		t.Fatalf("cached entry not served before invalidation: %v", d.Code)
	}
	f.v.Invalidate(rec.ID)
	if d := f.verify(t, tok); d.Code != latchkey.Revoked {
		t.Fatalf("after Invalidate: %v, want REVOKED", d.Code)
	}
}

func TestPositiveTTL(t *testing.T) {
	f := newFixture(t)
	tok, rec := f.issue(t)
	f.verify(t, tok)
	changed := rec.Clone()
	changed.Status = latchkey.StatusSuspended
	f.loader.put(changed)
	f.advance(31 * time.Second) // past the default PositiveTTL: reload
	if d := f.verify(t, tok); d.Code != latchkey.Suspended {
		t.Fatalf("entry served past its staleness bound: %v", d.Code)
	}
}

func TestNegativeCache(t *testing.T) {
	f := newFixture(t)
	pt, _, _ := secret.Generate("lk", rand.Reader)
	for i := 0; i < 5; i++ {
		f.verify(t, pt.Reveal())
	}
	if n := f.loader.loads.Load(); n != 1 {
		t.Errorf("5 verifications of an unknown id loaded %d times, want 1", n)
	}
	f.advance(3 * time.Second)
	f.verify(t, pt.Reveal())
	if n := f.loader.loads.Load(); n != 2 {
		t.Errorf("after the negative TTL: %d loads, want 2", n)
	}
}

func TestNegativeEntryInvalidated(t *testing.T) {
	f := newFixture(t)
	pt, parts, _ := secret.Generate("lk", rand.Reader)
	if d := f.verify(t, pt.Reveal()); d.Code != latchkey.NotFound {
		t.Fatal(d.Code)
	}
	f.loader.put(&latchkey.Token{ID: parts.ID, Prefix: "lk", Status: latchkey.StatusActive, Version: 1,
		Hash: f.hasher.Sum(parts.ID, &parts.Secret)})
	f.v.Invalidate(parts.ID) // what creating a token does
	if d := f.verify(t, pt.Reveal()); d.Code != latchkey.Valid {
		t.Fatalf("after create+invalidate: %v, want VALID", d.Code)
	}
}

func TestSingleflight(t *testing.T) {
	f := newFixture(t)
	tok, _ := f.issue(t)
	f.loader.gate = make(chan struct{})
	var wg sync.WaitGroup
	codes := make(chan latchkey.Code, 50)
	for i := 0; i < 50; i++ {
		wg.Go(func() {
			d, _ := f.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: tok})
			codes <- d.Code
		})
	}
	for f.loader.loads.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let the others pile up on the flight
	close(f.loader.gate)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != latchkey.Valid {
			t.Fatalf("concurrent miss answered %v", c)
		}
	}
	if n := f.loader.loads.Load(); n != 1 {
		t.Errorf("50 concurrent misses made %d loads, want 1", n)
	}
}

// verifyHeld starts a verification of tok whose store read is held at
// the loader's gate (opened by closing f.loader.gate), and returns once
// the read has begun; the decision's code arrives on the channel.
func (f *fixture) verifyHeld(tok string) <-chan latchkey.Code {
	f.loader.gate = make(chan struct{})
	done := make(chan latchkey.Code)
	go func() {
		d, _ := f.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: tok})
		done <- d.Code
	}()
	for f.loader.loads.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	return done
}

// A load that read the old record must not be cached if the token changed
// (and was invalidated) while the load was in flight.
func TestLoadRacingInvalidation(t *testing.T) {
	f := newFixture(t)
	tok, rec := f.issue(t)
	done := f.verifyHeld(tok)
	// The load is in flight and will return... whatever the table holds
	// when the gate opens. Simulate it having read the old row: change the
	// table only after releasing, but invalidate now.
	f.v.Invalidate(rec.ID)
	close(f.loader.gate)
	<-done
	f.loader.gate = nil
	changed := rec.Clone()
	changed.Status = latchkey.StatusRevoked
	f.loader.put(changed)
	if d := f.verify(t, tok); d.Code != latchkey.Revoked {
		t.Fatalf("a load racing an invalidation was cached: %v", d.Code)
	}
}

// A change announced while a load is in flight throws the load away only
// if the load may predate it: a change the read already saw (a token's
// creation, whose notification comes a moment after the commit) or a
// change to another token of the same cache shard leaves it cached;
// a newer version of the token, or a change of unknown version in the
// shard, does not.
func TestLoadRacingVersionedChange(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		change func(f *fixture, rec, mate *latchkey.Token)
		cached bool
	}{
		{"its own creation", func(f *fixture, rec, _ *latchkey.Token) { f.v.Changed(rec.ID, rec.Version) }, true},
		{"an older version", func(f *fixture, rec, _ *latchkey.Token) { f.v.Changed(rec.ID, rec.Version-1) }, true},
		{"a newer version", func(f *fixture, rec, _ *latchkey.Token) { f.v.Changed(rec.ID, rec.Version+1) }, false},
		{"unknown version", func(f *fixture, rec, _ *latchkey.Token) { f.v.Changed(rec.ID, 0) }, false},
		{"a shard-mate's version", func(f *fixture, _, mate *latchkey.Token) { f.v.Changed(mate.ID, mate.Version+1) }, true},
		{"a shard-mate, unknown version", func(f *fixture, _, mate *latchkey.Token) { f.v.Invalidate(mate.ID) }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			tok, rec := f.issue(t, func(tk *latchkey.Token) { tk.Version = 5 })
			var mate *latchkey.Token
			k := keyOf(rec.ID)
			for mate == nil {
				_, m := f.issue(t)
				if mk := keyOf(m.ID); f.v.cache.shardOf(f.v.cache.hash(&mk)) == f.v.cache.shardOf(f.v.cache.hash(&k)) {
					mate = m
				}
			}
			done := f.verifyHeld(tok)
			c.change(f, rec, mate)
			close(f.loader.gate)
			if code := <-done; code != latchkey.Valid {
				t.Fatalf("the racing verification: %v", code)
			}
			f.loader.gate = nil
			f.verify(t, tok)
			if n := f.loader.loads.Load(); (n == 1) != c.cached {
				t.Errorf("%d loads for two verifications; want the first's load cached: %v", n, c.cached)
			}
			for i := range f.v.cache.loads {
				s := &f.v.cache.shards[i]
				s.mu.RLock()
				if l := f.v.cache.loads[i]; l.n != 0 || l.changed != nil {
					t.Errorf("shard %d still counts %d loads in flight (%d changes)", i, l.n, len(l.changed))
				}
				s.mu.RUnlock()
			}
		})
	}
}

func TestStoreError(t *testing.T) {
	f := newFixture(t)
	tok, _ := f.issue(t)
	f.loader.err = errors.New("disk on fire")
	_, err := f.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: tok})
	if err == nil {
		t.Fatal("Verify with a failing store returned no error")
	}
	if ev := f.rec.last(); ev.Outcome != "ERROR" || ev.Reason != "store_unavailable" {
		t.Errorf("audit = %+v", ev)
	}
	f.loader.err = nil
	if d := f.verify(t, tok); d.Code != latchkey.Valid {
		t.Errorf("after the store recovered: %v (the error must not be cached)", d.Code)
	}
}

func TestAuditFailuresOnly(t *testing.T) {
	f := newFixture(t)
	tok, _ := f.issue(t)
	n := f.rec.count()
	f.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: tok, AuditFailuresOnly: true, Action: latchkey.ActionAdminAuth})
	if f.rec.count() != n {
		t.Error("a valid admin auth was recorded")
	}
	f.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: tok + "x", AuditFailuresOnly: true, Action: latchkey.ActionAdminAuth})
	if f.rec.count() != n+1 || f.rec.last().Action != latchkey.ActionAdminAuth {
		t.Error("a failed admin auth was not recorded")
	}
}

func TestCacheBounded(t *testing.T) {
	f := newFixture(t)
	f.v = New(f.loader, f.hasher, nil, Config{Now: f.clock, MaxEntries: 1024})
	for i := 0; i < 5000; i++ {
		pt, _, _ := secret.Generate("lk", rand.Reader)
		f.verify(t, pt.Reveal())
	}
	if n := f.v.CacheLen(); n > 1024+numShards {
		t.Errorf("cache holds %d entries, cap 1024", n)
	}
}

// raceEnabled is set under -race, which instruments (and allocates) more.
var raceEnabled bool

func TestVerifyHitDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; allocation counts are checked without -race")
	}
	f := newFixture(t)
	p := &audit.Pipeline{Sink: discardSink{}}
	p.Start()
	defer p.Close(context.Background())
	f.v = New(f.loader, f.hasher, p, Config{})
	tok, _ := f.issue(t)
	req := &latchkey.VerifyRequest{Token: tok, Scopes: []string{"invoices:read"}, ClientIP: "203.0.113.9"}
	f.v.Verify(context.Background(), req)
	if n := testing.AllocsPerRun(1000, func() { f.v.Verify(context.Background(), req) }); n != 0 {
		t.Errorf("a cache hit allocates %v times, want 0", n)
	}
}

// The constrained path (networks, methods, paths, rate limit, idle
// timeout, rejections included) does not allocate either.
func TestConstrainedVerifyDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; allocation counts are checked without -race")
	}
	f := newFixture(t)
	p := &audit.Pipeline{Sink: discardSink{}}
	p.Start()
	defer p.Close(context.Background())
	f.v = New(f.loader, f.hasher, p, Config{})
	c, _ := latchkey.Constraints{AllowedCIDRs: []string{"10.0.0.0/8", "2001:db8::/32"}, AllowedMethods: []string{"GET"},
		AllowedPaths: []string{"/v1/**"}, IdleTimeout: latchkey.Duration(time.Hour),
		RateLimit: &latchkey.RateLimit{Limit: 1_000_000_000, Window: latchkey.Duration(time.Second)}}.Normalize()
	tok, _ := f.issue(t, func(tk *latchkey.Token) { tk.Constraints = c })
	for _, req := range []*latchkey.VerifyRequest{
		{Token: tok, Scopes: []string{"invoices:read"}, ClientIP: "10.0.0.9", Method: "GET", Path: "/v1/x"},
		{Token: tok, ClientIP: "2001:db8::1", Method: "GET", Path: "/v1/x/y"},
		{Token: tok, ClientIP: "11.0.0.9", Method: "GET", Path: "/v1/x"},
		{Token: tok, ClientIP: "10.0.0.9", Method: "PUT", Path: "/v1/x"},
		{Token: tok, ClientIP: "10.0.0.9", Method: "GET", Path: "/v2/x"},
	} {
		f.v.Verify(context.Background(), req)
		if n := testing.AllocsPerRun(1000, func() { f.v.Verify(context.Background(), req) }); n != 0 {
			t.Errorf("%s %s from %s allocates %v times, want 0", req.Method, req.Path, req.ClientIP, n)
		}
	}
}

// gatedSink signals each batch and holds it until released.
type gatedSink struct {
	called  chan struct{}
	release chan struct{}
}

func (g *gatedSink) AppendAudit(ctx context.Context, evs []latchkey.AuditEvent) error {
	g.called <- struct{}{}
	<-g.release
	return nil
}

// In sync mode a decision is returned only after its record is committed.
func TestSyncAuditWaitsForCommit(t *testing.T) {
	f := newFixture(t)
	g := &gatedSink{called: make(chan struct{}, 16), release: make(chan struct{})}
	p := &audit.Pipeline{Sink: g}
	p.Start()
	defer p.Close(context.Background())
	f.v = New(f.loader, f.hasher, p, Config{SyncAudit: true})
	tok, _ := f.issue(t)
	res := make(chan latchkey.Decision, 1)
	go func() {
		d, err := f.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: tok})
		if err != nil {
			t.Error(err)
		}
		res <- d
	}()
	<-g.called // the record is being written, not yet committed
	select {
	case d := <-res:
		t.Fatalf("Verify answered %s before its record was committed", d.Code)
	default:
	}
	close(g.release)
	if d := <-res; d.Code != latchkey.Valid {
		t.Fatalf("after commit: %s", d.Code)
	}
	// A malformed token's compact record is waited for too.
	g3 := &gatedSink{called: make(chan struct{}, 16), release: make(chan struct{})}
	p3 := &audit.Pipeline{Sink: g3}
	p3.Start()
	defer p3.Close(context.Background())
	f.v = New(f.loader, f.hasher, p3, Config{SyncAudit: true})
	go func() {
		d, _ := f.v.Verify(context.Background(), &latchkey.VerifyRequest{Token: "lk_nonsense"})
		res <- d
	}()
	<-g3.called
	select {
	case d := <-res:
		t.Fatalf("Verify answered %s before the malformed token's record was committed", d.Code)
	default:
	}
	close(g3.release)
	if d := <-res; d.Code != latchkey.Malformed {
		t.Fatalf("after commit: %s", d.Code)
	}
	// A caller that gives up waiting gets an error, not a decision.
	g2 := &gatedSink{called: make(chan struct{}, 16), release: make(chan struct{})}
	p2 := &audit.Pipeline{Sink: g2}
	p2.Start()
	defer func() { close(g2.release); p2.Close(context.Background()) }()
	f.v = New(f.loader, f.hasher, p2, Config{SyncAudit: true})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-g2.called; cancel() }()
	if _, err := f.v.Verify(ctx, &latchkey.VerifyRequest{Token: tok}); err == nil {
		t.Error("Verify returned a decision whose record was never committed")
	}
}

// A change reported for a version the cache already holds (the change
// log's poll repeating a notification) keeps the entry; a newer version,
// or an unknown one, drops it.
func TestChangedKeepsCurrentEntry(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	pt, tok := f.issue(t, func(t *latchkey.Token) { t.Version = 2 })
	misses := func() uint64 { return f.v.Stats().Misses }
	f.verify(t, pt)
	before := misses()
	f.v.Changed(tok.ID, 2)
	f.v.Changed(tok.ID, 1)
	if d := f.verify(t, pt); d.Code != latchkey.Valid || misses() != before {
		t.Errorf("a repeated change reloaded the token: %v, %d misses, want %d", d.Code, misses(), before)
	}
	// A real change: the store has version 3, revoked.
	revoked := tok.Clone()
	revoked.Version, revoked.Status = 3, latchkey.StatusRevoked
	f.loader.put(revoked)
	f.v.Changed(tok.ID, 3)
	if d := f.verify(t, pt); d.Code != latchkey.Revoked || misses() != before+1 {
		t.Errorf("after a change to version 3: %v, %d misses", d.Code, misses())
	}
	f.v.Changed(tok.ID, 0) // unknown version: always dropped
	f.verify(t, pt)
	if misses() != before+2 {
		t.Errorf("a change of unknown version kept the entry: %d misses", misses())
	}
}

// The clock is read once per verification: a decision made from memory
// records no latency, and one that waited on the store records the wait.
func TestLatencyIsTheWait(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok, rec := f.issue(t)
	f.loader.gate = make(chan struct{})
	done := make(chan latchkey.Decision)
	go func() { done <- f.verify(t, tok) }()
	for f.loader.loads.Load() == 0 {
		runtime.Gosched() // the load has started and waits on the gate
	}
	// The load's wait is real time (monoclock), not the fixture's clock:
	// hold the gate shut across a measurable interval.
	start := time.Now()
	for time.Since(start) < 2*time.Millisecond {
		runtime.Gosched()
	}
	close(f.loader.gate)
	d := <-done
	if d.Code != latchkey.Valid || d.Latency < 2*time.Millisecond {
		t.Fatalf("a verification that waited on the store: %v, latency %v", d.Code, d.Latency)
	}
	if ev := f.rec.lastFor(rec.ID); ev.Latency != d.Latency {
		t.Errorf("its record says %v, the decision %v", ev.Latency, d.Latency)
	}
	f.advance(time.Second) // the next record is the newest of the token's
	if d := f.verify(t, tok); d.Code != latchkey.Valid || d.Latency != 0 {
		t.Fatalf("a cache hit: %v, latency %v (want 0: no second clock reading)", d.Code, d.Latency)
	}
	if ev := f.rec.lastFor(rec.ID); ev.Latency != 0 || !ev.Time.Equal(f.now) {
		t.Errorf("the cache hit's record: latency %v at %v, want 0 at %v", ev.Latency, ev.Time, f.now)
	}
}

// A malformed token's attempt goes through the pipeline's compact record
// when the pipeline names this node, and reaches the store whole: node,
// door, source, request id and the parser's reason.
func TestMalformedCompactRecord(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sink := &memSink{}
	p := &audit.Pipeline{Sink: sink, Node: "n1"}
	p.Start()
	v := New(f.loader, f.hasher, p, Config{Now: f.clock, Node: "n1"})
	tok, _ := f.issue(t)
	for _, c := range []struct{ token, action, reason string }{
		{tok[:len(tok)-6] + "AAAAAA", latchkey.ActionDBConnect, "bad_checksum"},
		{"nonsense", "", "bad_length"},
	} {
		req := &latchkey.VerifyRequest{Token: c.token, Action: c.action, ClientIP: "198.51.100.7", RequestID: "req-" + c.reason,
			Method: "GET", Path: "/x"}
		if d, err := v.Verify(context.Background(), req); err != nil || d.Code != latchkey.Malformed || d.Reason != c.reason {
			t.Fatalf("%q: %v %q %v", c.token, d.Code, d.Reason, err)
		}
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(sink.evs) != 2 {
		t.Fatalf("%d records, want 2", len(sink.evs))
	}
	byReason := map[string]latchkey.AuditEvent{}
	for _, ev := range sink.evs {
		byReason[ev.Reason] = ev
	}
	for reason, action := range map[string]string{"bad_checksum": latchkey.ActionDBConnect, "bad_length": latchkey.ActionVerify} {
		ev := byReason[reason]
		if ev.Node != "n1" || ev.Kind != latchkey.KindVerify || ev.Action != action || ev.Outcome != "MALFORMED" ||
			ev.ClientIP != "198.51.100.7" || ev.RequestID != "req-"+reason || !ev.Time.Equal(f.now) || ev.TokenID != "" {
			t.Errorf("%s: %+v", reason, ev)
		}
	}
}
