package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/detect"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/gateway"
	"github.com/latchkeyhq/latchkey/httpapi"
	"github.com/latchkeyhq/latchkey/identity"
	"github.com/latchkeyhq/latchkey/internal/metrics"
	"github.com/latchkeyhq/latchkey/postgres"
	lkredis "github.com/latchkeyhq/latchkey/redis"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/ui"
	"github.com/latchkeyhq/latchkey/verify"
	"github.com/latchkeyhq/latchkey/webhook"
)

// serveConfig is everything serve reads from flags and the environment.
type serveConfig struct {
	Listen    string
	DataDir   string
	LogLevel  string
	TLSCert   string
	TLSKey    string
	ServerKey string        // LATCHKEY_SERVER_KEY; empty: use the key file
	Database  string        // postgres://... ; empty: SQLite in DataDir
	Node      string        // names this node in audit records (its hash chain); default: the host name
	Poll      time.Duration // change-log poll interval (PostgreSQL)
	// Redis, when set, shares rate limits and detector windows across
	// nodes; RedisFailClosed refuses rate-limited tokens while it is down
	// (default: each node counts alone meanwhile).
	Redis           string
	RedisPrefix     string
	RedisFailClosed bool
	Staleness       time.Duration // longest a cached entry is served without a reload

	Policy         tokens.Policy
	TouchInterval  time.Duration
	TrustedProxies latchkey.TrustedProxies

	// Audit pipeline (zero: the pipeline's defaults).
	AuditSync          bool // durability mode sync
	AuditBatch         int
	AuditFlush         time.Duration
	AuditQueue         int
	AuditRetention     time.Duration // 0: keep forever
	AuditArchiveDir    string
	AuditPruneInterval time.Duration // default 1h

	Detect   detect.Config
	LeakKeys map[string]*ecdsa.PublicKey

	// The dashboard (/ui/): on unless NoUI; SessionTTL 0 is the default.
	NoUI       bool
	SessionTTL time.Duration

	Webhooks      []string
	WebhookSecret string
	WebhookTypes  []string

	GatewayConfig     string // route file; empty: no gateway
	GatewayListen     string // gateway listener (default 127.0.0.1:8080)
	IdentityKeyPeriod time.Duration
}

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
(LATCHKEY_SERVER_KEY) and a distinct --node name. A change on any node is
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

func cmdServe(ctx context.Context, args []string, stderr io.Writer, getenv env) int {
	cfg := serveConfig{ServerKey: getenv("LATCHKEY_SERVER_KEY")}
	var pollErr error
	fs := newFlags("serve", "serve [flags]", serveDoc, stderr, stderr)
	fs.StringVar(&cfg.Listen, "listen", envOr(getenv, "LATCHKEY_LISTEN", "127.0.0.1:7480"), "address to listen on (`host:port`) [LATCHKEY_LISTEN]")
	fs.StringVar(&cfg.DataDir, "data-dir", envOr(getenv, "LATCHKEY_DATA_DIR", "./latchkey-data"), "data directory: database, server key, root token [LATCHKEY_DATA_DIR]")
	fs.StringVar(&cfg.LogLevel, "log-level", envOr(getenv, "LATCHKEY_LOG_LEVEL", "info"), "debug, info, warn or error [LATCHKEY_LOG_LEVEL]")
	fs.StringVar(&cfg.Database, "database", getenv("LATCHKEY_DATABASE"), "PostgreSQL `URL` (postgres://user@host/db) for a cluster of nodes; default: SQLite in --data-dir [LATCHKEY_DATABASE]")
	durVar(fs, &pollErr, &cfg.Poll, "poll-interval", getenv, "with --database: how often each node reads the change log, the bound for a node that missed a notification (default 1s)")
	durVar(fs, &pollErr, &cfg.Staleness, "cache-max-staleness", getenv, "longest a cached token is served without re-reading the store (default 30s)")
	fs.StringVar(&cfg.Redis, "redis", getenv("LATCHKEY_REDIS"), "Redis `URL` (redis://host:6379/0) where the nodes of a cluster count rate limits and detector windows together; default: each node counts its own [LATCHKEY_REDIS]")
	fs.StringVar(&cfg.RedisPrefix, "redis-prefix", envOr(getenv, "LATCHKEY_REDIS_PREFIX", "latchkey:"), "prefix of every Redis key latchkey writes [LATCHKEY_REDIS_PREFIX]")
	redisFailure := envOr(getenv, "LATCHKEY_REDIS_FAILURE", "local")
	fs.StringVar(&redisFailure, "redis-failure", redisFailure, "while Redis is unreachable: local (each node enforces rate limits alone) or closed (rate-limited tokens are refused, 503) [LATCHKEY_REDIS_FAILURE]")
	fs.StringVar(&cfg.Node, "node", getenv("LATCHKEY_NODE"), "this node's `name` in audit records; each node keeps its own hash chain, so give every node of a cluster a distinct name (default: the host name) [LATCHKEY_NODE]")
	fs.StringVar(&cfg.TLSCert, "tls-cert", getenv("LATCHKEY_TLS_CERT"), "TLS certificate `file` (PEM); serve HTTPS with --tls-key [LATCHKEY_TLS_CERT]")
	fs.StringVar(&cfg.TLSKey, "tls-key", getenv("LATCHKEY_TLS_KEY"), "TLS private key `file` (PEM) [LATCHKEY_TLS_KEY]")
	defTTL := durFlag(fs, "default-ttl", getenv, "LATCHKEY_DEFAULT_TTL", "expiry given to tokens created without one, e.g. 90d (default: none) [LATCHKEY_DEFAULT_TTL]")
	maxLife := durFlag(fs, "max-lifetime", getenv, "LATCHKEY_MAX_LIFETIME", "refuse tokens that would live longer than this, e.g. 1y is 365d (default: no cap) [LATCHKEY_MAX_LIFETIME]")
	rotAfter := durFlag(fs, "rotate-after", getenv, "LATCHKEY_ROTATE_AFTER", "age at which a token is due for rotation, e.g. 90d (default: no rotation policy) [LATCHKEY_ROTATE_AFTER]")
	touch := durFlag(fs, "last-used-interval", getenv, "LATCHKEY_LAST_USED_INTERVAL", "write each token's last_used_at at most once per this interval (default 1m) [LATCHKEY_LAST_USED_INTERVAL]")
	fs.BoolVar(&cfg.Policy.RequireExpiry, "require-expiry", getenv("LATCHKEY_REQUIRE_EXPIRY") == "true" || getenv("LATCHKEY_REQUIRE_EXPIRY") == "1", "refuse tokens that never expire [LATCHKEY_REQUIRE_EXPIRY=true]")
	durability := envOr(getenv, "LATCHKEY_AUDIT_DURABILITY", "async")
	fs.StringVar(&durability, "audit-durability", durability, "async (batched; a crash loses at most one flush interval) or sync (answer only once recorded) [LATCHKEY_AUDIT_DURABILITY]")
	fs.IntVar(&cfg.AuditBatch, "audit-batch-size", envInt(getenv, "LATCHKEY_AUDIT_BATCH_SIZE", 512), "most audit records per transaction [LATCHKEY_AUDIT_BATCH_SIZE]")
	flush := durFlag(fs, "audit-flush-interval", getenv, "LATCHKEY_AUDIT_FLUSH_INTERVAL", "longest a record waits before it is committed (default 50ms) [LATCHKEY_AUDIT_FLUSH_INTERVAL]")
	fs.IntVar(&cfg.AuditQueue, "audit-queue-size", envInt(getenv, "LATCHKEY_AUDIT_QUEUE_SIZE", 16384), "records that may wait; when full, verifications wait (never dropped) [LATCHKEY_AUDIT_QUEUE_SIZE]")
	retention := durFlag(fs, "audit-retention", getenv, "LATCHKEY_AUDIT_RETENTION", "delete audit records older than this, e.g. 90d (default: keep all) [LATCHKEY_AUDIT_RETENTION]")
	fs.StringVar(&cfg.AuditArchiveDir, "audit-archive-dir", getenv("LATCHKEY_AUDIT_ARCHIVE_DIR"), "with --audit-retention, write pruned records here as JSON Lines first [LATCHKEY_AUDIT_ARCHIVE_DIR]")
	detectOn := envOr(getenv, "LATCHKEY_DETECT", "true") != "false"
	fs.BoolVar(&detectOn, "detect", detectOn, "run the detector (blocks, alerts, automatic suspension) [LATCHKEY_DETECT=false to turn off]")
	dc := &cfg.Detect
	var flagErr error
	ruleFlag(fs, &flagErr, &dc.SourceFailures, "detect-source-failures", getenv, "failed attempts from one source that block it, as count/window (default 20/1m)")
	durVar(fs, &flagErr, &dc.BlockFor, "detect-block-for", getenv, "how long a source stays blocked (default 15m)")
	ruleFlag(fs, &flagErr, &dc.SecretMismatch, "detect-secret-mismatch", getenv, "wrong secrets for one real token id that fire the leak rule (default 10/10m)")
	actionFlag(fs, &dc.SecretMismatchAction, "detect-secret-mismatch-action", getenv, "alert",
		". Token ids are public, so anyone can send wrong secrets for one: suspend or revoke acts only after 10x --detect-source-failures wrong secrets from unblocked sources in the window (no single source gets that far), and never on a token holding a latchkey: scope")
	ruleFlag(fs, &flagErr, &dc.NetworkSpread, "detect-network-spread", getenv, "distinct networks (/24, /48) one token may be used from (default 10/10m)")
	actionFlag(fs, &dc.NetworkSpreadAction, "detect-network-spread-action", getenv, "suspend", "")
	ruleFlag(fs, &flagErr, &dc.IPNotAllowed, "detect-ip-not-allowed", getenv, "IP_NOT_ALLOWED refusals of one token that fire (default 10/10m)")
	actionFlag(fs, &dc.IPNotAllowedAction, "detect-ip-not-allowed-action", getenv, "suspend", "")
	leakKeys := getenv("LATCHKEY_LEAK_KEYS")
	fs.StringVar(&leakKeys, "leak-keys", leakKeys, "JSON `file` of secret-scanner public keys ({\"public_keys\":[{\"key_identifier\",\"key\"}]}, as GitHub publishes) [LATCHKEY_LEAK_KEYS]")
	fs.StringVar(&cfg.GatewayConfig, "gateway-config", getenv("LATCHKEY_GATEWAY_CONFIG"), "run the gateway with this route `file` (YAML); SIGHUP reloads it [LATCHKEY_GATEWAY_CONFIG]")
	fs.StringVar(&cfg.GatewayListen, "gateway-listen", envOr(getenv, "LATCHKEY_GATEWAY_LISTEN", "127.0.0.1:8080"), "address the gateway listens on [LATCHKEY_GATEWAY_LISTEN]")
	durVar(fs, &flagErr, &cfg.IdentityKeyPeriod, "identity-key-period", getenv, "how often the identity JWT signing key rotates (default 24h)")
	uiOn := envOr(getenv, "LATCHKEY_UI", "true") != "false"
	fs.BoolVar(&uiOn, "ui", uiOn, "serve the dashboard at /ui/ [LATCHKEY_UI=false to turn off]")
	durVar(fs, &flagErr, &cfg.SessionTTL, "ui-session-ttl", getenv, "how long a dashboard sign-in lasts, never beyond its token's expiry (default 12h)")
	var hooks, hookTypes strs
	fs.Var(&hooks, "webhook", "POST events (token.created, token.revoked, source.blocked, leak.reported, ...) to this `URL`; repeatable [LATCHKEY_WEBHOOKS, comma-separated]")
	cfg.WebhookSecret = getenv("LATCHKEY_WEBHOOK_SECRET")
	fs.StringVar(&cfg.WebhookSecret, "webhook-secret", cfg.WebhookSecret, "HMAC key signing webhook deliveries, at least 16 bytes [LATCHKEY_WEBHOOK_SECRET]")
	fs.Var(&hookTypes, "webhook-event", "send only this event `type`; repeatable (default: all) [LATCHKEY_WEBHOOK_EVENTS, comma-separated]")
	var proxies strs
	fs.Var(&proxies, "trusted-proxy", "proxy `address or network` whose X-Forwarded-For is believed; repeatable (default: loopback) [LATCHKEY_TRUSTED_PROXIES, comma-separated]")
	if _, code := parse(fs, args, 0); code >= 0 {
		return code
	}
	cfg.NoUI = !uiOn
	for _, d := range []*durValue{defTTL, maxLife, rotAfter, touch, flush, retention} {
		if d.err != nil {
			fmt.Fprintf(stderr, "latchkey serve: %v\n", d.err)
			return exitUsage
		}
	}
	cfg.Policy.DefaultTTL, cfg.Policy.MaxLifetime, cfg.Policy.RotationAge = defTTL.d, maxLife.d, rotAfter.d
	cfg.TouchInterval = touch.d
	cfg.AuditFlush, cfg.AuditRetention = flush.d, retention.d
	switch durability {
	case "async":
	case "sync":
		cfg.AuditSync = true
	default:
		fmt.Fprintf(stderr, "latchkey serve: --audit-durability %q: want async or sync\n", durability)
		return exitUsage
	}
	if cfg.AuditBatch < 1 || cfg.AuditQueue < 1 {
		fmt.Fprintln(stderr, "latchkey serve: --audit-batch-size and --audit-queue-size must be positive")
		return exitUsage
	}
	if flagErr == nil {
		flagErr = pollErr
	}
	if flagErr != nil {
		fmt.Fprintf(stderr, "latchkey serve: %v\n", flagErr)
		return exitUsage
	}
	switch redisFailure {
	case "local":
	case "closed":
		cfg.RedisFailClosed = true
	default:
		fmt.Fprintf(stderr, "latchkey serve: --redis-failure %q: want local or closed\n", redisFailure)
		return exitUsage
	}
	if cfg.Redis != "" {
		if _, err := lkredis.New(cfg.Redis, cfg.RedisPrefix); err != nil {
			fmt.Fprintf(stderr, "latchkey serve: --redis: %v\n", err)
			return exitUsage
		}
	}
	cfg.Detect.Off = !detectOn
	if err := cfg.Detect.Validate(); err != nil {
		fmt.Fprintf(stderr, "latchkey serve: %s\n", latchkey.ErrorMessage(err))
		return exitUsage
	}
	if leakKeys != "" {
		keys, err := loadLeakKeys(leakKeys)
		if err != nil {
			fmt.Fprintf(stderr, "latchkey serve: --leak-keys: %v\n", err)
			return exitUsage
		}
		cfg.LeakKeys = keys
	}
	cfg.Webhooks = splitList(hooks, getenv("LATCHKEY_WEBHOOKS"))
	cfg.WebhookTypes = splitList(hookTypes, getenv("LATCHKEY_WEBHOOK_EVENTS"))
	if len(cfg.Webhooks) > 0 {
		if _, err := webhook.New(webhook.Config{URLs: cfg.Webhooks, Secret: []byte(cfg.WebhookSecret), Types: cfg.WebhookTypes}, nil); err != nil {
			fmt.Fprintf(stderr, "latchkey serve: --webhook: %s\n", latchkey.ErrorMessage(err))
			return exitUsage
		}
	}
	if cfg.AuditArchiveDir != "" && cfg.AuditRetention == 0 {
		fmt.Fprintln(stderr, "latchkey serve: --audit-archive-dir needs --audit-retention")
		return exitUsage
	}
	if err := cfg.Policy.Validate(); err != nil {
		fmt.Fprintf(stderr, "latchkey serve: %s\n", latchkey.ErrorMessage(err))
		return exitUsage
	}
	if len(proxies) == 0 && getenv("LATCHKEY_TRUSTED_PROXIES") != "" {
		proxies = strs{getenv("LATCHKEY_TRUSTED_PROXIES")}
	}
	cfg.TrustedProxies = latchkey.LoopbackProxies
	if len(proxies) > 0 {
		tp, err := latchkey.ParseTrustedProxies(proxies)
		if err != nil {
			fmt.Fprintf(stderr, "latchkey serve: --trusted-proxy: %s\n", latchkey.ErrorMessage(err))
			return exitUsage
		}
		cfg.TrustedProxies = tp
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		fmt.Fprintf(stderr, "latchkey serve: --log-level %q: want debug, info, warn or error\n", cfg.LogLevel)
		return exitUsage
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		fmt.Fprintln(stderr, "latchkey serve: --tls-cert and --tls-key go together")
		return exitUsage
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	d, err := startDaemon(ctx, cfg, logger, stderr)
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			waiting = false
		case <-hup:
			d.reloadGateway()
		}
	}
	logger.Info("shutting down: draining requests and the audit queue")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Shutdown(sctx); err != nil {
		logger.Error("shutdown", "err", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}

// durValue is a duration flag in latchkey's syntax ("30d", "1h30m").
type durValue struct {
	name string
	d    time.Duration
	err  error
}

func (v *durValue) String() string {
	if v == nil || v.d == 0 {
		return ""
	}
	return latchkey.Duration(v.d).String()
}

func (v *durValue) Set(s string) error {
	d, err := latchkey.ParseDuration(s)
	if err != nil {
		return errors.New(latchkey.ErrorMessage(err))
	}
	v.d, v.err = d, nil
	return nil
}

// durFlag defines a duration flag whose default comes from the
// environment variable envName. A bad environment value is reported by
// the caller (v.err) unless the flag overrides it.
func durFlag(fs *flag.FlagSet, name string, getenv env, envName, usage string) *durValue {
	v := &durValue{name: name}
	if s := getenv(envName); s != "" {
		if err := v.Set(s); err != nil {
			v.err = fmt.Errorf("%s: %v", envName, err)
		}
	}
	fs.Var(v, name, usage)
	return v
}

// ruleFlag defines a count/window flag ("20/1m") with an environment twin
// LATCHKEY_<NAME>.
// A bad environment value is stored in *errp, reported after parsing.
func ruleFlag(fs *flag.FlagSet, errp *error, r *detect.Rule, name string, getenv env, usage string) {
	envName := "LATCHKEY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	set := func(s string) error {
		n, w, ok := strings.Cut(s, "/")
		c, err := strconv.Atoi(strings.TrimSpace(n))
		if !ok || err != nil || c < 1 {
			return fmt.Errorf("want count/window, e.g. 20/1m")
		}
		d, err := latchkey.ParseDuration(strings.TrimSpace(w))
		if err != nil || d <= 0 {
			return fmt.Errorf("want count/window, e.g. 20/1m")
		}
		r.Count, r.Window = c, d
		return nil
	}
	if v := getenv(envName); v != "" {
		if err := set(v); err != nil {
			*errp = fmt.Errorf("%s: %v", envName, err)
		}
	}
	fs.Func(name, usage+" ["+envName+"]", set)
}

// actionFlag defines an alert|suspend|revoke flag.
func actionFlag(fs *flag.FlagSet, a *detect.Action, name string, getenv env, def, note string) {
	envName := "LATCHKEY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	*a = detect.Action(envOr(getenv, envName, def))
	fs.Func(name, "what the rule does: alert, suspend or revoke (default "+def+")"+note+" ["+envName+"]", func(s string) error {
		*a = detect.Action(s)
		return nil
	})
}

// durVar is durFlag writing straight into a time.Duration.
func durVar(fs *flag.FlagSet, errp *error, d *time.Duration, name string, getenv env, usage string) {
	envName := "LATCHKEY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	set := func(s string) error {
		v, err := latchkey.ParseDuration(s)
		if err != nil {
			return errors.New(latchkey.ErrorMessage(err))
		}
		*d = v
		return nil
	}
	if v := getenv(envName); v != "" {
		if err := set(v); err != nil {
			*errp = fmt.Errorf("%s: %v", envName, err)
		}
	}
	fs.Func(name, usage+" ["+envName+"]", set)
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

// splitList is a repeatable flag's values, or else the comma-separated
// environment value.
func splitList(flagVals strs, envVal string) []string {
	vals := []string(flagVals)
	if len(vals) == 0 && envVal != "" {
		vals = []string{envVal}
	}
	var out []string
	for _, v := range vals {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out = append(out, f)
			}
		}
	}
	return out
}

// envInt reads an integer environment variable, def when unset or bad
// (a bad value then fails the flag's own check).
func envInt(getenv env, name string, def int) int {
	if v := getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return -1
		}
		return n
	}
	return def
}

func envOr(getenv env, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// daemon is a running server.
type daemon struct {
	addr string
	srv  *http.Server
	api  *httpapi.Server
	pipe *audit.Pipeline
	// board keeps the dashboard's activity counts in the store.
	board *audit.ActivityBoard
	db    latchkey.Store
	ver   *verify.Verifier
	det   *detect.Detector

	follower *postgres.Follower // nil on SQLite
	redis    *lkredis.Client    // nil without --redis

	gw       *gateway.Gateway // nil without --gateway-config
	gwConfig string
	gwSrv    *http.Server
	gwAddr   string
	gwServed chan error
	hooks    *webhook.Dispatcher // nil without webhooks
	svc      *tokens.Service
	logger   *slog.Logger
	served   chan error
	unlock   func()
	stopBG   chan struct{} // closed on shutdown: background loops end
	bg       sync.WaitGroup

	rotationMu sync.Mutex
}

// changed applies a change made on another node: a token is dropped from
// the cache (the next use reloads it), a block put or lifted is read back
// from the store and installed or removed.
func (d *daemon) changed(id string) {
	src, ok := strings.CutPrefix(id, postgres.BlockChange)
	if !ok {
		d.ver.Invalidate(id)
		return
	}
	k, err := detect.ParseSource(src)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	blocks, err := d.db.ListBlocks(ctx, time.Now())
	if err != nil {
		// The poll comes back to it: the change stays in the log.
		d.logger.Warn("reading blocks after a change on another node", "err", err)
		return
	}
	for _, b := range blocks {
		if b.Source == src {
			d.det.Block(k, b.Until)
			return
		}
	}
	d.det.Unblock(k)
}

// startDaemon opens the data directory, bootstraps it if new, and starts
// serving. The returned daemon's addr is the bound address.
func startDaemon(ctx context.Context, cfg serveConfig, logger *slog.Logger, stderr io.Writer) (*daemon, error) {
	// The route file first: a bad one stops the start before anything is
	// created (a data directory, a server key).
	var table *gateway.Table
	if cfg.GatewayConfig != "" {
		t, err := gateway.LoadConfig(cfg.GatewayConfig)
		if err != nil {
			return nil, err
		}
		table = t
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			unlock()
		}
	}()
	key, err := loadKey(cfg, logger)
	if err != nil {
		return nil, err
	}
	hasher, err := secret.NewHasher(key)
	if err != nil {
		return nil, err
	}
	db, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if !ok {
			db.Close()
		}
	}()
	// The database remembers which key it was created with: a different
	// key would make every token NOT_FOUND, which must not pass silently.
	fp := secret.Fingerprint(key)
	stored, err := db.PutSettingIfAbsent(ctx, tokens.SettingKeyFingerprint, fp)
	if err != nil {
		return nil, err
	}
	if stored != fp {
		return nil, fmt.Errorf("the server key does not match this database (key fingerprint %s, database expects %s): "+
			"start with the key the database was created with (%s or LATCHKEY_SERVER_KEY)", fp, stored,
			filepath.Join(cfg.DataDir, secret.KeyFileName))
	}
	node := cfg.Node
	if node == "" {
		node, _ = os.Hostname()
	}
	// The detector acts through the token service, which needs the
	// verifier's invalidation, which needs the detector as its guard: the
	// responder gets the service once it exists.
	resp := &detect.StoreResponder{Store: db, Node: node}
	dcfg := cfg.Detect
	dcfg.Logger = logger
	var rc *lkredis.Client
	if cfg.Redis != "" {
		if rc, err = lkredis.New(cfg.Redis, cfg.RedisPrefix); err != nil {
			return nil, err
		}
		defer func() {
			if !ok {
				rc.Close()
			}
		}()
		if err := rc.Ping(ctx); err != nil {
			logger.Warn("redis is not reachable: rate limits and detector windows are counted per node until it is", "err", err,
				"fail_closed", cfg.RedisFailClosed)
		}
		dcfg.Shared = rc
	}
	var met *metrics.Metrics
	var sources metrics.Sources
	// The metrics read the components below at scrape time; the detector
	// needs the metrics' counting responder first.
	met = metrics.New(&sources)
	det := detect.New(dcfg, met.Responder(resp))
	blocks, err := db.ListBlocks(ctx, time.Now())
	if err != nil {
		det.Close()
		return nil, err
	}
	det.Restore(blocks)
	// The dashboard's counts, kept in the store every second: they
	// survive a restart, and on PostgreSQL any node adds up every node's.
	activity := &audit.Activity{Node: node}
	board := &audit.ActivityBoard{Local: activity, Store: db}
	if err := board.Restore(ctx, time.Now()); err != nil {
		logger.Warn("the dashboard's counts from before the restart could not be read", "err", err)
	}
	pipe := &audit.Pipeline{Sink: db, Logger: logger, BatchSize: cfg.AuditBatch, FlushInterval: cfg.AuditFlush, QueueSize: cfg.AuditQueue,
		Observe:  func(evs []latchkey.AuditEvent) { det.Valid(evs); met.ObserveEvents(evs); activity.Observe(evs) },
		OnCommit: met.ObserveCommit}
	pipe.Start()
	vcfg := verify.Config{Node: node, RotationAge: cfg.Policy.RotationAge, TouchInterval: cfg.TouchInterval, SyncAudit: cfg.AuditSync,
		PositiveTTL: cfg.Staleness}
	if !cfg.Detect.Off {
		vcfg.Guard = det
	}
	if rc != nil {
		vcfg.Shared, vcfg.SharedFailClosed = rc, cfg.RedisFailClosed
		sources.Redis = func() metrics.RedisStats { return metrics.RedisStats{Up: rc.Up(), Failures: rc.Failures()} }
	}
	ver := verify.New(db, hasher, pipe, vcfg)
	svc := &tokens.Service{Store: db, Hasher: hasher, Invalidate: ver.Invalidate, Node: node, Policy: cfg.Policy, FlushUsage: ver.FlushUsage}
	resp.Tokens = svc
	signer, err := identity.NewSigner(key, cfg.IdentityKeyPeriod, 0)
	if err != nil {
		pipe.Close(context.Background())
		det.Close()
		return nil, err
	}
	authz := &gateway.Authorizer{Verifier: ver, Refuser: ver, Signer: signer, TrustedProxies: cfg.TrustedProxies}
	var gw *gateway.Gateway
	if table != nil {
		gw = gateway.New(authz, table, logger)
	}
	fwd := &gateway.ForwardAuth{Auth: authz}
	if gw != nil {
		fwd.Table = gw.Table
	}
	api := &httpapi.Server{Verifier: ver, Tokens: svc, Audit: db, Ready: db.Ping, Logger: logger,
		ForwardAuth: fwd, JWKS: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { gateway.ServeJWKS(w, signer) }),
		FlushAudit: pipe.Flush, TrustedProxies: cfg.TrustedProxies, AuditWritten: pipe.Written,
		Blocks: &detect.Blocks{Detector: det, Store: db, Node: node}, LeakKeys: cfg.LeakKeys, Metrics: met.Handler(),
		Activity: board}
	if !cfg.NoUI {
		api.UI, api.SessionKey, api.SessionTTL, api.Sessions = ui.Handler(), key, cfg.SessionTTL, db
	}
	sources.Pipeline, sources.Verifier, sources.Detector = pipe, ver, det
	var hooks *webhook.Dispatcher
	if len(cfg.Webhooks) > 0 {
		hooks, err = webhook.New(webhook.Config{URLs: cfg.Webhooks, Secret: []byte(cfg.WebhookSecret), Types: cfg.WebhookTypes,
			Wake: pipe.Written, Logger: logger, Node: node}, db)
		if err != nil {
			pipe.Close(context.Background())
			det.Close()
			return nil, err
		}
		sources.Webhooks = hooks.Stats
	}

	pt, created, err := svc.Bootstrap(ctx)
	if err != nil {
		pipe.Close(context.Background())
		return nil, err
	}
	if created {
		path := filepath.Join(cfg.DataDir, "root-token")
		if err := writeSecretFile(path, pt.Reveal()+"\n"); err != nil {
			pipe.Close(context.Background())
			return nil, err
		}
		fmt.Fprintf(stderr, "\nlatchkey: created the root token (scope latchkey:admin).\n"+
			"It is shown once here and saved to %s (mode 0600):\n\n    %s\n\n", path, pt.Reveal())
		if api.UI != nil {
			scheme := "http"
			if cfg.TLSCert != "" {
				scheme = "https"
			}
			fmt.Fprintf(stderr, "Paste it to sign in to the dashboard: %s://%s/ui/\n\n", scheme, cfg.Listen)
		}
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		pipe.Close(context.Background())
		return nil, err
	}
	srv := newHTTPServer(api.Handler(), logger)
	d := &daemon{redis: rc, addr: ln.Addr().String(), srv: srv, api: api, pipe: pipe, db: db, ver: ver, det: det, hooks: hooks, svc: svc, logger: logger,
		served: make(chan error, 1), unlock: unlock, stopBG: make(chan struct{}), gw: gw, gwConfig: cfg.GatewayConfig}
	if gw != nil {
		gln, err := net.Listen("tcp", cfg.GatewayListen)
		if err != nil {
			ln.Close()
			pipe.Close(context.Background())
			det.Close()
			return nil, fmt.Errorf("gateway: %w", err)
		}
		d.gwAddr = gln.Addr().String()
		// Streams and websockets pass through: no whole-request read or
		// write timeout. Headers still have theirs, and each route bounds
		// its body (body_timeout) and its whole request (timeout).
		d.gwSrv = edge.NewServer(gw, edge.Limits{ReadTimeout: -1, WriteTimeout: -1}, logger)
		d.gwServed = make(chan error, 1)
		go func() { d.gwServed <- d.gwSrv.Serve(gln) }()
		logger.Info("gateway listening", "addr", "http://"+d.gwAddr, "routes", len(gw.Table().Routes))
	}
	if cfg.AuditRetention > 0 {
		d.bg.Go(func() { d.retain(cfg) })
	}
	if cfg.Policy.RotationAge > 0 {
		d.bg.Go(d.announceRotationDue)
	}
	d.board = board
	d.bg.Go(d.publishActivity)
	if api.UI != nil {
		d.bg.Go(d.pruneSessions)
	}
	if hooks != nil {
		hooks.Start()
	}
	if pg, ok := db.(*postgres.DB); ok {
		// Other nodes' changes: notifications, and the change log polled
		// as a backstop.
		fctx, cancel := context.WithCancel(context.Background())
		d.follower = postgres.NewFollower(pg, cfg.Poll, d.changed, logger)
		f := d.follower
		sources.Cluster = func() metrics.ClusterStats {
			st := f.Stats()
			return metrics.ClusterStats{Listening: f.Listening(), Notified: st.Notified, Polled: st.Polled, Reconnects: st.Reconnects}
		}
		d.bg.Go(func() { d.follower.Run(fctx) })
		d.bg.Go(func() {
			<-d.stopBG
			cancel()
		})
		d.bg.Go(func() {
			for {
				select {
				case <-d.stopBG:
					return
				case <-time.After(time.Hour):
					pg.PruneChanges(context.Background(), 24*time.Hour)
				}
			}
		})
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
		go func() { d.served <- srv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey) }()
	} else {
		if !isLoopback(ln.Addr()) {
			logger.Warn("serving plain HTTP on a non-loopback address: tokens will cross the network in clear text; use --tls-cert and --tls-key",
				"listen", d.addr)
		}
		go func() { d.served <- srv.Serve(ln) }()
	}
	store := "sqlite"
	if d.follower != nil {
		store = "postgres"
	}
	logger.Info("latchkey listening", "addr", scheme+"://"+d.addr, "data_dir", cfg.DataDir, "store", store, "node", node,
		"shared_counters", rc != nil)
	if api.UI != nil {
		logger.Info("dashboard", "url", scheme+"://"+d.addr+"/ui/")
	}
	ok = true
	return d, nil
}

// Shutdown stops the server gracefully: readiness fails first, in-flight
// requests finish, then the audit queue is written out and the store closed.
func (d *daemon) Shutdown(ctx context.Context) error {
	d.api.Drain()
	close(d.stopBG)
	var err error
	if d.gwSrv != nil {
		err = d.gwSrv.Shutdown(ctx)
		if serr := <-d.gwServed; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
	}
	err = errors.Join(err, d.srv.Shutdown(ctx))
	d.bg.Wait()
	if serr := <-d.served; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	err = errors.Join(err, d.ver.Close(ctx)) // last-use times
	err = errors.Join(err, d.pipe.Close(ctx))
	// Every answered attempt is counted now: keep the counts for the next start.
	if perr := d.board.Publish(ctx, time.Now()); perr != nil {
		d.logger.Warn("keeping the dashboard's counts failed", "err", perr)
	}
	d.det.Close() // after the pipeline: its last batches may still find something
	if d.redis != nil {
		d.redis.Close()
	}
	if d.hooks != nil {
		d.hooks.Close() // undelivered events go out after the next start
	}
	st := d.pipe.Stats()
	d.logger.Info("audit queue drained", "written", st.Written, "lost", st.Lost)
	err = errors.Join(err, d.db.Close())
	d.unlock()
	return err
}

// pruneSessions deletes, once an hour, the records of signed-out
// dashboard sessions whose cookies have expired anyway.
func (d *daemon) pruneSessions() {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if n, err := httpapi.PruneSessionEnds(ctx, d.db, time.Now()); err != nil {
			d.logger.Warn("pruning ended dashboard sessions failed", "err", err)
		} else if n > 0 {
			d.logger.Debug("pruned ended dashboard sessions", "count", n)
		}
		cancel()
		select {
		case <-d.stopBG:
			return
		case <-time.After(time.Hour):
		}
	}
}

// publishActivity keeps the dashboard's counts in the store once a
// second.
func (d *daemon) publishActivity() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-d.stopBG:
			return
		case now := <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := d.board.Publish(ctx, now); err != nil {
				d.logger.Debug("publishing activity counts failed", "err", err)
			}
			cancel()
		}
	}
}

// openStore opens PostgreSQL when a database URL is given, else the
// embedded SQLite file in the data directory.
func openStore(ctx context.Context, cfg serveConfig) (latchkey.Store, error) {
	if cfg.Database != "" {
		if !strings.HasPrefix(cfg.Database, "postgres://") && !strings.HasPrefix(cfg.Database, "postgresql://") {
			return nil, fmt.Errorf("--database must be a postgres:// URL")
		}
		return postgres.Open(ctx, cfg.Database)
	}
	return sqlite.Open(ctx, filepath.Join(cfg.DataDir, "latchkey.db"))
}

// reloadGateway reads the route file again (SIGHUP). An invalid file is
// refused and the routes in force stay.
func (d *daemon) reloadGateway() {
	if d.gw == nil {
		d.logger.Info("SIGHUP: no gateway configured; nothing to reload")
		return
	}
	t, err := gateway.LoadConfig(d.gwConfig)
	if err != nil {
		d.logger.Error("gateway: the new route file is refused; the old routes stay in force", "err", err)
		return
	}
	d.gw.Reload(t)
	d.logger.Info("gateway: routes reloaded", "routes", len(t.Routes))
}

// newHTTPServer is the API listener: the edge's default limits.
func newHTTPServer(h http.Handler, logger *slog.Logger) *http.Server {
	return edge.NewServer(h, edge.Limits{}, logger)
}

// retain prunes audit records older than the retention period, at start
// and then every prune interval (default 1h), archiving them first when an
// archive directory is set.
func (d *daemon) retain(cfg serveConfig) {
	every := cfg.AuditPruneInterval
	if every <= 0 {
		every = time.Hour
	}
	for {
		d.pruneOnce(cfg)
		select {
		case <-d.stopBG:
			return
		case <-time.After(every):
		}
	}
}

func (d *daemon) pruneOnce(cfg serveConfig) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	before := time.Now().Add(-cfg.AuditRetention)
	var archive func([]latchkey.AuditEvent) error
	var file *os.File
	if cfg.AuditArchiveDir != "" {
		archive = func(evs []latchkey.AuditEvent) error {
			if file == nil {
				if err := os.MkdirAll(cfg.AuditArchiveDir, 0o700); err != nil {
					return err
				}
				name := filepath.Join(cfg.AuditArchiveDir, "audit-"+time.Now().UTC().Format("20060102T150405.000000000Z")+".jsonl")
				f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return err
				}
				file = f
			}
			for i := range evs {
				b, err := json.Marshal(&evs[i])
				if err != nil {
					return err
				}
				if _, err := file.Write(append(b, '\n')); err != nil {
					return err
				}
			}
			return file.Sync()
		}
	}
	n, err := d.db.PruneAudit(ctx, before, archive)
	if file != nil {
		if cerr := file.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		d.logger.Error("audit retention: pruning failed; will retry", "err", err, "pruned", n)
		return
	}
	if n > 0 {
		d.logger.Info("audit retention: pruned old records", "records", n, "before", before.UTC().Format(time.RFC3339))
	}
}

// announceRotationDue records a token.rotation_due event (and so a
// rotation.due webhook) once for each token that passes the rotation age,
// checking every hour.
func (d *daemon) announceRotationDue() {
	for {
		d.rotationDueOnce()
		select {
		case <-d.stopBG:
			return
		case <-time.After(time.Hour):
		}
	}
}

func (d *daemon) rotationDueOnce() {
	d.rotationMu.Lock() // check-then-record: one run at a time
	defer d.rotationMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f := latchkey.TokenFilter{RotationDue: true, Limit: latchkey.MaxPageLimit}
	for {
		page, err := d.svc.List(ctx, f)
		if err != nil {
			d.logger.Error("rotation due: listing failed", "err", err)
			return
		}
		for _, t := range page.Tokens {
			seen, err := d.db.ListAudit(ctx, latchkey.AuditFilter{TokenID: t.ID, Action: latchkey.ActionRotationDue, Limit: 1})
			if err != nil || len(seen.Events) > 0 {
				continue
			}
			detail, _ := json.Marshal(map[string]any{"created_at": t.CreatedAt, "age": latchkey.Duration(time.Since(t.CreatedAt).Round(time.Hour)).String()})
			ev := latchkey.AuditEvent{Time: time.Now(), Node: d.svc.Node, Kind: latchkey.KindAdmin, Action: latchkey.ActionRotationDue,
				Actor: "latchkey", TokenID: t.ID, Subject: t.Subject, Outcome: latchkey.OutcomeOK, Detail: detail}
			if err := d.db.AppendAudit(ctx, []latchkey.AuditEvent{ev}); err != nil {
				d.logger.Error("rotation due: recording failed", "err", err)
				return
			}
		}
		if page.Next == "" {
			return
		}
		f.Cursor = page.Next
	}
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

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
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
