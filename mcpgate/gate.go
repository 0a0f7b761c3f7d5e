// Package mcpgate is the MCP gateway (DESIGN.md §10): a Streamable HTTP
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
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/secret"
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

	once     sync.Once
	mu       sync.Mutex
	sessions map[string]*session
	bridges  map[string]*bridge
	clients  map[string]*http.Client
	closed   bool
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
	tg, reason, answer := edge.CheckTarget(r.URL.EscapedPath(), r.Host, r.Header, r.URL.RawQuery)
	if tg.Path != "" {
		vr.Path = tg.Path
	}
	if reason != "" {
		g.refuse(w, &vr, reason, http.StatusBadRequest, answer)
		return
	}
	if name, ok := strings.CutPrefix(tg.Path, metadataPrefix); ok {
		srv, found := g.Settings.Server(name)
		if !found || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			g.refuse(w, &vr, edge.ReasonNoRoute, http.StatusNotFound, edge.AnswerNoRoute)
			return
		}
		g.serveMetadata(w, r, srv)
		return
	}
	name, _ := strings.CutPrefix(tg.Path, "/mcp/")
	srv, found := g.Settings.Server(name)
	if !found || r.URL.RawQuery != "" {
		g.refuse(w, &vr, edge.ReasonNoRoute, http.StatusNotFound, edge.AnswerNoRoute)
		return
	}
	token, present := edge.Credential(r, "")
	if !present {
		g.refused(&vr, edge.ReasonNoCredential)
		g.challenge(w, r, srv, "", "")
		return
	}
	vr.Token = token
	vr.Detail = detailJSON(map[string]string{"server": srv.Name})
	switch r.Method {
	case http.MethodPost:
		g.servePost(w, r, srv, &vr)
	case http.MethodGet:
		g.serveStream(w, r, srv, &vr)
	case http.MethodDelete:
		g.serveDelete(w, r, srv, &vr)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		g.refuse(w, &vr, "method_not_allowed", http.StatusMethodNotAllowed, `{"error":"method_not_allowed"}`)
	}
}

func (g *Gate) refuse(w http.ResponseWriter, vr *latchkey.VerifyRequest, reason string, status int, body string) {
	g.refused(vr, reason)
	edge.Refuse(w, status, body)
}

func (g *Gate) refused(vr *latchkey.VerifyRequest, reason string) {
	if g.Refuser != nil {
		g.Refuser.Refuse(vr, reason)
	}
}

// resourceURL is the server's URL as the client reaches it: the
// configured public URL, else the request's own host.
func (g *Gate) resourceURL(r *http.Request, srv *Server) string {
	if u := g.Settings.PublicURL; u != nil {
		return u.String() + "/mcp/" + srv.Name
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
		ScopesSupported:        []string{"mcp." + srv.Name + ".tools.*:call", ResourcesScope(srv.Name), PromptsScope(srv.Name)},
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
		if seg0 == "*" && rest == "" {
			return !strings.HasPrefix(g, latchkey.ReservedPrefix)
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
func (g *Gate) verify(ctx context.Context, vr *latchkey.VerifyRequest, srv *Server, n need) (latchkey.Decision, string, error) {
	req := *vr
	if n.scope != "" {
		req.Scopes = []string{n.scope}
		d, err := g.Verifier.Verify(ctx, &req)
		return d, n.scope, err
	}
	d, err := g.Verifier.Verify(ctx, &req)
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
		g.refuse(w, vr, ReasonNoSession, http.StatusBadRequest, `{"error":"invalid_request","error_description":"Mcp-Session-Id is required: send initialize first"}`)
		return nil, false
	}
	s, ok := g.lookup(id, srv)
	if !ok || s.tokenID != d.TokenID {
		// Another token's session is no more found than one that never was.
		g.refuse(w, vr, ReasonNoSession, http.StatusNotFound, `{"error":"session_not_found"}`)
		return nil, false
	}
	return s, true
}

// servePost takes one JSON-RPC message.
func (g *Gate) servePost(w http.ResponseWriter, r *http.Request, srv *Server, vr *latchkey.VerifyRequest) {
	start := time.Now()
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		g.refuse(w, vr, ReasonBadMessage, http.StatusUnsupportedMediaType, `{"error":"invalid_request","error_description":"Content-Type must be application/json"}`)
		return
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		g.refuse(w, vr, ReasonBadMessage, http.StatusUnsupportedMediaType, `{"error":"invalid_request","error_description":"compressed bodies are not accepted"}`)
		return
	}
	if !accepts(r.Header.Values("Accept"), "application/json") || !accepts(r.Header.Values("Accept"), "text/event-stream") {
		g.refuse(w, vr, ReasonBadMessage, http.StatusNotAcceptable, `{"error":"invalid_request","error_description":"Accept must list application/json and text/event-stream"}`)
		return
	}
	if r.ContentLength > g.Settings.MaxMessageBytes {
		g.refuse(w, vr, ReasonBadMessage, http.StatusRequestEntityTooLarge, `{"error":"request_too_large"}`)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.Settings.MaxMessageBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			g.refuse(w, vr, ReasonBadMessage, http.StatusRequestEntityTooLarge, `{"error":"request_too_large"}`)
			return
		}
		g.refuse(w, vr, ReasonBadMessage, http.StatusBadRequest, `{"error":"invalid_request"}`)
		return
	}
	msg, err := parseMessage(body)
	if err != nil {
		g.refused(vr, ReasonBadMessage)
		code := int64(jsonrpc.CodeInvalidRequest)
		if strings.HasPrefix(err.Error(), "malformed JSON") {
			code = jsonrpc.CodeParseError
		}
		writeJSON(w, http.StatusBadRequest, rpcError(jsonrpc.ID{}, code, err.Error()))
		return
	}
	req, isReq := msg.(*jsonrpc.Request)
	var n need
	var nerr error
	if isReq {
		n, nerr = needFor(srv.Name, req)
		vr.Detail = g.detail(srv, nil, req.Method, n, nil)
	}
	if nerr != nil {
		n.scope = "" // the token is still checked, for the server
	}
	d, scope, err := g.verify(r.Context(), vr, srv, n)
	if err != nil || !d.Valid() {
		var id jsonrpc.ID
		if isReq {
			id = req.ID
		}
		g.deny(w, r, srv, d, err, scope, id)
		return
	}
	if isReq && req.Method == "initialize" {
		if r.Header.Get("Mcp-Session-Id") != "" {
			g.refuse(w, vr, ReasonBadMessage, http.StatusBadRequest, `{"error":"invalid_request","error_description":"initialize opens a session: send it without Mcp-Session-Id"}`)
			return
		}
		g.initialize(w, r, srv, vr, d, body, req, start)
		return
	}
	s, ok := g.sessionFor(w, r, vr, srv, d)
	if !ok {
		return
	}
	s.es.Used()
	if !isReq || !req.IsCall() {
		// A notification, or the agent's answer to the upstream's request
		// (sampling, elicitation, roots): forwarded as it is.
		g.forward(w, r, s, srv, body, nil, d, nil)
		return
	}
	rec := &call{g: g, s: s, srv: srv, d: d, req: req, n: n, start: start}
	if nerr != nil {
		reason := ReasonBadMessage
		code := int64(jsonrpc.CodeInvalidParams)
		var em errMethod
		if errors.As(nerr, &em) {
			reason, code = ReasonMethod, jsonrpc.CodeMethodNotFound
		}
		rec.done(latchkey.OutcomeRefused, reason, nil)
		writeJSON(w, http.StatusOK, rpcError(req.ID, code, nerr.Error()))
		return
	}
	if req.Method == "tools/call" {
		g.toolCall(w, r, rec, body)
		return
	}
	g.forward(w, r, s, srv, body, req, d, rec)
}

func accepts(values []string, typ string) bool {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
			if mt == typ || mt == "*/*" || (strings.HasSuffix(mt, "/*") && strings.HasPrefix(typ, strings.TrimSuffix(mt, "*"))) {
				return true
			}
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
}

// detail is a request's audit detail.
func (g *Gate) detail(srv *Server, s *session, method string, n need, args json.RawMessage) json.RawMessage {
	m := map[string]any{"server": srv.Name}
	if s != nil {
		m["session"] = s.id
	}
	if method != "" {
		m["method"] = clip(method, 64)
	}
	if n.kind != "" {
		m[n.kind] = n.target
	}
	if len(args) > 0 {
		m["arguments"] = args
	}
	return detailJSON(m)
}

// initialize opens a session: the upstream's answer carries its session
// id, kept by the gateway; the client is given the gateway's own.
func (g *Gate) initialize(w http.ResponseWriter, r *http.Request, srv *Server, vr *latchkey.VerifyRequest, d latchkey.Decision, body []byte, req *jsonrpc.Request, start time.Time) {
	g.mu.Lock()
	full := g.closed || (g.Settings.MaxSessions > 0 && len(g.sessions) >= g.Settings.MaxSessions)
	g.mu.Unlock()
	if full {
		g.refused(vr, ReasonTooManySession)
		edge.Refuse(w, http.StatusServiceUnavailable, `{"error":"temporarily_unavailable","error_description":"too many open MCP sessions"}`)
		return
	}
	id, key := edge.NewSessionID()
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{id: id, srv: srv, tokenID: d.TokenID, ctx: ctx, cancel: cancel, tools: map[string]seenTool{},
		es: &edge.Session{ID: id, Key: key, Door: "mcp", TokenID: d.TokenID, Subject: d.Subject, ClientIP: vr.ClientIP,
			Resource: srv.Name, Started: time.Now(), ExpiresAt: d.ExpiresAt}}
	rec := &call{g: g, s: s, srv: srv, d: d, req: req, start: start, vr: *vr}
	g.forward(w, r, s, srv, body, req, d, rec)
}

// open registers s once its upstream answered initialize.
func (g *Gate) open(s *session, d latchkey.Decision, vr latchkey.VerifyRequest) {
	recheck := vr
	recheck.Scopes, recheck.Detail = nil, g.detail(s.srv, s, "", need{}, nil)
	for _, gr := range d.Scopes {
		if serverTouched([]string{gr}, s.srv.Name) {
			recheck.Scopes = []string{gr}
			break
		}
	}
	g.mu.Lock()
	g.sessions[s.id] = s
	g.mu.Unlock()
	if g.Sessions != nil {
		s.remove = g.Sessions.Open(s.es, recheck, func(reason string) { g.end(s, reason) })
	}
}

// end ends s: its requests in flight and held calls are cut, the upstream
// session is deleted, and the end is on record.
func (g *Gate) end(s *session, reason string) {
	s.endOnce.Do(func() {
		s.ended.Store(true)
		s.cancel()
		g.mu.Lock()
		delete(g.sessions, s.id)
		g.mu.Unlock()
		if s.remove != nil {
			s.remove()
		}
		g.record(s, s.es.Key, func(ev *latchkey.AuditEvent) {
			ev.Kind, ev.Action, ev.Reason = latchkey.KindSession, latchkey.ActionMCPSessionEnd, reason
			ev.Outcome = latchkey.OutcomeOK
			ev.Actor = s.es.EndedBy()
			ev.Detail = detailJSON(map[string]any{"server": s.srv.Name, "session": s.id, "requests": s.es.Statements(),
				"duration_ms": time.Since(s.es.Started).Milliseconds()})
		})
		if s.upstream != "" && reason != edge.EndUpstream {
			go g.deleteUpstream(s)
		}
	})
}

func (g *Gate) deleteUpstream(s *session) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, g.upstreamURL(s.srv), nil)
	if err != nil {
		return
	}
	req.Header.Set("Mcp-Session-Id", s.upstream)
	g.setUpstreamHeaders(req.Header, s.srv)
	if resp, err := g.clients[s.srv.Name].Do(req); err == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
}

func (g *Gate) record(s *session, key uint64, fill func(ev *latchkey.AuditEvent)) {
	if g.Audit == nil {
		return
	}
	node := g.Node
	es := s.es
	g.Audit.RecordOn(key, func(ev *latchkey.AuditEvent) {
		ev.Time, ev.Node = time.Now(), node
		ev.TokenID, ev.Subject, ev.ClientIP = es.TokenID, es.Subject, es.ClientIP
		ev.RequestID = es.ID
		fill(ev)
	})
}

// call is one JSON-RPC request on its way, for its record.
type call struct {
	g     *Gate
	s     *session
	srv   *Server
	d     latchkey.Decision
	req   *jsonrpc.Request
	n     need
	args  json.RawMessage
	start time.Time
	vr    latchkey.VerifyRequest // what admitted it (initialize: the session's rechecks repeat it)
	once  sync.Once
}

// done writes the request's record: outcome VALID when it was forwarded
// (reason: the upstream's answer), REFUSED when the gateway refused it
// after the token was checked.
func (c *call) done(outcome, reason string, rpcErr *jsonrpc.Error) {
	c.once.Do(func() {
		lat := time.Since(c.start)
		detail := map[string]any{"server": c.srv.Name, "session": c.s.id, "method": clip(c.req.Method, 64)}
		if c.n.kind != "" {
			detail[c.n.kind] = c.n.target
		}
		if rpcErr != nil {
			detail["error_code"] = rpcErr.Code
		}
		if len(c.args) > 0 {
			detail["arguments"] = c.args
		}
		if c.s.es != nil {
			c.s.es.Used()
		}
		scopes := []string(nil)
		if c.n.scope != "" {
			scopes = []string{c.n.scope}
		}
		c.g.record(c.s, c.s.es.Key, func(ev *latchkey.AuditEvent) {
			ev.Kind, ev.Action = latchkey.KindSession, latchkey.ActionMCPRequest
			ev.Outcome, ev.Reason, ev.Latency, ev.Scopes = outcome, reason, lat, scopes
			ev.Method = "POST"
			ev.Path = "/mcp/" + c.srv.Name
			ev.Detail = detailJSON(detail)
		})
	})
}

// toolCall checks a call's pin and approval before forwarding it.
func (g *Gate) toolCall(w http.ResponseWriter, r *http.Request, c *call, body []byte) {
	var p struct {
		Arguments json.RawMessage `json:"arguments"`
	}
	_ = unmarshalParams(c.req.Params, &p)
	if c.srv.RecordArguments && len(p.Arguments) > 0 {
		c.args = redactJSON(p.Arguments, 4096)
	}
	if g.Pins != nil {
		ok, err := g.toolPinned(r.Context(), c, c.n.target)
		if err != nil {
			c.done(latchkey.OutcomeRefused, "pin_unverifiable", nil)
			writeJSON(w, http.StatusOK, rpcError(c.req.ID, CodeUpstreamFailure, "the tool's definition could not be checked"))
			return
		}
		if !ok {
			c.done(latchkey.OutcomeRefused, ReasonToolChanged, nil)
			writeJSON(w, http.StatusOK, rpcError(c.req.ID, CodeToolChanged, "refused by latchkey: the tool's definition changed since it was approved; an administrator must accept the new one"))
			return
		}
	}
	if c.srv.NeedsApproval(c.n.target) {
		g.held(w, r, c, body, redactJSON(p.Arguments, 4096))
		return
	}
	g.forward(w, r, c.s, c.srv, body, c.req, c.d, c)
}

// toolPinned checks the tool's definition as the upstream last gave it in
// this session (listing the tools first when the session has not).
func (g *Gate) toolPinned(ctx context.Context, c *call, tool string) (bool, error) {
	c.s.mu.Lock()
	fp, ok := c.s.tools[tool]
	c.s.mu.Unlock()
	if !ok {
		c.s.listMu.Lock()
		c.s.mu.Lock()
		fp, ok = c.s.tools[tool]
		c.s.mu.Unlock()
		var err error
		if !ok {
			if err = g.listTools(ctx, c.s, c.d); err == nil {
				c.s.mu.Lock()
				fp, ok = c.s.tools[tool]
				c.s.mu.Unlock()
			}
		}
		c.s.listMu.Unlock()
		if err != nil {
			return false, err
		}
		if !ok {
			return true, nil // not a tool the upstream lists: its own answer says so
		}
	}
	return g.Pins.Check(ctx, c.srv.Name, tool, fp.fp, fp.canon)
}

// held waits for a person's decision, keeping the agent's stream alive
// with SSE comments, then forwards or refuses the call.
func (g *Gate) held(w http.ResponseWriter, r *http.Request, c *call, body []byte, args json.RawMessage) {
	ctx, cancel := mergeCtx(r.Context(), c.s.ctx)
	defer cancel()
	sw := startSSE(w)
	stop := make(chan struct{})
	go func() { // keepalive
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				sw.comment("held for approval")
			case <-stop:
				return
			}
		}
	}()
	info := latchkey.HeldCall{Server: c.srv.Name, Tool: c.n.target, Arguments: args, TokenID: c.d.TokenID, Subject: c.d.Subject,
		ClientIP: c.s.es.ClientIP, Session: c.s.id}
	state, _ := g.Holds.Wait(ctx, info, c.s.es.Key, g.Settings.ApprovalTimeout)
	close(stop)
	if state != "approved" {
		msg := map[string]string{"denied": "refused: a person denied this tool call", "expired": "refused: nobody approved this tool call in time",
			"cancelled": "refused: the call was cancelled while held"}[state]
		c.done(latchkey.OutcomeRefused, "approval_"+state, nil)
		sw.message(rpcError(c.req.ID, CodeApprovalDenied, msg))
		return
	}
	g.relay(sw, r, c, body)
}

func mergeCtx(a, b context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(a)
	stop := context.AfterFunc(b, cancel)
	return ctx, func() { stop(); cancel() }
}

// upstreamURL is where the server's messages go.
func (g *Gate) upstreamURL(srv *Server) string {
	if srv.Stdio() {
		return "http://stdio.invalid/"
	}
	return srv.URL.String()
}

func (g *Gate) setUpstreamHeaders(h http.Header, srv *Server) {
	for k, v := range srv.Headers {
		h.Set(k, v)
	}
	h.Set("User-Agent", "latchkey-mcp-gateway")
}

// upstreamRequest builds the request to the upstream: only the headers
// the protocol needs cross, with the gateway's identity headers.
func (g *Gate) upstreamRequest(ctx context.Context, r *http.Request, s *session, body []byte, d latchkey.Decision) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	out, err := http.NewRequestWithContext(ctx, r.Method, g.upstreamURL(s.srv), rd)
	if err != nil {
		return nil, err
	}
	h := out.Header
	if body != nil {
		h.Set("Content-Type", "application/json")
		h.Set("Accept", "application/json, text/event-stream")
	} else {
		h.Set("Accept", "text/event-stream")
	}
	if v := r.Header.Get("Mcp-Protocol-Version"); plainHeader(v, 32) {
		h.Set("Mcp-Protocol-Version", v)
	}
	if v := r.Header.Get("Last-Event-Id"); v != "" && plainHeader(v, 256) {
		h.Set("Last-Event-Id", v)
	}
	if s.upstream != "" {
		h.Set("Mcp-Session-Id", s.upstream)
	}
	g.setUpstreamHeaders(h, s.srv)
	if g.Identify != nil {
		g.Identify(h, d, "mcp."+s.srv.Name)
	} else {
		h.Set("X-Latchkey-Token-Id", d.TokenID)
		h.Set("X-Latchkey-Subject", d.Subject)
	}
	return out, nil
}

func plainHeader(v string, n int) bool {
	if v == "" || len(v) > n {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x21 || v[i] > 0x7e {
			return false
		}
	}
	return true
}

// forward sends one message upstream and relays the answer. c is nil for
// a notification or a response.
func (g *Gate) forward(w http.ResponseWriter, r *http.Request, s *session, srv *Server, body []byte, req *jsonrpc.Request, d latchkey.Decision, c *call) {
	if c == nil {
		ctx, cancel := mergeCtx(r.Context(), s.ctx)
		defer cancel()
		out, err := g.upstreamRequest(ctx, r, s, body, d)
		if err != nil {
			edge.Refuse(w, http.StatusBadGateway, `{"error":"upstream_unavailable"}`)
			return
		}
		resp, err := g.clients[srv.Name].Do(out)
		if err != nil {
			g.upstreamFailed(srv, err)
			edge.Refuse(w, http.StatusBadGateway, `{"error":"upstream_unavailable"}`)
			return
		}
		defer resp.Body.Close()
		g.sessionGone(s, resp)
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, io.LimitReader(resp.Body, 64<<10))
		return
	}
	g.relay(&sseWriter{w: w}, r, c, body)
}

func (g *Gate) upstreamFailed(srv *Server, err error) {
	if !errors.Is(err, context.Canceled) {
		g.logger().Warn("mcp gateway: upstream failed", "server", srv.Name, "err", secret.Redact(err.Error()))
	}
}

// sessionGone ends s when the upstream says its session is no more.
func (g *Gate) sessionGone(s *session, resp *http.Response) {
	if resp.StatusCode == http.StatusNotFound && s.upstream != "" {
		g.end(s, edge.EndUpstream)
	}
}

// relay forwards call c and relays the upstream's answer (JSON or an
// event stream) into sw, cutting list answers to the token and noting the
// outcome for the record.
func (g *Gate) relay(sw *sseWriter, r *http.Request, c *call, body []byte) {
	s, srv := c.s, c.srv
	ctx, cancel := context.WithTimeout(r.Context(), g.Settings.CallTimeout)
	defer cancel()
	ctx, cancel2 := mergeCtx(ctx, s.ctx)
	defer cancel2()
	out, err := g.upstreamRequest(ctx, r, s, body, c.d)
	if err == nil {
		var resp *http.Response
		if resp, err = g.clients[srv.Name].Do(out); err == nil {
			defer resp.Body.Close()
			g.answer(sw, c, resp)
			return
		}
	}
	g.upstreamFailed(srv, err)
	reason := "upstream_unavailable"
	if s.ended.Load() {
		reason = "session_ended"
	}
	c.done(latchkey.Valid.String(), reason, nil)
	if sw.started || !sw.canHeader() {
		sw.message(rpcError(c.req.ID, CodeUpstreamFailure, "the upstream MCP server could not be reached"))
		return
	}
	writeJSON(sw.w, http.StatusBadGateway, rpcError(c.req.ID, CodeUpstreamFailure, "the upstream MCP server could not be reached"))
}

// answer relays the upstream's response to c.
func (g *Gate) answer(sw *sseWriter, c *call, resp *http.Response) {
	s := c.s
	if c.req.Method == "initialize" && resp.StatusCode == http.StatusOK && !s.ended.Load() {
		s.upstream = resp.Header.Get("Mcp-Session-Id")
		if !plainHeader(s.upstream, 256) {
			s.upstream = ""
		}
		g.open(s, c.d, c.vr)
		if !sw.started {
			sw.w.Header().Set("Mcp-Session-Id", s.id)
		}
	}
	g.sessionGone(s, resp)
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode == http.StatusOK && ct == "application/json":
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
		if err != nil || len(b) > maxAnswer {
			c.done(latchkey.Valid.String(), "upstream_unreadable", nil)
			sw.fail(c.req.ID)
			return
		}
		b = g.rewrite(c, b)
		if sw.started {
			sw.message(b)
			return
		}
		writeJSON(sw.w, http.StatusOK, b)
	case resp.StatusCode == http.StatusOK && ct == "text/event-stream":
		sw.start()
		br := bufio.NewReaderSize(resp.Body, 32<<10)
		answered := false
		for {
			e, err := readEvent(br, maxAnswer)
			if err != nil {
				if !answered {
					reason := "upstream_closed"
					if s.ended.Load() {
						reason = "session_ended"
					}
					c.done(latchkey.Valid.String(), reason, nil)
				}
				return
			}
			if e.Data != "" {
				if m, err := jsonrpc.DecodeMessage([]byte(e.Data)); err == nil {
					if rsp, ok := m.(*jsonrpc.Response); ok && rsp.ID == c.req.ID {
						e.Data = string(g.rewrite(c, []byte(e.Data)))
						answered = true
					}
				}
			}
			if sw.event(e) != nil {
				c.done(latchkey.Valid.String(), "client_gone", nil)
				return
			}
		}
	default:
		c.done(latchkey.Valid.String(), fmt.Sprintf("upstream_status_%d", resp.StatusCode), nil)
		if sw.started {
			sw.message(rpcError(c.req.ID, CodeUpstreamFailure, fmt.Sprintf("the upstream answered HTTP %d", resp.StatusCode)))
			return
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if ct != "" {
			sw.w.Header().Set("Content-Type", ct)
		}
		sw.w.WriteHeader(resp.StatusCode)
		sw.w.Write(b)
	}
}

const maxAnswer = 32 << 20

// rewrite notes the outcome of the answer b to c, cutting a list answer
// to what the token may use. A list answer that cannot be read is
// replaced by an error: an unfiltered list never reaches the agent.
func (g *Gate) rewrite(c *call, b []byte) []byte {
	m, err := jsonrpc.DecodeMessage(b)
	rsp, ok := m.(*jsonrpc.Response)
	if err != nil || !ok {
		c.done(latchkey.Valid.String(), "upstream_unreadable", nil)
		return rpcError(c.req.ID, CodeUpstreamFailure, "the upstream's answer could not be read")
	}
	if rsp.Error != nil {
		c.done(latchkey.Valid.String(), "rpc_error", asWire(rsp.Error))
		return b
	}
	result, ferr := g.filter(c, rsp.Result)
	if ferr != nil {
		c.done(latchkey.Valid.String(), "upstream_unreadable", nil)
		return rpcError(c.req.ID, CodeUpstreamFailure, "the upstream's answer could not be read")
	}
	reason := "ok"
	if c.req.Method == "tools/call" && bytes.Contains(rsp.Result, []byte(`"isError":true`)) {
		reason = "tool_error"
	}
	c.done(latchkey.Valid.String(), reason, nil)
	if result == nil {
		return b
	}
	out, err := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: rsp.ID, Result: result})
	if err != nil {
		return rpcError(c.req.ID, CodeUpstreamFailure, "the upstream's answer could not be read")
	}
	return out
}

func asWire(err error) *jsonrpc.Error {
	var we *jsonrpc.Error
	if errors.As(err, &we) {
		return we
	}
	return &jsonrpc.Error{Code: jsonrpc.CodeInternalError}
}

// filter cuts a list result; nil means unchanged.
func (g *Gate) filter(c *call, result json.RawMessage) (json.RawMessage, error) {
	srv, grants := c.srv, c.d.Scopes
	switch c.req.Method {
	case "tools/list":
		seen := map[string]seenTool{}
		f := &listFilter{server: srv.Name, grants: grants}
		if g.Pins != nil {
			f.pinned = func(def *toolDef, fp string, canon []byte) bool {
				ok, err := g.Pins.Check(context.Background(), srv.Name, def.Name, fp, canon)
				return err == nil && ok
			}
		}
		out, err := f.filterTools(result, seen)
		if err != nil {
			return nil, err
		}
		c.s.mu.Lock()
		for k, v := range seen {
			c.s.tools[k] = v
		}
		c.s.mu.Unlock()
		return out, nil
	case "resources/list":
		return filterAll(result, "resources", latchkey.ScopesCover(grants, ResourcesScope(srv.Name)))
	case "resources/templates/list":
		return filterAll(result, "resourceTemplates", latchkey.ScopesCover(grants, ResourcesScope(srv.Name)))
	case "prompts/list":
		return filterAll(result, "prompts", latchkey.ScopesCover(grants, PromptsScope(srv.Name)))
	}
	return nil, nil
}

// listTools asks the upstream for its tools in s (every page), for the
// pins, without the agent seeing the answer.
func (g *Gate) listTools(ctx context.Context, s *session, d latchkey.Decision) error {
	cursor := ""
	for page := 0; page < 20; page++ {
		params := map[string]any{}
		if cursor != "" {
			params["cursor"] = cursor
		}
		pb, _ := json.Marshal(params)
		s.lists++
		id, _ := jsonrpc.MakeID(fmt.Sprintf("latchkey-pins-%s-%d", s.id, s.lists))
		body, _ := jsonrpc.EncodeMessage(&jsonrpc.Request{ID: id, Method: "tools/list", Params: pb})
		r, _ := http.NewRequestWithContext(ctx, http.MethodPost, "/", nil)
		out, err := g.upstreamRequest(ctx, r, s, body, d)
		if err != nil {
			return err
		}
		resp, err := g.clients[s.srv.Name].Do(out)
		if err != nil {
			return err
		}
		result, err := readAnswer(resp, id)
		resp.Body.Close()
		if err != nil {
			return err
		}
		var tr struct {
			Tools      []toolDef `json:"tools"`
			NextCursor string    `json:"nextCursor"`
		}
		if err := json.Unmarshal(result, &tr); err != nil {
			return err
		}
		s.mu.Lock()
		for i := range tr.Tools {
			fp, canon := tr.Tools[i].fingerprint()
			s.tools[tr.Tools[i].Name] = seenTool{fp, canon}
		}
		s.mu.Unlock()
		if tr.NextCursor == "" {
			return nil
		}
		cursor = tr.NextCursor
	}
	return nil
}

// readAnswer reads the result of request id from a JSON or event-stream
// answer.
func readAnswer(resp *http.Response, id jsonrpc.ID) (json.RawMessage, error) {
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("upstream answered HTTP %d", resp.StatusCode)
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	pick := func(b []byte) (json.RawMessage, bool, error) {
		m, err := jsonrpc.DecodeMessage(b)
		if err != nil {
			return nil, false, nil
		}
		rsp, ok := m.(*jsonrpc.Response)
		if !ok || rsp.ID != id {
			return nil, false, nil
		}
		if rsp.Error != nil {
			return nil, true, rsp.Error
		}
		return rsp.Result, true, nil
	}
	if ct == "application/json" {
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		if err != nil {
			return nil, err
		}
		if res, ok, err := pick(b); ok {
			return res, err
		}
		return nil, errors.New("no answer")
	}
	br := bufio.NewReader(resp.Body)
	for {
		e, err := readEvent(br, maxAnswer)
		if err != nil {
			return nil, err
		}
		if res, ok, err := pick([]byte(e.Data)); ok {
			return res, err
		}
	}
}

// serveStream relays the upstream's stream of server-initiated messages
// (GET, with Last-Event-ID to resume) until the session ends.
func (g *Gate) serveStream(w http.ResponseWriter, r *http.Request, srv *Server, vr *latchkey.VerifyRequest) {
	if !accepts(r.Header.Values("Accept"), "text/event-stream") {
		g.refuse(w, vr, ReasonBadMessage, http.StatusNotAcceptable, `{"error":"invalid_request","error_description":"Accept must list text/event-stream"}`)
		return
	}
	vr.AuditFailuresOnly = true
	d, scope, err := g.verify(r.Context(), vr, srv, need{})
	if err != nil || !d.Valid() {
		g.deny(w, r, srv, d, err, scope, jsonrpc.ID{})
		return
	}
	s, ok := g.sessionFor(w, r, vr, srv, d)
	if !ok {
		return
	}
	ctx, cancel := mergeCtx(r.Context(), s.ctx)
	defer cancel()
	out, err := g.upstreamRequest(ctx, r, s, nil, d)
	if err != nil {
		edge.Refuse(w, http.StatusBadGateway, `{"error":"upstream_unavailable"}`)
		return
	}
	resp, err := g.clients[srv.Name].Do(out)
	if err != nil {
		g.upstreamFailed(srv, err)
		edge.Refuse(w, http.StatusBadGateway, `{"error":"upstream_unavailable"}`)
		return
	}
	defer resp.Body.Close()
	g.sessionGone(s, resp)
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, io.LimitReader(resp.Body, 64<<10))
		return
	}
	sw := startSSE(w)
	br := bufio.NewReaderSize(resp.Body, 32<<10)
	for {
		e, err := readEvent(br, maxAnswer)
		if err != nil || sw.event(e) != nil {
			return
		}
	}
}

// serveDelete ends the session at the client's request.
func (g *Gate) serveDelete(w http.ResponseWriter, r *http.Request, srv *Server, vr *latchkey.VerifyRequest) {
	vr.AuditFailuresOnly = true
	d, scope, err := g.verify(r.Context(), vr, srv, need{})
	if err != nil || !d.Valid() {
		g.deny(w, r, srv, d, err, scope, jsonrpc.ID{})
		return
	}
	s, ok := g.sessionFor(w, r, vr, srv, d)
	if !ok {
		return
	}
	g.end(s, edge.EndClient)
	w.WriteHeader(http.StatusNoContent)
}

// sseWriter writes an answer as an event stream, once started.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	mu      sync.Mutex
	started bool
}

func startSSE(w http.ResponseWriter) *sseWriter {
	sw := &sseWriter{w: w}
	sw.start()
	return sw
}

func (sw *sseWriter) canHeader() bool { return !sw.started }

func (sw *sseWriter) start() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.started {
		return
	}
	sw.started = true
	sw.rc = http.NewResponseController(sw.w)
	h := sw.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache, no-transform")
	sw.w.WriteHeader(http.StatusOK)
	sw.rc.Flush()
}

func (sw *sseWriter) event(e event) error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if err := writeEvent(sw.w, e); err != nil {
		return err
	}
	return sw.rc.Flush()
}

func (sw *sseWriter) message(b []byte) {
	sw.start()
	sw.event(event{Name: "message", Data: string(b)})
}

func (sw *sseWriter) comment(text string) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	io.WriteString(sw.w, ": "+text+"\n\n")
	sw.rc.Flush()
}

func (sw *sseWriter) fail(id jsonrpc.ID) {
	b := rpcError(id, CodeUpstreamFailure, "the upstream's answer could not be read")
	if sw.started {
		sw.message(b)
		return
	}
	writeJSON(sw.w, http.StatusBadGateway, b)
}

// redactJSON is a copy of v with every string that looks like a secret
// redacted, cut to at most n bytes (then it is a JSON string saying so).
func redactJSON(v json.RawMessage, n int) json.RawMessage {
	if len(v) == 0 {
		return nil
	}
	var x any
	if json.Unmarshal(v, &x) != nil {
		return nil
	}
	x = redactValue(x)
	b, _ := json.Marshal(x)
	if len(b) > n {
		b, _ = json.Marshal(fmt.Sprintf("[%d bytes, not kept]", len(b)))
	}
	return b
}

func redactValue(x any) any {
	switch v := x.(type) {
	case string:
		return secret.Redact(v)
	case map[string]any:
		for k, e := range v {
			lk := strings.ToLower(k)
			if strings.Contains(lk, "password") || strings.Contains(lk, "secret") || strings.Contains(lk, "token") || strings.Contains(lk, "key") {
				v[k] = "[redacted]"
				continue
			}
			v[k] = redactValue(e)
		}
	case []any:
		for i, e := range v {
			v[i] = redactValue(e)
		}
	}
	return x
}
