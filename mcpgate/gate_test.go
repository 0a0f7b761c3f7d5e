package mcpgate

import (
	"bufio"
	"context"
	stdjson "encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/internal/memsettings"
)

// fakeVerifier grants one token ("good") the scopes given.
type fakeVerifier struct{ grants []string }

func (f *fakeVerifier) Verify(_ context.Context, req *latchkey.VerifyRequest) (latchkey.Decision, error) {
	if req.Token != "good" {
		return latchkey.Decision{Code: latchkey.NotFound}, nil
	}
	d := latchkey.Decision{Code: latchkey.Valid, TokenID: "tok1", Subject: "agent", Scopes: f.grants}
	for _, s := range req.Scopes {
		if !latchkey.ScopesCover(f.grants, s) {
			d.Code = latchkey.InsufficientScope
		}
	}
	return d, nil
}

// fakeUpstream answers every call with an empty result (a tools/list with
// the tools named) and keeps what reached it.
type fakeUpstream struct {
	mu   sync.Mutex
	got  [][]byte
	tool []string
}

func (u *fakeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.got = append(u.got, b)
	u.mu.Unlock()
	var m struct {
		ID     stdjson.RawMessage `json:"id"`
		Method string             `json:"method"`
	}
	stdjson.Unmarshal(b, &m)
	if len(m.ID) == 0 {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	result := `{}`
	switch m.Method {
	case "initialize":
		w.Header().Set("Mcp-Session-Id", "up-1")
		result = `{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"fake","version":"1"}}`
	case "tools/list":
		var tools []string
		for _, t := range u.tool {
			tools = append(tools, `{"name":"`+t+`","inputSchema":{"type":"object"}}`)
		}
		result = `{"tools":[` + strings.Join(tools, ",") + `]}`
	}
	w.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(w, "id: e1\ndata: {\"jsonrpc\":\"2.0\",\"id\":"+string(m.ID)+",\"result\":"+result+"}\n\n")
}

func (u *fakeUpstream) received() [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([][]byte(nil), u.got...)
}

// newTestGate is a gateway for server "s" in front of a fake upstream,
// for a token granted echo only; it returns the gateway and a session id.
func newTestGate(t testing.TB) (*httptest.Server, *fakeUpstream, string) {
	return newTestGateWith(t, nil)
}

// newTestGateWith is newTestGate with the gate behind rec (the access
// log and metrics the daemon puts in front of every door).
func newTestGateWith(t testing.TB, rec *edge.Recorder) (*httptest.Server, *fakeUpstream, string) {
	up := &fakeUpstream{tool: []string{"echo", "rm"}}
	us := httptest.NewServer(up)
	t.Cleanup(us.Close)
	st, _, err := ParseConfig([]byte("mcp:\n  servers:\n    - name: s\n      url: " + us.URL + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	g := &Gate{Settings: st, Verifier: &fakeVerifier{grants: []string{"mcp.s.tools.echo:call"}},
		Pins: &Pins{Store: &memsettings.Store{}}}
	gs := httptest.NewServer(rec.Wrap("mcp", g))
	t.Cleanup(func() { gs.Close(); g.Close() })
	resp, _ := post(t, gs.URL+"/mcp/s", "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != 200 || sid == "" {
		t.Fatalf("initialize: %d", resp.StatusCode)
	}
	return gs, up, sid
}

func post(t testing.TB, url, sid, body string) (*http.Response, string) {
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer good")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestGateFiltersAndRefuses(t *testing.T) {
	t.Parallel()
	gs, up, sid := newTestGate(t)
	_, body := post(t, gs.URL+"/mcp/s", sid, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	if !strings.Contains(body, `"echo"`) || strings.Contains(body, `"rm"`) {
		t.Errorf("tools/list through the gateway = %s, want echo only", body)
	}
	resp, body := post(t, gs.URL+"/mcp/s", sid, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"rm"}}`)
	if resp.StatusCode != 403 || !strings.Contains(body, `"id":2`) {
		t.Errorf("rm: %d %s", resp.StatusCode, body)
	}
	for _, b := range up.received() {
		if strings.Contains(string(b), `"rm"`) {
			t.Errorf("the upstream received %s", b)
		}
	}
}

// FuzzGate sends any one message on an open session: the gateway never
// panics, and the upstream never receives a call to a tool the token may
// not call, nor a method the gateway does not forward, however the
// message is spelt.
func FuzzGate(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","NAME":"rm"}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm"}}]`,
		`{"jsonrpc":"2.0","id":"x","method":"tools/list"}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`,
		`{"jsonrpc":"2.0","id":7,"result":{"roots":[]}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"1"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"x"}}`,
		`{"jsonrpc":"2.0","id":1.5,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":` + strings.Repeat(`"xxxxxxxx",`, 1000) + `1}}}`,
	} {
		f.Add(s)
	}
	gs, up, sid := newTestGate(f)
	allowed := map[string]bool{"initialize": true, "ping": true, "tools/list": true, "resources/list": true, "resources/templates/list": true,
		"prompts/list": true, "logging/setLevel": true, "tools/call": true, "notifications/initialized": true, "notifications/cancelled": true,
		"notifications/progress": true, "notifications/roots/list_changed": true}
	f.Fuzz(func(t *testing.T, body string) {
		n := len(up.received())
		post(t, gs.URL+"/mcp/s", sid, body)
		for _, b := range up.received()[n:] {
			var m struct {
				Method string
				Params struct{ Name string }
			}
			if err := stdjson.Unmarshal(b, &m); err != nil {
				t.Fatalf("forwarded %q, which encoding/json cannot read: %v", b, err)
			}
			if m.Method != "" && !allowed[m.Method] {
				t.Fatalf("forwarded method %q: %q", m.Method, b)
			}
			if m.Method == "tools/call" && m.Params.Name != "echo" {
				t.Fatalf("forwarded a call to %q: %q", m.Params.Name, b)
			}
		}
	})
}

func TestSSERoundTrip(t *testing.T) {
	t.Parallel()
	in := "event: message\nid: s1_3\nretry: 500\ndata: {\"a\":1}\ndata: {\"b\":2}\n\n: a comment\n\ndata: x\n\n"
	br := bufio.NewReader(strings.NewReader(in))
	var out strings.Builder
	for {
		e, err := readEvent(br, 1<<20)
		if err != nil {
			break
		}
		writeEvent(&out, e)
	}
	want := "event: message\nid: s1_3\nretry: 500\ndata: {\"a\":1}\ndata: {\"b\":2}\n\ndata: x\n\n"
	if out.String() != want {
		t.Errorf("round trip:\n%q\nwant\n%q", out.String(), want)
	}
	if _, err := readEvent(bufio.NewReader(strings.NewReader("data: "+strings.Repeat("x", 100)+"\n\n")), 50); err != errEventTooLarge {
		t.Errorf("an event over the limit: %v", err)
	}
}

func TestStrictJSON(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{"a":1,"b":{"a":2}}`, true},
		{`{"a":[{"x":1},{"x":2}]}`, true},
		{`{"a":1,"a":2}`, false},
		{`{"a":1,"A":2}`, false},
		{`{"s":1,"ſ":2}`, false}, // U+017F folds to s
		{`{"k":1,"K":2}`, false}, // U+212A, the Kelvin sign
		{`{"a":1}{"b":2}`, false},
		{`{"a":"\ud800"}`, false},
		{"{\"a\":\"\xff\"}", false},
		{`{"a":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`, false},
	} {
		if err := strictJSON([]byte(tc.in)); (err == nil) != tc.ok {
			t.Errorf("strictJSON(%q) = %v, want ok %v", tc.in, err, tc.ok)
		}
	}
}

func TestServerTouched(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		grants []string
		want   bool
	}{
		{[]string{"mcp.gh.tools.echo:call"}, true},
		{[]string{"mcp.gh.resources:read"}, true},
		{[]string{"mcp.*.tools.*:call"}, true},
		{[]string{"mcp.*"}, true},
		{[]string{"*"}, true},
		{[]string{"mcp.ghx.tools.echo:call"}, false},
		{[]string{"mcp.other.tools.*:call", "invoices:read"}, false},
		{[]string{"latchkey:admin"}, false},
		{nil, false},
	} {
		if got := serverTouched(tc.grants, "gh"); got != tc.want {
			t.Errorf("serverTouched(%v, gh) = %v, want %v", tc.grants, got, tc.want)
		}
	}
}

func TestParseConfigRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, yaml, want string }{
		{"none", "mcp:\n  servers: []\n", "no servers"},
		{"bad name", "mcp:\n  servers:\n    - name: Git.Hub\n      url: http://x/\n", "name must be"},
		{"both", "mcp:\n  servers:\n    - name: a\n      url: http://x/\n      command: [x]\n", "not both"},
		{"neither", "mcp:\n  servers:\n    - name: a\n", "url or command"},
		{"scheme", "mcp:\n  servers:\n    - name: a\n      url: ftp://x/\n", "http://"},
		{"dup", "mcp:\n  servers:\n    - name: a\n      url: http://x/\n    - name: a\n      url: http://y/\n", "twice"},
		{"header", "mcp:\n  servers:\n    - name: a\n      url: http://x/\n      headers: {Mcp-Session-Id: x}\n", "cannot be set"},
		{"identity header", "mcp:\n  servers:\n    - name: a\n      url: http://x/\n      headers: {X-Latchkey-Subject: x}\n", "cannot be set"},
		{"pattern", "mcp:\n  servers:\n    - name: a\n      url: http://x/\n      approval: ['[']\n", "malformed"},
		{"unknown field", "mcp:\n  servers:\n    - name: a\n      url: http://x/\n      aproval: [x]\n", "not found"},
		{"timeout", "mcp:\n  approval_timeout: -1s\n  servers:\n    - name: a\n      url: http://x/\n", "approval_timeout"},
		{"size", "mcp:\n  max_message_bytes: 10\n  servers:\n    - name: a\n      url: http://x/\n", "max_message_bytes"},
		{"env", "mcp:\n  servers:\n    - name: a\n      command: [x]\n      env: {\"A=B\": c}\n", "env"},
	} {
		_, _, err := ParseConfig([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	st, ok, err := ParseConfig([]byte("routes: []\nmcp:\n  servers:\n    - name: gh\n      url: http://127.0.0.1:1/mcp\n      approval: [delete_*]\n"))
	if err != nil || !ok || st.ApprovalTimeout <= 0 || !st.Servers[0].NeedsApproval("delete_repo") || st.Servers[0].NeedsApproval("echo") {
		t.Errorf("a good file: %+v %v %v", st, ok, err)
	}
	if _, ok, err := ParseConfig([]byte("routes: []\n")); ok || err != nil {
		t.Errorf("a file without mcp: ok %v err %v", ok, err)
	}
}

// An abandoned session is ended after session_idle_timeout; one with a
// request since is not.
func TestGateReapsIdleSessions(t *testing.T) {
	t.Parallel()
	gs, _, sid := newTestGate(t)
	g := gs.Config.Handler.(*Gate)
	g.Reap(time.Now().Add(10 * time.Minute))
	if resp, _ := post(t, gs.URL+"/mcp/s", sid, `{"jsonrpc":"2.0","id":1,"method":"ping"}`); resp.StatusCode != 200 {
		t.Fatalf("a session 10 minutes idle (of 30) was ended: %d", resp.StatusCode)
	}
	g.Reap(time.Now().Add(31 * time.Minute))
	if resp, _ := post(t, gs.URL+"/mcp/s", sid, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); resp.StatusCode != 404 {
		t.Fatalf("a session 31 minutes idle answers %d, want 404", resp.StatusCode)
	}
}

// The DNS-rebinding defence: a browser's Origin other than the gateway's
// own is refused before anything else.
func TestGateChecksOrigin(t *testing.T) {
	t.Parallel()
	gs, _, sid := newTestGate(t)
	for _, tc := range []struct {
		origin string
		want   int
	}{{"http://evil.example", 403}, {gs.URL, 200}, {"null", 403}} {
		req, _ := http.NewRequest("POST", gs.URL+"/mcp/s", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Authorization", "Bearer good")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Origin", tc.origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("Origin %q: %d, want %d", tc.origin, resp.StatusCode, tc.want)
		}
	}
}

// The gate's refusals and decisions reach the request's access record:
// the server, the token, and the reason a request was refused at the edge.
func TestGateAccessRecord(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []string
	rec := &edge.Recorder{Observe: func(a *edge.Access, status int, _ time.Duration) {
		mu.Lock()
		got = append(got, fmt.Sprintf("%s %s %d %s %s", a.Door, a.Route, status, a.TokenID, a.Outcome))
		mu.Unlock()
	}}
	gs, _, sid := newTestGateWith(t, rec)
	post(t, gs.URL+"/mcp/s", sid, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	post(t, gs.URL+"/mcp/nowhere", sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	req, _ := http.NewRequest("POST", gs.URL+"/mcp/s", strings.NewReader(`{"jsonrpc":"2.0","id":3,"method":"ping"}`))
	req.Header.Set("Authorization", "Bearer good")
	req.Header.Set("Origin", "http://evil.example")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	post(t, gs.URL+"/mcp/s", "", `{"jsonrpc":"2.0","id":4,"method":"tools/list"}`) // no session
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"mcp s 200 tok1 VALID",       // initialize
		"mcp s 200 tok1 VALID",       // tools/list
		"mcp  404  no_route",         // an unknown server
		"mcp s 403  " + ReasonOrigin, // a foreign Origin, refused before the token is read
		"mcp s 400 tok1 " + ReasonNoSession,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("access records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
