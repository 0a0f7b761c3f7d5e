package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// selfSigned writes a certificate for 127.0.0.1 and its key as PEM files.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "latchkey test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// serve --tls-cert/--tls-key serves HTTPS, and the CLI trusts a private CA
// through LATCHKEY_CA_FILE.
func TestServeTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := selfSigned(t, t.TempDir())
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir, TLSCert: cert, TLSKey: key}, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(ctx)
	root, _ := os.ReadFile(filepath.Join(dir, "root-token"))
	env := func(k string) string {
		return map[string]string{"LATCHKEY_ADDR": "https://" + d.addr, "LATCHKEY_TOKEN": strings.TrimSpace(string(root)),
			"LATCHKEY_CA_FILE": cert}[k]
	}
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"token", "list"}, nil, &out, &errb, env); code != 0 {
		t.Fatalf("token list over HTTPS: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "latchkey-root") {
		t.Errorf("token list over HTTPS printed %q", out.String())
	}
	noCA := func(k string) string {
		if k == "LATCHKEY_CA_FILE" {
			return ""
		}
		return env(k)
	}
	if code := run(ctx, []string{"token", "list"}, nil, &out, &errb, noCA); code != exitUnreachable {
		t.Errorf("an untrusted certificate was accepted: exit %d", code)
	}
	if strings.Contains(logs.String(), "clear text") {
		t.Error("HTTPS serving warned about clear text")
	}
}

func TestPlainHTTPOnNetworkWarns(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	d, err := startDaemon(ctx, serveConfig{Listen: "0.0.0.0:0", DataDir: t.TempDir()}, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d.Shutdown(ctx)
	if !strings.Contains(logs.String(), "clear text") {
		t.Errorf("no warning for plain HTTP on 0.0.0.0: %s", logs.String())
	}
	logs = syncBuffer{}
	logger = slog.New(slog.NewTextHandler(&logs, nil))
	d, err = startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: t.TempDir()}, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d.Shutdown(ctx)
	if strings.Contains(logs.String(), "clear text") {
		t.Error("a loopback listener warned about clear text")
	}
}

func TestDataDirModes(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	var stderr syncBuffer
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir}, logger, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	d.Shutdown(ctx)
	for name, want := range map[string]os.FileMode{".": 0o700, "server.key": 0o600, "root-token": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s has mode %v, want %v", name, got, want)
		}
	}
	root, _ := os.ReadFile(filepath.Join(dir, "root-token"))
	if !strings.Contains(stderr.String(), strings.TrimSpace(string(root))) {
		t.Error("the root token was not printed on first start")
	}
	// Printed once: a second start says nothing about it.
	stderr = syncBuffer{}
	d, err = startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir}, logger, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	d.Shutdown(ctx)
	if strings.Contains(stderr.String(), "lk_") {
		t.Error("the root token was printed again on a later start")
	}
}

// The real binary, stopped by a real SIGTERM, exits 0 having written every
// audit record it accepted.
func TestSIGTERMDrainsAudit(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "latchkey")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	srv := exec.Command(bin, "serve", "--listen", addr, "--data-dir", dir)
	var logs syncBuffer
	srv.Stdout, srv.Stderr = &logs, &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	env := func(k string) string {
		return map[string]string{"LATCHKEY_ADDR": addr, "LATCHKEY_DATA_DIR": dir}[k]
	}
	var out, errb bytes.Buffer
	deadline := time.Now().Add(10 * time.Second)
	for run(ctx, []string{"token", "list"}, nil, &out, &errb, env) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("server did not come up: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	const n = 200
	for i := 0; i < n; i++ {
		run(ctx, []string{"verify", "lk_garbage"}, nil, &out, &errb, env)
	}
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := srv.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "lost=0") {
		t.Errorf("shutdown log does not report a full drain:\n%s", logs.String())
	}
	// Every attempt is in the database.
	ts := startServer(t, dir)
	page, err := ts.client(ts.root).ListAudit(ctx, latchkey.AuditFilter{Outcome: "MALFORMED", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != n {
		t.Errorf("%d MALFORMED records after SIGTERM, want %d", len(page.Events), n)
	}
}

// Starting and stopping the daemon leaves no goroutine behind.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	for i := 0; i < 3; i++ {
		ts := startServer(t, t.TempDir())
		c := ts.client(ts.root)
		c.ListTokens(ctx, latchkey.TokenFilter{})
		ts.stop(t)
	}
	var after int
	for i := 0; i < 50; i++ {
		runtime.GC()
		if after = runtime.NumGoroutine(); after <= before+1 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Errorf("goroutines: %d before, %d after three start/stop cycles\n%s", before, after, buf[:runtime.Stack(buf, true)])
}

func TestOneServerPerDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := startServer(t, dir)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir}, logger, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "another latchkey server") {
		t.Fatalf("a second server on the same data directory: %v, want a refusal", err)
	}
	ts.stop(t)
	d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir}, logger, io.Discard)
	if err != nil {
		t.Fatalf("after the first stopped: %v", err)
	}
	d.Shutdown(ctx)
}
