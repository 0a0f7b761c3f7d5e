package edge

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// stubVerifier answers every recheck with its current decision, and
// keeps the requests it was asked.
type stubVerifier struct {
	mu   sync.Mutex
	d    latchkey.Decision
	err  error
	reqs []latchkey.VerifyRequest
}

func (v *stubVerifier) Verify(_ context.Context, req *latchkey.VerifyRequest) (latchkey.Decision, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.reqs = append(v.reqs, *req)
	return v.d, v.err
}

func (v *stubVerifier) set(d latchkey.Decision, err error) {
	v.mu.Lock()
	v.d, v.err = d, err
	v.mu.Unlock()
}

func (v *stubVerifier) last() latchkey.VerifyRequest {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.reqs[len(v.reqs)-1]
}

// open registers a session of token tok whose end is reported on the
// returned channel.
func open(r *Sessions, id, tok string, expires time.Time) (*Session, <-chan string) {
	ended := make(chan string, 1)
	s := &Session{ID: id, TokenID: tok, Door: "db", Started: time.Unix(int64(len(id)), 0), ExpiresAt: expires}
	r.Open(s, latchkey.VerifyRequest{Token: "secret-" + tok, Scopes: []string{"db.x:read"}, NoSpend: true}, func(reason string) { ended <- reason })
	return s, ended
}

func endedWith(t *testing.T, ended <-chan string, want string) {
	t.Helper()
	select {
	case got := <-ended:
		if got != want {
			t.Fatalf("ended with %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("not ended (want %q)", want)
	}
}

func notEnded(t *testing.T, ended <-chan string) {
	t.Helper()
	select {
	case got := <-ended:
		t.Fatalf("ended with %q", got)
	default:
	}
}

func TestSessionsRecheck(t *testing.T) {
	t.Parallel()
	v := &stubVerifier{d: latchkey.Decision{Code: latchkey.Valid}}
	r := &Sessions{Verifier: v, Node: "n1"}
	ctx := context.Background()
	a, endedA := open(r, "a", "tok1", time.Time{})
	b, endedB := open(r, "bb", "tok2", time.Time{})

	// A recheck repeats the admitting request, spending nothing, audited
	// only when refused, and notes a use only after a statement.
	r.Recheck(ctx, "tok1")
	req := v.last()
	if !req.Recheck || !req.AuditFailuresOnly || req.NoSpend || req.InUse || req.Token != "secret-tok1" || req.Scopes[0] != "db.x:read" {
		t.Fatalf("recheck request: %+v", req)
	}
	a.Used()
	r.Recheck(ctx, "tok1")
	if !v.last().InUse || a.Statements() != 1 {
		t.Fatalf("a used session's recheck: %+v, %d statements", v.last(), a.Statements())
	}
	r.Recheck(ctx, "tok1")
	if v.last().InUse {
		t.Fatal("InUse stays set after the recheck that reported it")
	}

	if l := r.List(); len(l) != 2 || l[0].ID != "a" || l[1].ID != "bb" || l[0].Statements != 1 || l[0].Node != "n1" || l[1].TokenID != "tok2" {
		t.Fatalf("List: %+v", l)
	}

	// Refused: only that token's sessions end, with the reason's word.
	v.set(latchkey.Decision{Code: latchkey.Revoked}, nil)
	r.Recheck(ctx, "tok1")
	endedWith(t, endedA, EndRevoked)
	notEnded(t, endedB)
	if r.Len() != 1 {
		t.Fatalf("%d sessions left, want 1", r.Len())
	}

	// An administrator's end names the administrator; a second end, or
	// one of a session already ended, is refused and changes nothing.
	if r.End("a", EndAdmin, "admin1") {
		t.Fatal("End of a session already ended: want false")
	}
	if a.EndedBy() != "" {
		t.Fatalf("a session ended by a revoke names %q as its ender", a.EndedBy())
	}
	if !r.End("bb", EndAdmin, "admin1") || r.End("bb", EndAdmin, "admin2") {
		t.Fatal("End: want true once, then false")
	}
	endedWith(t, endedB, EndAdmin)
	if b.EndedBy() != "admin1" || r.Len() != 0 {
		t.Fatalf("ended by %q, %d open", b.EndedBy(), r.Len())
	}
}

func TestSessionsEndReasons(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		d    latchkey.Decision
		want string
	}{
		{latchkey.Decision{Code: latchkey.Suspended}, EndSuspended},
		{latchkey.Decision{Code: latchkey.Expired, Reason: "expired"}, EndExpired},
		{latchkey.Decision{Code: latchkey.Expired, Reason: "idle"}, EndIdle},
		{latchkey.Decision{Code: latchkey.Expired, Reason: "ancestor_idle"}, EndIdle},
		{latchkey.Decision{Code: latchkey.Blocked}, EndBlocked},
		{latchkey.Decision{Code: latchkey.NotFound}, EndRevoked},
		{latchkey.Decision{Code: latchkey.InsufficientScope}, EndRefused},
		{latchkey.Decision{Code: latchkey.IPNotAllowed}, EndRefused},
	} {
		v := &stubVerifier{d: c.d}
		r := &Sessions{Verifier: v}
		_, ended := open(r, "s", "tok", time.Time{})
		r.RecheckAll(context.Background())
		endedWith(t, ended, c.want)
	}
}

// A store that cannot answer: the session stays for Failures-1 rounds,
// then ends (fail closed); a success in between starts the count again.
func TestSessionsUnverifiable(t *testing.T) {
	t.Parallel()
	v := &stubVerifier{err: errors.New("store down")}
	r := &Sessions{Verifier: v, Failures: 3}
	ctx := context.Background()
	_, ended := open(r, "s", "tok", time.Time{})
	r.RecheckAll(ctx)
	r.RecheckAll(ctx)
	v.set(latchkey.Decision{Code: latchkey.Valid}, nil)
	r.RecheckAll(ctx)
	v.set(latchkey.Decision{}, errors.New("store down"))
	r.RecheckAll(ctx)
	r.RecheckAll(ctx)
	notEnded(t, ended)
	r.RecheckAll(ctx)
	endedWith(t, ended, EndUnverifiable)
}

// A token's expiry wakes its sessions' recheck through Run, without
// waiting for the interval; TokenChanged does the same for a change.
func TestSessionsRunRechecksOnExpiryAndChange(t *testing.T) {
	t.Parallel()
	v := &stubVerifier{d: latchkey.Decision{Code: latchkey.Expired, Reason: "expired"}}
	r := &Sessions{Verifier: v, Interval: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	_, ended := open(r, "s", "tok", time.Now().Add(-time.Second)) // already past: the timer fires at once
	endedWith(t, ended, EndExpired)

	v.set(latchkey.Decision{Code: latchkey.Suspended}, nil)
	_, ended = open(r, "t", "tok2", time.Time{})
	r.TokenChanged("unknown") // no session: nothing queued
	r.TokenChanged("tok2")
	endedWith(t, ended, EndSuspended)
	cancel()
	<-done
}
