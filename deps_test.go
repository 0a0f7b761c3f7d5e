package latchkey_test

import (
	"os/exec"
	"strings"
	"testing"
)

// deps lists the packages pkg imports, directly or not.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

const module = "github.com/latchkeyhq/latchkey"

// Imports point inward (DESIGN.md §9): the domain and the token format use
// the standard library only.
func TestDomainImportsOnlyStdlib(t *testing.T) {
	for _, pkg := range []string{module, module + "/secret"} {
		for _, d := range deps(t, pkg) {
			if d == pkg {
				continue
			}
			if first := strings.SplitN(d, "/", 2)[0]; strings.Contains(first, ".") {
				t.Errorf("%s imports %s; it may import only the standard library", pkg, d)
			}
		}
	}
}

// The CLI's client path (httpapi, which holds the client) and the packages
// the API depends on never link a database driver (Redis's included): the
// stores and counters plug in through interfaces, wired in cmd/.
func TestClientPathHasNoDatabaseDriver(t *testing.T) {
	for _, pkg := range []string{module + "/httpapi", module + "/verify", module + "/tokens", module + "/audit", module + "/detect"} {
		for _, d := range deps(t, pkg) {
			if d == "database/sql" || strings.HasPrefix(d, "modernc.org/") || strings.HasPrefix(d, "github.com/jackc/") ||
				strings.HasPrefix(d, "github.com/redis/") ||
				d == module+"/sqlite" || d == module+"/postgres" || d == module+"/redis" {
				t.Errorf("%s depends on %s; the client path must not link a database driver", pkg, d)
			}
		}
	}
}
