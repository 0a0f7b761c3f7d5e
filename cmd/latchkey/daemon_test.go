package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/postgres"
	"github.com/latchkeyhq/latchkey/tokens"
)

// Every goroutine the daemon starts ends with Shutdown: the listeners,
// the loops (retention, rotation due, activity, sessions), the gateway
// and the components it closes. Not parallel: it counts the process's
// goroutines.
func TestDaemonShutdownLeavesNoGoroutines(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("up")) }))
	defer up.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "routes.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf("routes:\n  - name: api\n    path: /\n    upstream: %s\n    scopes: [\"api:read\"]\n", up.URL)), 0o600)
	hc := &http.Client{Transport: &http.Transport{}}
	before := runtime.NumGoroutine()

	d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir, GatewayConfig: conf, GatewayListen: "127.0.0.1:0",
		AuditRetention: 24 * time.Hour, Policy: tokens.Policy{RotationAge: 24 * time.Hour}}, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := &client.Client{BaseURL: "http://" + d.addr, Token: readRoot(t, dir), HTTP: hc}
	tok, err := c.CreateToken(ctx, client.CreateRequest{Scopes: []string{"api:read"}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://"+d.gwAddr+"/x", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Plaintext)
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("through the gateway: %v %v", resp, err)
	}
	resp.Body.Close()
	if during := runtime.NumGoroutine(); during <= before {
		t.Fatalf("%d goroutines while serving, %d before: the count cannot tell a leak", during, before)
	}

	if err := d.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	hc.CloseIdleConnections()
	up.CloseClientConnections()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Shutdown, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond) // polling for goroutines to exit, not waiting for time to pass
	}
}

// Shutdown honours its deadline: a background loop that ignores its
// context does not hold it up.
func TestDaemonShutdownDeadline(t *testing.T) {
	t.Parallel()
	d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: t.TempDir()}, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	stuck := make(chan struct{})
	defer close(stuck)
	d.loops.Go(func() error { <-stuck; return nil }) // deaf to its context
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	returned := make(chan error, 1)
	go func() { returned <- d.Shutdown(sctx) }()
	select {
	case err := <-returned:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown with a stuck loop: %v, want the deadline's error", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Shutdown did not return after its deadline")
	}
}

// follower is a PostgreSQL daemon's change feed, for the cluster tests
// that watch its connection.
func follower(d *daemon) *postgres.Follower { return d.feed.(*postgres.Follower) }
