package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/internal/mcptest"
)

// mcpEnv is a latchkey with an MCP gateway in front of two upstreams
// written with the Go SDK: "gh" over Streamable HTTP (in this process),
// "local" over stdio (mcpgate/testdata/mcpserver, a process per session).
type mcpEnv struct {
	ts      *testServer
	gw      string // http://host:port of the gateway listener
	admin   *client.Client
	calls   *mcptest.Calls // gh's
	server  *mcp.Server    // gh's
	callLog string         // local's calls, a line each
	cfg     serveConfig
}

var (
	mcpServerOnce sync.Once
	mcpServerBin  string
	mcpServerErr  error
)

// mcpServerBinary builds the stdio test server once per test binary.
func mcpServerBinary(t *testing.T) string {
	t.Helper()
	mcpServerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "latchkey-mcpserver-")
		if err != nil {
			mcpServerErr = err
			return
		}
		mcpServerBin = filepath.Join(dir, "mcpserver")
		out, err := exec.Command("go", "build", "-o", mcpServerBin, "../../mcpgate/testdata/mcpserver").CombinedOutput()
		if err != nil {
			mcpServerErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if mcpServerErr != nil {
		t.Fatalf("building the stdio MCP server: %v", mcpServerErr)
	}
	return mcpServerBin
}

func newMCPEnv(t *testing.T, extra string) *mcpEnv {
	t.Helper()
	return newMCPEnvWith(t, extra, serveConfig{})
}

func newMCPEnvWith(t *testing.T, extra string, base serveConfig) *mcpEnv {
	t.Helper()
	e := &mcpEnv{calls: &mcptest.Calls{}}
	e.server = mcptest.New(e.calls)
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return e.server },
		&mcp.StreamableHTTPOptions{EventStore: mcp.NewMemoryEventStore(nil)})) // so that streams can be resumed
	t.Cleanup(up.Close)
	dir := t.TempDir()
	e.callLog = filepath.Join(dir, "calls.log")
	conf := filepath.Join(dir, "routes.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`mcp:
  approval_timeout: 20s
%s
  servers:
    - name: gh
      url: %s
      approval: [delete_*]
      record_arguments: true
    - name: local
      command: [%s]
      env: {MCPTEST_CALL_LOG: %s}
      approval: [send_email]
`, extra, up.URL, mcpServerBinary(t), e.callLog)), 0o600)
	base.GatewayConfig = conf
	if base.GatewayListen == "" {
		base.GatewayListen = "127.0.0.1:0"
	}
	e.cfg = base
	e.ts = startServerWith(t, dir, base)
	e.gw = "http://" + e.ts.d.gwAddr
	e.admin = e.ts.client(e.ts.root)
	return e
}

func (e *mcpEnv) token(t *testing.T, scopes ...string) *client.CreatedToken {
	t.Helper()
	tok, err := e.admin.CreateToken(context.Background(), client.CreateRequest{Subject: "agent-7", Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// localCalls is how many calls of tool reached the stdio server.
func (e *mcpEnv) localCalls(tool string) int {
	b, _ := os.ReadFile(e.callLog)
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if l == tool {
			n++
		}
	}
	return n
}

type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// connect opens a session with the official Go SDK's client.
func (e *mcpEnv) connect(t *testing.T, server, token string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := mcp.NewClient(&mcp.Implementation{Name: "latchkey-test", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.gw + "/mcp/" + server, MaxRetries: -1,
		HTTPClient: &http.Client{Transport: bearer{token, http.DefaultTransport}}}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", server, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func toolNames(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	return names
}

func text(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// The Must-show list's first item, with the Go SDK's client, over both
// upstreams.
func TestMCPGatewayGoClient(t *testing.T) {
	t.Parallel()
	e := newMCPEnv(t, "")
	for _, server := range []string{"gh", "local"} {
		t.Run(server, func(t *testing.T) {
			tok := e.token(t, "mcp."+server+".tools.echo:call", "mcp."+server+".tools.search:call")
			cs := e.connect(t, server, tok.Plaintext)
			if got := toolNames(t, cs); !slices.Equal(got, []string{"echo", "search"}) {
				t.Errorf("tools/list = %v, want [echo search] (filtered by scope)", got)
			}
			res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi there"}})
			if err != nil || text(res) != "hi there" {
				t.Fatalf("echo = %v, %v; want the upstream's answer", res, err)
			}
			_, err = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "noop"})
			if err == nil || !strings.Contains(err.Error(), "mcp."+server+".tools.noop:call") {
				t.Fatalf("noop outside the scope: err = %v, want a JSON-RPC error naming the scope", err)
			}
			// The session is still usable after the refusal.
			if res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "search", Arguments: map[string]any{"text": "x"}}); err != nil || text(res) != "found: x" {
				t.Fatalf("search after a refusal = %v, %v", res, err)
			}
			n := e.calls.Count("noop")
			if server == "local" {
				n = e.localCalls("noop")
			}
			if n != 0 {
				t.Errorf("the refused call reached the upstream %d times", n)
			}
			if _, err := cs.ListResources(context.Background(), nil); err != nil {
				t.Errorf("resources/list: %v", err)
			}
			if _, err := cs.ReadResource(context.Background(), &mcp.ReadResourceParams{URI: "test://readme"}); err == nil {
				t.Error("resources/read without mcp.S.resources:read was allowed")
			}
		})
	}
	e.ts.flush(t)
	page, err := e.admin.ListAudit(context.Background(), latchkey.AuditFilter{Action: latchkey.ActionMCPRequest, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	var sawEcho bool
	for _, ev := range page.Events {
		var d map[string]any
		json.Unmarshal(ev.Detail, &d)
		if d["tool"] == "echo" && ev.Reason == "ok" && ev.Subject == "agent-7" && ev.TokenID != "" && ev.Latency > 0 {
			sawEcho = true
		}
	}
	if !sawEcho {
		t.Errorf("no mcp.request record of the echo call with token, subject, outcome and latency: %+v", page.Events)
	}
	refused, _ := e.admin.ListAudit(context.Background(), latchkey.AuditFilter{Action: latchkey.ActionMCP, Limit: 500})
	found := false
	for _, ev := range refused.Events {
		if ev.Outcome == "INSUFFICIENT_SCOPE" && strings.Contains(string(ev.Detail), `"noop"`) {
			found = true
		}
	}
	if !found {
		t.Errorf("the refused noop call is not on record: %+v", refused.Events)
	}
}

// rawMCP speaks Streamable HTTP by hand, to see the gateway's HTTP
// answers as they are.
type rawMCP struct {
	t       *testing.T
	url     string
	token   string
	session string
}

func (c *rawMCP) post(body string) (*http.Response, string) {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.url, strings.NewReader(body))
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if c.session != "" {
		req.Header.Set("Mcp-Session-Id", c.session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (c *rawMCP) initialize() {
	c.t.Helper()
	resp, body := c.post(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	if resp.StatusCode != 200 || resp.Header.Get("Mcp-Session-Id") == "" {
		c.t.Fatalf("initialize: %d %s", resp.StatusCode, body)
	}
	c.session = resp.Header.Get("Mcp-Session-Id")
	c.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
}

// The challenges: 401 with resource_metadata, the RFC 9728 document,
// 403 naming the missing scope, and what the attacker tries.
func TestMCPGatewayChallenges(t *testing.T) {
	t.Parallel()
	e := newMCPEnv(t, "")
	anon := &rawMCP{t: t, url: e.gw + "/mcp/gh"}
	resp, _ := anon.post(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	challenge := resp.Header.Get("WWW-Authenticate")
	metaURL := e.gw + "/.well-known/oauth-protected-resource/mcp/gh"
	if resp.StatusCode != 401 || !strings.Contains(challenge, `resource_metadata="`+metaURL+`"`) {
		t.Fatalf("no token: %d %q, want 401 with resource_metadata", resp.StatusCode, challenge)
	}
	mr, err := http.Get(metaURL)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	json.NewDecoder(mr.Body).Decode(&meta)
	mr.Body.Close()
	// RFC 9728 §2: resource is required and is the URL the client used;
	// scopes_supported and bearer_methods_supported are optional arrays.
	if meta["resource"] != e.gw+"/mcp/gh" || mr.Header.Get("Content-Type") != "application/json" {
		t.Errorf("metadata resource = %v (%s), want %s", meta["resource"], mr.Header.Get("Content-Type"), e.gw+"/mcp/gh")
	}
	if bm, _ := meta["bearer_methods_supported"].([]any); len(bm) != 1 || bm[0] != "header" {
		t.Errorf("bearer_methods_supported = %v, want [header]", meta["bearer_methods_supported"])
	}
	if ss, _ := meta["scopes_supported"].([]any); !slices.Contains(ss, any("mcp.gh.tools.*:call")) {
		t.Errorf("scopes_supported = %v", meta["scopes_supported"])
	}
	for k := range meta {
		if !slices.Contains([]string{"resource", "resource_name", "authorization_servers", "scopes_supported", "bearer_methods_supported", "resource_documentation"}, k) {
			t.Errorf("metadata member %q is not an RFC 9728 field", k)
		}
	}

	bad := &rawMCP{t: t, url: e.gw + "/mcp/gh", token: "lk_notarealtoken_000000000000000000000000"}
	if resp, _ := bad.post(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`); resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("bad token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}

	tok := e.token(t, "mcp.gh.tools.echo:call")
	c := &rawMCP{t: t, url: e.gw + "/mcp/gh", token: tok.Plaintext}
	c.initialize()
	resp, body := c.post(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_repo","arguments":{"repo":"x"}}}`)
	if resp.StatusCode != 403 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `scope="mcp.gh.tools.delete_repo:call"`) ||
		!strings.Contains(resp.Header.Get("WWW-Authenticate"), "resource_metadata=") || !strings.Contains(body, `"id":2`) || !strings.Contains(body, `"error"`) {
		t.Errorf("outside the scope: %d %q %s, want 403 naming the scope, with a JSON-RPC error", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
	}
	// A token of another server only: 403 for the whole server.
	other := e.token(t, "mcp.local.tools.echo:call")
	oc := &rawMCP{t: t, url: e.gw + "/mcp/gh", token: other.Plaintext}
	if resp, _ := oc.post(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`); resp.StatusCode != 403 ||
		!strings.Contains(resp.Header.Get("WWW-Authenticate"), `scope="mcp.gh.*"`) {
		t.Errorf("another server's token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	// The attacker's messages: never forwarded.
	for _, tc := range []struct{ name, body string }{
		{"batch", `[{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_repo"}}]`},
		{"case twin", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","Name":"delete_repo"}}`},
		{"duplicate", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","name":"delete_repo"}}`},
		{"escaped twin", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","n\u0061me":"delete_repo"}}`},
		{"misspelt member", `{"jsonrpc":"2.0","id":3,"Method":"tools/call","params":{"name":"delete_repo"}}`},
		{"trailing", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"delete_repo"}}`},
		{"unknown method", `{"jsonrpc":"2.0","id":3,"method":"tasks/list","params":{}}`},
		{"odd tool name", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_repo/../echo"}}`},
	} {
		resp, body := c.post(tc.body)
		if resp.StatusCode == 200 && !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s, want a refusal", tc.name, resp.StatusCode, body)
		}
	}
	if n := e.calls.Count("delete_repo"); n != 0 {
		t.Errorf("delete_repo reached the upstream %d times", n)
	}
	// Another token cannot use this session.
	tok2 := e.token(t, "mcp.gh.tools.*:call")
	steal := &rawMCP{t: t, url: e.gw + "/mcp/gh", token: tok2.Plaintext, session: c.session}
	if resp, _ := steal.post(`{"jsonrpc":"2.0","id":9,"method":"tools/list"}`); resp.StatusCode != 404 {
		t.Errorf("another token on the session: %d, want 404", resp.StatusCode)
	}
	// Non-canonical paths and credentials in the URL.
	for _, p := range []string{"/mcp/gh/../gh", "/mcp/%67h/", "/mcp/gh?access_token=" + tok.Plaintext, "/mcp/nosuch"} {
		req, _ := http.NewRequest("POST", e.gw+p, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Authorization", "Bearer "+tok.Plaintext)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 && resp.StatusCode != 404 {
			t.Errorf("POST %s = %d, want 400 or 404", p, resp.StatusCode)
		}
	}
}

// sseLines reads an event stream and sends each data line.
func sseLines(r io.Reader) <-chan string {
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				ch <- d
			}
		}
	}()
	return ch
}

// waitHeld polls the CLI until one call is held, and returns its id.
func (e *mcpEnv) waitHeld(t *testing.T, tok string) latchkey.HeldCall {
	t.Helper()
	for range 400 {
		code, out, errs := cli(t, e.ts.url, tok, "mcp", "holds", "--json")
		if code != 0 {
			t.Fatalf("mcp holds: %d %s", code, errs)
		}
		var list client.HeldCallList
		json.Unmarshal([]byte(out), &list)
		if len(list.Held) == 1 {
			return list.Held[0]
		}
		time.Sleep(25 * time.Millisecond) // waiting for the agent's request to arrive, not for time to pass
	}
	t.Fatal("no call was held")
	return latchkey.HeldCall{}
}

// The Must-show list's second item: a held call approved and one denied,
// both with the CLI.
func TestMCPGatewayApprovalCLI(t *testing.T) {
	t.Parallel()
	e := newMCPEnv(t, "")
	agent := e.token(t, "mcp.gh.tools.*:call", latchkey.ScopeMCPApprove)
	approver := e.token(t, latchkey.ScopeMCPApprove, latchkey.ScopeAuditRead).Plaintext
	cs := e.connect(t, "gh", agent.Plaintext)
	type result struct {
		res *mcp.CallToolResult
		err error
	}
	call := func() <-chan result {
		ch := make(chan result, 1)
		go func() {
			res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "delete_repo", Arguments: map[string]any{"repo": "acme/site"}})
			ch <- result{res, err}
		}()
		return ch
	}
	ch := call()
	h := e.waitHeld(t, approver)
	if h.Tool != "delete_repo" || h.Server != "gh" || h.TokenID != agent.ID || h.Subject != "agent-7" || strings.Contains(string(h.Arguments), "CANARY") {
		t.Errorf("held call = %+v", h)
	}
	if e.calls.Count("delete_repo") != 0 {
		t.Fatal("the held call reached the upstream before it was approved")
	}
	// The agent cannot approve its own call, whatever its scopes.
	if code, _, _ := cli(t, e.ts.url, agent.Plaintext, "mcp", "approve", h.ID); code == 0 {
		t.Error("the agent approved its own call")
	}
	if code, out, errs := cli(t, e.ts.url, approver, "mcp", "approve", h.ID); code != 0 || !strings.Contains(out, "approved") {
		t.Fatalf("mcp approve: %d %s %s", code, out, errs)
	}
	r := <-ch
	if r.err != nil || text(r.res) != "deleted acme/site" {
		t.Fatalf("the approved call = %v, %v", r.res, r.err)
	}
	ch = call()
	h2 := e.waitHeld(t, approver)
	if code, _, errs := cli(t, e.ts.url, approver, "mcp", "deny", h2.ID); code != 0 {
		t.Fatalf("mcp deny: %d %s", code, errs)
	}
	r = <-ch
	if r.err == nil || !strings.Contains(r.err.Error(), "denied") {
		t.Fatalf("the denied call = %v, %v; want a JSON-RPC error saying it was denied", r.res, r.err)
	}
	if n := e.calls.Count("delete_repo"); n != 1 {
		t.Errorf("delete_repo reached the upstream %d times, want 1 (the approved one)", n)
	}
	if code, _, _ := cli(t, e.ts.url, approver, "mcp", "approve", h2.ID); code == 0 {
		t.Error("a decided call was approved again")
	}
	// A revoke ends the held call too: the agent is answered at once and
	// the call never reaches the upstream.
	ch = call()
	e.waitHeld(t, approver)
	if _, err := e.admin.RevokeToken(context.Background(), agent.ID, "mid-hold"); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	select {
	case r = <-ch:
		if r.err == nil {
			t.Errorf("the held call of a revoked token returned %v", r.res)
		}
		t.Logf("held call answered %v after the revoke", time.Since(revoked))
	case <-time.After(5 * time.Second):
		t.Fatal("the held call was still waiting 5s after its token was revoked")
	}
	if n := e.calls.Count("delete_repo"); n != 1 {
		t.Errorf("delete_repo reached the upstream %d times, want 1", n)
	}
	e.ts.flush(t)
	page, _ := e.admin.ListAudit(context.Background(), latchkey.AuditFilter{Action: latchkey.ActionMCPDecision, Limit: 10})
	var states []string
	for _, ev := range page.Events {
		if ev.Actor == "" && ev.Reason != "cancelled" {
			t.Errorf("decision without its approver: %+v", ev)
		}
		states = append(states, ev.Reason)
	}
	slices.Sort(states)
	if !slices.Equal(states, []string{"approved", "cancelled", "denied"}) {
		t.Errorf("decisions on record = %v", states)
	}
	holds, _ := e.admin.ListAudit(context.Background(), latchkey.AuditFilter{Action: latchkey.ActionMCPHold, Limit: 10})
	if len(holds.Events) != 3 {
		t.Errorf("%d holds on record, want 3", len(holds.Events))
	}
	all, _ := e.admin.ListAudit(context.Background(), latchkey.AuditFilter{Limit: 1000})
	b, _ := json.Marshal(all)
	if bytes.Contains(b, []byte("CANARY")) || strings.Contains(e.ts.out.String(), "CANARY") || strings.Contains(e.ts.out.String(), agent.Plaintext) {
		t.Error("a secret argument or the token reached the audit log or the logs")
	}
}

// The Must-show list's third item: a changed tool definition is refused
// (and hidden) until an administrator accepts it.
func TestMCPGatewayToolPinning(t *testing.T) {
	t.Parallel()
	e := newMCPEnv(t, "")
	tok := e.token(t, "mcp.gh.tools.*:call")
	cs := e.connect(t, "gh", tok.Plaintext)
	if names := toolNames(t, cs); !slices.Contains(names, "echo") {
		t.Fatalf("tools = %v", names)
	}
	mcptest.RugPull(e.server, e.calls)
	if names := toolNames(t, cs); slices.Contains(names, "echo") {
		t.Errorf("the changed echo is still listed: %v", names)
	}
	before := e.calls.Count("echo")
	_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}})
	if err == nil || !strings.Contains(err.Error(), "definition changed") {
		t.Fatalf("a call to the changed tool: %v, want refused", err)
	}
	// A new session, which never listed the tools, is refused too.
	cs2 := e.connect(t, "gh", tok.Plaintext)
	if _, err := cs2.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}}); err == nil {
		t.Error("a fresh session called the changed tool")
	}
	if e.calls.Count("echo") != before {
		t.Error("a refused call reached the upstream")
	}
	code, out, _ := cli(t, e.ts.url, e.ts.root, "mcp", "tools", "--json")
	var pins client.ToolPinList
	json.Unmarshal([]byte(out), &pins)
	var pending *latchkey.ToolChange
	for _, p := range pins.Tools {
		if p.Server == "gh" && p.Tool == "echo" {
			pending = p.Pending
		}
	}
	if code != 0 || pending == nil || !strings.Contains(string(pending.Definition), "id_rsa") {
		t.Fatalf("mcp tools: %d, pending = %+v", code, pending)
	}
	e.ts.flush(t)
	if page, _ := e.admin.ListAudit(context.Background(), latchkey.AuditFilter{Action: latchkey.ActionMCPToolChanged, Limit: 10}); len(page.Events) != 1 {
		t.Errorf("%d mcp.tool_changed records, want 1", len(page.Events))
	}
	if code, _, errs := cli(t, e.ts.url, e.ts.root, "mcp", "accept", "gh", "echo", pending.Fingerprint); code != 0 {
		t.Fatalf("mcp accept: %d %s", code, errs)
	}
	if names := toolNames(t, cs); !slices.Contains(names, "echo") {
		t.Errorf("the accepted echo is not listed: %v", names)
	}
	if res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}}); err != nil || text(res) != "x" {
		t.Errorf("after accept: %v %v", res, err)
	}
}

// mcpRevokeLatency opens a session and its stream of server messages,
// revokes the token, and times the stream's end from the revoke's answer.
func mcpRevokeLatency(t *testing.T, e *mcpEnv, gw string) time.Duration {
	t.Helper()
	tok := e.token(t, "mcp.gh.tools.echo:call")
	c := &rawMCP{t: t, url: gw + "/mcp/gh", token: tok.Plaintext}
	c.initialize()
	req, _ := http.NewRequest("GET", c.url, nil)
	req.Header.Set("Authorization", "Bearer "+tok.Plaintext)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", c.session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET stream: %v %v", resp, err)
	}
	ended := make(chan time.Time, 1)
	go func() {
		io.Copy(io.Discard, resp.Body)
		ended <- time.Now()
	}()
	if _, err := e.admin.RevokeToken(context.Background(), tok.ID, "trial"); err != nil {
		t.Fatal(err)
	}
	answered := time.Now()
	select {
	case at := <-ended:
		resp.Body.Close()
		return max(0, at.Sub(answered))
	case <-time.After(10 * time.Second):
		t.Fatal("the session's stream was still open 10s after the revoke")
	}
	return 0
}

// The Must-show list's fourth item: revoke to the end of the session, 50
// trials. The figure goes to the log (docs/benchmarks.md).
func TestMCPGatewayRevokeLatency(t *testing.T) {
	t.Parallel()
	e := newMCPEnv(t, "")
	var ds []time.Duration
	for range 50 {
		ds = append(ds, mcpRevokeLatency(t, e, e.gw))
	}
	p50, p99 := quantiles(ds)
	t.Logf("MCP session end after revoke, 50 trials: p50 %v, p99 %v (target p99 <= 100ms)", p50, p99)
	// The session is gone: its id is refused.
	e.ts.flush(t)
	page, _ := e.admin.ListAudit(context.Background(), latchkey.AuditFilter{Action: latchkey.ActionMCPSessionEnd, Limit: 100})
	revoked := 0
	for _, ev := range page.Events {
		if ev.Reason == "revoked" {
			revoked++
		}
	}
	if revoked != 50 {
		t.Errorf("%d sessions ended as revoked on record, want 50", revoked)
	}
}

var tsOnce sync.Once

// npmCI installs the TypeScript clients (mcpgate/testdata/tsclient) once.
func npmCI(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openid-client")); err == nil {
		return nil
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci: %v: %s", err, out)
	}
	return nil
}

// The Must-show list's first item with the official TypeScript SDK's
// client (npm @modelcontextprotocol/sdk, run with node), over both
// upstreams.
func TestMCPGatewayTypeScriptClient(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		requireService(t, "node")
		t.Skip("node is not installed")
	}
	dir, _ := filepath.Abs("../../mcpgate/testdata/tsclient")
	var installErr error
	tsOnce.Do(func() { installErr = npmCI(dir) })
	if installErr != nil {
		requireService(t, "the npm registry")
		t.Skip(installErr)
	}
	e := newMCPEnv(t, "")
	for _, server := range []string{"gh", "local"} {
		t.Run(server, func(t *testing.T) {
			tok := e.token(t, "mcp."+server+".tools.echo:call", "mcp."+server+".tools.search:call")
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, "client.mjs", e.gw+"/mcp/"+server, tok.Plaintext)
			cmd.Dir = dir
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("node client.mjs: %v: %s", err, out)
			}
			var got struct {
				Tools   []string `json:"tools"`
				Echo    string   `json:"echo"`
				Refused *string  `json:"refused"`
				After   string   `json:"after"`
			}
			if err := json.Unmarshal(bytes.TrimSpace(out), &got); err != nil {
				t.Fatalf("%s: %v", out, err)
			}
			if !slices.Equal(got.Tools, []string{"echo", "search"}) || got.Echo != "from ts" || got.After != "found: y" {
				t.Errorf("TypeScript client saw %+v", got)
			}
			if got.Refused == nil || !strings.Contains(*got.Refused, "mcp."+server+".tools.noop:call") {
				t.Errorf("the call outside the scope: %v, want an error naming the scope", got.Refused)
			}
			n := e.calls.Count("noop")
			if server == "local" {
				n = e.localCalls("noop")
			}
			if n != 0 {
				t.Errorf("the refused call reached the upstream %d times", n)
			}
		})
	}
}

// BenchmarkMCPNoop: calls of a no-op tool with the Go SDK's client,
// straight to the upstream and through the gateway, in the same run
// (docs/benchmarks.md gives the ratio of the two).
func BenchmarkMCPNoop(b *testing.B) {
	calls := &mcptest.Calls{}
	srv := mcptest.New(calls)
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	defer up.Close()
	dir := b.TempDir()
	conf := filepath.Join(dir, "routes.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf("mcp:\n  servers:\n    - name: gh\n      url: %s\n", up.URL)), 0o600)
	out := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := startDaemon(context.Background(), serveConfig{Listen: "127.0.0.1:0", DataDir: dir, GatewayConfig: conf, GatewayListen: "127.0.0.1:0"}, logger, out)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Shutdown(context.Background())
	root, _ := os.ReadFile(filepath.Join(dir, "root-token"))
	admin := &client.Client{BaseURL: "http://" + d.addr, Token: strings.TrimSpace(string(root))}
	tok, err := admin.CreateToken(context.Background(), client.CreateRequest{Subject: "bench", Scopes: []string{"mcp.gh.tools.noop:call"}})
	if err != nil {
		b.Fatal(err)
	}
	// The floor of any HTTP proxy on this machine: a bare
	// httputil.ReverseProxy in front of the same upstream.
	target, _ := url.Parse(up.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	bare := httptest.NewServer(rp)
	defer bare.Close()
	for _, tc := range []struct{ name, url string }{{"direct", up.URL}, {"bare-proxy", bare.URL}, {"gateway", "http://" + d.gwAddr + "/mcp/gh"}} {
		b.Run(tc.name, func(b *testing.B) {
			c := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil)
			cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: tc.url, DisableStandaloneSSE: true,
				HTTPClient: &http.Client{Transport: bearer{tok.Plaintext, &http.Transport{MaxIdleConnsPerHost: 64}}}}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer cs.Close()
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "noop"}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
}

// Revocation mid-session on every node: the session is on node B, the
// revoke is made on node A (PostgreSQL, its change feed), 50 trials.
func TestMCPGatewayRevokeAcrossNodes(t *testing.T) {
	t.Parallel()
	dsn := pgSchema(t)
	e := newMCPEnvWith(t, "", serveConfig{Database: dsn, ServerKey: strings.Repeat("5c", 32), Poll: 200 * time.Millisecond})
	b := startServerWith(t, t.TempDir(), e.cfg)
	waitFor(t, func() bool { return follower(b.d).Listening() })
	var ds []time.Duration
	for range 50 {
		ds = append(ds, mcpRevokeLatency(t, e, "http://"+b.d.gwAddr))
	}
	p50, p99 := quantiles(ds)
	t.Logf("revoke on node A → MCP session on node B ended (PostgreSQL), 50 trials: p50 %v, p99 %v (target p99 <= 100ms)", p50, p99)
}

// The Must-show list's second item, in the dashboard: a held call
// approved in headless Chromium; the agent's calls in the live feed and
// on its token's page; a changed tool accepted there too.
func TestDashboardApprovesHeldCall(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	e := newMCPEnv(t, "")
	agent := e.token(t, "mcp.gh.tools.*:call")
	cs := e.connect(t, "gh", agent.Plaintext)
	ts := e.ts
	b.do(t, "sign in", chromedp.Navigate(ts.url+"/ui/"), chromedp.WaitVisible("#token"),
		chromedp.SendKeys("#token", ts.root), chromedp.Click("#signin button[type=submit]"), chromedp.WaitVisible("#stream-status.live"))
	if res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "seen live"}}); err != nil || text(res) != "seen live" {
		t.Fatalf("echo: %v %v", res, err)
	}
	b.waitFor(t, "the agent's call in the live feed", `(document.querySelector('#feed')?.innerText || '').includes('mcp gh tools/call echo')`, 5*time.Second)
	done := make(chan error, 1)
	go func() {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "delete_repo", Arguments: map[string]any{"repo": "acme/site"}})
		if err == nil && text(res) != "deleted acme/site" {
			err = fmt.Errorf("result %q", text(res))
		}
		done <- err
	}()
	b.do(t, "the agents view", chromedp.Click(`nav a[data-view="agents"]`), chromedp.WaitVisible("#held tr[data-hold]"))
	row := b.eval(t, `document.querySelector('#held tr[data-hold]').innerText`)
	for _, want := range []string{"gh", "delete_repo", "acme/site", agent.ID, "agent-7"} {
		if !strings.Contains(row, want) {
			t.Errorf("the held call's row %q lacks %q", row, want)
		}
	}
	b.screenshot(t, "agents-held")
	b.do(t, "approve", chromedp.Click(`#held button[data-action="approve-hold"]`))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the approved call: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call approved in the dashboard did not return")
	}
	b.waitFor(t, "the decision listed", `(document.querySelector('#decided')?.innerText || '').includes('approved')`, 5*time.Second)
	// A rug pull, accepted in the dashboard.
	mcptest.RugPull(e.server, e.calls)
	toolNames(t, cs)
	b.waitFor(t, "the changed tool listed", `document.querySelector('#pins tr.changed[data-pin="gh/echo"]') !== null`, 5*time.Second)
	if desc := b.eval(t, `document.querySelector('#pins tr.changed').innerText`); !strings.Contains(desc, "id_rsa") {
		t.Errorf("the changed definition is not shown: %q", desc)
	}
	b.do(t, "accept", chromedp.Click(`#pins button[data-action="accept-tool"]`), chromedp.WaitVisible("dialog.confirm button[data-confirm]"),
		chromedp.Click("dialog.confirm button[data-confirm]"))
	b.waitFor(t, "the pin accepted", `document.querySelector('#pins tr.changed') === null`, 5*time.Second)
	if names := toolNames(t, cs); !slices.Contains(names, "echo") {
		t.Errorf("after accepting in the dashboard, tools = %v", names)
	}
	b.do(t, "the agent's token page", chromedp.Navigate(ts.url+"/ui/#/tokens/"+agent.ID))
	b.waitFor(t, "its tool calls", `(document.querySelector('#tool-calls')?.innerText || '').includes('delete_repo')`, 5*time.Second)
	b.screenshot(t, "token-tool-calls")
	b.do(t, "a phone-sized screen", chromedp.Navigate(ts.url+"/ui/#/agents"), chromedp.EmulateViewport(390, 844), chromedp.WaitVisible("#decided"))
	b.waitFor(t, "no sideways overflow on a phone", `document.documentElement.scrollWidth <= window.innerWidth`, 2*time.Second)
	for _, pr := range b.problems() {
		t.Error(pr)
	}
}

// MCP sessions are listed and ended with the database sessions
// (GET and DELETE /v1/sessions).
func TestMCPGatewaySessionsAPI(t *testing.T) {
	t.Parallel()
	e := newMCPEnv(t, "")
	tok := e.token(t, "mcp.local.tools.echo:call")
	c := &rawMCP{t: t, url: e.gw + "/mcp/local", token: tok.Plaintext}
	c.initialize()
	list, err := e.admin.ListSessions(context.Background(), tok.ID)
	if err != nil || len(list.Sessions) != 1 {
		t.Fatalf("sessions: %+v %v", list, err)
	}
	s := list.Sessions[0]
	if s.Door != "mcp" || s.Resource != "local" || s.Subject != "agent-7" || s.ID != c.session {
		t.Errorf("session = %+v", s)
	}
	if err := e.admin.EndSession(context.Background(), s.ID); err != nil {
		t.Fatal(err)
	}
	if resp, _ := c.post(`{"jsonrpc":"2.0","id":5,"method":"ping"}`); resp.StatusCode != 404 {
		t.Errorf("a request on the ended session: %d, want 404", resp.StatusCode)
	}
	e.ts.flush(t)
	page, _ := e.admin.ListAudit(context.Background(), latchkey.AuditFilter{Action: latchkey.ActionMCPSessionEnd, TokenID: tok.ID, Limit: 5})
	if len(page.Events) != 1 || page.Events[0].Reason != "ended_by_admin" || page.Events[0].Actor == "" {
		t.Errorf("session end records = %+v", page.Events)
	}
	// The token still works: a new session opens.
	c2 := &rawMCP{t: t, url: e.gw + "/mcp/local", token: tok.Plaintext}
	c2.initialize()
}

// What passes through a session both ways: progress notifications, the
// upstream's request to the client (sampling) and the client's answer,
// and cancellation; over both upstreams.
func TestMCPGatewayPassThrough(t *testing.T) {
	t.Parallel()
	e := newMCPEnv(t, "")
	for _, server := range []string{"gh", "local"} {
		t.Run(server, func(t *testing.T) {
			tok := e.token(t, "mcp."+server+".tools.*:call")
			var mu sync.Mutex
			var progress []float64
			c := mcp.NewClient(&mcp.Implementation{Name: "latchkey-test", Version: "1"}, &mcp.ClientOptions{
				ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
					mu.Lock()
					progress = append(progress, r.Params.Progress)
					mu.Unlock()
				},
				CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
					return &mcp.CreateMessageResult{Model: "test", Role: "assistant", Content: &mcp.TextContent{Text: "hi"}}, nil
				},
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.gw + "/mcp/" + server, MaxRetries: -1,
				HTTPClient: &http.Client{Transport: bearer{tok.Plaintext, http.DefaultTransport}}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			params := &mcp.CallToolParams{Name: "progress"}
			params.SetProgressToken("p1")
			if res, err := cs.CallTool(ctx, params); err != nil || text(res) != "done" {
				t.Fatalf("progress: %v %v", res, err)
			}
			waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(progress) == 3 })
			if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "ask"}); err != nil || text(res) != "the model said: hi" {
				t.Fatalf("sampling through the gateway: %v %v", res, err)
			}
			short, stop := context.WithTimeout(ctx, 300*time.Millisecond)
			_, err = cs.CallTool(short, &mcp.CallToolParams{Name: "wait"})
			stop()
			if err == nil {
				t.Fatal("the cancelled call returned")
			}
			if server == "gh" {
				waitFor(t, func() bool { return e.calls.Count("wait-cancelled") == 1 })
			} else {
				waitFor(t, func() bool { return e.localCalls("wait-cancelled") == 1 })
			}
			// The session goes on.
			if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "still here"}}); err != nil || text(res) != "still here" {
				t.Fatalf("after the cancellation: %v %v", res, err)
			}
		})
	}
}

// Last-Event-ID passes through: a call's stream cut before its answer is
// resumed with a GET naming the last event seen, and the answer arrives
// there (the upstream keeps its events).
func TestMCPGatewayResumesStream(t *testing.T) {
	t.Parallel()
	e := newMCPEnv(t, "")
	tok := e.token(t, "mcp.gh.tools.slow:call")
	c := &rawMCP{t: t, url: e.gw + "/mcp/gh", token: tok.Plaintext}
	c.initialize()
	req, _ := http.NewRequest("POST", c.url, strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"slow"}}`))
	req.Header.Set("Authorization", "Bearer "+tok.Plaintext)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", c.session)
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// Read up to the priming event's id, then drop the connection.
	br := bufio.NewReader(resp.Body)
	var last string
	for last == "" {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("the stream ended before an event id: %v", err)
		}
		if id, ok := strings.CutPrefix(strings.TrimSpace(l), "id: "); ok {
			last = id
		}
	}
	resp.Body.Close()
	get, _ := http.NewRequest("GET", c.url, nil)
	get.Header.Set("Authorization", "Bearer "+tok.Plaintext)
	get.Header.Set("Accept", "text/event-stream")
	get.Header.Set("Mcp-Session-Id", c.session)
	get.Header.Set("Last-Event-ID", last)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var gr *http.Response
	for range 100 {
		// 409 while the upstream still holds the cut stream (the gateway
		// notices the client's disconnect, then cancels its own request):
		// a client retries, as the SDKs do.
		if gr, err = http.DefaultClient.Do(get.WithContext(ctx)); err != nil || gr.StatusCode != http.StatusConflict {
			break
		}
		gr.Body.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || gr.StatusCode != 200 {
		t.Fatalf("resume: %v %v", gr, err)
	}
	defer gr.Body.Close()
	for d := range sseLines(gr.Body) {
		if strings.Contains(d, "woke") && strings.Contains(d, `"id":9`) {
			return
		}
	}
	t.Fatal("the resumed stream did not carry the answer")
}

// A call held on node B is listed and approved through node A
// (PostgreSQL): the approvers' dashboard need not be on the agent's node.
func TestMCPGatewayApprovalAcrossNodes(t *testing.T) {
	t.Parallel()
	dsn := pgSchema(t)
	e := newMCPEnvWith(t, "", serveConfig{Database: dsn, ServerKey: strings.Repeat("5d", 32), Poll: 200 * time.Millisecond})
	b := startServerWith(t, t.TempDir(), e.cfg)
	agent := e.token(t, "mcp.gh.tools.*:call")
	approver := e.token(t, latchkey.ScopeMCPApprove, latchkey.ScopeAuditRead).Plaintext
	c := mcp.NewClient(&mcp.Implementation{Name: "latchkey-test", Version: "1"}, nil)
	onB, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: "http://" + b.d.gwAddr + "/mcp/gh", MaxRetries: -1,
		HTTPClient: &http.Client{Transport: bearer{agent.Plaintext, http.DefaultTransport}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer onB.Close()
	done := make(chan error, 1)
	go func() {
		_, err := onB.CallTool(context.Background(), &mcp.CallToolParams{Name: "delete_repo", Arguments: map[string]any{"repo": "acme/b"}})
		done <- err
	}()
	h := e.waitHeld(t, approver) // listed by node A
	if h.Node != b.d.node && b.d.node != e.ts.d.node {
		t.Errorf("held on %q, want node B %q", h.Node, b.d.node)
	}
	if code, out, errs := cli(t, e.ts.url, approver, "mcp", "approve", h.ID); code != 0 {
		t.Fatalf("approve on node A: %d %s %s", code, out, errs)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the call approved on another node: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call approved on node A was still held on node B")
	}
	if code, _, _ := cli(t, e.ts.url, approver, "mcp", "deny", h.ID); code == 0 {
		t.Error("a decided call was decided again")
	}
}
