package audit

import (
	"sync"
	"time"

	"github.com/latchkeyhq/latchkey"
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
// are this node's, from its start. The dashboard's chart and counters read
// it through GET /v1/audit/summary.
type Activity struct {
	// Node names the node counting, reported with the counts.
	Node string

	mu    sync.Mutex
	secs  [ActivityWindow]bucket
	day   time.Time // local midnight the today counts start from
	start int64     // day, in unix seconds
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

// ActivitySummary is a snapshot of Activity.
type ActivitySummary struct {
	// Node is the node whose attempts these are.
	Node  string    `json:"node"`
	Now   time.Time `json:"now"`
	Today struct {
		Since   time.Time `json:"since"`
		Valid   uint64    `json:"valid"`
		Refused uint64    `json:"refused"`
		Blocked uint64    `json:"blocked"`
	} `json:"today"`
	// Series holds per-second counts for the seconds Start, Start+1, ...
	// up to the current second (ActivityWindow of them), oldest first.
	Series struct {
		Start   time.Time `json:"start"`
		Valid   []uint64  `json:"valid"`
		Refused []uint64  `json:"refused"`
		Blocked []uint64  `json:"blocked"`
	} `json:"series"`
}

// Summary returns the counts as of now.
func (a *Activity) Summary(now time.Time) ActivitySummary {
	var s ActivitySummary
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
