package httpapi

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/internal/itest"
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
	for i, r := range registered { // Go's {name...} is OpenAPI's {name}
		registered[i] = goWildcard.ReplaceAllString(r, "{$1}")
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

var goWildcard = regexp.MustCompile(`\{(\w+)\.\.\.\}`)

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

// Spectral, the OpenAPI linter, with its oas ruleset: no error and no
// warning. It runs from npm (httpapi/testdata/openapi-lint, installed
// with npm ci from its lock file).
func TestOpenAPISpectral(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("npm"); err != nil {
		itest.Require(t, "npm")
		t.Skip("npm is not installed")
	}
	dir, _ := filepath.Abs("testdata/openapi-lint")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", ".bin", "spectral")); err != nil {
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			itest.Require(t, "the npm registry")
			t.Skipf("npm ci: %v: %s", err, out)
		}
	}
	cmd := exec.Command(filepath.Join(dir, "node_modules", ".bin", "spectral"), "lint", "--ruleset", filepath.Join(dir, ".spectral.yaml"),
		"--fail-severity", "warn", "--format", "text", "../docs/openapi.json")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" && !strings.Contains(string(out), "No results") {
		t.Errorf("spectral lint (oas ruleset): %v\n%s", err, out)
	}
}

// The enums list every value the code uses.
func TestOpenAPIEnums(t *testing.T) {
	t.Parallel()
	b, _ := os.ReadFile("../docs/openapi.json")
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Enum       []string `json:"enum"`
				Properties map[string]struct {
					Enum []string `json:"enum"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	enum := func(schema, prop string) string {
		e := slices.Clone(doc.Components.Schemas[schema].Properties[prop].Enum)
		if prop == "" {
			e = slices.Clone(doc.Components.Schemas[schema].Enum)
		}
		slices.Sort(e)
		return strings.Join(e, " ")
	}
	for _, c := range []struct {
		schema, prop string
		want         []string
	}{
		{"AuditEvent", "kind", []string{latchkey.KindVerify, latchkey.KindAdmin, latchkey.KindDetect, latchkey.KindSession}},
		{"Token", "status", []string{string(latchkey.StatusActive), string(latchkey.StatusSuspended), string(latchkey.StatusRevoked)}},
		{"Token", "effective_status", []string{string(latchkey.StatusActive), string(latchkey.StatusSuspended), string(latchkey.StatusRevoked),
			string(latchkey.StatusExpired), string(latchkey.StatusIdle), string(latchkey.StatusRotated)}},
		{"Code", "", codes()},
	} {
		want := slices.Clone(c.want)
		slices.Sort(want)
		if got := enum(c.schema, c.prop); got != strings.Join(want, " ") {
			t.Errorf("%s.%s enum: %q, want %q", c.schema, c.prop, got, want)
		}
	}
}

func codes() []string {
	var out []string
	for c := range latchkey.Valid + 1 {
		out = append(out, c.String())
	}
	return out
}
