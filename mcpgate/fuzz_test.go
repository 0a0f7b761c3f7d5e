package mcpgate

import (
	stdjson "encoding/json"
	"strings"
	"testing"

	"github.com/latchkeyhq/latchkey/edge"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// FuzzMessage: parseMessage never panics, and whatever it accepts is read
// the same by a lenient decoder (encoding/json: case-insensitive names,
// the last duplicate wins, as the SDK's own decoder and many upstreams
// are). If the two could disagree on the method or the tool, the gateway
// could authorise one call and forward another.
func FuzzMessage(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`,
		`{"jsonrpc":"2.0","id":"a","method":"tools/list"}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":1,"result":{}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"rm"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"rm"}}`,
		`{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}`,
		`{"jsonrpc":"2.0","id":null,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\u0065cho"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","ſ":1,"s":2}}`,
		`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tasks/list","params":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMessage(b)
		if err != nil {
			return
		}
		var lenient struct {
			Method string
			Params stdjson.RawMessage
		}
		if err := stdjson.Unmarshal(b, &lenient); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", b, err)
		}
		req, ok := m.(*jsonrpc.Request)
		if !ok {
			if lenient.Method != "" {
				t.Fatalf("accepted %q as a response; a lenient decoder reads method %q", b, lenient.Method)
			}
			return
		}
		if req.Method != lenient.Method {
			t.Fatalf("method %q, a lenient decoder reads %q, in %q", req.Method, lenient.Method, b)
		}
		n, err := needFor("s", req)
		if err != nil {
			return // refused: not forwarded
		}
		// What an upstream reads of the params the gateway authorised.
		var p struct {
			Name string
			URI  string
		}
		if req.Method == "tools/call" || req.Method == "resources/read" {
			if err := stdjson.Unmarshal(lenient.Params, &p); err != nil {
				t.Fatalf("authorised %s in %q, whose params a lenient decoder refuses: %v", req.Method, b, err)
			}
		}
		switch req.Method {
		case "tools/call":
			if n.target != p.Name || n.scope != ToolScope("s", p.Name) {
				t.Fatalf("authorised tool %q (%s), a lenient decoder calls %q, in %q", n.target, n.scope, p.Name, b)
			}
		case "resources/read":
			if n.target != edge.Clip(p.URI, 512) {
				t.Fatalf("resource %q, a lenient decoder reads %q", n.target, p.URI)
			}
		}
	})
}
