package mcpgate

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/edge"
)

// servePost takes one JSON-RPC message.
func (g *Gate) servePost(w http.ResponseWriter, r *http.Request, srv *Server, vr *latchkey.VerifyRequest) {
	start := time.Now()
	if ct := mediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		g.refuse(r.Context(), w, vr, ReasonBadMessage, http.StatusUnsupportedMediaType, `{"error":"invalid_request","error_description":"Content-Type must be application/json"}`)
		return
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		g.refuse(r.Context(), w, vr, ReasonBadMessage, http.StatusUnsupportedMediaType, `{"error":"invalid_request","error_description":"compressed bodies are not accepted"}`)
		return
	}
	if !accepts(r.Header.Values("Accept"), "application/json") || !accepts(r.Header.Values("Accept"), "text/event-stream") {
		g.refuse(r.Context(), w, vr, ReasonBadMessage, http.StatusNotAcceptable, `{"error":"invalid_request","error_description":"Accept must list application/json and text/event-stream"}`)
		return
	}
	if r.ContentLength > g.Settings.MaxMessageBytes {
		g.refuse(r.Context(), w, vr, ReasonBadMessage, http.StatusRequestEntityTooLarge, `{"error":"request_too_large"}`)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.Settings.MaxMessageBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			g.refuse(r.Context(), w, vr, ReasonBadMessage, http.StatusRequestEntityTooLarge, `{"error":"request_too_large"}`)
			return
		}
		g.refuse(r.Context(), w, vr, ReasonBadMessage, http.StatusBadRequest, `{"error":"invalid_request"}`)
		return
	}
	msg, err := parseMessage(body)
	if err != nil {
		g.refused(r.Context(), vr, ReasonBadMessage)
		code := int64(jsonrpc.CodeInvalidRequest)
		if errors.As(err, new(malformedJSON)) {
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
	// One record per request: the verifier's when it refuses the token,
	// else the gateway's mcp.request when the request is done (with its
	// outcome and latency). Notifications are recorded only when refused.
	vr.AuditFailuresOnly = true
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
			g.refuse(r.Context(), w, vr, ReasonBadMessage, http.StatusBadRequest, `{"error":"invalid_request","error_description":"initialize opens a session: send it without Mcp-Session-Id"}`)
			return
		}
		g.initialize(w, r, srv, vr, d, body, req, start)
		return
	}
	s, ok := g.sessionFor(w, r, vr, srv, d)
	if !ok {
		return
	}
	defer g.touch(s)()
	s.es.Used()
	if isReq && !req.IsCall() && nerr != nil {
		// A notification the gateway does not forward: there is no one to
		// answer, so the refusal is the HTTP status.
		g.refused(r.Context(), vr, ReasonMethod)
		writeJSON(w, http.StatusBadRequest, rpcError(req.ID, jsonrpc.CodeMethodNotFound, nerr.Error()))
		return
	}
	if !isReq || !req.IsCall() {
		// A known notification, or the agent's answer to the upstream's
		// request (sampling, elicitation, roots): forwarded as it is.
		g.notify(w, r, s, body, d)
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
	g.relay(&sseWriter{w: w}, r, rec, body)
}

func accepts(values []string, typ string) bool {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt := mediaType(strings.TrimSpace(part))
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
	d := requestDetail{Server: srv.Name, Method: edge.Clip(method, 64), Arguments: args}
	if s != nil {
		d.Session = s.id
	}
	n.into(&d)
	b, _ := json.Marshal(&d)
	return b
}

// requestDetail is the detail of a request's audit record.
type requestDetail struct {
	Server    string          `json:"server"`
	Session   string          `json:"session,omitempty"`
	Method    string          `json:"method,omitempty"`
	Tool      string          `json:"tool,omitempty"`
	Resource  string          `json:"resource,omitempty"`
	Prompt    string          `json:"prompt,omitempty"`
	ErrorCode int64           `json:"error_code,omitempty"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
}

// into names the request's target in d.
func (n need) into(d *requestDetail) {
	switch n.kind {
	case "tool":
		d.Tool = n.target
	case "resource":
		d.Resource = n.target
	case "prompt":
		d.Prompt = n.target
	}
}

// initialize opens a session: the upstream's answer carries its session
// id, kept by the gateway; the client is given the gateway's own.
func (g *Gate) initialize(w http.ResponseWriter, r *http.Request, srv *Server, vr *latchkey.VerifyRequest, d latchkey.Decision, body []byte, req *jsonrpc.Request, start time.Time) {
	g.mu.Lock()
	full := g.closed || (g.Settings.MaxSessions > 0 && len(g.sessions) >= g.Settings.MaxSessions)
	g.mu.Unlock()
	if full {
		g.refused(r.Context(), vr, ReasonTooManySession)
		edge.Refuse(w, http.StatusServiceUnavailable, `{"error":"temporarily_unavailable","error_description":"too many open MCP sessions"}`)
		return
	}
	// The client's Mcp-Session-Id: 130 random bits (crypto/rand.Text), as
	// the specification asks of an id that names a session; bound to the
	// token besides.
	_, key := edge.NewSessionID()
	id := rand.Text()
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{id: id, srv: srv, tokenID: d.TokenID, ctx: ctx, cancel: cancel, tools: map[string]seenTool{},
		es: &edge.Session{ID: id, Key: key, Door: "mcp", TokenID: d.TokenID, Subject: d.Subject, ClientIP: vr.ClientIP,
			Resource: srv.Name, Started: time.Now(), ExpiresAt: d.ExpiresAt}}
	rec := &call{g: g, s: s, srv: srv, d: d, req: req, start: start, vr: *vr}
	g.relay(&sseWriter{w: w}, r, rec, body)
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
	s.last.Store(g.now().UnixNano())
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
		detail := requestDetail{Server: c.srv.Name, Session: c.s.id, Method: edge.Clip(c.req.Method, 64), Arguments: c.args}
		c.n.into(&detail)
		if rpcErr != nil {
			detail.ErrorCode = rpcErr.Code
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
			ev.Detail, _ = json.Marshal(&detail)
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
	g.relay(&sseWriter{w: w}, r, c, body)
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
