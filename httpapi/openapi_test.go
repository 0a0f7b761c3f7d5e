package httpapi

import (
	"encoding/json"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

// The OpenAPI document lists exactly the registered routes.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	b, err := os.ReadFile("../docs/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("docs/openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi version %q, want 3.x", doc.OpenAPI)
	}
	var documented, registered []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	for _, r := range Routes() {
		if r.Method == "*" {
			for _, m := range []string{"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"} {
				registered = append(registered, m+" "+r.Path)
			}
			continue
		}
		registered = append(registered, r.Method+" "+r.Path)
	}
	// The dashboard's session; its relay of the admin routes under
	// UIPrefix is described there rather than listed a second time.
	for _, r := range UIRoutes() {
		if r.Path == UISessionPath || r.Signed && !strings.HasPrefix(r.Path, UIPrefix+"/v1/") {
			registered = append(registered, r.Method+" "+r.Path)
		}
	}
	sort.Strings(documented)
	sort.Strings(registered)
	if strings.Join(documented, "\n") != strings.Join(registered, "\n") {
		t.Errorf("docs/openapi.json and Routes() differ:\ndocumented:\n  %s\nregistered:\n  %s",
			strings.Join(documented, "\n  "), strings.Join(registered, "\n  "))
	}
}

// The schemas list exactly the JSON fields of the Go types they document.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	b, err := os.ReadFile("../docs/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{
		"Token":                latchkey.Token{},
		"CreateTokenRequest":   client.CreateRequest{},
		"UpdateTokenRequest":   client.UpdateRequest{},
		"RateLimit":            latchkey.RateLimit{},
		"VerifyRequest":        client.VerifyRequest{},
		"VerifyResponse":       client.VerifyResponse{},
		"RateLimitStatus":      client.RateLimitStatus{},
		"RotateRequest":        client.RotateRequest{},
		"RevokeRequest":        client.RevokeRequest{},
		"RevocationRequest":    client.RevocationRequest{},
		"RevocationResult":     client.RevocationResult{},
		"AuditEvent":           latchkey.AuditEvent{},
		"TokenList":            client.TokenList{},
		"AuditList":            client.AuditList{},
		"ChainReport":          latchkey.ChainReport{},
		"ChainBreak":           latchkey.ChainBreak{},
		"AuditAnchor":          latchkey.AuditAnchor{},
		"Block":                latchkey.Block{},
		"BlockList":            client.BlockList{},
		"OpenSession":          latchkey.OpenSession{},
		"OpenSessionList":      client.OpenSessionList{},
		"LeakReport":           client.LeakReport{},
		"LeakResult":           client.LeakResult{},
		"Introspection":        client.Introspection{},
		"SignInRequest":        client.SignInRequest{},
		"SessionInfo":          client.SessionInfo{},
		"ActivitySummary":      client.ActivitySummary{},
		"OAuthRequest":         client.OAuthRequest{},
		"OAuthScope":           client.OAuthScope{},
		"OAuthDecision":        client.OAuthDecision{},
		"OAuthDecided":         client.OAuthDecided{},
		"OAuthClient":          client.OAuthClient{},
		"OAuthClientList":      client.OAuthClientList{},
		"OAuthClientRevoke":    client.OAuthClientRevoke{},
		"OAuthClientRevoked":   client.OAuthClientRevoked{},
		"Keyspace":             latchkey.Keyspace{},
		"KeyspacePolicy":       latchkey.KeyspacePolicy{},
		"ApprovalRule":         latchkey.ApprovalRule{},
		"KeyspaceList":         client.KeyspaceList{},
		"Role":                 latchkey.Role{},
		"RoleList":             client.RoleList{},
		"Identity":             latchkey.Identity{},
		"IdentityStatus":       client.IdentityStatus{},
		"IdentityList":         client.IdentityList{},
		"AccessRequest":        latchkey.AccessRequest{},
		"Verdict":              latchkey.Verdict{},
		"NewAccessRequest":     client.NewAccessRequest{},
		"CreatedAccessRequest": client.CreatedAccessRequest{},
		"AccessRequestList":    client.AccessRequestList{},
		"VerdictRequest":       client.VerdictRequest{},
		"ClaimRequest":         client.ClaimRequest{},
	} {
		s, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("schema %s is missing", name)
			continue
		}
		var documented []string
		for p := range s.Properties {
			documented = append(documented, p)
		}
		fields := jsonFields(reflect.TypeOf(v))
		sort.Strings(documented)
		sort.Strings(fields)
		if strings.Join(documented, " ") != strings.Join(fields, " ") {
			t.Errorf("schema %s documents\n  %v\nbut the type has\n  %v", name, documented, fields)
		}
	}
}

// jsonFields lists the JSON names of t's fields, flattening embedded
// structs as encoding/json does.
func jsonFields(t reflect.Type) []string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if f.Anonymous && name == "" {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}
