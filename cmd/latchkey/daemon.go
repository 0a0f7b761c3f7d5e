package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/latchkeyhq/latchkey/internal/tracing"
	"go.opentelemetry.io/otel/trace"

	"golang.org/x/sync/errgroup"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/detect"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/gateway"
	"github.com/latchkeyhq/latchkey/httpapi"
	"github.com/latchkeyhq/latchkey/identity"
	"github.com/latchkeyhq/latchkey/internal/metrics"
	"github.com/latchkeyhq/latchkey/mcpgate"
	"github.com/latchkeyhq/latchkey/oauth"
	"github.com/latchkeyhq/latchkey/pggate"
	"github.com/latchkeyhq/latchkey/postgres"
	lkredis "github.com/latchkeyhq/latchkey/redis"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/sqlite"
	"github.com/latchkeyhq/latchkey/tenancy"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/ui"
	"github.com/latchkeyhq/latchkey/verify"
	"github.com/latchkeyhq/latchkey/webhook"
)

// daemon is a running server. It is built in the order of the diagram in
// docs/architecture.md: the data directory and store, the audit pipeline,
// the detector, the verifier, the token service, the doors, then the
// listeners and the background loops. Every goroutine the daemon starts
// belongs to one errgroup (loops), ended by Shutdown; the components
// (pipeline, detector, verifier, webhooks) own theirs and are closed by
// release.
type daemon struct {
	cfg    serveConfig
	node   string
	logger *slog.Logger
	unlock func() // the data directory's lock

	db   latchkey.Store
	feed latchkey.ChangeFeed // other nodes' changes (PostgreSQL); nil on SQLite
	// receipts collects the other nodes' confirmations of a revocation
	// (PostgreSQL); nil on SQLite.
	receipts latchkey.Receipter
	nameLost <-chan struct{} // closed when another process takes this node's name (PostgreSQL)
	redis    *lkredis.Client // nil without --redis
	pipe     *audit.Pipeline
	board    *audit.ActivityBoard // the dashboard's counts, kept in the store
	det      *detect.Detector
	blocks   *detect.Blocks // the blocks in the store and in the detector
	ver      *verify.Verifier
	svc      *tokens.Service
	reg      *tenancy.Registry // keyspaces, roles, identities (this node's copy)
	ten      *tenancy.Service
	api      *httpapi.Server
	gw       *gateway.Gateway // nil without --gateway-config
	hooks    *webhook.Dispatcher
	// sessions are the long-lived sessions every door admitted, ended when
	// their token stops being valid; pg is the database gateway (nil
	// without --db-config).
	sessions *edge.Sessions
	pg       *pggate.Server
	mcp      *mcpgate.Gate  // nil without an mcp section in the route file
	rec      *edge.Recorder // the HTTP doors' access log and per-route metrics
	// tracer is nil unless the OTEL_* environment turns tracing on.
	tracer      trace.Tracer
	stopTracing func(context.Context) error
	oauth       *oauth.Server // nil without --oauth-issuer
	mcps        *mcpgate.Settings
	dbs         *pggate.Settings

	addr, gwAddr, dbAddr string // the bound addresses of the API, the gateway and the database gateway
	dbLn                 net.Listener
	servers              []served
	loops                *errgroup.Group
	stop                 context.CancelFunc // ends the loops' context
	done                 <-chan struct{}    // closed when the loops' context ends (a listener failed, or Shutdown)
	cause                func() error       // why it ended
}

// served is a listener and its server.
type served struct {
	srv    *http.Server
	ln     net.Listener
	tls    bool
	closed bool
}

// startDaemon opens the data directory, bootstraps it if new, and starts
// serving. The returned daemon's addr is the bound address.
func startDaemon(ctx context.Context, cfg serveConfig, logger *slog.Logger, stderr io.Writer) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, logger: logger, node: cfg.Node}
	if d.node == "" {
		d.node, _ = os.Hostname()
	}
	defer func() {
		if err != nil {
			d.release(context.Background())
		}
	}()
	// The route file first: a bad one stops the start before anything is
	// created (a data directory, a server key).
	var table *gateway.Table
	if cfg.GatewayConfig != "" {
		if table, err = gateway.LoadConfig(cfg.GatewayConfig); err != nil {
			return nil, err
		}
	}
	if cfg.GatewayConfig != "" {
		if d.mcps, _, err = mcpgate.LoadConfig(cfg.GatewayConfig); err != nil {
			return nil, err
		}
	}
	if cfg.DBConfig != "" {
		if d.dbs, err = pggate.LoadConfig(cfg.DBConfig, cfg.Getenv); err != nil {
			return nil, err
		}
	}
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if d.tracer, d.stopTracing, err = tracing.Setup(ctx, getenv); err != nil {
		return nil, err
	}
	if d.tracer != nil {
		logger.Info("tracing: spans go to the OTLP endpoint of the OTEL_* environment")
	}
	key, err := d.openData(ctx)
	if err != nil {
		return nil, err
	}
	if err := d.build(ctx, key, table); err != nil {
		return nil, err
	}
	if err := d.bootstrap(ctx, stderr); err != nil {
		return nil, err
	}
	if err := d.listen(table != nil); err != nil {
		return nil, err
	}
	d.start()
	return d, nil
}

// openData locks the data directory and opens the key and the store,
// checking that they belong together.
func (d *daemon) openData(ctx context.Context) ([]byte, error) {
	cfg := d.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	d.unlock = unlock
	key, err := loadKey(cfg, d.logger)
	if err != nil {
		return nil, err
	}
	db, follower, err := openStore(ctx, cfg, key, d.logger)
	if err != nil {
		return nil, err
	}
	d.db = db
	if follower != nil {
		follower.Node = d.node
		// One process per node name: a second one refuses to start.
		if err := follower.Claim(ctx); err != nil {
			return nil, err
		}
		d.feed, d.receipts, d.nameLost = follower, follower, follower.Lost()
	}
	return key, nil
}

// openStore opens PostgreSQL when a database URL is given (with the
// follower that keeps this node's caches in step with the others), else
// the embedded SQLite file in the data directory, and checks that the
// store was created with this key.
func openStore(ctx context.Context, cfg serveConfig, key []byte, logger *slog.Logger) (latchkey.Store, *postgres.Follower, error) {
	var db latchkey.Store
	var follower *postgres.Follower
	if cfg.Database != "" {
		pg, err := postgres.Open(ctx, cfg.Database)
		if err != nil {
			return nil, nil, err
		}
		db, follower = pg, postgres.NewFollower(pg, cfg.Poll, nil, logger)
	} else {
		lite, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, "latchkey.db"))
		if err != nil {
			return nil, nil, err
		}
		db = lite
	}
	// The database remembers which key it was created with: a different
	// key would make every token NOT_FOUND, which must not pass silently.
	fp := secret.Fingerprint(key)
	stored, err := db.PutSettingIfAbsent(ctx, tokens.SettingKeyFingerprint, fp)
	if err == nil && stored != fp {
		err = fmt.Errorf("the server key does not match this database (key fingerprint %s, database expects %s): "+
			"start with the key the database was created with (%s or LATCHKEY_SERVER_KEY)", fp, stored,
			filepath.Join(cfg.DataDir, secret.KeyFileName))
	}
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, follower, nil
}

// build constructs the components in dependency order. Nothing is
// patched after construction; the one cycle (below) is broken by
// late-bound functions.
func (d *daemon) build(ctx context.Context, key []byte, table *gateway.Table) error {
	cfg, db, logger := d.cfg, d.db, d.logger
	hasher, err := secret.NewHasher(key)
	if err != nil {
		return err
	}
	dcfg := cfg.Detect
	dcfg.Logger = logger
	if cfg.Redis != "" {
		if d.redis, err = lkredis.New(cfg.Redis, cfg.RedisPrefix); err != nil {
			return err
		}
		if err := d.redis.Ping(ctx); err != nil {
			logger.Warn("redis is not reachable: rate limits and detector windows are counted per node until it is", "err", err,
				"fail_closed", cfg.RedisFailClosed)
		}
		dcfg.Shared = d.redis
	}
	// The metrics read their sources at scrape time, filled in below
	// once the parts exist; the detector and the pipeline count through
	// them from the start.
	sources := &metrics.Sources{}
	met := metrics.New(sources)

	// The cycle: the detector acts through the token service, whose
	// changes must evict the verifier's cache, and the verifier consults
	// the detector. It is broken here and only here: the service's two
	// hooks call ver, assigned below, before any request can reach the
	// service (nothing listens yet).
	var ver *verify.Verifier
	var sessions *edge.Sessions
	d.reg = &tenancy.Registry{}
	if err := d.reg.Load(ctx, db); err != nil {
		return err
	}
	d.svc = &tokens.Service{Store: db, Hasher: hasher, Node: d.node, Policy: cfg.Policy, Tenancy: d.reg,
		Invalidate: func(id string) { ver.Invalidate(id); sessions.TokenChanged(id) },
		FlushUsage: func(ctx context.Context) error { return ver.FlushUsage(ctx) }}
	d.det = detect.New(dcfg, met.Responder(&detect.StoreResponder{Store: db, Node: d.node, Tokens: d.svc}))
	blocks, err := db.ListBlocks(ctx, time.Now())
	if err != nil {
		return err
	}
	d.det.Restore(blocks)

	// The dashboard's counts, kept in the store every second: they
	// survive a restart, and on PostgreSQL any node adds up every node's.
	activity := &audit.Activity{Node: d.node}
	d.board = &audit.ActivityBoard{Local: activity, Store: db}
	if err := d.board.Restore(ctx, time.Now()); err != nil {
		logger.Warn("the dashboard's counts from before the restart could not be read", "err", err)
	}
	det := d.det
	d.pipe = &audit.Pipeline{Sink: db, Node: d.node, Logger: logger, BatchSize: cfg.AuditBatch, FlushInterval: cfg.AuditFlush, QueueSize: cfg.AuditQueue,
		Observe:  func(evs []latchkey.AuditEvent) { det.Valid(evs); met.ObserveEvents(evs); activity.Observe(evs) },
		OnCommit: met.ObserveCommit}
	d.pipe.Start()

	vcfg := verify.Config{Node: d.node, RotationAge: cfg.Policy.RotationAge, TouchInterval: cfg.TouchInterval, SyncAudit: cfg.AuditSync,
		PositiveTTL: cfg.Staleness, Tenancy: d.reg, Tracer: d.tracer}
	if !cfg.Detect.Off {
		vcfg.Guard = d.det
	}
	if d.redis != nil {
		vcfg.Shared, vcfg.SharedFailClosed = d.redis, cfg.RedisFailClosed
	}
	ver = verify.New(db, hasher, d.pipe, vcfg)
	d.ver = ver
	if f, ok := d.feed.(*postgres.Follower); ok {
		// The poll's duration tells the verifier how slow the database is
		// now, before any token's read does: background reloads start
		// early enough to land before their entries go stale.
		f.OnPoll = ver.NoteStoreLatency
	}
	d.ten = &tenancy.Service{Store: db, Registry: d.reg, Tokens: d.svc, Node: d.node, Changed: ver.Retenant}
	sessions = &edge.Sessions{Verifier: ver, Logger: logger, Node: d.node}
	d.sessions = sessions

	if len(cfg.Webhooks) > 0 {
		wc := cfg.webhookConfig()
		wc.Wake, wc.Logger, wc.Node, wc.Tracer = d.pipe.Written, logger, d.node, d.tracer
		if d.hooks, err = webhook.New(wc, db); err != nil {
			return err
		}
	}
	if err := d.buildDoors(key, table, met); err != nil {
		return err
	}
	*sources = d.metricSources()
	return nil
}

// buildDoors constructs the doors: the API (with forward auth and the
// dashboard) and, with a route file, the gateway. They share one
// Authorizer: one verifier, one identity signer, one edge.
func (d *daemon) buildDoors(key []byte, table *gateway.Table, met *metrics.Metrics) error {
	cfg := d.cfg
	signer, err := identity.NewSigner(key, cfg.IdentityKeyPeriod, 0)
	if err != nil {
		return err
	}
	d.blocks = &detect.Blocks{Detector: d.det, Store: d.db, Node: d.node}
	authz := &gateway.Authorizer{Verifier: d.ver, Refuser: d.ver, Signer: signer, TrustedProxies: cfg.TrustedProxies}
	fwd := &gateway.ForwardAuth{Auth: authz}
	d.rec = &edge.Recorder{Observe: met.ObserveDoor, Tracer: d.tracer}
	if !cfg.NoAccessLog {
		d.rec.Logger = d.logger
	}
	if table != nil {
		d.gw = gateway.New(authz, table, d.logger)
		d.gw.Tracer = d.tracer
		fwd.Table = d.gw.Table
	}
	d.api = &httpapi.Server{Verifier: d.ver, Tokens: d.svc, Audit: d.db, Ready: d.db.Ping, Logger: d.logger,
		ForwardAuth: d.rec.Wrap("forward_auth", fwd), JWKS: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { gateway.ServeJWKS(w, signer) }),
		FlushAudit: d.pipe.Flush, TrustedProxies: cfg.TrustedProxies, AuditWritten: d.pipe.Written,
		Blocks: d.blocks, LeakKeys: cfg.LeakKeys, Metrics: met.Handler(),
		Activity: d.board, OpenSessions: d.sessions, Tenancy: d.ten, Receipts: d.receipts}
	if d.dbs != nil {
		tc, err := d.dbTLS()
		if err != nil {
			return err
		}
		d.pg = &pggate.Server{Settings: d.dbs, Verifier: d.ver, Refuser: d.ver, Sessions: d.sessions, Audit: d.pipe,
			TrustedProxies: cfg.TrustedProxies, TLS: tc, Node: d.node, Logger: d.logger, NoAccessLog: cfg.NoAccessLog}
	}
	if d.mcps != nil {
		pins := &mcpgate.Pins{Store: d.db, Audit: d.pipe, Node: d.node}
		holds := &mcpgate.Holds{Audit: d.pipe, Node: d.node}
		if d.feed != nil {
			// Nodes share the store: held calls are listed, and decided, on
			// every node. On SQLite there is one node, and nothing to share.
			holds.Store = d.db
		}
		d.mcp = &mcpgate.Gate{Settings: d.mcps, Verifier: d.ver, Refuser: d.ver, Sessions: d.sessions, Audit: d.pipe,
			TrustedProxies: cfg.TrustedProxies, Holds: holds, Pins: pins, Node: d.node, Logger: d.logger,
			Identify: func(h http.Header, dec latchkey.Decision, aud string) { authz.Identify(h, dec, aud, "") }}
		if err := d.mcp.Start(); err != nil {
			return fmt.Errorf("mcp gateway: %w", err)
		}
		d.api.MCP = &httpapi.MCP{Holds: holds, Pins: pins}
	}
	if !cfg.NoUI {
		d.api.UI, d.api.SessionKey, d.api.SessionTTL, d.api.Sessions = ui.Handler(), key, cfg.SessionTTL, d.db
	}
	if cfg.OAuthIssuer != "" {
		if err := d.buildOAuth(); err != nil {
			return err
		}
	}
	return nil
}

// buildOAuth constructs the OAuth authorization server on the API. Its
// resources are the configured ones, the gateway routes', the database
// gateway's databases' and the MCP gateway's servers, whose RFC 9728 documents then name it.
func (d *daemon) buildOAuth() error {
	cfg := d.cfg
	iss, err := oauth.CheckIssuer(cfg.OAuthIssuer)
	if err != nil {
		return err
	}
	if cfg.NoUI {
		return errors.New("--oauth-issuer needs the dashboard (its consent page): drop --ui=false")
	}
	resources := slices.Clone(cfg.OAuthResources)
	if d.dbs != nil {
		resources = append(resources, d.dbs.Resources()...)
	}
	var scopes []string
	if d.mcps != nil {
		resources = append(resources, d.mcps.Resources()...)
		scopes = d.mcps.ScopesSupported()
		if len(d.mcps.AuthorizationServers) == 0 {
			d.mcps.AuthorizationServers = []string{iss.String()}
		}
		if d.mcps.PublicURL == nil {
			d.logger.Warn("oauth: the MCP gateway has no mcp.public_url, so tokens cannot be issued for its servers")
		}
	}
	d.oauth = &oauth.Server{Issuer: iss, Verifier: d.ver, Tokens: d.svc, Store: d.db, Audit: d.pipe,
		TrustedProxies: cfg.TrustedProxies, Log: d.logger, Node: d.node, Registration: cfg.OAuthRegistration,
		AccessTTL: cfg.OAuthAccessTTL, MaxAccessTTL: cfg.OAuthMaxAccessTTL, RefreshTTL: cfg.OAuthRefreshTTL,
		Resources: func() []string {
			out := resources
			if d.gw != nil { // the gateway's routes, as reloaded
				for _, rt := range d.gw.Table().Routes {
					if rt.Resource != "" && !slices.Contains(out, rt.Resource) {
						out = append(slices.Clip(out), rt.Resource)
					}
				}
			}
			return out
		},
		ScopesSupported: func() []string { return scopes },
		Metadata:        &oauth.Fetcher{AllowPrivate: cfg.OAuthPrivateMetadata}}
	if cfg.OAuthPrivateMetadata {
		d.logger.Warn("oauth: client metadata documents may be fetched from private addresses (--oauth-client-metadata-private): for tests only")
	}
	d.api.OAuth = d.oauth
	d.logger.Info("oauth authorization server", "issuer", iss.String(), "resources", len(resources), "registration", cmp.Or(cfg.OAuthRegistration, oauth.RegistrationOpen))
	return nil
}

// dbTLS is what the database gateway offers on SSLRequest: its file's
// certificate, else the server's.
func (d *daemon) dbTLS() (*tls.Config, error) {
	cert, key := d.dbs.TLSCert, d.dbs.TLSKey
	if cert == "" {
		cert, key = d.cfg.TLSCert, d.cfg.TLSKey
	}
	if cert == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("database gateway: tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// metricSources are the parts the metrics read at scrape time.
func (d *daemon) metricSources() metrics.Sources {
	src := metrics.Sources{Pipeline: d.pipe, Verifier: d.ver, Detector: d.det}
	if rc := d.redis; rc != nil {
		src.Redis = func() metrics.RedisStats {
			return metrics.RedisStats{Up: rc.Up(), Failures: rc.Failures(), Resets: rc.Resets()}
		}
	}
	if f := d.feed; f != nil {
		src.Cluster = func() metrics.ClusterStats {
			st := f.FeedStats()
			return metrics.ClusterStats{Listening: st.Listening, Notified: st.Notified, Polled: st.Polled, Reconnects: st.Reconnects}
		}
	}
	if d.hooks != nil {
		src.Webhooks = d.hooks.Stats
	}
	return src
}

// bootstrap creates the root token of a new data directory, and shows it
// once.
func (d *daemon) bootstrap(ctx context.Context, stderr io.Writer) error {
	pt, created, err := d.svc.Bootstrap(ctx)
	if err != nil || !created {
		return err
	}
	path := filepath.Join(d.cfg.DataDir, "root-token")
	if err := writeSecretFile(path, pt.Reveal()+"\n"); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "\nlatchkey: created the root token (scope latchkey:admin).\n"+
		"It is shown once here and saved to %s (mode 0600):\n\n    %s\n\n", path, pt.Reveal())
	if d.api.UI != nil {
		fmt.Fprintf(stderr, "Paste it to sign in to the dashboard: %s://%s/ui/\n\n", d.scheme(), d.cfg.Listen)
	}
	return nil
}

func (d *daemon) scheme() string {
	if d.cfg.TLSCert != "" {
		return "https"
	}
	return "http"
}

// listen binds the API's address and, with a gateway, the gateway's.
func (d *daemon) listen(gateway bool) error {
	ln, err := net.Listen("tcp", d.cfg.Listen)
	if err != nil {
		return err
	}
	d.addr = ln.Addr().String()
	d.servers = append(d.servers, served{srv: newHTTPServer(d.api.Handler(), d.logger), ln: ln, tls: d.cfg.TLSCert != ""})
	if d.pg != nil {
		if d.dbLn, err = d.pg.Listen(); err != nil {
			ln.Close()
			return err
		}
		d.dbAddr = d.dbLn.Addr().String()
	}
	if !gateway {
		return nil
	}
	gln, err := net.Listen("tcp", d.cfg.GatewayListen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("gateway: %w", err)
	}
	d.gwAddr = gln.Addr().String()
	// Streams and websockets pass through: no whole-request read or
	// write timeout. Headers still have theirs, and each route bounds its
	// body (body_timeout) and its whole request (timeout).
	var h http.Handler = d.rec.Wrap("gateway", d.gw)
	if d.mcp != nil {
		gw, gate := h, d.rec.Wrap("mcp", d.mcp)
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if mcpgate.Handles(r.URL.Path) {
				gate.ServeHTTP(w, r)
				return
			}
			gw.ServeHTTP(w, r)
		})
	}
	d.servers = append(d.servers, served{srv: edge.NewServer(h, edge.Limits{ReadTimeout: -1, WriteTimeout: -1}, d.logger), ln: gln})
	return nil
}

// newHTTPServer is the API listener: the edge's default limits.
func newHTTPServer(h http.Handler, logger *slog.Logger) *http.Server {
	return edge.NewServer(h, edge.Limits{}, logger)
}

// start serves the listeners and runs the background loops, all in one
// errgroup: a listener that fails ends the loops' context (done), and
// serve shuts the daemon down.
func (d *daemon) start() {
	ctx, stop := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	d.loops, d.stop, d.done = g, stop, gctx.Done()
	d.cause = func() error { return context.Cause(gctx) }
	for i := range d.servers {
		s := &d.servers[i]
		g.Go(func() error {
			var err error
			if s.tls {
				err = s.srv.ServeTLS(s.ln, d.cfg.TLSCert, d.cfg.TLSKey)
			} else {
				err = s.srv.Serve(s.ln)
			}
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("serving %s: %w", s.ln.Addr(), err)
		})
	}
	if d.pg != nil {
		g.Go(func() error {
			if err := d.pg.Serve(d.dbLn); err != nil {
				return fmt.Errorf("database gateway: %w", err)
			}
			return nil
		})
		d.logger.Info("database gateway listening", "addr", d.dbAddr, "databases", len(d.dbs.Databases), "tls", d.pg.TLS != nil)
		if d.pg.TLS == nil && !isLoopbackAddr(d.dbAddr) {
			d.logger.Warn("the database gateway has no TLS certificate: clients off this host are refused unless allow_cleartext_password is set",
				"listen", d.dbAddr)
		}
	}
	d.startLoops(gctx)
	if d.hooks != nil {
		d.hooks.Start()
	}
	if d.gw != nil {
		d.logger.Info("gateway listening", "addr", "http://"+d.gwAddr, "routes", len(d.gw.Table().Routes))
		if d.mcps != nil {
			names := make([]string, 0, len(d.mcps.Servers))
			for _, s := range d.mcps.Servers {
				names = append(names, "/mcp/"+s.Name)
			}
			d.logger.Info("mcp gateway", "servers", strings.Join(names, " "))
		}
	}
	if !d.servers[0].tls && !isLoopbackAddr(d.addr) {
		d.logger.Warn("serving plain HTTP on a non-loopback address: tokens will cross the network in clear text; use --tls-cert and --tls-key",
			"listen", d.addr)
	}
	store := "sqlite"
	if d.feed != nil {
		store = "postgres"
	}
	d.logger.Info("latchkey listening", "addr", d.scheme()+"://"+d.addr, "data_dir", d.cfg.DataDir, "store", store, "node", d.node,
		"shared_counters", d.redis != nil)
	if d.api.UI != nil {
		d.logger.Info("dashboard", "url", d.scheme()+"://"+d.addr+"/ui/")
	}
}

// Shutdown stops the server gracefully within ctx's deadline: readiness
// fails first, in-flight requests finish, the loops end, then the audit
// queue is written out and the store closed. Work still running at the
// deadline is abandoned and reported.
func (d *daemon) Shutdown(ctx context.Context) error {
	d.api.Drain()
	d.stop()
	if d.mcp != nil {
		d.mcp.Close() // its streams would hold the gateway's listener open
	}
	var err error
	for i := len(d.servers) - 1; i >= 0; i-- { // the gateway first: it calls into the rest
		err = errors.Join(err, d.servers[i].srv.Shutdown(ctx))
	}
	if d.pg != nil {
		err = errors.Join(err, d.pg.Shutdown(ctx))
	}
	err = errors.Join(err, d.waitLoops(ctx))
	return errors.Join(err, d.release(ctx))
}

// waitLoops waits for the loops to end, or for ctx. A loop that ignores
// its context is left behind, with the one goroutine waiting for it.
func (d *daemon) waitLoops(ctx context.Context) error {
	ended := make(chan error, 1)
	go func() { ended <- d.loops.Wait() }()
	select {
	case err := <-ended:
		return err
	case <-ctx.Done():
		return fmt.Errorf("background work still running at the shutdown deadline: %w", ctx.Err())
	}
}

// release closes what is open, in the reverse order of build; it is
// also the cleanup of a start that failed part way.
func (d *daemon) release(ctx context.Context) error {
	var err error
	if d.mcp != nil {
		d.mcp.Close() // the stdio servers' processes and sockets
	}
	if d.ver != nil {
		err = errors.Join(err, d.ver.Close(ctx)) // last-use times and refusal records
	}
	if d.pipe != nil {
		err = errors.Join(err, d.pipe.Close(ctx))
		// Every answered attempt is counted now: keep the counts for the next start.
		if perr := d.board.Publish(ctx, time.Now()); perr != nil {
			d.logger.Warn("keeping the dashboard's counts failed", "err", perr)
		}
		st := d.pipe.Stats()
		d.logger.Info("audit queue drained", "written", st.Written, "lost", st.Lost)
	}
	if d.det != nil {
		d.det.Close() // after the pipeline: its last batches may still find something
	}
	if d.hooks != nil {
		d.hooks.Close() // undelivered events go out after the next start
	}
	if d.redis != nil {
		d.redis.Close()
	}
	if d.db != nil {
		err = errors.Join(err, d.db.Close())
	}
	if d.unlock != nil {
		d.unlock()
	}
	if d.stopTracing != nil {
		err = errors.Join(err, d.stopTracing(ctx)) // the last spans are exported
	}
	return err
}

// reloadGateway reads the route file again (SIGHUP). An invalid file is
// refused and the routes in force stay.
func (d *daemon) reloadGateway() {
	if d.gw == nil {
		d.logger.Info("SIGHUP: no gateway configured; nothing to reload")
		return
	}
	t, err := gateway.LoadConfig(d.cfg.GatewayConfig)
	if err != nil {
		d.logger.Error("gateway: the new route file is refused; the old routes stay in force", "err", err)
		return
	}
	d.gw.Reload(t)
	d.logger.Info("gateway: routes reloaded", "routes", len(t.Routes))
}
