package latchkey_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/latchkeyhq/latchkey"

// deps lists the packages pkg imports, directly or not (tests excluded).
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// stdlib reports whether an import path is the standard library's.
func stdlib(p string) bool { return !strings.Contains(strings.SplitN(p, "/", 2)[0], ".") }

// drivers are the packages that talk to a database or Redis.
var drivers = []string{"database/sql", "modernc.org/", "github.com/jackc/", "github.com/redis/", module + "/sqlite", module + "/postgres", module + "/redis"}

// The import rules of the layout (docs/architecture.md). Each names the
// packages it binds, what they must not depend on (a path, or a prefix
// ending in "/"), and why. Imports point inward: the doors depend on the
// contract in the root, never on the packages that implement it.
var importRules = []struct {
	pkgs      []string
	forbidden []string
	// only, when set, is the whole list of module packages allowed (the
	// standard library always is).
	only []string
	// alsoOnly, with only, allows packages outside the module by prefix.
	alsoOnly []string
	reason   string
}{
	{pkgs: []string{"", "/secret"}, only: []string{},
		reason: "the domain and the token format use the standard library only"},
	{pkgs: []string{"/client"}, only: []string{""},
		reason: "the Go SDK links no server code: a program that calls latchkey pays for the wire types and net/http alone"},
	{pkgs: []string{"/edge"}, only: []string{"", "/secret"}, alsoOnly: []string{"go.opentelemetry.io/otel", "go.opentelemetry.io/auto/sdk", "github.com/go-logr/logr", "github.com/go-logr/stdr", "github.com/cespare/xxhash/v2"}, // the API and what it brings
		reason: "the edge is shared by every door; it must not pull a door (or the verifier) into the others; of OpenTelemetry, only the API (no-op until the daemon installs an SDK)"},
	{pkgs: []string{"/edge", "/verify", "/gateway", "/webhook"}, forbidden: []string{"go.opentelemetry.io/otel/sdk", "go.opentelemetry.io/otel/exporters/", module + "/internal/tracing"},
		reason: "components trace through the OpenTelemetry API with the tracer they are given; only the daemon (internal/tracing) links the SDK and the exporter"},
	{pkgs: []string{"/httpapi", "/gateway", "/middleware", "/detect"}, forbidden: []string{module + "/verify", module + "/tokens"},
		reason: "the doors and the detector ask for decisions and changes through the root's interfaces (Verifier, Refuser, Actor); the wiring in cmd/ plugs in verify and tokens"},
	{pkgs: []string{"/middleware"}, forbidden: []string{module + "/httpapi", module + "/gateway", module + "/audit"},
		reason: "a resource server that only checks tokens links the client, the edge and the root, not the admin stack"},
	{pkgs: []string{"/gateway"}, forbidden: []string{module + "/httpapi"},
		reason: "the gateway is a door beside the API, not inside it: the API mounts forward auth, not the reverse"},
	{pkgs: []string{"/httpapi", "/verify", "/tokens", "/audit", "/detect", "/gateway", "/middleware", "/client", "/edge"}, forbidden: drivers,
		reason: "the stores and counters plug in through the root's interfaces, wired in cmd/: no door or domain service links a database driver"},
	{pkgs: []string{"/pggate"}, forbidden: []string{module + "/verify", module + "/tokens", module + "/audit", module + "/httpapi", module + "/gateway"},
		reason: "the database gateway is a door like the others: the root's Verifier and Refuser, the edge, its own Recorder interface; pgproto3 and pgconn speak the protocol"},
	{pkgs: []string{"/mcpgate"}, forbidden: append([]string{module + "/verify", module + "/tokens", module + "/audit", module + "/httpapi", module + "/gateway", module + "/pggate"}, drivers...),
		reason: "the MCP gateway is a door like the others: the root's Verifier and Refuser, the edge, its own Recorder; the MCP Go SDK speaks the protocol"},
	{pkgs: []string{"/oauth"}, forbidden: append([]string{module + "/verify", module + "/tokens", module + "/audit", module + "/httpapi", module + "/gateway", module + "/pggate", module + "/mcpgate"}, drivers...),
		reason: "the authorization server is a door like the others: the root's Verifier, the token service and the store through its own small interfaces, the edge, its own Recorder"},
	{pkgs: []string{"/httpapi"}, forbidden: []string{module + "/mcpgate", module + "/pggate", module + "/oauth"},
		reason: "the API administers the doors through small interfaces (OpenSessions, MCP, OAuthServer), not by importing them"},
	{pkgs: []string{"/verify", "/tokens", "/audit", "/detect"}, forbidden: []string{module + "/httpapi", module + "/gateway", module + "/middleware", module + "/edge", module + "/identity", module + "/pggate", module + "/mcpgate", module + "/oauth"},
		reason: "the domain services know no door: every door, HTTP or not (the PostgreSQL and MCP gateways to come), uses them alike"},
	{pkgs: []string{"/tenancy"}, only: []string{"", "/secret", "/client"},
		reason: "keyspaces, roles and access requests are domain rules over the store's settings: the verifier and the token service read the registry through their own small interfaces, the API through TenancyService, and it issues tokens through Issuer"},
	{pkgs: []string{"/httpapi"}, forbidden: []string{module + "/tenancy"},
		reason: "the API manages tenancy through TenancyService, wired in cmd/"},
}

func TestImportRules(t *testing.T) {
	t.Parallel()
	for _, rule := range importRules {
		for _, p := range rule.pkgs {
			pkg := module + p
			for _, d := range deps(t, pkg) {
				if d == pkg {
					continue
				}
				if rule.only != nil && !stdlib(d) {
					ok := false
					for _, o := range rule.only {
						ok = ok || d == module+o
					}
					for _, o := range rule.alsoOnly {
						ok = ok || d == o || strings.HasPrefix(d, o+"/")
					}
					if !ok {
						t.Errorf("%s imports %s: %s", pkg, d, rule.reason)
					}
				}
				for _, f := range rule.forbidden {
					if d == f || (strings.HasSuffix(f, "/") && strings.HasPrefix(d, f)) {
						t.Errorf("%s imports %s: %s", pkg, d, rule.reason)
					}
				}
			}
		}
	}
}
