package audit

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

// ActivityWindow is how far back Activity keeps per-second counts.
const ActivityWindow = 300

// Outcome classes counted by Activity, in the order of its arrays.
const (
	ClassValid   = iota // VALID
	ClassRefused        // any other verdict
	ClassBlocked        // BLOCKED: the source is blocked by the detector
	numClasses
)

// Activity counts verification attempts per second (the last
// ActivityWindow seconds) and since local midnight, by outcome class. It
// is fed committed records (Pipeline.Observe) and kept in memory: counts
// are this node's (ActivityBoard keeps them across restarts and adds up a
// cluster's). The dashboard's chart and counters read them through
// GET /v1/audit/summary.
type Activity struct {
	// Node names the node counting, reported with the counts.
	Node string

	mu    sync.Mutex
	secs  [ActivityWindow]bucket
	day   time.Time // local midnight the today counts start from
	start int64     // day, in unix seconds
	seen  uint64    // attempts counted so far (ActivityBoard publishes on change)
	next  int64     // the next midnight, unix seconds
	today [numClasses]uint64
}

type bucket struct {
	at int64 // unix second the counts belong to
	n  [numClasses]uint64
}

// Classify maps an outcome to its class.
func Classify(outcome string) int {
	switch outcome {
	case "VALID":
		return ClassValid
	case "BLOCKED":
		return ClassBlocked
	}
	return ClassRefused
}

// Observe counts the verification attempts among evs.
func (a *Activity) Observe(evs []latchkey.AuditEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range evs {
		ev := &evs[i]
		if ev.Kind != latchkey.KindVerify || ev.Outcome == "ERROR" {
			continue
		}
		c := Classify(ev.Outcome)
		sec := ev.Time.Unix()
		a.rollDay(ev.Time)
		if sec >= a.start {
			a.today[c]++
		}
		b := &a.secs[uint64(sec)%ActivityWindow]
		if b.at != sec {
			if b.at > sec {
				continue // older than the window
			}
			*b = bucket{at: sec}
		}
		b.n[c]++
		a.seen++
	}
}

// rollDay starts a new day's counts when t is past the current one's.
func (a *Activity) rollDay(t time.Time) {
	if t.Unix() < a.next {
		return
	}
	y, m, d := t.Local().Date()
	a.day = time.Date(y, m, d, 0, 0, 0, 0, time.Local)
	a.start, a.next = a.day.Unix(), a.day.AddDate(0, 0, 1).Unix()
	a.today = [numClasses]uint64{}
}

// Summary returns the counts as of now.
func (a *Activity) Summary(now time.Time) client.ActivitySummary {
	var s client.ActivitySummary
	s.Node, s.Now = a.Node, now.UTC()
	end := now.Unix()
	start := end - ActivityWindow + 1
	s.Series.Start = time.Unix(start, 0).UTC()
	s.Series.Valid = make([]uint64, ActivityWindow)
	s.Series.Refused = make([]uint64, ActivityWindow)
	s.Series.Blocked = make([]uint64, ActivityWindow)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rollDay(now)
	s.Today.Since = a.day
	s.Today.Valid, s.Today.Refused, s.Today.Blocked = a.today[ClassValid], a.today[ClassRefused], a.today[ClassBlocked]
	for sec := start; sec <= end; sec++ {
		b := &a.secs[uint64(sec)%ActivityWindow]
		if b.at != sec {
			continue
		}
		i := sec - start
		s.Series.Valid[i], s.Series.Refused[i], s.Series.Blocked[i] = b.n[ClassValid], b.n[ClassRefused], b.n[ClassBlocked]
	}
	return s
}

// Counts returns the summary as of now (ActivitySource).
func (a *Activity) Counts(_ context.Context, now time.Time) (client.ActivitySummary, error) {
	s := a.Summary(now)
	s.Nodes = []string{a.Node}
	return s, nil
}

// ActivitySource gives the dashboard its counts: one node's Activity, or
// an ActivityBoard adding up a cluster's.
type ActivitySource interface {
	Counts(ctx context.Context, now time.Time) (client.ActivitySummary, error)
}

// BoardStore is where an ActivityBoard publishes: the store's settings
// (latchkey.Store satisfies it).
type BoardStore interface {
	PutSetting(ctx context.Context, key, value string) error
	SettingsWithPrefix(ctx context.Context, prefix string) (map[string]string, error)
}

// ActivityBoard keeps the counts in the store: each node publishes its
// summary every second (Publish), takes it back after a restart
// (Restore), and Counts adds this node's live counts to the other nodes'
// latest, so the dashboard shows the whole cluster whichever node serves
// it.
type ActivityBoard struct {
	Local *Activity
	Store BoardStore
	// MaxAge is how old another node's summary may be and still count
	// (default 10s): a stopped node drops out.
	MaxAge time.Duration

	published     time.Time // last Publish that wrote
	publishedSeen uint64    // Local.seen at that write
}

// quietRepublish is how often an idle node still publishes, to stay
// among the counted nodes (well inside the default MaxAge).
const quietRepublish = 5 * time.Second

const boardPrefix = "activity:"

// Publish stores this node's summary as of now.
// It writes only when something was counted since the last write, or
// every quietRepublish while idle: an idle server does not write once a
// second. Publish is called from one goroutine.
func (b *ActivityBoard) Publish(ctx context.Context, now time.Time) error {
	b.Local.mu.Lock()
	seen := b.Local.seen
	b.Local.mu.Unlock()
	if seen == b.publishedSeen && !b.published.IsZero() && now.Sub(b.published) < quietRepublish {
		return nil
	}
	buf, err := json.Marshal(b.Local.Summary(now))
	if err != nil {
		return err
	}
	if err := b.Store.PutSetting(ctx, boardPrefix+b.Local.Node, string(buf)); err != nil {
		return err
	}
	b.published, b.publishedSeen = now, seen
	return nil
}

// Restore takes back this node's counts as last published (before a
// restart), so that "today" survives it: today's counts if the day is
// the same, and the seconds still inside the window. Call it before the
// node counts anything.
func (b *ActivityBoard) Restore(ctx context.Context, now time.Time) error {
	key := boardPrefix + b.Local.Node
	rows, err := b.Store.SettingsWithPrefix(ctx, key)
	if err != nil {
		return err
	}
	var p client.ActivitySummary
	if v, ok := rows[key]; !ok || json.Unmarshal([]byte(v), &p) != nil {
		return nil
	}
	b.Local.restore(p, now)
	return nil
}

// restore seeds the counts from a summary taken earlier.
func (a *Activity) restore(p client.ActivitySummary, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rollDay(now)
	if p.Today.Since.Equal(a.day) {
		a.today[ClassValid] += p.Today.Valid
		a.today[ClassRefused] += p.Today.Refused
		a.today[ClassBlocked] += p.Today.Blocked
	}
	oldest, start := now.Unix()-ActivityWindow+1, p.Series.Start.Unix()
	for i := range p.Series.Valid {
		sec := start + int64(i)
		if sec < oldest || sec > now.Unix() || i >= len(p.Series.Refused) || i >= len(p.Series.Blocked) {
			continue
		}
		b := &a.secs[uint64(sec)%ActivityWindow]
		if b.at != sec {
			*b = bucket{at: sec}
		}
		b.n[ClassValid] += p.Series.Valid[i]
		b.n[ClassRefused] += p.Series.Refused[i]
		b.n[ClassBlocked] += p.Series.Blocked[i]
	}
}

// Counts returns the cluster's counts as of now: this node's, plus every
// other node's latest published summary that is recent enough.
func (b *ActivityBoard) Counts(ctx context.Context, now time.Time) (client.ActivitySummary, error) {
	sum, _ := b.Local.Counts(ctx, now)
	rows, err := b.Store.SettingsWithPrefix(ctx, boardPrefix)
	if err != nil {
		return sum, err
	}
	maxAge := b.MaxAge
	if maxAge <= 0 {
		maxAge = 10 * time.Second
	}
	var peers []client.ActivitySummary
	for key, v := range rows {
		if key == boardPrefix+b.Local.Node {
			continue
		}
		var p client.ActivitySummary
		if json.Unmarshal([]byte(v), &p) != nil || now.Sub(p.Now) > maxAge {
			continue
		}
		peers = append(peers, p)
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].Node < peers[j].Node })
	return MergeActivity(sum, peers), nil
}

// MergeActivity adds the peers' counts to base: series aligned by
// second (what falls outside base's window is left out), and today's
// counts where the peer's day is base's.
func MergeActivity(base client.ActivitySummary, peers []client.ActivitySummary) client.ActivitySummary {
	start := base.Series.Start.Unix()
	for _, p := range peers {
		base.Nodes = append(base.Nodes, p.Node)
		if p.Today.Since.Equal(base.Today.Since) {
			base.Today.Valid += p.Today.Valid
			base.Today.Refused += p.Today.Refused
			base.Today.Blocked += p.Today.Blocked
		}
		off := p.Series.Start.Unix() - start
		add := func(dst, src []uint64) {
			for i, v := range src {
				if j := int64(i) + off; j >= 0 && j < int64(len(dst)) {
					dst[j] += v
				}
			}
		}
		add(base.Series.Valid, p.Series.Valid)
		add(base.Series.Refused, p.Series.Refused)
		add(base.Series.Blocked, p.Series.Blocked)
	}
	return base
}
