package edge

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// Sessions is the one registry of the long-lived sessions the doors admit
// (database connections; MCP sessions to come), keyed by token id
// (docs/architecture.md §10). A session's token was verified once, when it opened; the
// registry verifies it again whenever the token changes on any node
// (TokenChanged, from the token service and the cluster's change feed),
// when it reaches its expiry, and every Interval (which catches idle
// timeouts and a blocked source), and ends the session at the first
// refusal. A recheck spends nothing and is not counted by the detector
// (latchkey.VerifyRequest.Recheck); only its refusals are audited.
type Sessions struct {
	Verifier latchkey.Verifier
	// Interval between rechecks of every session (default 2s).
	Interval time.Duration
	// Failures is how many rechecks in a row may fail to decide (the
	// store is down) before the session is ended (default 3): it fails
	// closed, but a blip does not drop every connection.
	Failures int
	Logger   *slog.Logger
	// Node names this node in the sessions List returns.
	Node string

	mu      sync.Mutex
	byID    map[string]*Session
	byToken map[string]map[*Session]struct{}
	wake    chan string
	all     atomic.Bool // wake overflowed: recheck everyone
	once    sync.Once
}

// Session is one open session. The door fills in the public fields
// before Open; the registry owns the rest.
type Session struct {
	ID        string // random, for the dashboard and the API
	Key       uint64 // random, orders the session's audit records (audit.Pipeline.RecordOn)
	Door      string // "db"
	TokenID   string
	Subject   string
	ClientIP  string
	Resource  string // the database, as clients name it
	Role      string // what it was granted (the upstream role)
	Started   time.Time
	ExpiresAt time.Time // the token's, zero when it has none

	statements atomic.Int64
	inUse      atomic.Bool
	ended      atomic.Bool
	endedBy    atomic.Pointer[string] // the administrator's token id, when one ended it
	fails      int                    // rechecks in a row that could not decide (Run's goroutine only)
	req        latchkey.VerifyRequest // what admitted it, the token included: each recheck repeats it
	end        func(reason string)
	timer      *time.Timer
}

// Reasons a session ends, as the audit record's reason; Explain words
// them for the client.
const (
	EndClient       = "client_closed"
	EndUpstream     = "upstream_closed"
	EndRevoked      = "revoked"
	EndSuspended    = "suspended"
	EndExpired      = "expired"
	EndIdle         = "idle"
	EndBlocked      = "blocked"
	EndRefused      = "refused" // the token no longer covers the session (scope, network)
	EndUnverifiable = "unverifiable"
	EndAdmin        = "ended_by_admin"
	EndShutdown     = "shutdown"
	EndProtocol     = "protocol_violation"
)

// Explain is the message a client is given when its session is ended for
// reason: the class of it, nothing more than a refusal would tell.
func Explain(reason string) string {
	switch reason {
	case EndRevoked:
		return "the latchkey token was revoked"
	case EndSuspended:
		return "the latchkey token was suspended"
	case EndExpired:
		return "the latchkey token expired"
	case EndIdle:
		return "the latchkey token's idle timeout passed"
	case EndBlocked:
		return "the client's address was blocked"
	case EndRefused:
		return "the latchkey token no longer allows this session"
	case EndUnverifiable:
		return "the latchkey token could not be verified again"
	case EndAdmin:
		return "an administrator ended the session"
	case EndShutdown:
		return "latchkey is shutting down"
	case EndProtocol:
		return "protocol violation"
	}
	return "the session ended"
}

// endReason is why a recheck's refusal ends a session.
func endReason(d latchkey.Decision) string {
	switch d.Code {
	case latchkey.Revoked:
		return EndRevoked
	case latchkey.Suspended:
		return EndSuspended
	case latchkey.Expired:
		if strings.Contains(d.Reason, "idle") {
			return EndIdle
		}
		return EndExpired
	case latchkey.Blocked:
		return EndBlocked
	case latchkey.NotFound, latchkey.Malformed:
		return EndRevoked // deleted, or rotated past its grace
	}
	return EndRefused
}

// NewSessionID returns a random id and key for a session.
func NewSessionID() (string, uint64) {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:8]), binary.LittleEndian.Uint64(b[8:])
}

// Used notes a statement (or a call) on the session: it counts, and the
// next recheck notes a use of the token so that it does not go idle.
func (s *Session) Used() {
	s.statements.Add(1)
	s.inUse.Store(true)
}

// Statements is how many the session has run.
func (s *Session) Statements() int64 { return s.statements.Load() }

// EndedBy is the token id of the administrator who ended the session
// (Sessions.End), "" when nobody did.
func (s *Session) EndedBy() string {
	if p := s.endedBy.Load(); p != nil {
		return *p
	}
	return ""
}

func (r *Sessions) init() {
	r.once.Do(func() {
		r.byID = map[string]*Session{}
		r.byToken = map[string]map[*Session]struct{}{}
		r.wake = make(chan string, 1024)
	})
}

// Open registers s, admitted by the verification req (its token, scopes
// and client facts: each recheck repeats it), and returns the function
// that removes it. end is called at most once, from the registry's
// goroutine, when the session must end; it must not block for long.
func (r *Sessions) Open(s *Session, req latchkey.VerifyRequest, end func(reason string)) (remove func()) {
	r.init()
	req.Recheck, req.AuditFailuresOnly, req.NoSpend = true, true, false
	req.Scopes = append([]string(nil), req.Scopes...)
	s.req, s.end = req, end
	r.mu.Lock()
	r.byID[s.ID] = s
	set := r.byToken[s.TokenID]
	if set == nil {
		set = map[*Session]struct{}{}
		r.byToken[s.TokenID] = set
	}
	set[s] = struct{}{}
	if !s.ExpiresAt.IsZero() {
		id := s.TokenID
		s.timer = time.AfterFunc(time.Until(s.ExpiresAt), func() { r.TokenChanged(id) })
	}
	r.mu.Unlock()
	return func() { r.remove(s) }
}

func (r *Sessions) remove(s *Session) {
	s.ended.Store(true)
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
	}
	delete(r.byID, s.ID)
	if set := r.byToken[s.TokenID]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(r.byToken, s.TokenID)
		}
	}
}

// TokenChanged asks for token id's sessions to be rechecked now
// (latchkey.ChangeHandler's half, and the token service's Invalidate). It
// never blocks: the recheck runs on the registry's goroutine (Run).
func (r *Sessions) TokenChanged(id string) {
	r.init()
	r.mu.Lock()
	_, open := r.byToken[id]
	r.mu.Unlock()
	if !open {
		return
	}
	select {
	case r.wake <- id:
	default:
		r.all.Store(true) // a storm of changes: the next round checks everyone
		select {
		case r.wake <- "":
		default:
		}
	}
}

// Run rechecks sessions until ctx ends: the changed tokens' at once, every
// session every Interval.
func (r *Sessions) Run(ctx context.Context) {
	r.init()
	every := r.Interval
	if every <= 0 {
		every = 2 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-r.wake:
			if r.all.Swap(false) {
				r.RecheckAll(ctx)
			} else if id != "" {
				r.Recheck(ctx, id)
			}
		case <-t.C:
			r.RecheckAll(ctx)
		}
	}
}

// Recheck verifies token id's sessions again, ending them if refused.
func (r *Sessions) Recheck(ctx context.Context, id string) {
	r.check(ctx, r.sessions(id))
}

// RecheckAll verifies every session again.
func (r *Sessions) RecheckAll(ctx context.Context) {
	r.check(ctx, r.sessions(""))
}

// sessions are token id's open sessions, or all of them when id is "".
func (r *Sessions) sessions(id string) []*Session {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*Session
	if id != "" {
		for s := range r.byToken[id] {
			out = append(out, s)
		}
		return out
	}
	for _, s := range r.byID {
		out = append(out, s)
	}
	return out
}

func (r *Sessions) check(ctx context.Context, ss []*Session) {
	for _, s := range ss {
		if s.ended.Load() {
			continue
		}
		req := s.req
		req.InUse = s.inUse.Swap(false)
		d, err := r.Verifier.Verify(ctx, &req)
		switch {
		case err != nil:
			s.fails++
			if s.fails >= r.failures() {
				r.end(s, EndUnverifiable, "")
			} else if r.Logger != nil {
				r.Logger.Warn("a session's token could not be verified again; it stays open for now",
					"session", s.ID, "token_id", s.TokenID, "err", err)
			}
		case !d.Valid():
			r.end(s, endReason(d), "")
		default:
			s.fails = 0
		}
	}
}

func (r *Sessions) failures() int {
	if r.Failures > 0 {
		return r.Failures
	}
	return 3
}

func (r *Sessions) end(s *Session, reason, by string) bool {
	if s.ended.Swap(true) {
		return false
	}
	if by != "" {
		s.endedBy.Store(&by)
	}
	r.remove(s)
	s.end(reason)
	return true
}

// End ends session id for reason, on behalf of the administrator whose
// token id is by (recorded with the session's end), and reports whether
// it was open on this node.
func (r *Sessions) End(id, reason, by string) bool {
	r.init()
	r.mu.Lock()
	s := r.byID[id]
	r.mu.Unlock()
	return s != nil && r.end(s, reason, by)
}

// List returns the open sessions, oldest first.
func (r *Sessions) List() []latchkey.OpenSession {
	ss := r.sessions("")
	out := make([]latchkey.OpenSession, 0, len(ss))
	for _, s := range ss {
		out = append(out, s.info(r.Node))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Started.Equal(out[j].Started) {
			return out[i].Started.Before(out[j].Started)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Len is how many sessions are open.
func (r *Sessions) Len() int {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

func (s *Session) info(node string) latchkey.OpenSession {
	return latchkey.OpenSession{ID: s.ID, Door: s.Door, Node: node, TokenID: s.TokenID, Subject: s.Subject, ClientIP: s.ClientIP,
		Resource: s.Resource, Role: s.Role, Started: s.Started, ExpiresAt: s.ExpiresAt, Statements: s.statements.Load()}
}
