package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/latchkeyhq/latchkey/secret"
)

const serveDoc = `
Run the latchkey server: the REST API on --listen, tokens and the audit
log in an embedded SQLite database in --data-dir, or, with --database
postgres://..., in PostgreSQL shared by any number of nodes.

On first start with an empty data directory it creates the server key
(<data-dir>/server.key, mode 0600) and a root token with scope
latchkey:admin. The root token is printed once on standard error and saved
to <data-dir>/root-token (mode 0600); client commands on this machine use
it when LATCHKEY_TOKEN is not set.

Each flag has an environment twin; the flag wins. LATCHKEY_SERVER_KEY
(base64 or hex, at least 32 bytes) replaces the key file.

Expiry policy: --default-ttl is given to tokens created without ttl or
expires_at; --max-lifetime refuses tokens that would live longer;
--require-expiry refuses tokens that would never expire. --rotate-after
sets the age at which a token is due for rotation (verify answers with a
rotation_due warning; "token list --rotation-due" lists them). Durations
take s, m, h, d (days) and w (weeks): 30d, 12h, 1h30m.

--trusted-proxy lists the proxies (addresses or networks, repeatable or
comma-separated) whose X-Forwarded-For header is believed when working out
the client's address; from any other peer the header is ignored. Forward
auth believes the original-request headers (X-Original-*, X-Forwarded-
Method/-Uri/-Host) from these peers only, and refuses them from any other.
Default: loopback only.

Audit: every attempt is recorded. In the default durability mode, async,
records are committed in batches (--audit-batch-size records or every
--audit-flush-interval, whichever comes first) and a hard crash can lose
at most the last flush interval; in sync mode a verification answers only
once its record is committed. A full queue (--audit-queue-size) slows
verifications down rather than dropping records. --audit-retention deletes
records older than that (writing them to --audit-archive-dir first, when
set); the hash chain stays verifiable from its anchor.

Cluster (--database): every node must have the same server key
(LATCHKEY_SERVER_KEY) and a distinct --node name (a second process given
the name of a live node refuses to start; a crashed node's name is free
again 3 s after its last heartbeat). A change on any node is
announced to the others at once (LISTEN/NOTIFY) and read from the change
log every --poll-interval as a backstop; no cached token is served longer
than --cache-max-staleness without re-reading the store, so while the
database is unreachable, cached tokens are served up to that bound and
unknown ones are refused (503).

Detector (on by default; --detect=false turns it off): a source with
--detect-source-failures failed attempts (default 20/1m) is blocked for
--detect-block-for (default 15m); a token presented with wrong secrets
--detect-secret-mismatch times (10/10m) raises an alert (ids are public:
with --detect-secret-mismatch-action suspend or revoke, the token is acted
on only after ten times the source-failure count from unblocked sources,
and never when it holds a latchkey: scope); a token used from
--detect-network-spread networks (10/10m) or refused IP_NOT_ALLOWED
--detect-ip-not-allowed times (10/10m) is suspended. Each token rule's
action is alert, suspend or revoke. "latchkey blocks list|remove" shows
and lifts blocks. --leak-keys names a JSON file of secret-scanner public
keys (GitHub's format) for signed POST /v1/leaks reports.

SIGINT or SIGTERM stops accepting requests, finishes those in flight and
writes every queued audit record and last-use time before exiting.`

// newLogger is the server's logger: logfmt text, or one JSON object per
// line for log shippers.
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// shutdownTimeout bounds a graceful stop: requests in flight, the audit
// queue, the last-use times.
const shutdownTimeout = 30 * time.Second

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	cfg, code := readServeConfig(args, getenv, stdout, stderr)
	if code >= 0 {
		return code
	}
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel)) // checked by its setting
	logger := newLogger(stderr, cfg.LogFormat, level)
	d, err := startDaemon(ctx, cfg, logger, stderr)
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	failed := d.serve(ctx)
	logger.Info("shutting down: draining requests and the audit queue")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := d.Shutdown(sctx); err != nil || failed {
		logger.Error("shutdown", "err", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}

// serve waits for ctx (SIGINT, SIGTERM) or for a listener or loop to fail
// (the node's name taken by another process), reloading the gateway's
// routes on SIGHUP. It reports whether something failed.
func (d *daemon) serve(ctx context.Context) (failed bool) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return false
		case <-d.done:
			d.logger.Error("stopping", "err", d.cause())
			return true
		case <-hup:
			d.reloadGateway()
		}
	}
}

// loadLeakKeys reads secret-scanner public keys in GitHub's format:
// {"public_keys": [{"key_identifier": "...", "key": "-----BEGIN PUBLIC KEY-----..."}]}.
func loadLeakKeys(path string) (map[string]*ecdsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		PublicKeys []struct {
			KeyIdentifier string `json:"key_identifier"`
			Key           string `json:"key"`
		} `json:"public_keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	keys := map[string]*ecdsa.PublicKey{}
	for _, k := range doc.PublicKeys {
		blk, _ := pem.Decode([]byte(k.Key))
		if blk == nil {
			return nil, fmt.Errorf("%s: key %q is not PEM", path, k.KeyIdentifier)
		}
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: key %q: %v", path, k.KeyIdentifier, err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%s: key %q is not an ECDSA key", path, k.KeyIdentifier)
		}
		keys[k.KeyIdentifier] = ec
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s lists no public keys", path)
	}
	return keys, nil
}

func loadKey(cfg serveConfig, logger *slog.Logger) ([]byte, error) {
	if cfg.ServerKey != "" {
		k, err := secret.ParseKey(cfg.ServerKey)
		if err != nil {
			return nil, fmt.Errorf("LATCHKEY_SERVER_KEY: %w", err)
		}
		return k, nil
	}
	path := filepath.Join(cfg.DataDir, secret.KeyFileName)
	k, created, err := secret.LoadOrCreateKeyFile(path, rand.Reader)
	if err != nil {
		return nil, err
	}
	if created {
		logger.Info("created the server key; back it up: without it no token can be verified", "path", path)
	}
	return k, nil
}

// writeSecretFile writes data readable by the owner only.
func writeSecretFile(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// isLoopbackAddr reports whether a bound host:port is on this machine only.
func isLoopbackAddr(hostport string) bool {
	ap, err := netip.ParseAddrPort(hostport)
	return err == nil && ap.Addr().IsLoopback()
}

// isLoopbackURL reports whether a client address points at this machine.
func isLoopbackURL(addr string) bool {
	host := addr
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	host = strings.SplitN(host, "/", 2)[0]
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
