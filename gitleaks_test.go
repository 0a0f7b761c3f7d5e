package latchkey_test

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/latchkeyhq/latchkey/secret"
)

// requireService skips when an outside tool is missing, or fails under
// LATCHKEY_REQUIRE_INTEGRATION=1 (as in CI).
func requireService(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("LATCHKEY_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("%s is required (LATCHKEY_REQUIRE_INTEGRATION=1) but not available", what)
	}
	t.Skipf("%s is not available; skipping (set LATCHKEY_REQUIRE_INTEGRATION=1 to make this a failure)", what)
}

// The published gitleaks rule finds a freshly generated token, run by the
// real gitleaks over a fixture file.
func TestGitleaksFindsToken(t *testing.T) {
	bin, err := exec.LookPath("gitleaks")
	if err != nil {
		requireService(t, "gitleaks")
	}
	pt, parts, err := secret.Generate("lk", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fixture := "# a config file someone committed\nLATCHKEY_TOKEN=" + pt.Reveal() + "\n"
	if err := os.WriteFile(filepath.Join(dir, "app.env"), []byte(fixture), 0o600); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "report.json")
	cfg, _ := filepath.Abs("docs/gitleaks.toml")
	cmd := exec.Command(bin, "dir", "--config", cfg, "--report-format", "json", "--report-path", report,
		"--no-banner", "--exit-code", "7", dir)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Fatalf("gitleaks should exit 7 (leaks found): %v\n%s", err, out)
	}
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var findings []struct {
		RuleID string
		Secret string
		File   string
	}
	if err := json.Unmarshal(data, &findings); err != nil {
		t.Fatalf("gitleaks report: %v", err)
	}
	found := false
	for _, f := range findings {
		if f.RuleID == "latchkey-api-token" && f.Secret == pt.Reveal() {
			found = true
		}
	}
	if !found {
		t.Errorf("gitleaks did not report the token (id %s) under rule latchkey-api-token; findings: %+v", parts.ID, len(findings))
	}
}
