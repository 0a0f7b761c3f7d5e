package main

import (
	"os"

	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/detect"
	"github.com/latchkeyhq/latchkey/oauth"
	lkredis "github.com/latchkeyhq/latchkey/redis"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/webhook"
)

// serveConfig is everything serve reads from flags and the environment.
// Its zero value (with Listen and DataDir) is a working server: zero
// fields take their component's default.
type serveConfig struct {
	Listen    string
	DataDir   string
	LogLevel  string
	LogFormat string // text (default) or json
	// NoAccessLog turns off the doors' access log (one line per request
	// at info).
	NoAccessLog bool
	TLSCert     string
	TLSKey      string
	ServerKey   string        // LATCHKEY_SERVER_KEY; empty: use the key file
	Database    string        // postgres://... ; empty: SQLite in DataDir
	Node        string        // names this node in audit records (its hash chain); default: the host name
	Poll        time.Duration // change-log poll interval (PostgreSQL)
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
	// WebhookSignature is the signing scheme: latchkey, standard or both.
	WebhookSignature string

	GatewayConfig     string // route file; empty: no gateway
	GatewayListen     string // gateway listener (default 127.0.0.1:8080)
	IdentityKeyPeriod time.Duration

	DBConfig string // the database gateway's file; empty: no database gateway

	// The OAuth authorization server: on when OAuthIssuer is set.
	OAuthIssuer          string
	OAuthRegistration    string
	OAuthAccessTTL       time.Duration
	OAuthMaxAccessTTL    time.Duration
	OAuthRefreshTTL      time.Duration
	OAuthResources       []string
	OAuthPrivateMetadata bool // fetch client metadata documents from private addresses (tests only)
	// Getenv reads the environment for the files' password_env (the
	// database gateway); nil reads nothing.
	Getenv func(string) string
}

// A setting is one line of serve's configuration: its flag, its
// environment twin, its default, its help, and how its text becomes part
// of a serveConfig. Every setting is read the same way: the flag when
// given, else the environment variable when set, else the default; a
// value that does not parse is a usage error naming where it came from.
// The configuration file (--config) is a source between the environment
// and the default: flags > environment > file > defaults.
type setting struct {
	flag  string // flag name; "" for a setting read from the environment only
	env   string // environment twin; default LATCHKEY_ + the flag name in upper case, "-" as "_"
	def   string // default, as it would be written; "" leaves the component's own default
	arg   string // the value's name in --help ("URL", "file")
	kind  settingKind
	usage string
	// secret settings also take their value from a file: the flag
	// --<flag>-file, the environment's <ENV>_FILE and the configuration
	// file's <key>-file name a file holding it (Docker and Kubernetes
	// secrets), so it need not appear in argv (ps) or the environment.
	secret bool
	// set stores one value (for a list, every value at once).
	set  func(c *serveConfig, v string) error
	list func(c *serveConfig, vs []string) error
}

type settingKind uint8

const (
	textSetting settingKind = iota
	boolSetting
	listSetting // repeatable flag; the environment variable is comma-separated
)

// key is the setting's name in the configuration file: its flag, or for
// an environment-only setting the variable's name without LATCHKEY_, in
// lower case with "-" ("server-key").
func (s *setting) key() string {
	if s.flag != "" {
		return s.flag
	}
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(s.env, "LATCHKEY_"), "_", "-"))
}

func (s *setting) envName() string {
	if s.env != "" {
		return s.env
	}
	return "LATCHKEY_" + strings.ToUpper(strings.ReplaceAll(s.flag, "-", "_"))
}

// help is the flag's usage line: what it does, its default, its twin.
func (s *setting) help() string {
	u := s.usage
	if s.arg != "" {
		// The flag package names the value after the first `quoted` word.
		if i := strings.Index(u, s.arg); i >= 0 {
			u = u[:i] + "`" + s.arg + "`" + u[i+len(s.arg):]
		} else {
			u += " (`" + s.arg + "`)"
		}
	}
	if s.def != "" && s.kind != boolSetting {
		u += " (default " + s.def + ")"
	}
	return u + " [" + s.envName() + "]"
}

// serveSettings is the configuration table, in the order --help lists it.
var serveSettings = []setting{
	{flag: "listen", def: "127.0.0.1:7480", arg: "host:port", usage: "address the API listens on", set: func(c *serveConfig, v string) error { c.Listen = v; return nil }},
	{flag: "data-dir", def: "./latchkey-data", arg: "dir", usage: "data directory: database, server key, root token", set: func(c *serveConfig, v string) error { c.DataDir = v; return nil }},
	{flag: "log-level", def: "info", usage: "debug, info, warn or error", set: func(c *serveConfig, v string) error {
		var l slog.Level
		if l.UnmarshalText([]byte(v)) != nil {
			return fmt.Errorf("%q: want debug, info, warn or error", v)
		}
		c.LogLevel = v
		return nil
	}},
	{flag: "log-format", def: "text", usage: "text (logfmt) or json (one JSON object per line)", set: func(c *serveConfig, v string) error {
		_, err := oneOf(v, "text", "json")
		c.LogFormat = v
		return err
	}},
	{flag: "access-log", kind: boolSetting, def: "true", usage: "log one line at info for each request through the gateway, forward auth, the MCP gateway and the database gateway; --access-log=false turns it off", set: func(c *serveConfig, v string) error {
		on, err := strconv.ParseBool(v)
		c.NoAccessLog = !on
		return err
	}},
	{env: "LATCHKEY_SERVER_KEY", secret: true, usage: "the server key (base64 or hex, at least 32 bytes) instead of the key file", set: func(c *serveConfig, v string) error { c.ServerKey = v; return nil }},
	{flag: "database", arg: "URL", secret: true, usage: "PostgreSQL URL (postgres://user@host/db) for a cluster of nodes; default: SQLite in --data-dir", set: func(c *serveConfig, v string) error {
		if !strings.HasPrefix(v, "postgres://") && !strings.HasPrefix(v, "postgresql://") {
			return errors.New("must be a postgres:// URL")
		}
		c.Database = v
		return nil
	}},
	{flag: "poll-interval", usage: "with --database: how often each node reads the change log, the bound for a node that missed a notification (default 1s)", set: duration(func(c *serveConfig) *time.Duration { return &c.Poll })},
	{flag: "cache-max-staleness", usage: "longest a cached token is served without re-reading the store (default 30s)", set: duration(func(c *serveConfig) *time.Duration { return &c.Staleness })},
	{flag: "redis", arg: "URL", secret: true, usage: "Redis URL (redis://host:6379/0) where the nodes of a cluster count rate limits and detector windows together; default: each node counts its own", set: func(c *serveConfig, v string) error {
		c.Redis = v
		return lkredis.CheckURL(v)
	}},
	{flag: "redis-prefix", def: "latchkey:", usage: "prefix of every Redis key latchkey writes", set: func(c *serveConfig, v string) error { c.RedisPrefix = v; return nil }},
	{flag: "redis-failure", def: "local", usage: "while Redis is unreachable: local (each node enforces rate limits alone) or closed (rate-limited tokens are refused, 503)", set: func(c *serveConfig, v string) error {
		var err error
		c.RedisFailClosed, err = oneOf(v, "local", "closed")
		return err
	}},
	{flag: "node", arg: "name", usage: "this node's name in audit records; each node keeps its own hash chain, so give every node of a cluster a distinct name (default: the host name)", set: func(c *serveConfig, v string) error { c.Node = v; return nil }},
	{flag: "tls-cert", arg: "file", usage: "TLS certificate (PEM); serve HTTPS with --tls-key", set: func(c *serveConfig, v string) error { c.TLSCert = v; return nil }},
	{flag: "tls-key", arg: "file", usage: "TLS private key (PEM)", set: func(c *serveConfig, v string) error { c.TLSKey = v; return nil }},
	{flag: "default-ttl", usage: "expiry given to tokens created without one, e.g. 90d (default: none)", set: duration(func(c *serveConfig) *time.Duration { return &c.Policy.DefaultTTL })},
	{flag: "max-lifetime", usage: "refuse tokens that would live longer than this, e.g. 1y is 365d (default: no cap)", set: duration(func(c *serveConfig) *time.Duration { return &c.Policy.MaxLifetime })},
	{flag: "rotate-after", usage: "age at which a token is due for rotation, e.g. 90d (default: no rotation policy)", set: duration(func(c *serveConfig) *time.Duration { return &c.Policy.RotationAge })},
	{flag: "last-used-interval", usage: "write each token's last_used_at at most once per this interval (default 1m)", set: duration(func(c *serveConfig) *time.Duration { return &c.TouchInterval })},
	{flag: "require-expiry", kind: boolSetting, usage: "refuse tokens that never expire", set: boolean(func(c *serveConfig) *bool { return &c.Policy.RequireExpiry })},
	{flag: "audit-durability", def: "async", usage: "async (batched; a crash loses at most one flush interval) or sync (answer only once recorded)", set: func(c *serveConfig, v string) error {
		var err error
		c.AuditSync, err = oneOf(v, "async", "sync")
		return err
	}},
	{flag: "audit-batch-size", def: "2048", usage: "most audit records per transaction", set: positive(func(c *serveConfig) *int { return &c.AuditBatch })},
	{flag: "audit-flush-interval", usage: "longest a record waits before it is committed (default 50ms)", set: duration(func(c *serveConfig) *time.Duration { return &c.AuditFlush })},
	{flag: "audit-queue-size", def: "16384", usage: "records that may wait; when full, verifications wait (never dropped)", set: positive(func(c *serveConfig) *int { return &c.AuditQueue })},
	{flag: "audit-retention", usage: "delete audit records older than this, e.g. 90d (default: keep all)", set: duration(func(c *serveConfig) *time.Duration { return &c.AuditRetention })},
	{flag: "audit-archive-dir", arg: "dir", usage: "with --audit-retention, write pruned records here as JSON Lines first", set: func(c *serveConfig, v string) error { c.AuditArchiveDir = v; return nil }},
	{flag: "detect", kind: boolSetting, def: "true", usage: "run the detector (blocks, alerts, automatic suspension); --detect=false turns it off", set: func(c *serveConfig, v string) error {
		on, err := strconv.ParseBool(v)
		c.Detect.Off = !on
		return err
	}},
	{flag: "detect-source-failures", usage: "failed attempts from one source that block it, as count/window (default 20/1m)", set: rule(func(c *serveConfig) *detect.Rule { return &c.Detect.SourceFailures })},
	{flag: "detect-block-for", usage: "how long a source stays blocked (default 15m)", set: duration(func(c *serveConfig) *time.Duration { return &c.Detect.BlockFor })},
	{flag: "detect-secret-mismatch", usage: "wrong secrets for one real token id that fire the leak rule (default 10/10m)", set: rule(func(c *serveConfig) *detect.Rule { return &c.Detect.SecretMismatch })},
	{flag: "detect-secret-mismatch-action", def: "alert", usage: "what the rule does: alert, suspend or revoke. Token ids are public, so anyone can send wrong secrets for one: suspend or revoke acts only after 10x --detect-source-failures wrong secrets from unblocked sources in the window (no single source gets that far), and never on a token holding a latchkey: scope",
		set: action(func(c *serveConfig) *detect.Action { return &c.Detect.SecretMismatchAction })},
	{flag: "detect-network-spread", usage: "distinct networks (/24, /48) one token may be used from (default 10/10m)", set: rule(func(c *serveConfig) *detect.Rule { return &c.Detect.NetworkSpread })},
	{flag: "detect-network-spread-action", def: "suspend", usage: "what the rule does: alert, suspend or revoke", set: action(func(c *serveConfig) *detect.Action { return &c.Detect.NetworkSpreadAction })},
	{flag: "detect-ip-not-allowed", usage: "IP_NOT_ALLOWED refusals of one token that fire (default 10/10m)", set: rule(func(c *serveConfig) *detect.Rule { return &c.Detect.IPNotAllowed })},
	{flag: "detect-ip-not-allowed-action", def: "suspend", usage: "what the rule does: alert, suspend or revoke", set: action(func(c *serveConfig) *detect.Action { return &c.Detect.IPNotAllowedAction })},
	{flag: "leak-keys", arg: "file", usage: `JSON file of secret-scanner public keys ({"public_keys":[{"key_identifier","key"}]}, as GitHub publishes)`, set: func(c *serveConfig, v string) error {
		keys, err := loadLeakKeys(v)
		c.LeakKeys = keys
		return err
	}},
	{flag: "gateway-config", arg: "file", usage: "run the gateway with this route file (YAML); SIGHUP reloads it", set: func(c *serveConfig, v string) error { c.GatewayConfig = v; return nil }},
	{flag: "gateway-listen", def: "127.0.0.1:8080", arg: "host:port", usage: "address the gateway listens on", set: func(c *serveConfig, v string) error { c.GatewayListen = v; return nil }},
	{flag: "db-config", arg: "file", usage: "run the database gateway (PostgreSQL wire protocol) with this file (YAML); see docs/database-gateway.md", set: func(c *serveConfig, v string) error { c.DBConfig = v; return nil }},
	{flag: "oauth-issuer", arg: "URL", usage: "run the OAuth 2.1 authorization server with this issuer: the URL clients reach this API at (https, or http on loopback), e.g. https://auth.example.com; see docs/oauth.md", set: func(c *serveConfig, v string) error {
		if _, err := oauth.CheckIssuer(v); err != nil {
			return err
		}
		c.OAuthIssuer = strings.TrimSuffix(v, "/")
		return nil
	}},
	{flag: "oauth-registration", def: "open", usage: "dynamic client registration (RFC 7591): open, token (an initial access token holding latchkey:oauth:register) or off", set: func(c *serveConfig, v string) error {
		if v != oauth.RegistrationOpen && v != oauth.RegistrationToken && v != oauth.RegistrationOff {
			return fmt.Errorf("%q: want open, token or off", v)
		}
		c.OAuthRegistration = v
		return nil
	}},
	{flag: "oauth-access-ttl", usage: "lifetime of the access tokens the authorization server issues (default 1h)", set: duration(func(c *serveConfig) *time.Duration { return &c.OAuthAccessTTL })},
	{flag: "oauth-max-access-ttl", usage: "cap on --oauth-access-ttl (default 24h)", set: duration(func(c *serveConfig) *time.Duration { return &c.OAuthMaxAccessTTL })},
	{flag: "oauth-refresh-ttl", usage: "lifetime of refresh tokens, never beyond the consenting token's (default 30d)", set: duration(func(c *serveConfig) *time.Duration { return &c.OAuthRefreshTTL })},
	{flag: "oauth-resource", env: "LATCHKEY_OAUTH_RESOURCES", kind: listSetting, arg: "URL", usage: "a resource (RFC 8707) tokens may be issued for, besides the MCP gateway's servers (which need mcp.public_url); repeatable, or comma-separated",
		list: func(c *serveConfig, vs []string) error {
			for _, v := range vs {
				if err := latchkey.ValidateResource(v); err != nil {
					return errors.New(latchkey.ErrorMessage(err))
				}
			}
			c.OAuthResources = vs
			return nil
		}},
	{flag: "oauth-client-metadata-private", kind: boolSetting, usage: "fetch client metadata documents from private and loopback addresses too: for tests only, it lets anyone aim the server's fetches inside your network", set: boolean(func(c *serveConfig) *bool { return &c.OAuthPrivateMetadata })},
	{flag: "identity-key-period", usage: "how often the identity JWT signing key rotates (default 24h)", set: duration(func(c *serveConfig) *time.Duration { return &c.IdentityKeyPeriod })},
	{flag: "ui", kind: boolSetting, def: "true", usage: "serve the dashboard at /ui/; --ui=false turns it off", set: func(c *serveConfig, v string) error {
		on, err := strconv.ParseBool(v)
		c.NoUI = !on
		return err
	}},
	{flag: "ui-session-ttl", usage: "how long a dashboard sign-in lasts, never beyond its token's expiry (default 12h)", set: duration(func(c *serveConfig) *time.Duration { return &c.SessionTTL })},
	{flag: "webhook", env: "LATCHKEY_WEBHOOKS", kind: listSetting, arg: "URL", usage: "POST events (token.created, token.revoked, source.blocked, leak.reported, ...) here; repeatable, or comma-separated",
		list: func(c *serveConfig, vs []string) error { c.Webhooks = vs; return nil }},
	{flag: "webhook-secret", secret: true, usage: "HMAC key signing webhook deliveries, at least 16 bytes", set: func(c *serveConfig, v string) error { c.WebhookSecret = v; return nil }},
	{flag: "webhook-signature", def: "latchkey", usage: "how deliveries are signed: latchkey (X-Latchkey-Signature), standard (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature) or both", set: func(c *serveConfig, v string) error {
		if v != webhook.SignLatchkey && v != webhook.SignStandard && v != webhook.SignBoth {
			return fmt.Errorf("%q: want latchkey, standard or both", v)
		}
		c.WebhookSignature = v
		return nil
	}},
	{flag: "webhook-event", env: "LATCHKEY_WEBHOOK_EVENTS", kind: listSetting, arg: "type", usage: "send only this event type; repeatable, or comma-separated (default: all)",
		list: func(c *serveConfig, vs []string) error { c.WebhookTypes = vs; return nil }},
	{flag: "trusted-proxy", env: "LATCHKEY_TRUSTED_PROXIES", kind: listSetting, arg: "address or network", usage: "proxy whose X-Forwarded-For (and forward-auth original-request headers) is believed; repeatable, or comma-separated (default: loopback)",
		list: func(c *serveConfig, vs []string) error {
			tp, err := latchkey.ParseTrustedProxies(vs)
			if err != nil {
				return errors.New(latchkey.ErrorMessage(err))
			}
			c.TrustedProxies = tp
			return nil
		}},
}

// readServeConfig reads serve's configuration from args, the environment
// and the configuration file. It returns an exit status >= 0 when serve
// should stop (--help, or a usage error already reported on stderr).
func readServeConfig(args []string, getenv env, stdout, stderr io.Writer) (serveConfig, int) {
	cfg := serveConfig{TrustedProxies: latchkey.LoopbackProxies, Getenv: getenv}
	fs := newFlags("serve", "serve [flags]", serveDoc, stdout, stderr)
	given := map[string][]string{}
	for i := range serveSettings {
		s := &serveSettings[i]
		if s.flag == "" {
			continue
		}
		record := func(name string) func(string) error {
			return func(v string) error { given[name] = append(given[name], v); return nil }
		}
		if s.kind == boolSetting {
			fs.BoolFunc(s.flag, s.help(), record(s.flag))
		} else {
			fs.Func(s.flag, s.help(), record(s.flag))
		}
		if s.secret {
			fs.Func(s.flag+"-file", "read --"+s.flag+" from this `file` ["+s.envName()+"_FILE]", record(s.flag+"-file"))
		}
	}
	var configFile string
	fs.StringVar(&configFile, "config", getenv("LATCHKEY_CONFIG"), "read settings from this YAML `file` (keys are the flag names); flags and the environment win over it [LATCHKEY_CONFIG]")
	if _, code := parse(fs, args, 0); code >= 0 {
		return cfg, code
	}
	file, err := readConfigFile(configFile)
	if err != nil {
		fmt.Fprintf(stderr, "latchkey serve: %v\n", err)
		return cfg, exitUsage
	}
	for i := range serveSettings {
		if err := serveSettings[i].apply(&cfg, given, getenv, file); err != nil {
			fmt.Fprintf(stderr, "latchkey serve: %v\n", err)
			return cfg, exitUsage
		}
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "latchkey serve: %s\n", usageMessage(err))
		return cfg, exitUsage
	}
	return cfg, -1
}

// configFileMax bounds the configuration file.
const configFileMax = 1 << 20

// readConfigFile reads the YAML configuration file into each key's
// values (a list for a list setting). An unknown key, or a value that is
// neither a scalar nor a list of scalars, is an error; "" reads nothing.
func readConfigFile(path string) (map[string][]string, error) {
	if path == "" {
		return nil, nil
	}
	b, err := readFileLimited(path, configFileMax)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("--config %s: %v", path, err)
	}
	out := map[string][]string{}
	if len(doc.Content) == 0 {
		return out, nil // an empty file
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("--config %s: want a mapping of setting names to values", path)
	}
	keys := map[string]*setting{}
	var names []string
	for i := range serveSettings {
		s := &serveSettings[i]
		keys[s.key()] = s
		names = append(names, s.key())
		if s.secret {
			keys[s.key()+"-file"] = s
			names = append(names, s.key()+"-file")
		}
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		s, ok := keys[k.Value]
		if !ok {
			msg := fmt.Sprintf("--config %s:%d: unknown setting %q", path, k.Line, k.Value)
			if sug := suggest(k.Value, names); sug != "" {
				msg += fmt.Sprintf("; did you mean %q?", sug)
			}
			return nil, errors.New(msg)
		}
		if _, dup := out[k.Value]; dup {
			return nil, fmt.Errorf("--config %s:%d: %q is set twice", path, k.Line, k.Value)
		}
		switch {
		case v.Kind == yaml.ScalarNode:
			out[k.Value] = []string{v.Value}
		case v.Kind == yaml.SequenceNode && s.kind == listSetting && !strings.HasSuffix(k.Value, "-file"):
			vals := []string{}
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					return nil, fmt.Errorf("--config %s:%d: %s: want a list of values", path, item.Line, k.Value)
				}
				vals = append(vals, item.Value)
			}
			out[k.Value] = vals
		default:
			return nil, fmt.Errorf("--config %s:%d: %s: want a single value", path, v.Line, k.Value)
		}
	}
	return out, nil
}

func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, err
}

// secretFromFile reads a secret setting's file: its contents, without
// the final line break an editor adds.
func secretFromFile(src, path string) (string, error) {
	b, err := readFileLimited(path, 64<<10)
	if err != nil {
		return "", fmt.Errorf("%s: %v", src, err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("%s: %s is empty", src, path)
	}
	return v, nil
}

// apply sets s from its first source that has a value: the flag (or its
// -file twin), the environment (or its _FILE twin), the configuration
// file (or its -file key), the default. Naming a value and a file for it
// in the same source is refused. An error names the source of the bad
// value.
func (s *setting) apply(c *serveConfig, flags map[string][]string, getenv env, file map[string][]string) error {
	src, vals, err := s.source(flags, getenv, file)
	if err != nil || vals == nil {
		return err
	}
	if s.kind == listSetting {
		var items []string
		for _, v := range vals {
			for _, f := range strings.Split(v, ",") {
				if f = strings.TrimSpace(f); f != "" {
					items = append(items, f)
				}
			}
		}
		err = s.list(c, items)
	} else {
		err = s.set(c, vals[len(vals)-1]) // a repeated flag: the last wins
	}
	if err != nil {
		return fmt.Errorf("%s: %s", src, usageMessage(err))
	}
	return nil
}

// source finds where s's value comes from, and the value.
func (s *setting) source(flags map[string][]string, getenv env, file map[string][]string) (string, []string, error) {
	type origin struct {
		name  string
		vals  []string
		fname string // the -file twin's source name
		fvals []string
	}
	var origins []origin
	if s.flag != "" {
		origins = append(origins, origin{"--" + s.flag, flags[s.flag], "--" + s.flag + "-file", flags[s.flag+"-file"]})
	}
	var ev, fv []string
	if v := getenv(s.envName()); v != "" {
		ev = []string{v}
	}
	if v := getenv(s.envName() + "_FILE"); v != "" && s.secret {
		fv = []string{v}
	}
	origins = append(origins, origin{s.envName(), ev, s.envName() + "_FILE", fv},
		origin{"the configuration file's " + s.key(), file[s.key()], "the configuration file's " + s.key() + "-file", file[s.key()+"-file"]})
	for _, o := range origins {
		switch {
		case len(o.vals) > 0 && len(o.fvals) > 0:
			return "", nil, fmt.Errorf("%s and %s both set: give one", o.name, o.fname)
		case len(o.vals) > 0:
			return o.name, o.vals, nil
		case len(o.fvals) > 0:
			v, err := secretFromFile(o.fname, o.fvals[len(o.fvals)-1])
			return o.fname, []string{v}, err
		}
	}
	if s.def != "" {
		return "default of --" + s.flag, []string{s.def}, nil
	}
	return "", nil, nil
}

// validate checks what no single setting can: values that go together.
func (c *serveConfig) validate() error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.AuditArchiveDir != "" && c.AuditRetention == 0 {
		return errors.New("--audit-archive-dir needs --audit-retention")
	}
	if err := c.Policy.Validate(); err != nil {
		return err
	}
	if err := c.Detect.Validate(); err != nil {
		return err
	}
	if len(c.Webhooks) > 0 {
		if err := c.webhookConfig().Validate(); err != nil {
			return fmt.Errorf("--webhook: %s", usageMessage(err))
		}
	}
	return nil
}

// webhookConfig is the dispatcher's configuration (the wiring adds its
// hooks into the audit pipeline).
func (c *serveConfig) webhookConfig() webhook.Config {
	return webhook.Config{URLs: c.Webhooks, Secret: []byte(c.WebhookSecret), Types: c.WebhookTypes, Signature: c.WebhookSignature}
}

// usageMessage is the text of a configuration error: a latchkey error's
// message, or the error itself (every error here is about the input).
func usageMessage(err error) string {
	var le *latchkey.Error
	if errors.As(err, &le) {
		return latchkey.ErrorMessage(err)
	}
	return err.Error()
}

// The setting parsers.

func duration(field func(*serveConfig) *time.Duration) func(*serveConfig, string) error {
	return func(c *serveConfig, v string) error {
		d, err := latchkey.ParseDuration(v)
		if err != nil {
			return err
		}
		*field(c) = d
		return nil
	}
}

func boolean(field func(*serveConfig) *bool) func(*serveConfig, string) error {
	return func(c *serveConfig, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q: want true or false", v)
		}
		*field(c) = b
		return nil
	}
}

func positive(field func(*serveConfig) *int) func(*serveConfig, string) error {
	return func(c *serveConfig, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("%q: want a positive number", v)
		}
		*field(c) = n
		return nil
	}
}

// rule parses a detector rule written count/window ("20/1m").
func rule(field func(*serveConfig) *detect.Rule) func(*serveConfig, string) error {
	return func(c *serveConfig, v string) error {
		n, w, ok := strings.Cut(v, "/")
		count, err := strconv.Atoi(strings.TrimSpace(n))
		if !ok || err != nil || count < 1 {
			return errors.New("want count/window, e.g. 20/1m")
		}
		d, err := latchkey.ParseDuration(strings.TrimSpace(w))
		if err != nil || d <= 0 {
			return errors.New("want count/window, e.g. 20/1m")
		}
		*field(c) = detect.Rule{Count: count, Window: d}
		return nil
	}
}

// action parses a detector rule's action (checked with the detector's
// whole configuration, in validate).
func action(field func(*serveConfig) *detect.Action) func(*serveConfig, string) error {
	return func(c *serveConfig, v string) error {
		*field(c) = detect.Action(v)
		return nil
	}
}

// oneOf reports whether v is the second of two allowed words.
func oneOf(v, first, second string) (bool, error) {
	switch v {
	case first:
		return false, nil
	case second:
		return true, nil
	}
	return false, fmt.Errorf("%q: want %s or %s", v, first, second)
}
