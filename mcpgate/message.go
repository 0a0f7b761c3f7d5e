package mcpgate

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"io"
	"strings"
	"unicode"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// JSON-RPC error codes the gateway answers with, besides the standard
// ones: a refusal is a server error in the implementation-defined range.
const (
	CodeRefused         = -32001 // the token does not allow this
	CodeApprovalDenied  = -32002 // a human denied the held call, or nobody decided in time
	CodeToolChanged     = -32003 // the tool's definition changed since it was pinned
	CodeSessionEnded    = -32004 // the session was ended (revoked token, an administrator)
	CodeUpstreamFailure = -32005 // the upstream could not be reached
)

// maxDepth bounds the nesting of a client message: deeper is refused, so
// that no parser on the way (ours, the upstream's) can be made to recurse
// without end.
const maxDepth = 64

// errBatch: JSON-RPC batches were removed from MCP in 2025-06-18; the
// gateway takes one message per POST.
var errBatch = errors.New("JSON-RPC batches are not accepted: send one message per request")

// envelope is a JSON-RPC message's members, exactly: any other member
// (a misspelt "Method", say) is refused rather than left for a more
// lenient parser upstream to read differently.
type envelope struct {
	JSONRPC string         `json:"jsonrpc"`
	ID      jsontext.Value `json:"id,omitzero"`
	Method  *string        `json:"method,omitzero"`
	Params  jsontext.Value `json:"params,omitzero"`
	Result  jsontext.Value `json:"result,omitzero"`
	Error   jsontext.Value `json:"error,omitzero"`
}

// parseMessage checks one client message and decodes it. The bytes that
// pass are forwarded unchanged, so the check is strict enough that every
// parser reads them as the gateway did: one object, valid UTF-8, no
// duplicate member names (nor two that differ only in case, which
// case-insensitive decoders merge), bounded depth, only the JSON-RPC
// members.
func parseMessage(body []byte) (jsonrpc.Message, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, errors.New("empty message")
	}
	if body[0] == '[' {
		return nil, errBatch
	}
	if body[0] != '{' {
		return nil, errors.New("a message is a JSON object")
	}
	if err := strictJSON(body); err != nil {
		return nil, err
	}
	var env envelope
	if err := json.Unmarshal(body, &env, json.RejectUnknownMembers(true)); err != nil {
		return nil, errors.New("not a JSON-RPC 2.0 message: " + shortErr(err))
	}
	if env.JSONRPC != "2.0" {
		return nil, errors.New(`not a JSON-RPC 2.0 message: "jsonrpc" must be "2.0"`)
	}
	if env.Method != nil && (env.Result != nil || env.Error != nil) {
		return nil, errors.New("a message is a request or a response, not both")
	}
	if env.Method == nil && len(env.ID) == 0 {
		return nil, errors.New("a response needs an id")
	}
	if len(env.ID) > 0 {
		if k := env.ID.Kind(); k != '"' && k != '0' {
			return nil, errors.New("an id is a string or a number")
		}
	}
	if len(env.Params) > 0 {
		if k := env.Params.Kind(); k != '{' && k != '[' {
			return nil, errors.New("params are an object or an array")
		}
	}
	var id jsonrpc.ID
	if len(env.ID) > 0 {
		var err error
		if id, err = idOf(env.ID); err != nil {
			return nil, err
		}
	}
	if env.Method != nil {
		return &jsonrpc.Request{ID: id, Method: *env.Method, Params: stdjson.RawMessage(env.Params)}, nil
	}
	return &jsonrpc.Response{ID: id, Result: stdjson.RawMessage(env.Result)}, nil
}

// idOf is a JSON-RPC id as the SDK's decoder makes it (a number through
// float64), so that ids compare equal whichever side decoded them.
func idOf(v jsontext.Value) (jsonrpc.ID, error) {
	var raw any
	switch v.Kind() {
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return jsonrpc.ID{}, err
		}
		raw = s
	case '0':
		var f float64
		if err := json.Unmarshal(v, &f); err != nil {
			return jsonrpc.ID{}, err
		}
		raw = f
	default:
		return jsonrpc.ID{}, errors.New("an id is a string or a number")
	}
	id, err := jsonrpc.MakeID(raw)
	if err != nil {
		return jsonrpc.ID{}, errors.New("an id is a string or an integer")
	}
	return id, nil
}

// upstreamMsg is what the gateway reads of an upstream's message: no
// more than whether it answers a request, and how.
type upstreamMsg struct {
	ID     jsontext.Value `json:"id"`
	Method *string        `json:"method"`
	Result jsontext.Value `json:"result"`
	Error  *struct {
		Code int64 `json:"code"`
	} `json:"error"`
}

// answerTo reads b as the upstream's answer to id: ok is false when it is
// something else (a notification, a request, another answer) or is not
// JSON-RPC.
func answerTo(b []byte, id jsonrpc.ID) (m upstreamMsg, ok bool) {
	if len(b) == 0 || b[0] != '{' && !bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
		return m, false
	}
	if json.Unmarshal(b, &m) != nil || m.Method != nil || len(m.ID) == 0 {
		return m, false
	}
	got, err := idOf(m.ID)
	return m, err == nil && got == id
}

// malformedJSON is a message that is not JSON as the gateway takes it
// (JSON-RPC's parse error, -32700).
type malformedJSON struct{ why string }

func (e malformedJSON) Error() string { return "malformed JSON: " + e.why }

// strictJSON walks b and refuses duplicate names (under case folding),
// nesting deeper than maxDepth, invalid UTF-8 and trailing data.
func strictJSON(b []byte) error {
	dec := jsontext.NewDecoder(bytes.NewReader(b))
	var names []map[string]struct{} // one per open value; nil for an array
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			if err == io.EOF && len(names) == 0 {
				return nil
			}
			return malformedJSON{shortErr(err)}
		}
		switch k := tok.Kind(); k {
		case '{', '[':
			if len(names) >= maxDepth {
				return malformedJSON{"nested too deep"}
			}
			var m map[string]struct{}
			if k == '{' {
				m = map[string]struct{}{}
			}
			names = append(names, m)
		case '}', ']':
			if names = names[:len(names)-1]; len(names) == 0 {
				if _, err := dec.ReadToken(); err != io.EOF {
					return malformedJSON{"data after the message"}
				}
				return nil
			}
		case '"':
			// A name is an object's odd-numbered token.
			if kind, n := dec.StackIndex(dec.StackDepth()); kind == '{' && n%2 == 1 {
				m := names[len(names)-1]
				f := foldName(tok.String())
				if _, dup := m[f]; dup {
					return malformedJSON{"a member name appears twice (ignoring case)"}
				}
				m[f] = struct{}{}
			}
		}
	}
}

// foldName is a member name as a case-insensitive decoder matches it:
// each rune replaced by the smallest of its simple case folds.
func foldName(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii { // the least of an ASCII letter's folds is its upper case
		return strings.ToUpper(s)
	}
	var b strings.Builder
	for _, r := range s {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// Method classes: what each client method needs.
type need struct {
	scope  string // the scope required; "" means any scope of the server
	kind   string // "tool", "resource", "prompt", or ""
	target string // the tool, resource URI or prompt name
}

// ToolScope is the scope that allows calling tool on server.
func ToolScope(server, tool string) string { return "mcp." + server + ".tools." + tool + ":call" }

// ResourcesScope allows reading a server's resources.
func ResourcesScope(server string) string { return "mcp." + server + ".resources:read" }

// PromptsScope allows getting a server's prompts.
func PromptsScope(server string) string { return "mcp." + server + ".prompts:get" }

// errMethod refuses a method the gateway does not forward.
type errMethod struct{ method string }

func (e errMethod) Error() string {
	return "method " + quoteClip(e.method) + " is not forwarded by the latchkey gateway"
}

// needFor is what request req to server needs, or an error (answered as
// a JSON-RPC error, never forwarded).
func needFor(server string, req *jsonrpc.Request) (need, error) {
	switch req.Method {
	case "initialize", "ping", "tools/list", "resources/list", "resources/templates/list", "prompts/list", "logging/setLevel",
		"notifications/initialized", "notifications/cancelled", "notifications/progress", "notifications/roots/list_changed":
		return need{}, nil
	case "tools/call":
		var p struct {
			Name string `json:"name"`
		}
		if err := unmarshalParams(req.Params, &p); err != nil {
			return need{}, err
		}
		if !validToolName(p.Name) {
			return need{kind: "tool", target: edge.Clip(p.Name, 128)}, errors.New("tool name " + quoteClip(p.Name) + " cannot be authorised: a name is 1 to 128 of [A-Za-z0-9_.-]")
		}
		return need{scope: ToolScope(server, p.Name), kind: "tool", target: p.Name}, nil
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		var p struct {
			URI string `json:"uri"`
		}
		if err := unmarshalParams(req.Params, &p); err != nil {
			return need{}, err
		}
		return need{scope: ResourcesScope(server), kind: "resource", target: edge.Clip(p.URI, 512)}, nil
	case "prompts/get":
		var p struct {
			Name string `json:"name"`
		}
		if err := unmarshalParams(req.Params, &p); err != nil {
			return need{}, err
		}
		return need{scope: PromptsScope(server), kind: "prompt", target: edge.Clip(p.Name, 128)}, nil
	case "completion/complete":
		var p struct {
			Ref struct {
				Type string `json:"type"`
				Name string `json:"name"`
				URI  string `json:"uri"`
			} `json:"ref"`
		}
		if err := unmarshalParams(req.Params, &p); err != nil {
			return need{}, err
		}
		switch p.Ref.Type {
		case "ref/prompt":
			return need{scope: PromptsScope(server), kind: "prompt", target: edge.Clip(p.Ref.Name, 128)}, nil
		case "ref/resource":
			return need{scope: ResourcesScope(server), kind: "resource", target: edge.Clip(p.Ref.URI, 512)}, nil
		}
		return need{}, errors.New("completion/complete: ref.type must be ref/prompt or ref/resource")
	}
	return need{}, errMethod{req.Method}
}

// unmarshalParams reads the members the gateway needs, case-sensitively
// (strictJSON has already refused a second spelling of any of them).
func unmarshalParams(params []byte, v any) error {
	if len(params) == 0 {
		return errors.New("params are required")
	}
	if err := json.Unmarshal(params, v); err != nil {
		return errors.New("invalid params: " + shortErr(err))
	}
	return nil
}

// validToolName: the MCP specification's recommended tool names, whose
// "." become scope segments.
func validToolName(s string) bool {
	if s == "" || len(s) > 128 || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == '-' || c == '.' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

func quoteClip(s string) string {
	b, _ := jsontext.AppendQuote(nil, edge.Clip(s, 64))
	return string(b)
}

// rpcError is a JSON-RPC error answer to id.
func rpcError(id jsonrpc.ID, code int64, msg string) []byte {
	b, _ := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: code, Message: msg}})
	return b
}

// mediaType is a Content-Type's (or an Accept part's) type, without its
// parameters, in lower case: what mime.ParseMediaType gives, without its
// cost for the parameters the gateway never reads.
func mediaType(v string) string {
	t, _, _ := strings.Cut(v, ";")
	t = strings.TrimSpace(t)
	for i := 0; i < len(t); i++ {
		if 'A' <= t[i] && t[i] <= 'Z' {
			return strings.ToLower(t)
		}
	}
	return t
}
