package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

// verifyScopes issues a token holding a:b and verifies it once per
// required scope: VALID for a:b, INSUFFICIENT_SCOPE for the others.
func verifyScopes(t *testing.T, ts *testServer, scopes ...string) {
	t.Helper()
	c := ts.client(ts.root)
	tok, err := c.CreateToken(ctx, client.CreateRequest{Scopes: []string{"a:b"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range scopes {
		if _, err := c.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, Scopes: []string{sc}}); err != nil {
			t.Fatal(err)
		}
	}
}

// audit verify from the command line: intact, then broken by editing one
// row directly in the database, naming that row.
func TestCLIAuditVerifyDetectsEdit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := startServer(t, dir)
	c := ts.client(ts.root)
	verifyScopes(t, ts, "a:b", "a:c", "a:b")
	code, out, errs := cli(t, ts.url, ts.root, "audit", "verify")
	if code != 0 || !strings.Contains(out, "audit chain intact") {
		t.Fatalf("intact chain: exit %d %q %s", code, out, errs)
	}
	// The counts of those attempts: 2 valid, 1 refused.
	code, out, errs = cli(t, ts.url, ts.root, "audit", "summary")
	valid, refused := regexp.MustCompile(`(?m)^valid\s+(\d+)`).FindStringSubmatch(out), regexp.MustCompile(`(?m)^refused\s+(\d+)`).FindStringSubmatch(out)
	if code != 0 || valid == nil || refused == nil || valid[1] != "2" || refused[1] != "1" {
		t.Errorf("audit summary: exit %d\n%s%s", code, out, errs)
	}
	// Turn the refused attempt into a success, directly in the file.
	page, _ := c.ListAudit(ctx, latchkey.AuditFilter{Outcome: "INSUFFICIENT_SCOPE"})
	if len(page.Events) != 1 {
		t.Fatalf("refusals on record: %d", len(page.Events))
	}
	seq := page.Events[0].Seq
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "latchkey.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// The record is in a chunk of records (SQLite's storage): its outcome
	// and reason become a success's, length bytes and all.
	res, err := raw.Exec(`UPDATE audit_chunks SET recs = CAST(replace(replace(recs,
		unhex('13') || 'INSUFFICIENT_SCOPE', unhex('06') || 'VALID'), unhex('0e') || 'missing_scope', unhex('01')) AS BLOB)
		WHERE last_seq >= ? AND last_seq - n < ?`, seq, seq)
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("editing the record's chunk: %d rows, %v", n, err)
	}
	if page, _ := c.ListAudit(ctx, latchkey.AuditFilter{Outcome: "INSUFFICIENT_SCOPE"}); len(page.Events) != 0 {
		t.Fatalf("the edit did not take: %+v", page.Events)
	}
	code, out, _ = cli(t, ts.url, ts.root, "audit", "verify")
	m := regexp.MustCompile(`BROKEN in records (\d+)-(\d+)`).FindStringSubmatch(out)
	if code != exitRefused || m == nil {
		t.Fatalf("after the edit: exit %d %q, want 1 naming the records around %d", code, out, seq)
	}
	code, out, _ = cli(t, ts.url, ts.root, "audit", "verify", "--json")
	var rep latchkey.ChainReport
	if json.Unmarshal([]byte(out), &rep); code != exitRefused || rep.OK || rep.Broken == nil || rep.Broken.Seq > seq || rep.Broken.LastSeq < seq {
		t.Errorf("--json: exit %d %+v, want a break in records that include %d", code, rep, seq)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// audit export writes JSON Lines, oldest first, of the records since.
func TestCLIAuditExport(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	c := ts.client(ts.root)
	for range 5 {
		c.Verify(ctx, client.VerifyRequest{Token: "lk_nope"})
	}
	out := filepath.Join(t.TempDir(), "audit.jsonl")
	code, _, errs := cli(t, ts.url, ts.root, "audit", "export", "--since", "1h", "-o", out)
	if code != 0 {
		t.Fatalf("export: %d %s", code, errs)
	}
	b, _ := os.ReadFile(out)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var prev int64
	malformed := 0
	for _, l := range lines {
		var ev latchkey.AuditEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if ev.Seq <= prev || ev.Hash == "" {
			t.Errorf("line out of order or without hash: %+v", ev)
		}
		prev = ev.Seq
		if ev.Outcome == "MALFORMED" {
			malformed++
		}
	}
	if malformed != 5 {
		t.Errorf("exported %d MALFORMED records, want 5 (of %d lines)", malformed, len(lines))
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Errorf("export file mode %v, want 0600", fi.Mode().Perm())
	}
	if code, _, _ := cli(t, ts.url, ts.root, "audit", "export"); code != exitUsage {
		t.Errorf("export without --since: exit %d", code)
	}
	if code, out, _ := cli(t, ts.url, ts.root, "audit", "export", "--since", "2099-01-01T00:00:00Z"); code != 0 || out != "" {
		t.Errorf("export of the future: %d %q", code, out)
	}
}

// The live stream: records arrive as they are committed; a reconnect with
// Last-Event-ID resumes without gaps; audit tail -f prints them.
func TestAuditStream(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	c := ts.client(ts.root)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var got []latchkey.AuditEvent
	done := make(chan struct{})
	ts.flush(t)
	newest, _ := c.ListAudit(ctx, latchkey.AuditFilter{Limit: 1})
	start := newest.Events[0].Seq // follow from here: nothing written later can be missed
	go func() {
		defer close(done)
		c.StreamAudit(sctx, latchkey.AuditFilter{Outcome: "MALFORMED"}, start, func(ev *latchkey.AuditEvent) error {
			mu.Lock()
			got = append(got, *ev)
			mu.Unlock()
			return nil
		})
	}()
	for range 3 {
		c.Verify(ctx, client.VerifyRequest{Token: "lk_forged"})
	}
	c.Verify(ctx, client.VerifyRequest{Token: ts.root})
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 3 })
	cancel()
	<-done
	for _, ev := range got {
		if ev.Outcome != "MALFORMED" {
			t.Errorf("the filter let through %s", ev.Outcome)
		}
	}
	// Resume from the first: exactly the other two come back.
	req, _ := http.NewRequest("GET", ts.url+"/v1/audit/stream?outcome=MALFORMED", nil)
	req.Header.Set("Authorization", "Bearer "+ts.root)
	req.Header.Set("Last-Event-ID", itoa(got[0].Seq))
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	resp, err := http.DefaultClient.Do(req.WithContext(rctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	var ids []string
	for sc.Scan() && len(ids) < 2 {
		if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			ids = append(ids, id)
		}
	}
	if len(ids) != 2 || ids[0] != itoa(got[1].Seq) || ids[1] != itoa(got[2].Seq) {
		t.Errorf("resumed ids %v, want %d and %d", ids, got[1].Seq, got[2].Seq)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCLIAuditTailFollow(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	var out syncBuffer
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan int)
	go func() {
		env := func(k string) string {
			return map[string]string{"LATCHKEY_ADDR": ts.url, "LATCHKEY_TOKEN": ts.root}[k]
		}
		done <- run(tctx, []string{"audit", "tail", "-f", "-n", "1"}, nil, &out, io.Discard, env)
	}()
	waitFor(t, func() bool { return strings.Contains(out.String(), "TIME") })
	ts.client(ts.root).Verify(ctx, client.VerifyRequest{Token: "lk_followme"})
	waitFor(t, func() bool { return strings.Contains(out.String(), "MALFORMED") })
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("tail -f exit %d", code)
	}
}

// Retention prunes old records, archives them, and leaves the chain
// verifiable from its anchor.
func TestAuditRetention(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	archive := filepath.Join(dir, "archive")
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := startDaemon(ctx, serveConfig{Listen: "127.0.0.1:0", DataDir: dir, AuditRetention: time.Millisecond,
		AuditArchiveDir: archive, AuditPruneInterval: 20 * time.Millisecond}, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(ctx)
	u, root := "http://"+d.addr, readRoot(t, dir)
	c := &client.Client{BaseURL: u, Token: root}
	for range 5 {
		c.Verify(ctx, client.VerifyRequest{Token: "lk_old"})
	}
	d.pipe.Flush(ctx)
	waitFor(t, func() bool {
		page, _ := c.ListAudit(ctx, latchkey.AuditFilter{Outcome: "MALFORMED"})
		return len(page.Events) == 0
	})
	rep, err := c.VerifyAudit(ctx)
	if err != nil || !rep.OK || len(rep.Anchors) == 0 {
		t.Fatalf("after pruning: %+v %v", rep, err)
	}
	files, _ := os.ReadDir(archive)
	var all bytes.Buffer
	for _, f := range files {
		b, _ := os.ReadFile(filepath.Join(archive, f.Name()))
		all.Write(b)
	}
	if n := strings.Count(all.String(), `"outcome":"MALFORMED"`); n != 5 {
		t.Errorf("archive holds %d of the 5 pruned attempts", n)
	}
}

// Who used a token from where: the records by source address through the
// API (exact, CIDR, IPv6), the tally, the CLI, and the refusals (junk,
// a zone, an unknown parameter, a caller without audit:read).
func TestAuditBySource(t *testing.T) {
	t.Parallel()
	ts := startServer(t, t.TempDir())
	rc := ts.client(ts.root)
	tok, err := rc.CreateToken(ctx, client.CreateRequest{Scopes: []string{"a:b"}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := rc.CreateToken(ctx, client.CreateRequest{Scopes: []string{"a:b"}})
	if err != nil {
		t.Fatal(err)
	}
	for ip, n := range map[string]int{"203.0.113.7": 3, "203.0.113.9": 2, "2001:db8::1": 1} {
		for range n {
			if v, err := rc.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, IP: ip}); err != nil || !v.Valid {
				t.Fatalf("verify from %s: %+v %v", ip, v, err)
			}
		}
	}
	if _, err := rc.Verify(ctx, client.VerifyRequest{Token: other.Plaintext, IP: "203.0.113.7"}); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, IP: "203.0.113.7", Scopes: []string{"c:d"}}); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", ts.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+ts.root)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for q, want := range map[string]int{
		"client_ip=203.0.113.7&token_id=" + tok.ID:        4,
		"client_ip=203.0.113.0/24&token_id=" + tok.ID:     6,
		"client_ip=203.0.113.0/24":                        7,
		"client_ip=2001:db8::/32&token_id=" + tok.ID:      1,
		"client_ip=::ffff:203.0.113.9&token_id=" + tok.ID: 2,
		"client_ip=192.0.2.0/24":                          0,
	} {
		code, body := get("/v1/audit?" + q)
		var l client.AuditList
		json.Unmarshal(body, &l)
		if code != 200 || len(l.Events) != want {
			t.Errorf("GET /v1/audit?%s: %d, %d records, want %d: %s", q, code, len(l.Events), want, body)
		}
	}
	// The token's history holds its creation too (an admin record, from
	// the CLI's address); kind=verify leaves the attempts.
	code, body := get("/v1/audit/sources?token_id=" + tok.ID + "&since=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))
	if !strings.Contains(string(body), `"total_sources":4,"records":8`) || !strings.Contains(string(body), `{"address":"127.0.0.1","attempts":1`) {
		t.Errorf("the token's whole history by source: %d %s", code, body)
	}
	code, body = get("/v1/audit/sources?kind=verify&token_id=" + tok.ID + "&since=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))
	var rep latchkey.SourceReport
	if err := json.Unmarshal(body, &rep); err != nil || code != 200 {
		t.Fatalf("GET /v1/audit/sources: %d %s", code, body)
	}
	if rep.Total != 3 || rep.Records != 7 || len(rep.Sources) != 3 || rep.Sources[0].Address != "203.0.113.7" || rep.Sources[0].Attempts != 4 ||
		rep.Sources[0].Outcomes["VALID"] != 3 || rep.Sources[0].Outcomes["INSUFFICIENT_SCOPE"] != 1 || rep.Sources[2].Address != "2001:db8::1" {
		t.Errorf("sources of the token: %s", body)
	}
	for _, q := range []string{"client_ip=not-an-address", "client_ip=fe80::1%25eth0", "client_ip=10.0.0.0/33", "client_ip=203.0.113.7&cidr=8", "since=yesterday", "kind=bogus"} {
		if code, body := get("/v1/audit/sources?" + q); code != 400 {
			t.Errorf("GET /v1/audit/sources?%s: %d %s, want 400", q, code, body)
		}
		if code, body := get("/v1/audit?" + q); code != 400 {
			t.Errorf("GET /v1/audit?%s: %d %s, want 400", q, code, body)
		}
	}
	// The dashboard offers sessions' records as a kind: the API takes it.
	if code, body := get("/v1/audit?kind=session"); code != 200 {
		t.Errorf("GET /v1/audit?kind=session: %d %s", code, body)
	}
	verifier, err := rc.CreateToken(ctx, client.CreateRequest{Scopes: []string{latchkey.ScopeVerify}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.client(verifier.Plaintext).AuditSources(ctx, latchkey.AuditFilter{TokenID: tok.ID}); latchkey.ErrorCode(err) != latchkey.EPermissionDenied {
		t.Errorf("sources for a token without audit:read: %v, want forbidden", err)
	}

	code, out, errs := cli(t, ts.url, ts.root, "audit", "sources", "--token-id", tok.ID, "--since", "1h")
	if code != 0 || !regexp.MustCompile(`(?m)^203\.0\.113\.7\s+4\s+.*INSUFFICIENT_SCOPE 1, VALID 3$`).MatchString(out) ||
		!strings.Contains(out, "8 records from 4 sources") {
		t.Errorf("audit sources: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = cli(t, ts.url, ts.root, "audit", "tail", "--client-ip", "2001:db8::/32")
	if code != 0 || strings.Count(out, "2001:db8::1") != 1 || strings.Contains(out, "203.0.113") {
		t.Errorf("audit tail --client-ip: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := cli(t, ts.url, ts.root, "audit", "sources", "--client-ip", "nonsense"); code != exitUsage || !strings.Contains(errs, "CIDR") {
		t.Errorf("audit sources --client-ip nonsense: exit %d %s", code, errs)
	}
}
