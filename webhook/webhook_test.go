package webhook_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/webhook"
)

var secret = []byte("0123456789abcdef-webhook-secret")

func TestSignVerify(t *testing.T) {
	body := []byte(`{"id":1}`)
	now := time.Unix(1_800_000_000, 0)
	h := webhook.Sign(secret, now, body)
	if err := webhook.Verify(secret, h, body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("a fresh signature: %v", err)
	}
	if err := webhook.Verify(secret, h, []byte(`{"id":2}`), now, 5*time.Minute); err != webhook.ErrBadSignature {
		t.Errorf("a changed body: %v", err)
	}
	if err := webhook.Verify([]byte("another secret of some length"), h, body, now, 5*time.Minute); err != webhook.ErrBadSignature {
		t.Errorf("another secret: %v", err)
	}
	if err := webhook.Verify(secret, h, body, now.Add(time.Hour), 5*time.Minute); err != webhook.ErrStale {
		t.Errorf("a replay an hour later: %v", err)
	}
	for _, bad := range []string{"", "t=x,v1=00", "v1=abc", "t=1800000000"} {
		if err := webhook.Verify(secret, bad, body, now, 5*time.Minute); err == nil {
			t.Errorf("header %q verified", bad)
		}
	}
}

type receiver struct {
	mu      sync.Mutex
	events  []webhook.Event
	ids     []string
	failFor map[int64]int // event id → attempts to refuse
	calls   atomic.Int64
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.calls.Add(1)
	body, _ := io.ReadAll(r.Body)
	if err := webhook.Verify(secret, r.Header.Get(webhook.SignatureHeader), body, time.Now(), time.Minute); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var ev webhook.Event
	json.Unmarshal(body, &ev)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.failFor[ev.ID] > 0 {
		rc.failFor[ev.ID]--
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	if r.Header.Get(webhook.EventHeader) != ev.Type {
		http.Error(w, "event header", http.StatusBadRequest)
		return
	}
	rc.events = append(rc.events, ev)
	rc.ids = append(rc.ids, r.Header.Get(webhook.DeliveryHeader))
}

func (rc *receiver) got() []webhook.Event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]webhook.Event(nil), rc.events...)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func adminEvent(action, tok string) latchkey.AuditEvent {
	return latchkey.AuditEvent{Time: time.Now(), Kind: latchkey.KindAdmin, Action: action, TokenID: tok, Outcome: latchkey.OutcomeOK,
		Actor: "root", Detail: json.RawMessage(`{"k":"v"}`)}
}

func TestDispatcher(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "w.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Older history is not sent to a new endpoint.
	db.AppendAudit(ctx, []latchkey.AuditEvent{adminEvent(latchkey.ActionTokenCreate, "Old0000000000000")})
	rc := &receiver{failFor: map[int64]int{}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	cfg := webhook.Config{URLs: []string{srv.URL}, Secret: secret, Backoff: 5 * time.Millisecond, Poll: 10 * time.Millisecond, MaxAttempts: 3}
	d, err := webhook.New(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	d.Start()
	// The starting point is settled when Start returns: events written
	// right after it are not skipped by a loop that has not run yet.
	if v, ok, _ := db.GetSetting(ctx, "webhook_cursor:"+cursorSuffix(srv.URL)); !ok || v == "" {
		t.Fatal("Start returned before the new URL's cursor was recorded")
	}
	evs := []latchkey.AuditEvent{
		adminEvent(latchkey.ActionTokenCreate, "Tok0000000000001"),
		{Time: time.Now(), Kind: latchkey.KindVerify, Action: latchkey.ActionVerify, Outcome: "VALID", TokenID: "Tok0000000000001"},
		adminEvent(latchkey.ActionTokenRevoke, "Tok0000000000001"),
		{Time: time.Now(), Kind: latchkey.KindDetect, Action: latchkey.ActionSourceBlocked, Outcome: "OK", ClientIP: "203.0.113.9"},
		adminEvent(latchkey.ActionTokenSuspend, "Tok0000000000002"),
	}
	db.AppendAudit(ctx, evs)
	rc.mu.Lock()
	rc.failFor[evs[2].Seq] = 2 // token.revoked fails twice, then goes through
	rc.failFor[evs[4].Seq] = 5 // token.suspended fails for good (3 attempts)
	rc.mu.Unlock()
	waitFor(t, func() bool { return d.Stats()["failed"] == 1 })
	got := rc.got()
	var types []string
	for _, e := range got {
		types = append(types, e.Type)
	}
	want := []string{"token.created", "token.revoked", "source.blocked"}
	if len(types) != len(want) {
		t.Fatalf("delivered %v, want %v", types, want)
	}
	for i := range want {
		if types[i] != want[i] {
			t.Fatalf("delivered %v, want %v (in order, no verification events)", types, want)
		}
	}
	if got[0].TokenID != "Tok0000000000001" || got[0].Actor != "root" || string(got[0].Detail) != `{"k":"v"}` || got[2].ClientIP != "203.0.113.9" {
		t.Errorf("event bodies %+v", got)
	}
	st := d.Stats()
	if st["delivered"] != 3 || st["retried"] != 4 || st["failed"] != 1 {
		t.Errorf("stats %v, want 3 delivered, 4 retries (2 + 2), 1 given up", st)
	}
	d.Close()
	// After a restart, only what came since is delivered.
	db.AppendAudit(ctx, []latchkey.AuditEvent{adminEvent(latchkey.ActionTokenRotate, "Tok0000000000003")})
	d2, _ := webhook.New(cfg, db)
	d2.Start()
	defer d2.Close()
	waitFor(t, func() bool { return len(rc.got()) == 4 })
	if g := rc.got(); g[3].Type != "token.rotated" {
		t.Errorf("after restart: %+v", g[3])
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(rc.got()); n != 4 {
		t.Errorf("%d deliveries after restart: a delivered event was sent again", n)
	}
}

func cursorSuffix(url string) string {
	// The dispatcher's cursor key; kept in step with webhook.cursorKey.
	return webhook.CursorKey(url)[len("webhook_cursor:"):]
}

func TestConfigChecks(t *testing.T) {
	if _, err := webhook.New(webhook.Config{URLs: []string{"https://x"}, Secret: []byte("short")}, nil); err == nil {
		t.Error("a short secret was accepted")
	}
	if _, err := webhook.New(webhook.Config{URLs: []string{"ftp://x"}, Secret: secret}, nil); err == nil {
		t.Error("an ftp URL was accepted")
	}
	if _, err := webhook.New(webhook.Config{URLs: []string{"https://x"}, Secret: secret, Types: []string{"token.nope"}}, nil); err == nil {
		t.Error("an unknown event type was accepted")
	}
}
