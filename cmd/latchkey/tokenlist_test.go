package main

import (
	"encoding/json"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/latchkeyhq/latchkey/client"
)

// The token list's controls through the API and the CLI: search, sort,
// the expiry and use filters, the count, cursors that keep their order,
// and the refusals (a search holding a whole token among them, which
// leaves no trace of the secret).
func TestTokenListControls(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	rc := ts.client(ts.root)
	mk := func(name, subject, ttl string, tags ...string) *client.CreatedToken {
		t.Helper()
		tok, err := rc.CreateToken(ctx, client.CreateRequest{Name: name, Subject: subject, TTL: ttl, Tags: tags, Scopes: []string{"a:b"}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	billing := mk("Billing API prod", "service:payments", "3d", "team-ops")
	deploy := mk("ci-deploy", "user:ana", "20d", "ci")
	nightly := mk("Nightly backup", "service:backup", "", "ci")
	if v, err := rc.Verify(ctx, client.VerifyRequest{Token: nightly.Plaintext}); err != nil || !v.Valid {
		t.Fatalf("verify: %+v %v", v, err)
	}
	if err := ts.d.ver.FlushUsage(ctx); err != nil { // the use reaches last_used_at now, not within TouchInterval
		t.Fatal(err)
	}

	list := func(q string) (int, client.TokenList, string) {
		t.Helper()
		code, body := ts.get(t, "/v1/tokens?"+q, ts.root)
		var l client.TokenList
		json.Unmarshal([]byte(body), &l)
		return code, l, body
	}
	names := func(l client.TokenList) []string {
		var out []string
		for _, tk := range l.Tokens {
			if tk.Name != "" { // the root token has none
				out = append(out, tk.Name)
			}
		}
		return out
	}
	for q, want := range map[string][]string{
		"q=bill":                            {"Billing API prod"},
		"q=" + url.QueryEscape("CI deploy"): {"ci-deploy"},
		"q=ci":                              {"Nightly backup", "ci-deploy"},
		"q=service&sort=expires":            {"Billing API prod", "Nightly backup"},
		"q=service&sort=expires&order=desc": {"Nightly backup", "Billing API prod"},
		"q=" + deploy.Token.ID[:6]:          {"ci-deploy"},
		"expires_within=7d":                 {"Billing API prod"},
		"expires_within=30d&sort=expires":   {"Billing API prod", "ci-deploy"},
		"never_used=true&q=service":         {"Billing API prod"},
		"unused_for=1d":                     nil, // every token is newer than a day
		"sort=last_used&limit=1&q=service":  {"Nightly backup"},
		"sort=created&order=asc&q=ci":       {"ci-deploy", "Nightly backup"},
	} {
		code, l, body := list(q)
		if code != 200 || !slices.Equal(names(l), want) {
			t.Errorf("GET /v1/tokens?%s: %d %v, want %v: %.300s", q, code, names(l), want, body)
		}
	}
	code, l, body := list("count=true&limit=1&q=ci")
	if code != 200 || l.Total == nil || *l.Total != 2 || len(l.Tokens) != 1 || l.NextCursor == "" {
		t.Fatalf("counted page: %d %s", code, body)
	}
	if code, l2, body := list("q=ci&limit=1&cursor=" + l.NextCursor); code != 200 || len(l2.Tokens) != 1 || l2.Tokens[0].ID == l.Tokens[0].ID || l2.Total != nil {
		t.Errorf("the next page: %d %s", code, body)
	}
	_, sorted, _ := list("sort=expires&limit=1")
	for _, q := range []string{
		"sort=name", "order=up", "expires_within=soon", "expires_within=-1d", "unused_for=0s", "never_used=yes", "count=1",
		"q=" + strings.Repeat("a", 201), "q=a+b+c+d+e+f+g+h+i", "colour=blue",
		"cursor=" + sorted.NextCursor, // a cursor of the expiry order, in the default order
		"sort=last_used&cursor=" + sorted.NextCursor,
		"q=" + url.QueryEscape(billing.Plaintext),
	} {
		if code, body := ts.get(t, "/v1/tokens?"+q, ts.root); code != 400 {
			t.Errorf("GET /v1/tokens?%.60s: %d %s, want 400", q, code, body)
		} else if strings.Contains(body, billing.Plaintext) || strings.Contains(body, billing.Plaintext[len(billing.Plaintext)-20:]) {
			t.Errorf("the refusal echoes the secret: %s", body)
		}
		if code, body := ts.get(t, "/v1/export/tokens?"+strings.Replace(q, "count=1", "count=true", 1), ts.root); code != 400 {
			t.Errorf("GET /v1/export/tokens?%.60s: %d %s, want 400", q, code, body)
		}
	}
	if code, body := ts.get(t, "/v1/export/tokens?format=csv&sort=expires&q=service", ts.root); code != 200 ||
		strings.Index(body, "Billing API prod") > strings.Index(body, "Nightly backup") || strings.Contains(body, "ci-deploy") {
		t.Errorf("the export in the listing's order: %d %s", code, body)
	}

	// The CLI: the same controls, a count, and a "more" line that runs.
	code2, out, errs := cli(t, ts.url, ts.root, "token", "list", "--search", "service ", "--sort", "expires", "--limit", "1", "--count")
	if code2 != 0 || !strings.Contains(out, "Billing API prod") || strings.Contains(out, "Nightly backup") || !strings.Contains(out, "2 token(s) match") {
		t.Fatalf("token list --search --sort --count: exit %d\n%s%s", code2, out, errs)
	}
	m := regexp.MustCompile(`(?m)^more: latchkey (.*)$`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(m[1], "--search 'service '") {
		t.Fatalf("no runnable more line:\n%s", out)
	}
	args := shellSplit(t, m[1])
	code2, out, errs = cli(t, ts.url, ts.root, args...)
	if code2 != 0 || !strings.Contains(out, "Nightly backup") || strings.Contains(out, "Billing API prod") {
		t.Errorf("the more line: exit %d\n%s%s", code2, out, errs)
	}
	for _, bad := range [][]string{{"--expires-within", "soon"}, {"--unused-for", "-3d"}} {
		if code2, _, errs := cli(t, ts.url, ts.root, append([]string{"token", "list"}, bad...)...); code2 != exitUsage || !strings.Contains(errs, "positive duration") {
			t.Errorf("token list %v: exit %d %s", bad, code2, errs)
		}
	}
	code2, out, errs = cli(t, ts.url, ts.root, "token", "list", "--never-used", "--expires-within", "30d", "--sort", "expires", "--order", "desc")
	if code2 != 0 || strings.Index(out, "ci-deploy") > strings.Index(out, "Billing API prod") || strings.Contains(out, "Nightly") {
		t.Errorf("token list --never-used --expires-within --order desc: exit %d\n%s%s", code2, out, errs)
	}
	if strings.Contains(ts.out.String(), billing.Plaintext) {
		t.Error("a secret reached the logs")
	}
}

// shellSplit reads the words of a command line as shellQuote writes it.
func shellSplit(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	var cur strings.Builder
	in, any := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\'':
			in, any = !in, true
		case c == ' ' && !in:
			if any {
				out = append(out, cur.String())
			}
			cur.Reset()
			any = false
		case c == '\\' && !in && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			any = true
		default:
			cur.WriteByte(c)
			any = true
		}
	}
	if in {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if any {
		out = append(out, cur.String())
	}
	return out
}
