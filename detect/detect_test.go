package detect

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
)

type collector struct {
	mu sync.Mutex
	fs []Finding
}

func (c *collector) Respond(_ context.Context, f Finding) error {
	c.mu.Lock()
	c.fs = append(c.fs, f)
	c.mu.Unlock()
	return nil
}

func (c *collector) findings(d *Detector) []Finding {
	d.Close() // drains the queue
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fs
}

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func newDet(cfg Config) (*Detector, *collector) {
	c := &collector{}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return t0 }
	}
	return New(cfg, c), c
}

func ns(d time.Duration) int64 { return t0.Add(d).UnixNano() }

func TestSourceFailuresBlock(t *testing.T) {
	d, c := newDet(Config{})
	attacker, other := netip.MustParseAddr("203.0.113.9"), netip.MustParseAddr("198.51.100.1")
	for i := range 19 {
		d.Refused(attacker, latchkey.Malformed, "bad_checksum", "", ns(time.Duration(i)*time.Second))
	}
	if d.Blocked(attacker, ns(20*time.Second)) {
		t.Fatal("blocked after 19 failures (threshold 20)")
	}
	d.Refused(attacker, latchkey.NotFound, "unknown_id", "AAAAAAAAAAAAAAAA", ns(20*time.Second))
	if !d.Blocked(attacker, ns(21*time.Second)) {
		t.Fatal("not blocked after 20 failures in a minute")
	}
	if d.Blocked(other, ns(21*time.Second)) {
		t.Error("another source is blocked too")
	}
	// More failures do not block again; the block ends by itself.
	for range 100 {
		d.Refused(attacker, latchkey.Malformed, "bad_checksum", "", ns(22*time.Second))
	}
	if d.Blocked(attacker, ns(20*time.Second+15*time.Minute)) {
		t.Error("still blocked after the block period")
	}
	fs := c.findings(d)
	if len(fs) != 1 || fs[0].Rule != RuleSourceFailures || fs[0].Source != "203.0.113.9" || fs[0].Evidence["failures"] != 20 {
		t.Fatalf("findings %+v, want one block of 203.0.113.9 with 20 failures as evidence", fs)
	}
	if !fs[0].Until.Equal(t0.Add(20*time.Second + 15*time.Minute)) {
		t.Errorf("blocked until %v", fs[0].Until)
	}
}

func TestSourceRuleDetails(t *testing.T) {
	d, c := newDet(Config{SourceFailures: Rule{Count: 5, Window: time.Minute}})
	// Failures spread thinner than the window never add up.
	slow := netip.MustParseAddr("192.0.2.1")
	for i := range 30 {
		d.Refused(slow, latchkey.Malformed, "", "", ns(time.Duration(i)*30*time.Second))
	}
	if d.Blocked(slow, ns(15*time.Minute)) {
		t.Error("one failure every 30s reached 5 per minute")
	}
	// Refusals that are not guesses do not count.
	legit := netip.MustParseAddr("192.0.2.2")
	for _, code := range []latchkey.Code{latchkey.InsufficientScope, latchkey.RateLimited, latchkey.Expired, latchkey.Forbidden} {
		for range 10 {
			d.Refused(legit, code, "", "", ns(0))
		}
	}
	if d.Blocked(legit, ns(time.Second)) {
		t.Error("scope, rate, expiry or binding refusals blocked a source")
	}
	// No source (a backend that gave no client IP, or a trusted proxy):
	// never counted, never blocked.
	for range 100 {
		d.Refused(netip.Addr{}, latchkey.Malformed, "", "", ns(0))
	}
	if d.Blocked(netip.Addr{}, ns(time.Second)) {
		t.Error("an unknown source was blocked")
	}
	// An IPv6 attacker hopping inside its /64 is one source.
	for i := range 5 {
		d.Refused(netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i+1)), latchkey.Malformed, "", "", ns(0))
	}
	if !d.Blocked(netip.MustParseAddr("2001:db8:1:2:ffff::1"), ns(time.Second)) {
		t.Error("hopping inside a /64 evaded the block")
	}
	if d.Blocked(netip.MustParseAddr("2001:db8:1:3::1"), ns(time.Second)) {
		t.Error("the neighbouring /64 is blocked")
	}
	// Unblock lifts it and starts the count afresh.
	if !d.Unblock(netip.MustParseAddr("2001:db8:1:2::1")) || d.Blocked(netip.MustParseAddr("2001:db8:1:2::1"), ns(time.Second)) {
		t.Error("Unblock did not lift the block")
	}
	d.Refused(netip.MustParseAddr("2001:db8:1:2::1"), latchkey.Malformed, "", "", ns(2*time.Second))
	if d.Blocked(netip.MustParseAddr("2001:db8:1:2::1"), ns(3*time.Second)) {
		t.Error("one failure after an unblock re-blocked at once")
	}
	if fs := c.findings(d); len(fs) != 1 || fs[0].Source != "2001:db8:1:2::/64" {
		t.Errorf("findings %+v", fs)
	}
}

func TestTokenRules(t *testing.T) {
	d, c := newDet(Config{})
	src := netip.MustParseAddr("203.0.113.5")
	for i := range 10 {
		d.Refused(src, latchkey.NotFound, "secret_mismatch", "LeakedId00000000", ns(time.Duration(i)*time.Second))
		d.Refused(src, latchkey.IPNotAllowed, "ip_not_allowed", "Outside000000000", ns(time.Duration(i)*time.Second))
	}
	for range 3 {
		d.Refused(src, latchkey.Revoked, "revoked", "Revoked000000000", ns(time.Minute))
	}
	d.Refused(src, latchkey.Revoked, "revoked", "Revoked000000000", ns(2*time.Hour)) // after the cooldown
	var evs []latchkey.AuditEvent
	for i := range 10 {
		evs = append(evs, latchkey.AuditEvent{Time: t0.Add(time.Duration(i) * time.Second), Kind: latchkey.KindVerify, Outcome: "VALID",
			TokenID: "Spread0000000000", ClientIP: fmt.Sprintf("10.%d.0.1", i)})
		// Many hosts of one /24 are one network.
		evs = append(evs, latchkey.AuditEvent{Time: t0, Kind: latchkey.KindVerify, Outcome: "VALID",
			TokenID: "Office0000000000", ClientIP: fmt.Sprintf("192.0.2.%d", i+1)})
	}
	d.Valid(evs)
	got := map[string][]Finding{}
	for _, f := range c.findings(d) {
		got[f.Rule] = append(got[f.Rule], f)
	}
	if f := got[RuleSecretMismatch]; len(f) != 1 || f[0].TokenID != "LeakedId00000000" || f[0].Action != ActAlert {
		t.Errorf("secret mismatch findings %+v", f)
	}
	if f := got[RuleIPNotAllowed]; len(f) != 1 || f[0].TokenID != "Outside000000000" || f[0].Action != ActSuspend {
		t.Errorf("ip_not_allowed findings %+v", f)
	}
	if f := got[RuleRevokedReuse]; len(f) != 2 {
		t.Errorf("revoked reuse alerts %d, want 2 (one per cooldown)", len(f))
	}
	if f := got[RuleNetworkSpread]; len(f) != 1 || f[0].TokenID != "Spread0000000000" || f[0].Action != ActSuspend || f[0].Evidence["count"] != 10 {
		t.Errorf("network spread findings %+v", f)
	}
	if len(got) != 4 {
		t.Errorf("rules fired: %v", got)
	}
	// The secret mismatch did not block the source on its own: 10 < 20.
}

func TestOffDoesNothing(t *testing.T) {
	d, c := newDet(Config{Off: true})
	src := netip.MustParseAddr("203.0.113.9")
	for range 100 {
		d.Refused(src, latchkey.Malformed, "", "", ns(0))
	}
	if d.Blocked(src, ns(time.Second)) || len(c.findings(d)) != 0 {
		t.Error("a detector that is off acted")
	}
}

func TestBoundedTables(t *testing.T) {
	d, _ := newDet(Config{MaxTracked: 100})
	for i := range 1000 {
		d.Refused(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), latchkey.Malformed, "", "", ns(0))
	}
	if n := len(d.sources.m); n > 100 {
		t.Errorf("%d sources tracked, cap 100", n)
	}
	if d.Stats().Overflow == 0 {
		t.Error("overflow not counted")
	}
	// Stale entries make room.
	d.Refused(netip.MustParseAddr("192.0.2.1"), latchkey.Malformed, "", "", ns(time.Hour))
	if _, ok := d.sources.m[netip.MustParseAddr("192.0.2.1")]; !ok {
		t.Error("a new source found no room after the others went stale")
	}
	d.Close()
}

func TestParseSource(t *testing.T) {
	for in, want := range map[string]string{"203.0.113.7": "203.0.113.7", "2001:db8:1:2::5": "2001:db8:1:2::/64",
		"2001:db8:1:2::/64": "2001:db8:1:2::/64", "::ffff:10.0.0.1": "10.0.0.1"} {
		k, err := ParseSource(in)
		if err != nil || SourceString(k) != want {
			t.Errorf("ParseSource(%q) = %s, %v; want %s", in, SourceString(k), err, want)
		}
	}
	for _, in := range []string{"", "x", "10.0.0.0/8", "2001:db8::/48"} {
		if _, err := ParseSource(in); err == nil {
			t.Errorf("ParseSource(%q) accepted", in)
		}
	}
}

// With no block in force, the check on every verification is one load.
func BenchmarkBlockedNone(b *testing.B) {
	d, _ := newDet(Config{})
	defer d.Close()
	src := netip.MustParseAddr("203.0.113.9")
	for b.Loop() {
		d.Blocked(src, 1)
	}
}

func BenchmarkBlockedSome(b *testing.B) {
	d, _ := newDet(Config{})
	defer d.Close()
	d.Block(netip.MustParseAddr("198.51.100.1"), t0.Add(time.Hour))
	src := netip.MustParseAddr("203.0.113.9")
	for b.Loop() {
		d.Blocked(src, 1)
	}
}

// Issue 12 item 6: knowing a token's public id is not enough to have it
// suspended or revoked. A few sources get an alert only; acting needs
// SecretMismatchActCount wrong secrets from blockable sources, which no
// one source can send before it is blocked; a trusted proxy's requests
// never count toward it.
func TestSecretMismatchActionNeedsManySources(t *testing.T) {
	t.Parallel()
	d, c := newDet(Config{SecretMismatchAction: ActRevoke})
	const id = "VictimId00000000"
	for i := range 12 {
		src := netip.AddrFrom4([4]byte{203, 0, 113, byte(i % 3)})
		d.Refused(src, latchkey.NotFound, "secret_mismatch", id, ns(time.Duration(i)*time.Second))
	}
	for i := range 500 { // through a trusted proxy: no blockable source
		d.Refused(netip.Addr{}, latchkey.NotFound, "secret_mismatch", id, ns(time.Duration(i)*time.Millisecond))
	}
	for i := range 12 * 15 { // many sources, each under the block threshold: 12+180 < 200
		src := netip.AddrFrom4([4]byte{198, 51, byte(i / 12), byte(i % 12)})
		d.Refused(src, latchkey.NotFound, "secret_mismatch", id, ns(time.Minute+time.Duration(i)*time.Millisecond))
	}
	fs := c.findings(d)
	acts := 0
	for _, f := range fs {
		if f.Rule == RuleSecretMismatch && f.Action != ActAlert {
			acts++
		}
	}
	if acts != 0 {
		t.Errorf("%d wrong secrets acted on the token: %+v", 12+180, fs)
	}
	d, c = newDet(Config{SecretMismatchAction: ActRevoke})
	for i := range 200 {
		src := netip.AddrFrom4([4]byte{198, 51, byte(i / 10), byte(i % 10)})
		d.Refused(src, latchkey.NotFound, "secret_mismatch", id, ns(time.Duration(i)*time.Millisecond))
	}
	acts = 0
	for _, f := range c.findings(d) {
		if f.Rule == RuleSecretMismatch && f.Action == ActRevoke && f.TokenID == id {
			acts++
		}
	}
	if acts != 1 {
		t.Errorf("200 wrong secrets from 20 sources: %d revoke findings, want 1", acts)
	}
}
