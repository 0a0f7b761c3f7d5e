package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey/client"
)

// latchkey gateway as a process: SIGHUP swaps the routes without dropping
// a request in flight, and an invalid file is refused with the old routes
// kept.
func TestGatewaySIGHUP(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			w.(http.Flusher).Flush()
			time.Sleep(700 * time.Millisecond)
		}
		fmt.Fprintf(w, "upstream %s", r.URL.Path)
	}))
	defer up.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "gateway.yaml")
	write := func(scope string) {
		os.WriteFile(conf, []byte(fmt.Sprintf("routes:\n  - name: api\n    path: /\n    upstream: %s\n    scopes: [%q]\n", up.URL, scope)), 0o600)
	}
	write("api:read")
	gwAddr, apiAddr := freeAddr(t), freeAddr(t)
	cmd, _, logs := startChildArgs(t, "gateway", "--config", conf, "--listen", gwAddr, "--api-listen", apiAddr, "--data-dir", dir)
	waitListening(t, gwAddr, logs.String)
	c := &client.Client{BaseURL: "http://" + apiAddr, Token: readRoot(t, dir)}
	reader, _ := c.CreateToken(ctx, client.CreateRequest{Scopes: []string{"api:read"}})
	writer, _ := c.CreateToken(ctx, client.CreateRequest{Scopes: []string{"api:write"}})
	get := func(tok, path string) int {
		req, _ := http.NewRequest("GET", "http://"+gwAddr+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if get(reader.Plaintext, "/x") != 200 || get(writer.Plaintext, "/x") != 403 {
		t.Fatal("initial routes not in force")
	}
	// A slow request in flight across the reload.
	done := make(chan string)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+gwAddr+"/slow", nil)
		req.Header.Set("Authorization", "Bearer "+reader.Plaintext)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(bufio.NewReader(resp.Body))
		resp.Body.Close()
		done <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	time.Sleep(100 * time.Millisecond)
	write("api:write")
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Contains(logs.String(), "routes reloaded") })
	if got := <-done; got != "200 upstream /slow" {
		t.Errorf("the request in flight across the reload: %q", got)
	}
	if get(writer.Plaintext, "/x") != 200 || get(reader.Plaintext, "/x") != 403 {
		t.Error("the new routes are not in force after SIGHUP")
	}
	// An invalid file is refused; the routes stay.
	os.WriteFile(conf, []byte("routes: [{name: x, path: nope}]"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Contains(logs.String(), "refused") })
	if get(writer.Plaintext, "/x") != 200 {
		t.Error("an invalid file changed the routes")
	}
	// The gateway serves the JWKS too.
	resp, err := http.Get("http://" + gwAddr + "/.well-known/jwks.json")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("jwks on the gateway: %v", err)
	}
	if err == nil {
		resp.Body.Close()
	}
}

// A route file that does not load stops the start before anything is
// made: no data directory, no server key.
func TestGatewayBadRouteFileCreatesNothing(t *testing.T) {
	t.Parallel()
	conf := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(conf, []byte("routes:\n  - path: [not a path\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "data")
	var errb bytes.Buffer
	code := run(ctx, []string{"gateway", "--config", conf, "--data-dir", dir, "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"},
		nil, io.Discard, &errb, func(string) string { return "" })
	if code == exitOK {
		t.Fatalf("a bad route file was accepted: %s", errb.String())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the data directory was made (%v) though the route file did not load", err)
	}
}
