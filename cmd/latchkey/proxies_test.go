package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/httpapi"
	"github.com/latchkeyhq/latchkey/identity"
	"github.com/latchkeyhq/latchkey/tokens"
)

// requireService skips, or under LATCHKEY_REQUIRE_INTEGRATION=1 fails,
// when an outside service is missing.
func requireService(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("LATCHKEY_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("%s is required (LATCHKEY_REQUIRE_INTEGRATION=1) but not available", what)
	}
	t.Skipf("%s is not available; skipping (set LATCHKEY_REQUIRE_INTEGRATION=1 to make this a failure)", what)
}

// startGroup starts cmd in its own process group and kills the whole
// group at cleanup (nginx forks workers that would outlive the master).
func startGroup(t *testing.T, cmd *exec.Cmd) *syncBuffer {
	t.Helper()
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	return out
}

func freeAddr(t *testing.T) string { return freeAddrB(t) }

func freeAddrB(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitListening(t *testing.T, addr string, logs func() string) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up: %s", addr, logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// upstreamRecorder is the service behind the proxy: it records the
// headers of every request it gets.
type upstreamRecorder struct {
	mu   sync.Mutex
	last http.Header
	n    int
}

func (u *upstreamRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.last, u.n = r.Header.Clone(), u.n+1
	u.mu.Unlock()
	fmt.Fprint(w, "upstream ok")
}

func (u *upstreamRecorder) seen() (http.Header, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last, u.n
}

// proxyCase drives the same assertions through a real proxy.
func proxyCase(t *testing.T, start func(t *testing.T, listen, latchkeyAddr, upstream string)) {
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir, TrustedProxies: latchkey.LoopbackProxies}, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Shutdown(ctx) })
	c := &httpapi.Client{BaseURL: "http://" + d.addr, Token: readRoot(t, dir)}
	good, _ := c.CreateToken(ctx, tokens.CreateRequest{Subject: "billing-svc", Scopes: []string{"invoices:read"}})
	weak, _ := c.CreateToken(ctx, tokens.CreateRequest{Subject: "other", Scopes: []string{"reports:read"}})
	up := &upstreamRecorder{}
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	listen := freeAddr(t)
	start(t, listen, d.addr, strings.TrimPrefix(upSrv.URL, "http://"))

	get := func(tok string, hdr ...string) int {
		req, _ := http.NewRequest("GET", "http://"+listen+"/invoices/7", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// Allowed, with the identity reaching the upstream, and the client's
	// own X-Latchkey-* headers stripped.
	if code := get(good.Plaintext, "X-Latchkey-Subject", "root", "X-Latchkey-Token-Id", "AAAAAAAAAAAAAAAA", "X-Latchkey-Identity", "forged"); code != 200 {
		t.Fatalf("allowed request: HTTP %d", code)
	}
	h, n := up.seen()
	if h.Get("X-Latchkey-Token-Id") != good.ID || h.Get("X-Latchkey-Subject") != "billing-svc" || h.Get("X-Latchkey-Scopes") != "invoices:read" {
		t.Errorf("identity at the upstream: %v", h)
	}
	if h.Get("Authorization") != "" {
		t.Error("the credential reached the upstream")
	}
	v := &identity.Verifier{JWKSURL: "http://" + d.addr + "/.well-known/jwks.json", Audience: "forward-auth"}
	if cl, err := v.Verify(ctx, h.Get("X-Latchkey-Identity")); err != nil || cl.TokenID != good.ID || cl.Subject != "billing-svc" {
		t.Errorf("identity JWT at the upstream: %+v %v", cl, err)
	}
	// Denied: no token, a missing scope, a token revoked a moment ago. The
	// upstream never sees any of them.
	if code := get(""); code != 401 {
		t.Errorf("no token: HTTP %d, want 401", code)
	}
	if code := get(weak.Plaintext); code != 403 {
		t.Errorf("missing scope: HTTP %d, want 403", code)
	}
	if _, err := c.RevokeToken(ctx, good.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if code := get(good.Plaintext); code != 401 {
		t.Errorf("right after a revoke: HTTP %d, want 401", code)
	}
	if _, n2 := up.seen(); n2 != n {
		t.Errorf("the upstream saw %d denied requests", n2-n)
	}
	// Every decision is on record, with the end client's address.
	d.pipe.Flush(ctx)
	page, _ := c.ListAudit(ctx, latchkey.AuditFilter{Kind: latchkey.KindVerify, TokenID: good.ID})
	outcomes := map[string]bool{}
	for _, ev := range page.Events {
		outcomes[ev.Outcome] = true
		if ev.Action != "forward_auth" || ev.ClientIP != "127.0.0.1" || ev.Path != "/invoices/7" {
			t.Errorf("audit record %+v", ev)
		}
	}
	if !outcomes["VALID"] || !outcomes["REVOKED"] {
		t.Errorf("audit outcomes %v", outcomes)
	}
}

func TestNginxAuthRequest(t *testing.T) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		requireService(t, "nginx")
	}
	proxyCase(t, func(t *testing.T, listen, lk, upstream string) {
		prefix := t.TempDir()
		os.MkdirAll(filepath.Join(prefix, "tmp"), 0o700)
		conf, _ := os.ReadFile("testdata/nginx.conf")
		text := strings.NewReplacer("PREFIX", prefix, "LISTEN", listen, "LATCHKEY", lk, "UPSTREAM", upstream).Replace(string(conf))
		path := filepath.Join(prefix, "nginx.conf")
		os.WriteFile(path, []byte(text), 0o600)
		cmd := exec.Command(bin, "-p", prefix, "-c", path, "-e", filepath.Join(prefix, "error.log"))
		out := startGroup(t, cmd)
		waitListening(t, listen, func() string {
			b, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			return out.String() + string(b)
		})
	})
}

func TestCaddyForwardAuth(t *testing.T) {
	bin, err := exec.LookPath("caddy")
	if err != nil {
		requireService(t, "caddy")
	}
	proxyCase(t, func(t *testing.T, listen, lk, upstream string) {
		dir := t.TempDir()
		conf, _ := os.ReadFile("testdata/Caddyfile")
		text := strings.NewReplacer("LISTEN", listen, "LATCHKEY", lk, "UPSTREAM", upstream).Replace(string(conf))
		path := filepath.Join(dir, "Caddyfile")
		os.WriteFile(path, []byte(text), 0o600)
		cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		out := startGroup(t, cmd)
		waitListening(t, listen, out.String)
	})
}
