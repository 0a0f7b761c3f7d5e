package verify

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// A token verified late in its cache entry's life (its last third) is reloaded in the
// background while the entry keeps serving: a slow store delays nobody,
// and the reload still brings changes a notification missed.
func TestRefreshAhead(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.v = New(f.loader, f.hasher, f.rec.p, Config{Now: f.clock, Node: "n1", PositiveTTL: 40 * time.Second})
	tok, rec := f.issue(t)
	ctx := context.Background()
	check := func(want latchkey.Code) {
		t.Helper()
		done := make(chan latchkey.Decision, 1)
		go func() {
			d, _ := f.v.Verify(ctx, &latchkey.VerifyRequest{Token: tok})
			done <- d
		}()
		select {
		case d := <-done:
			if d.Code != want {
				t.Fatalf("got %s, want %s", d.Code, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the verification waited on the store")
		}
	}
	check(latchkey.Valid)
	if n := f.loader.loads.Load(); n != 1 {
		t.Fatalf("%d loads, want 1", n)
	}
	f.advance(26 * time.Second) // before its last third: nothing to do
	check(latchkey.Valid)
	if n := f.loader.loads.Load(); n != 1 {
		t.Fatalf("%d loads at 26 s of 40, want 1", n)
	}
	// Revoked in the store, the notification lost; the store is slow.
	f.loader.mu.Lock()
	r := rec.Clone()
	r.Status, r.Version = latchkey.StatusRevoked, 2
	f.loader.toks[rec.ID] = r
	f.loader.gate = make(chan struct{})
	f.loader.mu.Unlock()
	f.advance(2 * time.Second) // 28 s: the last third
	check(latchkey.Valid)      // served from the entry, not held by the slow reload
	deadline := time.Now().Add(5 * time.Second)
	for f.loader.loads.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("no reload started in the entry's last third")
		}
		time.Sleep(time.Millisecond)
	}
	check(latchkey.Valid) // one reload at a time: this one joins nothing and waits for nothing
	close(f.loader.gate)
	for deadline := time.Now().Add(5 * time.Second); ; {
		d, _ := f.v.Verify(ctx, &latchkey.VerifyRequest{Token: tok})
		if d.Code == latchkey.Revoked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reload did not replace the entry: %s", d.Code)
		}
		time.Sleep(time.Millisecond)
	}
	if n := f.loader.loads.Load(); n != 2 {
		t.Errorf("%d loads, want 2", n)
	}
}

// A store that cannot be reached: the miss that found it so fails after
// its read, and for the next second other misses fail at once (one read
// tries again) rather than each wait the load timeout; once it answers,
// misses read it again.
func TestStoreDownFailsFast(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok, rec := f.issue(t)
	ctx := context.Background()
	f.loader.mu.Lock()
	f.loader.err = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	f.loader.mu.Unlock()
	verify := func() error {
		_, err := f.v.Verify(ctx, &latchkey.VerifyRequest{Token: tok})
		return err
	}
	if err := verify(); err == nil || f.loader.loads.Load() != 1 {
		t.Fatalf("first miss with the store down: %v, %d loads", err, f.loader.loads.Load())
	}
	for range 5 {
		if err := verify(); err == nil {
			t.Fatal("a miss succeeded with the store down")
		}
	}
	if n := f.loader.loads.Load(); n != 1 {
		t.Errorf("%d loads within the second after the store was found down, want 1", n)
	}
	f.advance(1100 * time.Millisecond)
	if err := verify(); err == nil || f.loader.loads.Load() != 2 {
		t.Errorf("after a second, one read tries again: %v, %d loads", err, f.loader.loads.Load())
	}
	f.loader.mu.Lock()
	f.loader.err = nil
	f.loader.mu.Unlock()
	f.advance(1100 * time.Millisecond)
	if d, err := f.v.Verify(ctx, &latchkey.VerifyRequest{Token: tok}); err != nil || d.Code != latchkey.Valid {
		t.Fatalf("the store back: %s %v", d.Code, err)
	}
	// A store error that is not unreachability (a bug, a bad row) does not
	// make misses fail fast.
	f.loader.mu.Lock()
	f.loader.err = errString("bad row")
	f.loader.mu.Unlock()
	f.v.Invalidate(rec.ID)
	loads := f.loader.loads.Load()
	verify()
	verify()
	if n := f.loader.loads.Load() - loads; n != 2 {
		t.Errorf("%d loads for two misses on an internal error, want 2", n)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
