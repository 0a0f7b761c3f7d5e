package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/tokens"
)

// cli runs the binary's entry point with LATCHKEY_ADDR and LATCHKEY_TOKEN.
func cli(t *testing.T, url, tok string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := func(k string) string {
		return map[string]string{"LATCHKEY_ADDR": url, "LATCHKEY_TOKEN": tok}[k]
	}
	code := run(ctx, args, strings.NewReader(""), &out, &errb, env)
	return code, out.String(), errb.String()
}

// The lifecycle from the command line: constraints, rotation, derivation,
// suspension, narrowing, bulk revocation.
func TestCLILifecycle(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	u, root := ts.url, ts.root
	code, out, errs := cli(t, u, root, "token", "create", "--subject", "ci", "--scope", "deploy:*", "--ttl", "30d",
		"--cidr", "10.0.0.0/8", "--cidr", "127.0.0.1", "--method", "POST", "--path", "/deploy/**", "--rate", "100/1m", "--max-uses", "10",
		"--idle-timeout", "7d", "--json")
	if code != 0 {
		t.Fatalf("create: %d %s", code, errs)
	}
	var created client.CreatedToken
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatal(err)
	}
	tk := created.Token
	if tk.RateLimit == nil || tk.RateLimit.Limit != 100 || tk.MaxUses != 10 || tk.IdleTimeout != latchkey.Duration(7*24*time.Hour) ||
		len(tk.AllowedCIDRs) != 2 || tk.AllowedMethods[0] != "POST" || tk.AllowedPaths[0] != "/deploy/**" {
		t.Fatalf("created constraints: %+v", tk)
	}
	pt := created.Plaintext
	verify := func(tok string, extra ...string) (int, string) {
		code, out, _ := cli(t, u, root, append([]string{"verify", tok, "--ip", "10.1.1.1", "--method", "POST", "--path", "/deploy/api"}, extra...)...)
		return code, out
	}
	if code, out := verify(pt, "--scope", "deploy:run"); code != 0 || !strings.Contains(out, "uses_left=9") || !strings.Contains(out, "rate=99/100") {
		t.Errorf("verify: %d %q", code, out)
	}
	if code, out, _ := cli(t, u, root, "verify", pt, "--ip", "192.0.2.1", "--method", "POST", "--path", "/deploy/api"); code != exitRefused || strings.TrimSpace(out) != "IP_NOT_ALLOWED" {
		t.Errorf("from outside the network: %d %q", code, out)
	}
	if code, out := verify(pt, "--method", "DELETE"); code != exitRefused || !strings.Contains(out, "FORBIDDEN") {
		t.Errorf("wrong method: %d %q", code, out)
	}
	_, slow, _ := cli(t, u, root, "token", "create", "--rate", "2/1m", "--quiet")
	slow = strings.TrimSpace(slow)
	cli(t, u, root, "verify", slow)
	cli(t, u, root, "verify", slow)
	if code, out, _ := cli(t, u, root, "verify", slow); code != exitRefused || !strings.Contains(out, "RATE_LIMITED  retry_after=30s") {
		t.Errorf("over the rate: %d %q", code, out)
	}

	// Rotate with grace: the old token still works.
	code, out, errs = cli(t, u, root, "token", "rotate", tk.ID, "--grace", "24h", "--quiet")
	if code != 0 {
		t.Fatalf("rotate: %d %s", code, errs)
	}
	succ := strings.TrimSpace(out)
	if code, out, _ := cli(t, u, root, "token", "show", tk.ID); code != 0 || !strings.Contains(out, "rotated to") {
		t.Errorf("show old: %d %s", code, out)
	}
	code, _, errs = cli(t, u, root, "token", "rotate", tk.ID)
	if code != exitAPIError || !strings.Contains(errs, "already rotated") {
		t.Errorf("rotating twice: exit %d %s", code, errs)
	}
	list, _ := ts.client(root).ListTokens(ctx, latchkey.TokenFilter{Subject: "ci"})
	var succID string
	for _, x := range list.Tokens {
		if x.PredecessorID == tk.ID {
			succID = x.ID
		}
	}

	// Derive from the successor, authenticated as the successor itself.
	code, out, errs = cli(t, u, succ, "token", "derive", succID, "--scope", "deploy:run", "--ttl", "1h", "--quiet")
	if code != 0 {
		t.Fatalf("self-derive: %d %s", code, errs)
	}
	child := strings.TrimSpace(out)
	if !strings.HasPrefix(child, "lk_") {
		t.Fatalf("derive printed %q", out)
	}
	code, _, errs = cli(t, u, succ, "token", "derive", succID, "--scope", "admin:*")
	if code != exitAPIError || !strings.Contains(errs, "broader than its parent") {
		t.Errorf("broader derive: %d %s", code, errs)
	}
	code, _, errs = cli(t, u, succ, "token", "derive", succID, "--cidr", "0.0.0.0/0")
	if code != exitAPIError || !strings.Contains(errs, "allowed_cidrs") {
		t.Errorf("wider network: %d %s", code, errs)
	}

	// Suspend the successor: its child is suspended with it.
	if code, _, errs := cli(t, u, root, "token", "suspend", succID, "--reason", "audit"); code != 0 {
		t.Fatalf("suspend: %s", errs)
	}
	if code, out, _ := cli(t, u, root, "verify", child, "--ip", "10.1.1.1", "--method", "POST", "--path", "/deploy/x"); code != exitRefused || strings.TrimSpace(out) != "SUSPENDED" {
		t.Errorf("child of a suspended token: %d %q", code, out)
	}
	if code, _, errs := cli(t, u, root, "token", "resume", succID); code != 0 {
		t.Fatalf("resume: %s", errs)
	}

	// Narrow in place; widening is refused.
	if code, out, errs := cli(t, u, root, "token", "update", succID, "--name", "deployer", "--tag", "prod"); code != 0 || !strings.Contains(out, "deployer") {
		t.Errorf("update: %d %s %s", code, out, errs)
	}
	if code, _, errs := cli(t, u, root, "token", "update", succID, "--scope", "*"); code != exitAPIError || !strings.Contains(errs, "narrowed") {
		t.Errorf("widen: %d %s", code, errs)
	}

	// Listing: by parent; rotation due needs a policy.
	if code, out, _ := cli(t, u, root, "token", "list", "--parent", succID); code != 0 || strings.Count(out, "\n") != 2 {
		t.Errorf("list --parent: %d %q", code, out)
	}
	if code, _, errs := cli(t, u, root, "token", "list", "--rotation-due"); code != exitUsage || !strings.Contains(errs, "--rotate-after") {
		t.Errorf("list --rotation-due without a policy: %d %s", code, errs)
	}

	// Bulk revocation by subject: the old token, the successor, the child.
	code, out, errs = cli(t, u, root, "token", "revoke", "--subject", "ci", "--reason", "offboarded", "--yes")
	if code != 0 || strings.TrimSpace(out) != "revoked 3 token(s)" {
		t.Errorf("bulk revoke: %d %q %s", code, out, errs)
	}
	if code, _, _ := cli(t, u, root, "token", "revoke", "--subject", "a", "--tag", "b"); code != exitUsage {
		t.Errorf("two selectors: exit %d", code)
	}
	if code, _, _ := cli(t, u, root, "token", "revoke", tk.ID, "--tag", "b"); code != exitUsage {
		t.Errorf("id and selector: exit %d", code)
	}
	if code, _, _ := cli(t, u, root, "token", "create", "--rate", "fast"); code != exitUsage {
		t.Errorf("bad --rate: exit %d", code)
	}
	// Every refusal above is in the audit log with its reason.
	ts.flush(t)
	evs, _ := ts.client(root).ListAudit(ctx, latchkey.AuditFilter{TokenID: tk.ID, Kind: latchkey.KindVerify})
	seen := map[string]bool{}
	for _, e := range evs.Events {
		seen[e.Outcome+"/"+e.Reason] = true
	}
	for _, want := range []string{"IP_NOT_ALLOWED/ip_not_allowed", "FORBIDDEN/method_not_allowed", "VALID/"} {
		if !seen[want] {
			t.Errorf("audit lacks %s: %v", want, seen)
		}
	}
}

func TestCLILifecycleHelp(t *testing.T) {
	t.Parallel()
	for _, sub := range []string{"rotate", "derive", "suspend", "resume", "update", "revoke", "list"} {
		code, out, _ := cli(t, "", "", "token", sub, "--help")
		if code != 0 || len(out) < 200 {
			t.Errorf("token %s --help: exit %d, %d bytes", sub, code, len(out))
		}
	}
	_, out, errs := cli(t, "", "", "serve", "--help")
	out += errs
	for _, flag := range []string{"--default-ttl", "--max-lifetime", "--require-expiry", "--rotate-after", "--last-used-interval", "--trusted-proxy"} {
		if !strings.Contains(out, strings.TrimPrefix(flag, "-")) {
			t.Errorf("serve --help does not explain %s", flag)
		}
	}
}

// The server's expiry policy from its flags.
func TestServePolicy(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--default-ttl", "soon"}, {"--default-ttl", "100d", "--max-lifetime", "90d"}, {"--trusted-proxy", "nope"}} {
		code, _, errs := cli(t, "", "", append([]string{"serve"}, args...)...)
		if code != exitUsage {
			t.Errorf("serve %v: exit %d (%s), want %d", args, code, errs, exitUsage)
		}
	}
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir,
		Policy: tokens.Policy{RequireExpiry: true, MaxLifetime: 90 * 24 * time.Hour, RotationAge: 30 * 24 * time.Hour}}, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(ctx)
	root := readRoot(t, dir)
	u := "http://" + d.addr
	if code, _, errs := cli(t, u, root, "token", "create", "--scope", "a:b"); code != exitUsage || !strings.Contains(errs, "expire") {
		t.Errorf("create without expiry: %d %s", code, errs)
	}
	if code, _, errs := cli(t, u, root, "token", "create", "--scope", "a:b", "--ttl", "1y"); code != exitUsage {
		t.Errorf("create beyond the maximum lifetime: %d %s", code, errs)
	}
	if code, _, errs := cli(t, u, root, "token", "create", "--scope", "a:b", "--ttl", "30d"); code != 0 {
		t.Errorf("create within policy: %d %s", code, errs)
	}
	// The root token is older than nothing yet, but the policy answers.
	if code, _, errs := cli(t, u, root, "token", "list", "--rotation-due"); code != 0 {
		t.Errorf("list --rotation-due with a policy: %d %s", code, errs)
	}
}

func readRoot(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "root-token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
