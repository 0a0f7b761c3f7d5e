package verify

import (
	"strconv"
	"sync"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// Refuse records an attempt that a door refused before there was anything
// to verify: no credential, a credential in the URL, a request that
// matches no route, a path that is not canonical, a forged
// original-request header (docs/architecture.md §10: every attempt is on record).
//
// Such refusals are not told to the detector: health checks and
// misconfigured clients send them all day, and must not get their source
// blocked. So that a flood cannot fill the disk, they are sampled: at most
// one record per second for each source, door and reason. The next record
// of that key carries in Detail {"count": n} how many refusals it stands
// for, itself included; counts still pending are written by Close.
func (v *Verifier) Refuse(req *latchkey.VerifyRequest, reason string) {
	if v.rec == nil {
		return
	}
	now := v.now()
	v.sampled(req, latchkey.OutcomeRefused, reason, "", now)
}

// sampled records an attempt under the per-source sampling of Refuse:
// refusals at the edge, and attempts from a blocked source (which keeps
// sending after its block, and must not fill the disk either).
func (v *Verifier) sampled(req *latchkey.VerifyRequest, outcome, reason, tokenID string, now int64) {
	action := req.Action
	if action == "" {
		action = latchkey.ActionVerify
	}
	k := refusalKey{ip: req.ClientIP, action: action, outcome: outcome, reason: reason}
	n, ok, ended := v.refusals.admit(k, now)
	v.recordEnded(ended, now)
	if ok {
		v.recordRefusal(req, outcome, reason, tokenID, now, n)
	} else {
		v.startRefusalFlusher() // the count is written when its window ends
	}
}

func (v *Verifier) recordEnded(ended map[refusalKey]int64, now int64) {
	for k, n := range ended {
		v.recordRefusal(&latchkey.VerifyRequest{ClientIP: k.ip, Action: k.action}, k.outcome, k.reason, "", now, n)
	}
}

// startRefusalFlusher starts, once, the loop that writes the counts of
// sampling windows that have ended, every second, so that a source that
// stops sending still has its last refusals on record within a second or
// two. Close stops it.
func (v *Verifier) startRefusalFlusher() {
	s := &v.refusals
	s.flusher.start(time.Second, func() {
		now := v.now()
		s.mu.Lock()
		ended := s.sweepLocked(now)
		s.mu.Unlock()
		v.recordEnded(ended, now)
	})
}

func (v *Verifier) recordRefusal(req *latchkey.VerifyRequest, outcome, reason, tokenID string, now int64, n int64) {
	v.rec.RecordFunc(func(ev *latchkey.AuditEvent) {
		v.fillAttempt(ev, req, now)
		ev.TokenID = tokenID
		ev.Outcome, ev.Reason = outcome, reason
		ev.Detail = refusalDetail(n)
	})
}

// refusalDetail is {"count":n}.
func refusalDetail(n int64) []byte {
	b := make([]byte, 0, 24)
	b = append(b, `{"count":`...)
	b = strconv.AppendInt(b, n, 10)
	return append(b, '}')
}

// flushRefusals stops the flusher and writes the counts of refusals not
// yet on record.
func (v *Verifier) flushRefusals() {
	v.refusals.flusher.close()
	if v.rec == nil {
		return
	}
	now := v.now()
	for k, n := range v.refusals.drain() {
		v.recordRefusal(&latchkey.VerifyRequest{ClientIP: k.ip, Action: k.action}, k.outcome, k.reason, "", now, n)
	}
}

type refusalKey struct{ ip, action, outcome, reason string }

type refusalWindow struct {
	start   int64 // when the window's record was written (Unix ns)
	pending int64 // refusals since, not yet on record
}

// refusalSampler admits one record per key per second. It holds at most
// maxRefusalKeys keys: past that (a flood from many addresses) every
// source shares one key per door and reason, so memory stays bounded and
// the counts stay exact.
type refusalSampler struct {
	mu        sync.Mutex
	m         map[refusalKey]*refusalWindow
	nextSweep int64

	flusher background // writes the counts of ended windows
}

const (
	refusalWindowNs = int64(time.Second)
	maxRefusalKeys  = 1 << 14
)

// admit reports whether a record should be written for k now, and the
// count it stands for. Once a second it also hands back the counts of
// keys whose window has ended, to be written now rather than wait for
// their source to come back.
func (s *refusalSampler) admit(k refusalKey, now int64) (n int64, ok bool, ended map[refusalKey]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[refusalKey]*refusalWindow{}
	}
	if now >= s.nextSweep {
		ended = s.sweepLocked(now)
		s.nextSweep = now + refusalWindowNs
	}
	w, found := s.m[k]
	if !found && len(s.m) >= maxRefusalKeys {
		k.ip = "*"
		w, found = s.m[k]
	}
	if !found {
		s.m[k] = &refusalWindow{start: now}
		return 1, true, ended
	}
	if now-w.start < refusalWindowNs {
		w.pending++
		return 0, false, ended
	}
	n = w.pending + 1
	w.start, w.pending = now, 0
	return n, true, ended
}

// sweepLocked forgets keys whose window has ended, returning the counts
// still pending among them.
func (s *refusalSampler) sweepLocked(now int64) map[refusalKey]int64 {
	var ended map[refusalKey]int64
	for k, w := range s.m {
		if now-w.start < refusalWindowNs {
			continue
		}
		if w.pending > 0 {
			if ended == nil {
				ended = map[refusalKey]int64{}
			}
			ended[k] = w.pending
		}
		delete(s.m, k)
	}
	return ended
}

// drain returns the pending counts and forgets every key.
func (s *refusalSampler) drain() map[refusalKey]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[refusalKey]int64{}
	if s.m == nil {
		return out
	}
	for k, w := range s.m {
		if w.pending > 0 {
			out[k] = w.pending
		}
	}
	s.m = nil
	return out
}
