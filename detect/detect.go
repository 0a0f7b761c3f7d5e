// Package detect watches verification attempts and acts on suspicious
// ones (docs/architecture.md §6): it blocks a source that keeps failing, suspends a
// token used from too many networks or too often outside its allowlist,
// and raises alerts for guessed secrets and reused revoked tokens.
//
// The verifier calls Blocked before any lookup and Refused after each
// refusal, in process and without allocating in the common case; VALID
// attempts reach Valid from the audit writer, off the hot path. Rules
// count in sliding windows in memory (per node; a cluster shares blocks
// through the store). Actions run on a worker goroutine through a
// Responder, so a verification never waits for the store.
package detect

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// Rule is a threshold: Count events within Window.
type Rule struct {
	Count  int           `json:"count"`
	Window time.Duration `json:"window"`
}

// Action is what a token rule does when it fires.
type Action string

// Token actions.
const (
	ActAlert   Action = "alert"   // record an alert (and send webhooks) only
	ActSuspend Action = "suspend" // suspend the token (reversible)
	ActRevoke  Action = "revoke"  // revoke it (final)
)

// Config sets the rules. Zero fields take the defaults given; every rule
// is on unless Off.
type Config struct {
	Off bool

	// SourceFailures blocks a source after this many failed attempts
	// (MALFORMED or NOT_FOUND: forged, guessed or mistyped tokens); default
	// 20 in 1m, blocked for BlockFor (default 15m).
	SourceFailures Rule
	BlockFor       time.Duration
	// SecretMismatch fires when one real token id is presented with wrong
	// secrets this often (default 10 in 10m): its id is out, and someone
	// is guessing. It raises an alert (token.leak_suspected).
	//
	// Ids are public (they are in lists, logs and audit records), so
	// wrong secrets alone prove nothing about the real secret, which
	// cannot be guessed; and anyone who knows an id can send them. So
	// SecretMismatchAction, when suspend or revoke, acts on the token only
	// when SecretMismatchActCount wrong secrets (default 10 times the
	// source-failure count: 200) come from blockable sources within the
	// window. No one source can send that many (it is blocked after
	// SourceFailures.Count), so the action needs a distributed attack.
	// Tokens holding a latchkey: (admin API) scope are never suspended or
	// revoked by this rule (the responder checks), so that it cannot lock
	// the operators out.
	SecretMismatch         Rule
	SecretMismatchAction   Action
	SecretMismatchActCount int
	// NetworkSpread fires when one token is used from this many distinct
	// networks (/24 for IPv4, /48 for IPv6); default 10 in 10m. Default
	// action: suspend.
	NetworkSpread       Rule
	NetworkSpreadAction Action
	// IPNotAllowed fires when one token is refused IP_NOT_ALLOWED this
	// often (default 10 in 10m). Default action: suspend.
	IPNotAllowed       Rule
	IPNotAllowedAction Action
	// ReuseCooldown limits token.reuse alerts to one per revoked token per
	// this period (default 1h).
	ReuseCooldown time.Duration

	// MaxTracked bounds the sources and tokens counted at once (default
	// 1<<20 each). When full, stale ones are dropped; new ones go
	// uncounted until there is room (counted in Stats.Overflow).
	MaxTracked int
	// Shared, when set, also counts the source-failure and network-spread
	// windows for the whole cluster (Redis): a source that fails N times
	// spread over several nodes is blocked, and a token used from N
	// networks through several nodes is caught. Each node's own windows
	// keep counting too, and alone while Shared is unreachable.
	Shared Shared
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// Logger receives failures of actions (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) defaults() {
	def := func(r *Rule, n int, w time.Duration) {
		if r.Count <= 0 {
			r.Count = n
		}
		if r.Window <= 0 {
			r.Window = w
		}
	}
	def(&c.SourceFailures, 20, time.Minute)
	def(&c.SecretMismatch, 10, 10*time.Minute)
	def(&c.NetworkSpread, 10, 10*time.Minute)
	def(&c.IPNotAllowed, 10, 10*time.Minute)
	if c.BlockFor <= 0 {
		c.BlockFor = 15 * time.Minute
	}
	if c.SecretMismatchActCount <= 0 {
		c.SecretMismatchActCount = 10 * c.SourceFailures.Count
	}
	if c.SecretMismatchAction == "" {
		c.SecretMismatchAction = ActAlert
	}
	if c.NetworkSpreadAction == "" {
		c.NetworkSpreadAction = ActSuspend
	}
	if c.IPNotAllowedAction == "" {
		c.IPNotAllowedAction = ActSuspend
	}
	if c.ReuseCooldown <= 0 {
		c.ReuseCooldown = time.Hour
	}
	if c.MaxTracked <= 0 {
		c.MaxTracked = 1 << 20
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate checks the actions named in c.
func (c Config) Validate() error {
	for _, a := range []Action{c.SecretMismatchAction, c.NetworkSpreadAction, c.IPNotAllowedAction} {
		switch a {
		case "", ActAlert, ActSuspend, ActRevoke:
		default:
			return latchkey.Errorf(latchkey.EInvalid, "detector action %q: want alert, suspend or revoke", a)
		}
	}
	return nil
}

// Rule names, as recorded in audit events and blocks.
const (
	RuleSourceFailures = "source_failures"
	RuleSecretMismatch = "secret_mismatch"
	RuleNetworkSpread  = "network_spread"
	RuleIPNotAllowed   = "ip_not_allowed"
	RuleRevokedReuse   = "revoked_reuse"
	RuleManual         = "manual"
)

// Finding is a rule that fired, for the Responder to act on.
type Finding struct {
	Rule    string
	Action  Action // for token rules
	Source  string // for source rules: the blocked address or /64
	TokenID string // for token rules
	Until   time.Time
	At      time.Time
	// Evidence is what the rule saw (counts, window, networks), recorded
	// in the audit event. Never a secret.
	Evidence map[string]any
}

// Responder carries out findings: blocks are persisted, tokens suspended
// or revoked, alerts recorded. Each must write an audit event carrying the
// rule and evidence, and be idempotent.
type Responder interface {
	Respond(ctx context.Context, f Finding) error
}

// Stats are the detector's counters.
type Stats struct {
	Blocks   uint64 // sources blocked
	Findings uint64 // findings handed to the responder (blocks included)
	Failed   uint64 // findings the responder could not carry out
	Overflow uint64 // events not counted because the tables were full
	Queued   uint64 // findings waiting when the queue was full (backpressure, never dropped)
	// SharedFailures counts calls to the shared windows (Redis) that
	// failed; meanwhile each node counts alone.
	SharedFailures uint64
}

// Detector applies the rules. Create it with New; it is safe for
// concurrent use.
type Detector struct {
	cfg  Config
	resp Responder

	nblocks atomic.Int64 // entries in blocks: 0 keeps Blocked to one atomic load
	blocks  sync.Map     // netip.Addr (source key) → *blockEntry; read without locks
	bmu     sync.Mutex   // serialises changes to blocks and nblocks

	sources tracker[netip.Addr]
	tokens  tracker[string]

	work chan Finding
	stop chan struct{}
	done chan struct{}

	shared       chan sharedHit // nil without Config.Shared
	sharedDone   chan struct{}
	sharedLogged atomic.Int64

	nBlocks, nFindings, nFailed, nOverflow, nQueued, nSharedFailed atomic.Uint64
}

type blockEntry struct{ until int64 }

// New returns a running detector acting through resp. Close stops it.
func New(cfg Config, resp Responder) *Detector {
	cfg.defaults()
	d := &Detector{cfg: cfg, resp: resp, work: make(chan Finding, 1024), stop: make(chan struct{}), done: make(chan struct{})}
	d.sources.max, d.tokens.max = cfg.MaxTracked, cfg.MaxTracked
	go d.run()
	if cfg.Shared != nil && !cfg.Off {
		d.shared, d.sharedDone = make(chan sharedHit, 1<<16), make(chan struct{})
		go d.runShared()
	}
	return d
}

// Config returns the effective configuration.
func (d *Detector) Config() Config { return d.cfg }

// Stats returns the counters.
func (d *Detector) Stats() Stats {
	return Stats{Blocks: d.nBlocks.Load(), Findings: d.nFindings.Load(), Failed: d.nFailed.Load(), Overflow: d.nOverflow.Load(), Queued: d.nQueued.Load(),
		SharedFailures: d.nSharedFailed.Load()}
}

// SourceKey is what a source is counted and blocked as: an IPv4 address,
// or the /64 network of an IPv6 address (one subscriber's allocation, so
// hopping addresses inside it does not evade a block).
func SourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// SourceString is the text form of a source key: "203.0.113.7" or
// "2001:db8:1:2::/64".
func SourceString(k netip.Addr) string {
	if k.Is6() {
		return netip.PrefixFrom(k, 64).String()
	}
	return k.String()
}

// ParseSource reads a source as SourceString writes it, or any address
// (an IPv6 address stands for its /64).
func ParseSource(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is6() && p.Bits() == 64 {
			return SourceKey(p.Addr()), nil
		}
		return netip.Addr{}, latchkey.Errorf(latchkey.EInvalid, "a blocked source is an address or an IPv6 /64, not %s", s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, latchkey.Errorf(latchkey.EInvalid, "%.60q is not an IP address", s)
	}
	return SourceKey(a), nil
}

// Blocked reports whether src is blocked at now (Unix nanoseconds). With
// no blocks in force it costs one atomic load.
func (d *Detector) Blocked(src netip.Addr, now int64) bool {
	if d.nblocks.Load() == 0 || !src.IsValid() {
		return false
	}
	v, ok := d.blocks.Load(SourceKey(src))
	return ok && now < v.(*blockEntry).until
}

// Block installs a block in memory at once (the Responder persists it).
// It reports whether the source was not blocked already.
func (d *Detector) Block(src netip.Addr, until time.Time) bool {
	k := SourceKey(src)
	e := &blockEntry{until: until.UnixNano()}
	d.bmu.Lock()
	defer d.bmu.Unlock()
	if old, ok := d.blocks.Load(k); ok {
		o := old.(*blockEntry)
		fresh := o.until <= d.cfg.Now().UnixNano()
		if e.until > o.until {
			d.blocks.Store(k, e)
		}
		return fresh
	}
	d.blocks.Store(k, e)
	d.nblocks.Add(1)
	return true
}

// Unblock removes the block on src; it reports whether there was one.
func (d *Detector) Unblock(src netip.Addr) bool {
	d.bmu.Lock()
	_, ok := d.blocks.LoadAndDelete(SourceKey(src))
	if ok {
		d.nblocks.Add(-1)
	}
	d.bmu.Unlock()
	if ok {
		d.sources.reset(SourceKey(src)) // a fresh start, not an instant re-block
		return true
	}
	return false
}

// Restore installs blocks read from the store (at start, or from other
// nodes).
func (d *Detector) Restore(blocks []latchkey.Block) {
	for _, b := range blocks {
		if k, err := ParseSource(b.Source); err == nil {
			d.Block(k, b.Until)
		}
	}
}

// Refused is told about each refused verification: src is the end
// client (invalid when unknown, or when it is a proxy or the calling
// backend, which are never blocked on their own account), tokenID the
// parsed id ("" if the token did not parse).
func (d *Detector) Refused(src netip.Addr, code latchkey.Code, reason, tokenID string, now int64) {
	d.refused(context.Background(), false, src, code, reason, tokenID, now)
}

// RefusedNow is Refused for the verifier: with shared windows (Redis) it
// counts a source's failure (MALFORMED, NOT_FOUND) in the cluster's window
// before it returns, one round trip on the failure path only, and reports
// whether the source is now over its threshold. The attempt is then to be
// answered BLOCKED, on whichever node it arrived, and the source is
// blocked on this node at once: an attacker spread over the nodes gets
// exactly the threshold's number of guesses answered, however fast or
// parallel. The call that first reaches the threshold cluster-wide
// records the block (one finding); the other nodes block in memory and
// hear of it through the store. While Redis is unreachable the failure is
// counted on this node alone (the local window), as Refused does.
// It also reports how long the round trip took (0 without one).
func (d *Detector) RefusedNow(ctx context.Context, src netip.Addr, code latchkey.Code, reason, tokenID string, now int64) (blocked bool, waited time.Duration) {
	return d.refused(ctx, true, src, code, reason, tokenID, now)
}

// refused is Refused, counting the shared window at once when sync is set.
func (d *Detector) refused(ctx context.Context, sync bool, src netip.Addr, code latchkey.Code, reason, tokenID string, now int64) (blocked bool, waited time.Duration) {
	if d.cfg.Off {
		return false, 0
	}
	switch code {
	case latchkey.Malformed, latchkey.NotFound:
		if src.IsValid() {
			k := SourceKey(src)
			if n, fire := d.sources.hit(k, now, d.cfg.SourceFailures, &d.nOverflow); fire {
				d.fireBlock(k, n, now)
			}
			switch {
			case d.shared != nil && sync:
				began := time.Now()
				blocked = d.countShared(ctx, k, now)
				waited = time.Since(began)
			case d.shared != nil:
				d.share(sharedHit{src: k})
			}
		}
		if reason == "secret_mismatch" {
			d.tokenRule(tokenID, RuleSecretMismatch, d.cfg.SecretMismatch, ActAlert, src, now)
			if act := d.cfg.SecretMismatchAction; act != ActAlert && src.IsValid() {
				// Only blockable sources count toward acting on the token: a
				// trusted proxy's own requests are never blocked, so they
				// could reach any count.
				r := Rule{Count: d.cfg.SecretMismatchActCount, Window: d.cfg.SecretMismatch.Window}
				d.tokenRuleAs(RuleSecretMismatch+"_act", tokenID, RuleSecretMismatch, r, act, src, now)
			}
		}
	case latchkey.IPNotAllowed:
		d.tokenRule(tokenID, RuleIPNotAllowed, d.cfg.IPNotAllowed, d.cfg.IPNotAllowedAction, src, now)
	case latchkey.Revoked:
		if tokenID != "" && d.tokens.cooldown("reuse:"+tokenID, now, d.cfg.ReuseCooldown) {
			ev := map[string]any{"client_ip": addrText(src)}
			d.emit(Finding{Rule: RuleRevokedReuse, Action: ActAlert, TokenID: strings.Clone(tokenID), At: time.Unix(0, now), Evidence: ev})
		}
	}
	return blocked, waited
}

// countShared adds one failure from k to the cluster's window and reports
// whether the total is past the threshold. Reaching it blocks k here: with
// a finding when this call is the cluster's first to reach it, in memory
// only otherwise (the finding's node records the block for everyone).
func (d *Detector) countShared(ctx context.Context, k netip.Addr, now int64) bool {
	r := d.cfg.SourceFailures
	// Not cancelled with the request: an attacker who hangs up at once
	// must still be counted.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedCallTimeout)
	defer cancel()
	total, fire, err := d.cfg.Shared.AddFailures(ctx, SourceString(k), 1, r.Window, r.Count)
	if err != nil {
		d.sharedFailed(err)
		return false
	}
	switch {
	case fire:
		d.fireBlock(k, int(total), now)
	case total >= int64(r.Count):
		d.Block(k, time.Unix(0, now).Add(d.cfg.BlockFor))
	}
	return total > int64(r.Count)
}

func (d *Detector) tokenRule(tokenID, rule string, r Rule, act Action, src netip.Addr, now int64) {
	d.tokenRuleAs(rule, tokenID, rule, r, act, src, now)
}

// tokenRuleAs is tokenRule counting under counter (one rule may count
// twice, toward an alert and toward an action).
func (d *Detector) tokenRuleAs(counter, tokenID, rule string, r Rule, act Action, src netip.Addr, now int64) {
	if tokenID == "" {
		return
	}
	if n, fire := d.tokens.hit(counter+":"+tokenID, now, r, &d.nOverflow); fire {
		// tokenID is part of the presented token's memory: keep a copy only.
		d.emit(Finding{Rule: rule, Action: act, TokenID: strings.Clone(tokenID), At: time.Unix(0, now), Evidence: map[string]any{
			"count": n, "window": latchkey.Duration(r.Window).String(), "last_client_ip": addrText(src)}})
	}
}

func (d *Detector) fireBlock(k netip.Addr, n int, now int64) {
	until := time.Unix(0, now).Add(d.cfg.BlockFor)
	if !d.Block(k, until) {
		return // already blocked: idempotent
	}
	d.nBlocks.Add(1)
	d.emit(Finding{Rule: RuleSourceFailures, Source: SourceString(k), Until: until, At: time.Unix(0, now), Evidence: map[string]any{
		"failures": n, "window": latchkey.Duration(d.cfg.SourceFailures.Window).String(), "blocked_for": latchkey.Duration(d.cfg.BlockFor).String()}})
}

// Valid is told about VALID attempts (from the audit writer, in batches):
// it tracks the networks each token is used from.
func (d *Detector) Valid(evs []latchkey.AuditEvent) {
	if d.cfg.Off {
		return
	}
	for i := range evs {
		ev := &evs[i]
		if ev.Kind != latchkey.KindVerify || ev.Outcome != "VALID" || ev.TokenID == "" || ev.ClientIP == "" {
			continue
		}
		a, err := netip.ParseAddr(ev.ClientIP)
		if err != nil {
			continue
		}
		now := ev.Time.UnixNano()
		id := strings.Clone(ev.TokenID) // the event's id may share the presented token's memory
		if d.shared != nil {
			d.share(sharedHit{token: id, net: network(a)})
		}
		if nets, fire := d.tokens.spread("spread:"+id, network(a), now, d.cfg.NetworkSpread, &d.nOverflow); fire {
			d.emit(Finding{Rule: RuleNetworkSpread, Action: d.cfg.NetworkSpreadAction, TokenID: id, At: ev.Time, Evidence: map[string]any{
				"networks": nets, "count": len(nets), "window": latchkey.Duration(d.cfg.NetworkSpread.Window).String()}})
		}
	}
}

// network is the /24 (IPv4) or /48 (IPv6) a client address belongs to.
func network(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 24
	if a.Is6() {
		bits = 48
	}
	p, _ := a.Prefix(bits)
	return p
}

func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// emit hands a finding to the worker. A full queue makes the caller wait
// (counted), as the audit queue does: findings are never dropped.
func (d *Detector) emit(f Finding) {
	d.nFindings.Add(1)
	select {
	case d.work <- f:
	default:
		d.nQueued.Add(1)
		select {
		case d.work <- f:
		case <-d.stop:
		}
	}
}

func (d *Detector) run() {
	defer close(d.done)
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	for {
		select {
		case <-sweep.C:
			d.dropExpired(d.cfg.Now())
		case f := <-d.work:
			d.respond(f)
		case <-d.stop:
			// The shared windows' last round may still find something.
			for d.sharedDone != nil {
				select {
				case f := <-d.work:
					d.respond(f)
				case <-d.sharedDone:
					d.sharedDone = nil
				}
			}
			for {
				select {
				case f := <-d.work:
					d.respond(f)
				default:
					return
				}
			}
		}
	}
}

func (d *Detector) respond(f Finding) {
	if d.resp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.resp.Respond(ctx, f); err != nil {
		d.nFailed.Add(1)
		d.cfg.Logger.Error("detector: acting on a finding failed", "rule", f.Rule, "token_id", f.TokenID, "source", f.Source, "err", err)
	}
}

// dropExpired forgets blocks that have run out, so that Blocked returns to
// its one-load fast path once none is in force.
func (d *Detector) dropExpired(now time.Time) {
	d.bmu.Lock()
	defer d.bmu.Unlock()
	d.blocks.Range(func(k, v any) bool {
		if now.UnixNano() >= v.(*blockEntry).until {
			d.blocks.Delete(k)
			d.nblocks.Add(-1)
		}
		return true
	})
}

// Close stops the workers after carrying out the findings queued.
func (d *Detector) Close() {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	<-d.done
}

// Blocks lists the blocks in force in memory.
func (d *Detector) Blocks(now time.Time) []string {
	var out []string
	d.blocks.Range(func(k, v any) bool {
		if now.UnixNano() < v.(*blockEntry).until {
			out = append(out, SourceString(k.(netip.Addr)))
		}
		return true
	})
	return out
}

// tracker counts events per key in sliding windows, bounded in size.
type tracker[K comparable] struct {
	mu  sync.Mutex
	m   map[K]*window
	max int
}

// window is a sliding-window counter (the previous fixed window weighted
// by how much of it still overlaps) plus, for the spread rule, the
// networks seen and when.
type window struct {
	start     int64 // start of the current fixed window
	cur, prev int
	fired     bool // fired in this window already: act once
	nets      map[netip.Prefix]int64
	last      int64
}

// hit counts one event for k and reports the estimated count in the
// sliding window, and whether it just reached the threshold.
func (t *tracker[K]) hit(k K, now int64, r Rule, overflow *atomic.Uint64) (int, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.get(k, now, int64(r.Window), overflow)
	if w == nil {
		return 0, false
	}
	span := int64(r.Window)
	switch gap := now - w.start; {
	case gap >= 2*span:
		w.start, w.cur, w.prev, w.fired = now, 0, 0, false
	case gap >= span:
		w.start, w.prev, w.cur, w.fired = w.start+span, w.cur, 0, false
	}
	w.cur++
	w.last = now
	elapsed := now - w.start
	est := w.cur + int(int64(w.prev)*(span-elapsed)/span)
	if est >= r.Count && !w.fired {
		w.fired = true
		return est, true
	}
	return est, false
}

// cooldown reports true at most once per period for k.
func (t *tracker[K]) cooldown(k K, now int64, period time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.get(k, now, int64(period), nil)
	if w == nil || (w.last != 0 && now-w.last < int64(period)) {
		return false
	}
	w.last = now
	return true
}

// spread records that k was used from network n and reports the networks
// seen within the window, and whether they just reached the threshold.
func (t *tracker[K]) spread(k K, n netip.Prefix, now int64, r Rule, overflow *atomic.Uint64) ([]string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.get(k, now, int64(r.Window), overflow)
	if w == nil {
		return nil, false
	}
	if w.nets == nil {
		w.nets = map[netip.Prefix]int64{}
	}
	w.nets[n] = now
	w.last = now
	for p, at := range w.nets {
		if now-at >= int64(r.Window) {
			delete(w.nets, p)
		}
	}
	if len(w.nets) < r.Count {
		w.fired = false
		return nil, false
	}
	if w.fired {
		return nil, false
	}
	w.fired = true
	nets := make([]string, 0, len(w.nets))
	for p := range w.nets {
		nets = append(nets, p.String())
	}
	return nets, true
}

// get returns k's window, making room when the table is full by dropping
// entries idle for longer than span. The caller holds t.mu.
func (t *tracker[K]) get(k K, now, span int64, overflow *atomic.Uint64) *window {
	if t.m == nil {
		t.m = map[K]*window{}
	}
	if w := t.m[k]; w != nil {
		return w
	}
	if len(t.m) >= t.max {
		for key, w := range t.m {
			if now-w.last >= 2*span {
				delete(t.m, key)
			}
		}
		if len(t.m) >= t.max {
			if overflow != nil {
				overflow.Add(1)
			}
			return nil
		}
	}
	w := &window{start: now, last: 0}
	t.m[k] = w
	return w
}

func (t *tracker[K]) reset(k K) {
	t.mu.Lock()
	delete(t.m, k)
	t.mu.Unlock()
}

// String describes a finding for logs.
func (f Finding) String() string {
	if f.Source != "" {
		return fmt.Sprintf("%s: block %s until %s", f.Rule, f.Source, f.Until.Format(time.RFC3339))
	}
	return fmt.Sprintf("%s: %s token %s", f.Rule, f.Action, f.TokenID)
}
