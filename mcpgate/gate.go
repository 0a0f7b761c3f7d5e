// Package mcpgate is the MCP gateway (docs/architecture.md §10): a Streamable HTTP
// endpoint per upstream MCP server, at /mcp/<server>, where every
// JSON-RPC request an agent sends is authorised by its latchkey token's
// scopes before it reaches the upstream.
//
//   - tools/call of tool T needs mcp.<server>.tools.T:call;
//     resources/read (and subscribe) mcp.<server>.resources:read;
//     prompts/get mcp.<server>.prompts:get; initialize, ping, the lists,
//     logging and notifications any mcp.<server>.* scope. Any other
//     method is refused, never forwarded.
//   - List answers are cut to what the token may use.
//   - Tools named in the server's approval patterns are held until a
//     person decides (Holds); a tool whose definition changed since it
//     was pinned is refused until accepted (Pins).
//   - Every request is on record; a session ends the moment its token
//     is revoked or suspended, on any node (edge.Sessions).
//
// Messages are checked strictly (parseMessage) and forwarded as the bytes
// that were checked. The upstream is reached over Streamable HTTP, or is
// a local stdio server bridged by the SDK's transports (bridge).
package mcpgate

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/edge"
)

// Recorder takes audit records, in order per key (audit.Pipeline).
type Recorder interface {
	RecordOn(key uint64, fill func(ev *latchkey.AuditEvent))
}

// Reasons the gateway refuses a request, as audit reasons.
const (
	ReasonBadMessage     = "bad_message"
	ReasonNoSession      = "unknown_session"
	ReasonMethod         = "method_not_allowed"
	ReasonToolChanged    = "tool_changed"
	ReasonTooManySession = "too_many_sessions"
	ReasonOrigin         = "bad_origin"
	// EndSessionIdle: the session saw no request for session_idle_timeout.
	EndSessionIdle = "session_idle"
)

// Gate is the MCP gateway. Its zero fields work except Settings and
// Verifier.
type Gate struct {
	Settings *Settings
	Verifier latchkey.Verifier
	// Refuser records requests refused before a token was decided on.
	Refuser        latchkey.Refuser
	Sessions       *edge.Sessions
	Audit          Recorder
	TrustedProxies latchkey.TrustedProxies
	Holds          *Holds
	Pins           *Pins
	// Identify sets the identity headers the upstream reads (the
	// gateway's Authorizer.Identify); nil: X-Latchkey-Token-Id and
	// X-Latchkey-Subject only.
	Identify func(h http.Header, d latchkey.Decision, aud string)
	Node     string
	Logger   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time

	once     sync.Once
	mu       sync.Mutex
	sessions map[string]*session
	bridges  map[string]*bridge
	clients  map[string]*http.Client
	closed   bool
	stop     chan struct{}
	reaper   sync.WaitGroup
}

// session is one agent session through the gateway. Its id is the
// gateway's own, never the upstream's, so a client can address only
// sessions the gateway admitted it to.
type session struct {
	id       string
	upstream string // the upstream's Mcp-Session-Id ("" when it has none)
	srv      *Server
	tokenID  string
	es       *edge.Session
	ctx      context.Context
	cancel   context.CancelFunc
	remove   func()
	ended    atomic.Bool
	endOnce  sync.Once
	last     atomic.Int64 // unix nanoseconds of the last request
	streams  atomic.Int32 // streams open (a GET, a POST being answered)

	mu     sync.Mutex
	tools  map[string]seenTool // as the upstream last listed them in this session
	listMu sync.Mutex          // one listing of the tools at a time, for the pins
	lists  int                 // listings made, for their request ids (under listMu)
}

func (g *Gate) logger() *slog.Logger {
	if g.Logger != nil {
		return g.Logger
	}
	return slog.Default()
}

func (g *Gate) init() {
	g.once.Do(func() {
		g.sessions = map[string]*session{}
		g.bridges = map[string]*bridge{}
		g.clients = map[string]*http.Client{}
		if g.Holds == nil {
			g.Holds = &Holds{Audit: g.Audit, Node: g.Node}
		}
		for _, s := range g.Settings.Servers {
			tr := &http.Transport{
				Proxy:                 nil,
				DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				MaxIdleConnsPerHost:   64,
				IdleConnTimeout:       90 * time.Second,
				ResponseHeaderTimeout: g.Settings.CallTimeout,
				ForceAttemptHTTP2:     true,
			}
			if s.Stdio() {
				b := newBridge(s, g.logger(), g.Settings.MaxSessions)
				g.bridges[s.Name] = b
				tr.DialContext = b.dial
				tr.ForceAttemptHTTP2 = false
			}
			g.clients[s.Name] = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		}
	})
}

// Start starts the stdio servers' bridges (their processes start with
// each session). It returns the first error.
func (g *Gate) Start() error {
	g.init()
	g.stop = make(chan struct{})
	g.reaper.Add(1)
	go func() {
		defer g.reaper.Done()
		t := time.NewTicker(min(g.Settings.SessionIdleTimeout/4, 30*time.Second))
		defer t.Stop()
		for {
			select {
			case <-t.C:
				g.Reap(g.now())
			case <-g.stop:
				return
			}
		}
	}()
	for _, b := range g.bridges {
		if err := b.start(); err != nil {
			return err
		}
	}
	return nil
}

// Close ends every session and stops the bridges (their processes with
// them).
func (g *Gate) Close() {
	g.init()
	g.mu.Lock()
	if g.stop != nil && !g.closed {
		close(g.stop)
	}
	g.closed = true
	ss := make([]*session, 0, len(g.sessions))
	for _, s := range g.sessions {
		ss = append(ss, s)
	}
	g.mu.Unlock()
	for _, s := range ss {
		g.end(s, edge.EndShutdown)
	}
	for _, b := range g.bridges {
		b.close()
	}
	for _, c := range g.clients {
		c.CloseIdleConnections()
	}
	g.reaper.Wait()
}

func (g *Gate) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// Reap ends the sessions idle at now: no request for the idle timeout,
// and no stream open. (A client that goes away without DELETE would
// otherwise keep its session, and a stdio server's process, for ever.)
func (g *Gate) Reap(now time.Time) {
	cut := now.Add(-g.Settings.SessionIdleTimeout).UnixNano()
	g.mu.Lock()
	var idle []*session
	for _, s := range g.sessions {
		if s.streams.Load() == 0 && s.last.Load() < cut {
			idle = append(idle, s)
		}
	}
	g.mu.Unlock()
	for _, s := range idle {
		g.end(s, EndSessionIdle)
	}
}

// touch notes a request on s; the returned func ends a stream it opens.
func (g *Gate) touch(s *session) func() {
	s.last.Store(g.now().UnixNano())
	s.streams.Add(1)
	return func() { s.streams.Add(-1); s.last.Store(g.now().UnixNano()) }
}

// Handles reports whether path is the gateway's: /mcp/… or its RFC 9728
// documents.
func Handles(path string) bool {
	return strings.HasPrefix(path, "/mcp/") || path == "/mcp" || strings.HasPrefix(path, metadataPrefix)
}

const metadataPrefix = "/.well-known/oauth-protected-resource/mcp/"

// ServeHTTP serves /mcp/<server> and its metadata.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.init()
	ca := edge.ClientAddr(r, g.TrustedProxies)
	vr := latchkey.VerifyRequest{ClientIP: ca.IP, Source: ca.Source, Method: r.Method, Path: r.URL.Path, UserAgent: r.UserAgent(),
		RequestID: edge.RequestID(r.Header), Action: latchkey.ActionMCP}
	acc := edge.AccessOf(r.Context())
	acc.At("", ca.IP)
	tg, reason, answer := edge.CheckTarget(r.URL.EscapedPath(), r.Host, r.Header, r.URL.RawQuery)
	if tg.Path != "" {
		vr.Path = tg.Path
	}
	if reason != "" {
		g.refuse(r.Context(), w, &vr, reason, http.StatusBadRequest, answer)
		return
	}
	if name, ok := strings.CutPrefix(tg.Path, metadataPrefix); ok {
		srv, found := g.Settings.Server(name)
		if !found || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			g.refuse(r.Context(), w, &vr, edge.ReasonNoRoute, http.StatusNotFound, edge.AnswerNoRoute)
			return
		}
		g.serveMetadata(w, r, srv)
		return
	}
	name, _ := strings.CutPrefix(tg.Path, "/mcp/")
	srv, found := g.Settings.Server(name)
	if !found || r.URL.RawQuery != "" {
		g.refuse(r.Context(), w, &vr, edge.ReasonNoRoute, http.StatusNotFound, edge.AnswerNoRoute)
		return
	}
	acc.At(srv.Name, "")
	if o := r.Header.Get("Origin"); o != "" && !g.originAllowed(r, srv, o) {
		// The specification's defence against DNS rebinding: a page in a
		// browser may send to the gateway only from an origin it names.
		g.refuse(r.Context(), w, &vr, ReasonOrigin, http.StatusForbidden, `{"error":"invalid_request","error_description":"this Origin may not use the MCP gateway (mcp.allowed_origins)"}`)
		return
	}
	token, present := edge.Credential(r, "")
	if !present {
		g.refused(r.Context(), &vr, edge.ReasonNoCredential)
		g.challenge(w, r, srv, "", "")
		return
	}
	vr.Token = token
	vr.Detail = detailJSON(map[string]string{"server": srv.Name})
	// Tokens bound to an audience (delegated by the OAuth authorization
	// server) work here only under the configured public URL: a URL
	// built from the request's Host is the client's to choose.
	vr.Resource, vr.Keyspace = srv.Resource, srv.Keyspace
	switch r.Method {
	case http.MethodPost:
		g.servePost(w, r, srv, &vr)
	case http.MethodGet:
		g.serveStream(w, r, srv, &vr)
	case http.MethodDelete:
		g.serveDelete(w, r, srv, &vr)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		g.refuse(r.Context(), w, &vr, "method_not_allowed", http.StatusMethodNotAllowed, `{"error":"method_not_allowed"}`)
	}
}

func (g *Gate) refuse(ctx context.Context, w http.ResponseWriter, vr *latchkey.VerifyRequest, reason string, status int, body string) {
	g.refused(ctx, vr, reason)
	edge.Refuse(w, status, body)
}

// refused records a refusal (in the audit log, and in the request's
// access line) answered elsewhere.
func (g *Gate) refused(ctx context.Context, vr *latchkey.VerifyRequest, reason string) {
	edge.AccessOf(ctx).Refused(reason)
	if g.Refuser != nil {
		g.Refuser.Refuse(vr, reason)
	}
}

// originAllowed: an Origin is the gateway's own (that of the resource
// URL) or one the file allows.
func (g *Gate) originAllowed(r *http.Request, srv *Server, origin string) bool {
	for _, a := range g.Settings.AllowedOrigins {
		if strings.EqualFold(a, origin) {
			return true
		}
	}
	u := g.resourceURL(r, srv)
	own := u[:strings.Index(u, "/mcp/")]
	return strings.EqualFold(origin, own)
}

// resourceURL is the server's URL as the client reaches it: the
// configured public URL, else the request's own host.
func (g *Gate) resourceURL(r *http.Request, srv *Server) string {
	if srv.Resource != "" {
		return srv.Resource
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	} else if p := edge.PeerAddr(r); p.IsValid() && g.TrustedProxies.Trusts(p) && r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	host, ok := edge.CanonicalHost(r.Host)
	if !ok {
		host = "localhost"
	}
	if _, port, err := net.SplitHostPort(r.Host); err == nil {
		host = net.JoinHostPort(host, port)
	}
	return scheme + "://" + host + "/mcp/" + srv.Name
}

func (g *Gate) metadataURL(r *http.Request, srv *Server) string {
	u := g.resourceURL(r, srv)
	i := strings.Index(u, "/mcp/")
	return u[:i] + metadataPrefix + srv.Name
}

// serveMetadata answers the RFC 9728 protected resource metadata.
func (g *Gate) serveMetadata(w http.ResponseWriter, r *http.Request, srv *Server) {
	doc := struct {
		Resource               string   `json:"resource"`
		ResourceName           string   `json:"resource_name"`
		AuthorizationServers   []string `json:"authorization_servers,omitempty"`
		ScopesSupported        []string `json:"scopes_supported"`
		BearerMethodsSupported []string `json:"bearer_methods_supported"`
		ResourceDocumentation  string   `json:"resource_documentation,omitempty"`
	}{
		Resource:               g.resourceURL(r, srv),
		ResourceName:           "MCP server " + srv.Name + " (through latchkey)",
		AuthorizationServers:   g.Settings.AuthorizationServers,
		ScopesSupported:        srv.Scopes(),
		BearerMethodsSupported: []string{"header"},
	}
	b, _ := json.Marshal(doc)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(b)
}

// challenge answers 401 (or 403 with the scope missing) with the RFC 6750
// challenge and the metadata's address (RFC 9728 §5.1). body, when set,
// is a JSON-RPC error for the request.
func (g *Gate) challenge(w http.ResponseWriter, r *http.Request, srv *Server, errCode, scope string, body ...[]byte) {
	c := `Bearer realm="latchkey", resource_metadata="` + g.metadataURL(r, srv) + `"`
	status := http.StatusUnauthorized
	switch errCode {
	case "insufficient_scope":
		status = http.StatusForbidden
		c += `, error="insufficient_scope"`
		if scope != "" {
			c += `, scope="` + scope + `"`
		}
	case "invalid_token":
		c += `, error="invalid_token"`
	}
	w.Header().Set("WWW-Authenticate", c)
	if len(body) > 0 {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		w.Write(body[0])
		return
	}
	switch errCode {
	case "insufficient_scope":
		edge.Refuse(w, status, `{"error":"insufficient_scope"}`)
	case "invalid_token":
		edge.Refuse(w, status, `{"error":"invalid_token"}`)
	default:
		edge.Refuse(w, status, `{"error":"invalid_request"}`)
	}
}

// deny answers a refused verification as HTTP: 401, 403 (naming scope),
// 429 or 503. rpc, when set, is the JSON-RPC error body for a request.
func (g *Gate) deny(w http.ResponseWriter, r *http.Request, srv *Server, d latchkey.Decision, err error, scope string, id jsonrpc.ID) {
	switch edge.Classify(d, err) {
	case edge.Insufficient:
		var body [][]byte
		if id.IsValid() {
			msg := "refused by latchkey: the token does not allow this"
			if scope != "" {
				msg = "refused by latchkey: this needs the scope " + scope
			}
			body = append(body, rpcError(id, CodeRefused, msg))
		}
		g.challenge(w, r, srv, "insufficient_scope", scope, body...)
	case edge.InvalidToken:
		g.challenge(w, r, srv, "invalid_token", "")
	default:
		edge.Deny(w, d, err)
	}
}

// serverTouched reports whether some grant reaches a scope of server
// (mcp.<server>.…): what initialize, ping and the lists need.
func serverTouched(grants []string, server string) bool {
	for _, g := range grants {
		seg0, rest, _ := strings.Cut(g, ".")
		if g == "*" {
			return true
		}
		if seg0 != "mcp" && seg0 != "*" {
			continue
		}
		seg1 := rest
		if i := strings.IndexAny(rest, ".:"); i >= 0 {
			seg1 = rest[:i]
		}
		if seg1 == server || seg1 == "*" {
			return true
		}
	}
	return false
}

// anyScope is what a request that needs "any scope of server" is
// refused as: the broadest scope of the server.
func anyScope(server string) string { return "mcp." + server + ".*" }

func detailJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// verify decides on vr for the need n: one verification, with the scope
// when the method names one; for the others, any grant of the server.
func (g *Gate) verify(ctx context.Context, vr *latchkey.VerifyRequest, srv *Server, n need) (d latchkey.Decision, scope string, err error) {
	defer func() { edge.AccessOf(ctx).Decided(&d) }()
	req := *vr
	if n.scope != "" {
		req.Scopes = []string{n.scope}
		d, err = g.Verifier.Verify(ctx, &req)
		return d, n.scope, err
	}
	d, err = g.Verifier.Verify(ctx, &req)
	if err != nil || !d.Valid() {
		return d, "", err
	}
	if serverTouched(d.Scopes, srv.Name) {
		return d, "", nil
	}
	// No grant of this server: verified again for its broadest scope, so
	// that the refusal is decided and recorded like any other.
	req.Scopes, req.NoSpend, req.AuditFailuresOnly = []string{anyScope(srv.Name)}, true, false
	d, err = g.Verifier.Verify(ctx, &req)
	if err == nil && d.Valid() { // cannot happen: the grants were just read
		d.Code = latchkey.InsufficientScope
	}
	return d, anyScope(srv.Name), err
}

// lookup returns the session the request names, bound to token tokenID.
func (g *Gate) lookup(id string, srv *Server) (*session, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.sessions[id]
	if !ok || s.srv != srv || s.ended.Load() {
		return nil, false
	}
	return s, true
}

func (g *Gate) sessionFor(w http.ResponseWriter, r *http.Request, vr *latchkey.VerifyRequest, srv *Server, d latchkey.Decision) (*session, bool) {
	id := r.Header.Get("Mcp-Session-Id")
	if id == "" {
		g.refuse(r.Context(), w, vr, ReasonNoSession, http.StatusBadRequest, `{"error":"invalid_request","error_description":"Mcp-Session-Id is required: send initialize first"}`)
		return nil, false
	}
	s, ok := g.lookup(id, srv)
	if !ok || s.tokenID != d.TokenID {
		// Another token's session is no more found than one that never was.
		g.refuse(r.Context(), w, vr, ReasonNoSession, http.StatusNotFound, `{"error":"session_not_found"}`)
		return nil, false
	}
	return s, true
}

// admitSession checks the token of a GET or DELETE (any scope of the
// server; only a refusal is recorded) and the session it names.
func (g *Gate) admitSession(w http.ResponseWriter, r *http.Request, vr *latchkey.VerifyRequest, srv *Server) (*session, latchkey.Decision, bool) {
	vr.AuditFailuresOnly = true
	d, scope, err := g.verify(r.Context(), vr, srv, need{})
	if err != nil || !d.Valid() {
		g.deny(w, r, srv, d, err, scope, jsonrpc.ID{})
		return nil, d, false
	}
	s, ok := g.sessionFor(w, r, vr, srv, d)
	return s, d, ok
}

// serveDelete ends the session at the client's request.
func (g *Gate) serveDelete(w http.ResponseWriter, r *http.Request, srv *Server, vr *latchkey.VerifyRequest) {
	s, _, ok := g.admitSession(w, r, vr, srv)
	if !ok {
		return
	}
	g.end(s, edge.EndClient)
	w.WriteHeader(http.StatusNoContent)
}
