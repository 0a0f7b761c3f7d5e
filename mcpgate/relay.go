package mcpgate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/secret"
)

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

// notify forwards a notification, or the agent's answer to a request of
// the upstream's, and relays the upstream's status (202, or a refusal).
func (g *Gate) notify(w http.ResponseWriter, r *http.Request, s *session, body []byte, d latchkey.Decision) {
	ctx, cancel := mergeCtx(r.Context(), s.ctx)
	defer cancel()
	resp, ok := g.send(ctx, w, r, s, body, d)
	if !ok {
		return
	}
	defer resp.Body.Close()
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, io.LimitReader(resp.Body, 64<<10))
}

// send makes the request to the upstream (a message, or nil for the GET
// stream) and returns its answer, or answers 502 itself.
func (g *Gate) send(ctx context.Context, w http.ResponseWriter, r *http.Request, s *session, body []byte, d latchkey.Decision) (*http.Response, bool) {
	out, err := g.upstreamRequest(ctx, r, s, body, d)
	if err != nil {
		edge.Refuse(w, http.StatusBadGateway, `{"error":"upstream_unavailable"}`)
		return nil, false
	}
	resp, err := g.clients[s.srv.Name].Do(out)
	if err != nil {
		g.upstreamFailed(s.srv, err)
		edge.Refuse(w, http.StatusBadGateway, `{"error":"upstream_unavailable"}`)
		return nil, false
	}
	g.sessionGone(s, resp)
	return resp, true
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
	if sw.started {
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
	ct := mediaType(resp.Header.Get("Content-Type"))
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
		br := readers.Get().(*bufio.Reader)
		br.Reset(resp.Body)
		defer func() { br.Reset(nil); readers.Put(br) }()
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
			if e.Data != "" && !answered {
				if m, ok := answerTo([]byte(e.Data), c.req.ID); ok {
					e.Data = string(g.rewriteAnswer(c, m, []byte(e.Data)))
					answered = true
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

// readers recycles the readers of upstream event streams.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

// rewrite notes the outcome of the answer b to c, cutting a list answer
// to what the token may use. A list answer that cannot be read is
// replaced by an error: an unfiltered list never reaches the agent.
func (g *Gate) rewrite(c *call, b []byte) []byte {
	m, ok := answerTo(b, c.req.ID)
	if !ok {
		c.done(latchkey.Valid.String(), "upstream_unreadable", nil)
		return rpcError(c.req.ID, CodeUpstreamFailure, "the upstream's answer could not be read")
	}
	return g.rewriteAnswer(c, m, b)
}

// rewriteAnswer is rewrite for an answer already read (m, of b).
func (g *Gate) rewriteAnswer(c *call, m upstreamMsg, b []byte) []byte {
	if m.Error != nil {
		c.done(latchkey.Valid.String(), "rpc_error", &jsonrpc.Error{Code: m.Error.Code})
		return b
	}
	result, ferr := g.filter(c, json.RawMessage(m.Result))
	if ferr != nil {
		c.done(latchkey.Valid.String(), "upstream_unreadable", nil)
		return rpcError(c.req.ID, CodeUpstreamFailure, "the upstream's answer could not be read")
	}
	reason := "ok"
	if c.req.Method == "tools/call" && bytes.Contains(m.Result, []byte(`"isError":true`)) {
		reason = "tool_error"
	}
	c.done(latchkey.Valid.String(), reason, nil)
	if result == nil {
		return b
	}
	out, err := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: c.req.ID, Result: result})
	if err != nil {
		return rpcError(c.req.ID, CodeUpstreamFailure, "the upstream's answer could not be read")
	}
	return out
}

// filter cuts a list result; nil means unchanged.
func (g *Gate) filter(c *call, result json.RawMessage) (json.RawMessage, error) {
	srv, grants := c.srv, c.d.Scopes
	switch c.req.Method {
	case "tools/list":
		seen := map[string]seenTool{}
		f := &listFilter{server: srv.Name, grants: grants}
		if g.Pins != nil {
			ctx, cancel := storeCtx() // the pins are in the store: bounded like every store call here
			defer cancel()
			f.pinned = func(def *toolDef, fp string, canon []byte) bool {
				ok, err := g.Pins.Check(ctx, srv.Name, def.Name, fp, canon)
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
	ct := mediaType(resp.Header.Get("Content-Type"))
	pick := func(b []byte) (json.RawMessage, bool, error) {
		m, ok := answerTo(b, id)
		if !ok {
			return nil, false, nil
		}
		if m.Error != nil {
			return nil, true, fmt.Errorf("the upstream answered tools/list with error %d", m.Error.Code)
		}
		return json.RawMessage(m.Result), true, nil
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
		g.refuse(r.Context(), w, vr, ReasonBadMessage, http.StatusNotAcceptable, `{"error":"invalid_request","error_description":"Accept must list text/event-stream"}`)
		return
	}
	s, d, ok := g.admitSession(w, r, vr, srv)
	if !ok {
		return
	}
	defer g.touch(s)()
	ctx, cancel := mergeCtx(r.Context(), s.ctx)
	defer cancel()
	resp, ok := g.send(ctx, w, r, s, nil, d)
	if !ok {
		return
	}
	defer resp.Body.Close()
	ct := mediaType(resp.Header.Get("Content-Type"))
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

// sseWriter writes an answer as an event stream, once started.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	mu      sync.Mutex
	started bool
}

// startSSE starts an event stream now: the client sees its headers at
// once (a held call).
func startSSE(w http.ResponseWriter) *sseWriter {
	sw := &sseWriter{w: w}
	sw.start()
	sw.rc.Flush()
	return sw
}

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
	// Not flushed: the headers go with the first event, in one write.
	sw.w.WriteHeader(http.StatusOK)
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
