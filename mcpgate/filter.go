package mcpgate

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/latchkeyhq/latchkey"
)

// toolDef is the part of a tool's definition that is pinned: everything
// a model reads or a client acts on (its _meta and icons aside).
type toolDef struct {
	Name         string         `json:"name"`
	Title        string         `json:"title,omitzero"`
	Description  string         `json:"description,omitzero"`
	InputSchema  jsontext.Value `json:"inputSchema,omitzero"`
	OutputSchema jsontext.Value `json:"outputSchema,omitzero"`
	Annotations  jsontext.Value `json:"annotations,omitzero"`
}

// fingerprint is the SHA-256 of the definition in RFC 8785 canonical
// form: the same definition, however the upstream spaces or orders it,
// has one fingerprint.
func (d *toolDef) fingerprint() (fp string, canon []byte) {
	b, _ := json.Marshal(d)
	v := jsontext.Value(b)
	if err := v.Canonicalize(); err != nil {
		v = b
	}
	sum := sha256.Sum256(v)
	return hex.EncodeToString(sum[:]), v
}

// seenTool is a tool's definition as an upstream gave it.
type seenTool struct {
	fp    string
	canon []byte
}

// listFilter is what a list answer is cut to for one token.
type listFilter struct {
	server string
	grants []string
	// pinned decides whether a tool may be shown: its definition is the
	// pinned one (or is pinned now, on first sight).
	pinned func(def *toolDef, fp string, canon []byte) bool
}

// toolsResult is a tools/list result: the tools, and every other member
// kept as it came.
type toolsResult struct {
	Tools []jsontext.Value `json:"tools"`
	Rest  jsontext.Value   `json:",unknown"`
}

// filterTools cuts a tools/list result to the tools the token may call and
// whose definitions are pinned. It returns the new result, and the tools
// seen (name → fingerprint) for the session.
func (f *listFilter) filterTools(result []byte, seen map[string]seenTool) ([]byte, error) {
	var r toolsResult
	if err := json.Unmarshal(result, &r); err != nil {
		return nil, err
	}
	kept := r.Tools[:0]
	for _, raw := range r.Tools {
		var def toolDef
		if err := json.Unmarshal(raw, &def); err != nil {
			continue // not a tool: not shown
		}
		fp, canon := def.fingerprint()
		if seen != nil {
			seen[def.Name] = seenTool{fp, canon}
		}
		if !validToolName(def.Name) || !latchkey.ScopesCover(f.grants, ToolScope(f.server, def.Name)) {
			continue
		}
		if f.pinned != nil && !f.pinned(&def, fp, canon) {
			continue
		}
		kept = append(kept, raw)
	}
	if kept == nil {
		kept = []jsontext.Value{}
	}
	r.Tools = kept
	return json.Marshal(&r)
}

// filterAll answers a resources or prompts list with its items when the
// token holds scope, and with none when it does not (the list's member
// named key emptied; every other member kept).
func filterAll(result []byte, key string, allowed bool) ([]byte, error) {
	if allowed {
		return result, nil
	}
	var m map[string]jsontext.Value
	if err := json.Unmarshal(result, &m); err != nil {
		return nil, err
	}
	m[key] = jsontext.Value("[]")
	delete(m, "nextCursor")
	return json.Marshal(m, json.Deterministic(true))
}
