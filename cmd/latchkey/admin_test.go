package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

// fakeTTY is an input that says it is a terminal, with an answer.
type fakeTTY struct{ *strings.Reader }

func (fakeTTY) IsTerminal() bool { return true }

// Issue 12 item 7: a bulk revocation spares the caller unless asked, says
// how many first, asks on a terminal, and the data directory's holder can
// always get back in.
func TestBulkRevokeSparesSelfAndRecoverRoot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := startServer(t, dir)
	u, root := ts.url, ts.root
	c := ts.client(root)
	for i := range 3 {
		if _, err := c.CreateToken(ctx, client.CreateRequest{Subject: "svc", Scopes: []string{"x:y"}, Tags: []string{"t" + string(rune('a'+i))}}); err != nil {
			t.Fatal(err)
		}
	}
	// Off a terminal, without --yes: nothing happens.
	if code, _, errs := cli(t, u, root, "token", "revoke", "--prefix", "lk"); code != exitUsage || !strings.Contains(errs, "--yes") {
		t.Errorf("unconfirmed: %d %s", code, errs)
	}
	// --dry-run says what would happen, root spared.
	code, out, _ := cli(t, u, root, "token", "revoke", "--prefix", "lk", "--dry-run")
	if code != 0 || !strings.Contains(out, "would revoke 3 token(s)") || !strings.Contains(out, "sparing") {
		t.Errorf("dry run: %d %q", code, out)
	}
	// On a terminal: "n" changes nothing; "y" revokes, root spared.
	run1 := func(answer string, args ...string) (int, string, string) {
		var o, e bytes.Buffer
		env := func(k string) string { return map[string]string{"LATCHKEY_ADDR": u, "LATCHKEY_TOKEN": root}[k] }
		code := run(ctx, args, fakeTTY{strings.NewReader(answer)}, &o, &e, env)
		return code, o.String(), e.String()
	}
	if code, _, errs := run1("n\n", "token", "revoke", "--prefix", "lk"); code != exitRefused || !strings.Contains(errs, "Revoke 3 token(s)?") {
		t.Errorf("declined: %d %s", code, errs)
	}
	if code, out, errs := run1("y\n", "token", "revoke", "--prefix", "lk"); code != 0 || !strings.Contains(out, "revoked 3 token(s)") {
		t.Errorf("confirmed: %d %q %s", code, out, errs)
	}
	if code, _, errs := cli(t, u, root, "token", "list"); code != 0 {
		t.Fatalf("the root token was revoked with the rest: %s", errs)
	}
	// --include-self does lock out, as asked...
	if code, out, errs := cli(t, u, root, "token", "revoke", "--prefix", "lk", "--include-self", "--yes"); code != 0 || !strings.Contains(out, "revoked 1 token(s)") {
		t.Fatalf("include-self: %d %q %s", code, out, errs)
	}
	if code, _, _ := cli(t, u, root, "token", "list"); code != exitAPIError {
		t.Fatalf("root still works after revoking itself: %d", code)
	}
	// ...and recover-root refuses while the server holds the directory.
	var o, e bytes.Buffer
	env := func(k string) string { return map[string]string{"LATCHKEY_DATA_DIR": dir}[k] }
	if code := run(ctx, []string{"admin", "recover-root"}, strings.NewReader(""), &o, &e, env); code == 0 || !strings.Contains(e.String(), "stop the server first") {
		t.Errorf("recover-root beside a running server: %d %s", code, e.String())
	}
	ts.stop(t)
	o.Reset()
	e.Reset()
	if code := run(ctx, []string{"admin", "recover-root"}, strings.NewReader(""), &o, &e, env); code != 0 {
		t.Fatalf("recover-root: %d %s", code, e.String())
	}
	ts2 := startServer(t, dir)
	newRoot := ts2.root // startServer reads <dir>/root-token, which recover-root wrote
	if newRoot == root || !strings.Contains(o.String(), newRoot) {
		t.Fatalf("recover-root did not write a new root token")
	}
	if code, _, errs := cli(t, ts2.url, newRoot, "token", "list"); code != 0 {
		t.Errorf("the recovered root token: %s", errs)
	}
	page, err := ts2.client(newRoot).ListAudit(ctx, latchkey.AuditFilter{Action: latchkey.ActionRootRecover})
	if err != nil || len(page.Events) != 1 || page.Events[0].Actor != "latchkey:recover-root" {
		t.Errorf("recovery on record: %+v %v", page.Events, err)
	}
}
