package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

// newClient builds the API client from the environment: LATCHKEY_ADDR,
// then LATCHKEY_TOKEN, falling back to the root-token file when the server
// is on this machine.
func newClient(getenv env) (*client.Client, error) {
	addr := envOr(getenv, "LATCHKEY_ADDR", "http://127.0.0.1:7480")
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	tok := getenv("LATCHKEY_TOKEN")
	if f := getenv("LATCHKEY_TOKEN_FILE"); f != "" {
		if tok != "" {
			return nil, fmt.Errorf("LATCHKEY_TOKEN and LATCHKEY_TOKEN_FILE both set: give one")
		}
		var err error
		if tok, err = secretFromFile("LATCHKEY_TOKEN_FILE", f); err != nil {
			return nil, err
		}
	}
	if tok == "" && isLoopbackURL(addr) {
		path := filepath.Join(envOr(getenv, "LATCHKEY_DATA_DIR", "./latchkey-data"), "root-token")
		if b, err := os.ReadFile(path); err == nil {
			tok = strings.TrimSpace(string(b))
		}
	}
	if tok == "" {
		return nil, fmt.Errorf("no credentials: set LATCHKEY_TOKEN (or LATCHKEY_TOKEN_FILE) to an admin token")
	}
	c := &client.Client{BaseURL: addr, Token: tok}
	if ca := getenv("LATCHKEY_CA_FILE"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("LATCHKEY_CA_FILE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("LATCHKEY_CA_FILE: %s holds no PEM certificate", ca)
		}
		c.HTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}}
	}
	return c, nil
}

// clientFor is newClient for a command: it reports a failure on stderr.
func clientFor(cmd string, stderr io.Writer, getenv env) (*client.Client, bool) {
	c, err := newClient(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "latchkey %s: %v\n", cmd, err)
		return nil, false
	}
	return c, true
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

const createDoc = `
Issue a token. The plaintext is printed once and is not stored anywhere:
keep it now. Durations take s, m, h, d and w units ("30d", "1h30m").
You may grant only scopes your own token holds (latchkey:admin may grant any).

Constraints bind the token to what it needs: --cidr (networks it may be
used from), --method and --path (HTTP methods and path patterns of the
resource server; * is one segment, a final ** is any rest, e.g.
/v1/projects/42/**), --rate (e.g. 100/1m), --max-uses and --idle-timeout.`

func cmdTokenCreate(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	fs := newFlags("token create", "token create [flags]", createDoc, stdout, stderr)
	g := addGrantFlags(fs, true)
	if _, code := parse(fs, args, 0); code >= 0 {
		return code
	}
	req, err := g.request()
	if err != nil {
		fmt.Fprintf(stderr, "latchkey token create: %v\n", err)
		return exitUsage
	}
	c, ok := clientFor("token create", stderr, getenv)
	if !ok {
		return exitUsage
	}
	out, err := c.CreateToken(ctx, req)
	if err != nil {
		return apiExit(stderr, "token create", err)
	}
	printCreated(stdout, out, g.quiet, g.asJSON)
	return exitOK
}

// printCreated shows a new token with its plaintext, once.
func printCreated(stdout io.Writer, out *client.CreatedToken, quiet, asJSON bool) {
	switch {
	case quiet:
		fmt.Fprintln(stdout, out.Plaintext)
	case asJSON:
		printJSON(stdout, out)
	default:
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "token\t%s\n", out.Plaintext)
		fmt.Fprintf(tw, "\t(shown once: store it now)\n")
		printTokenFields(tw, out.Token)
		tw.Flush()
	}
}

// grantFlags are the flags that describe a token's grants and constraints,
// shared by token create and token derive.
type grantFlags struct {
	req                      client.CreateRequest
	scopes, tags             strs
	cidrs, methods, paths    strs
	audience, roles          strs
	expires, notBefore, meta string
	rate                     string
	quiet, asJSON            bool
}

func addGrantFlags(fs *flag.FlagSet, create bool) *grantFlags {
	g := &grantFlags{}
	fs.StringVar(&g.req.Name, "name", "", "a name for people")
	if create {
		fs.StringVar(&g.req.Subject, "subject", "", "who or what the token acts for (a user, service or team id)")
		fs.StringVar(&g.req.Prefix, "prefix", "", "token prefix, e.g. acme_live (default lk; a keyspace's tokens get its own)")
		fs.StringVar(&g.req.Keyspace, "keyspace", "", "issue in this keyspace (default: default)")
	}
	fs.Var(&g.roles, "role", "hold this `role` of the keyspace, resolved at every verification (repeatable)")
	fs.Var(&g.scopes, "scope", "grant a `scope`, e.g. invoices:read or billing.*:write (repeatable)")
	fs.StringVar(&g.req.TTL, "ttl", "", "lifetime, e.g. 30d or 12h")
	fs.StringVar(&g.expires, "expires-at", "", "expiry as an RFC 3339 time (instead of --ttl)")
	fs.StringVar(&g.notBefore, "not-before", "", "the token is not valid before this RFC 3339 time")
	fs.Var(&g.tags, "tag", "a `tag` for grouping and bulk actions (repeatable)")
	fs.StringVar(&g.meta, "meta", "", "a JSON object returned with every successful verification")
	fs.StringVar(&g.req.IdleTimeout, "idle-timeout", "", "expire the token once unused for this long, e.g. 30d (at least 1m)")
	fs.Var(&g.cidrs, "cidr", "allow use only from this `network` or address, e.g. 10.0.0.0/8 or 2001:db8::/32 (repeatable)")
	fs.Var(&g.methods, "method", "allow only this HTTP `method`, e.g. GET (repeatable)")
	fs.Var(&g.paths, "path", "allow only paths matching this `pattern`, e.g. /v1/invoices/** (repeatable)")
	fs.Var(&g.audience, "audience", "bind the token to this `resource` (an RFC 8707 URL): it works only at doors that serve it (repeatable)")
	fs.StringVar(&g.rate, "rate", "", "rate limit as `limit/window`, e.g. 100/1m")
	fs.Int64Var(&g.req.MaxUses, "max-uses", 0, "allow this many successful verifications, then USAGE_EXCEEDED")
	fs.BoolVar(&g.quiet, "quiet", false, "print only the token's plaintext")
	fs.BoolVar(&g.asJSON, "json", false, "print the API response as JSON")
	return g
}

// request assembles the API request from the parsed flags.
func (g *grantFlags) request() (client.CreateRequest, error) {
	req := g.req
	req.Scopes, req.Tags, req.Roles = g.scopes, g.tags, g.roles
	req.AllowedCIDRs, req.AllowedMethods, req.AllowedPaths, req.Audience = g.cidrs, g.methods, g.paths, g.audience
	for _, tv := range []struct {
		flag string
		s    string
		dst  **time.Time
	}{{"--expires-at", g.expires, &req.ExpiresAt}, {"--not-before", g.notBefore, &req.NotBefore}} {
		if tv.s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, tv.s)
		if err != nil {
			return req, fmt.Errorf("%s must be an RFC 3339 time, e.g. 2026-12-31T23:59:59Z", tv.flag)
		}
		*tv.dst = &t
	}
	if g.meta != "" {
		req.Meta = json.RawMessage(g.meta)
		if !json.Valid(req.Meta) {
			return req, fmt.Errorf("--meta must be a JSON object")
		}
	}
	if g.rate != "" {
		r, err := parseRate(g.rate)
		if err != nil {
			return req, err
		}
		req.RateLimit = r
	}
	return req, nil
}

// parseRate reads "100/1m" (limit per window).
func parseRate(s string) (*client.RateRequest, error) {
	l, w, ok := strings.Cut(s, "/")
	n, err := strconv.ParseInt(strings.TrimSpace(l), 10, 64)
	if !ok || err != nil || n < 1 || strings.TrimSpace(w) == "" {
		return nil, fmt.Errorf("--rate must be limit/window, e.g. 100/1m or 10/1s")
	}
	return &client.RateRequest{Limit: n, Window: strings.TrimSpace(w)}, nil
}

func printTokenFields(tw *tabwriter.Writer, t *latchkey.Token) {
	fmt.Fprintf(tw, "id\t%s\n", t.ID)
	fmt.Fprintf(tw, "keyspace\t%s\n", latchkey.KeyspaceOf(t.Keyspace))
	fmt.Fprintf(tw, "name\t%s\n", orDash(t.Name))
	fmt.Fprintf(tw, "subject\t%s\n", orDash(t.Subject))
	if eff := effective(t); eff != t.Status {
		fmt.Fprintf(tw, "status\t%s (%s)\n", eff, t.Status)
	} else {
		fmt.Fprintf(tw, "status\t%s\n", t.Status)
	}
	fmt.Fprintf(tw, "scopes\t%s\n", orDash(strings.Join(t.Scopes, " ")))
	if len(t.Roles) > 0 {
		fmt.Fprintf(tw, "roles\t%s\n", strings.Join(t.Roles, " "))
	}
	fmt.Fprintf(tw, "tags\t%s\n", orDash(strings.Join(t.Tags, " ")))
	fmt.Fprintf(tw, "created\t%s by %s\n", fmtTime(t.CreatedAt), t.CreatedBy)
	fmt.Fprintf(tw, "expires\t%s\n", fmtTime(t.ExpiresAt))
	if !t.NotBefore.IsZero() {
		fmt.Fprintf(tw, "not before\t%s\n", fmtTime(t.NotBefore))
	}
	if t.Status == latchkey.StatusRevoked {
		fmt.Fprintf(tw, "revoked\t%s by %s: %s\n", fmtTime(t.RevokedAt), t.RevokedBy, orDash(t.RevokedReason))
	}
	if t.Status == latchkey.StatusSuspended {
		via := ""
		if t.SuspendedVia != "" && t.SuspendedVia != t.ID {
			via = " (through " + t.SuspendedVia + ")"
		}
		fmt.Fprintf(tw, "suspended\t%s by %s%s: %s\n", fmtTime(t.SuspendedAt), t.SuspendedBy, via, orDash(t.SuspendedReason))
	}
	if t.IdleTimeout != 0 {
		fmt.Fprintf(tw, "idle timeout\t%s\n", t.IdleTimeout)
	}
	if len(t.AllowedCIDRs) > 0 {
		fmt.Fprintf(tw, "networks\t%s\n", strings.Join(t.AllowedCIDRs, " "))
	}
	if len(t.AllowedMethods) > 0 {
		fmt.Fprintf(tw, "methods\t%s\n", strings.Join(t.AllowedMethods, " "))
	}
	if len(t.AllowedPaths) > 0 {
		fmt.Fprintf(tw, "paths\t%s\n", strings.Join(t.AllowedPaths, " "))
	}
	if len(t.Audience) > 0 {
		fmt.Fprintf(tw, "audience\t%s\n", strings.Join(t.Audience, " "))
	}
	if r := t.RateLimit; r != nil {
		fmt.Fprintf(tw, "rate limit\t%d per %s\n", r.Limit, r.Window)
	}
	if t.MaxUses > 0 {
		fmt.Fprintf(tw, "uses\t%d of %d\n", t.Uses, t.MaxUses)
	}
	fmt.Fprintf(tw, "last used\t%s\n", fmtTime(t.LastUsedAt))
	if t.ParentID != "" {
		fmt.Fprintf(tw, "derived from\t%s\n", t.ParentID)
	}
	if t.PredecessorID != "" {
		fmt.Fprintf(tw, "rotated from\t%s\n", t.PredecessorID)
	}
	if t.SuccessorID != "" {
		fmt.Fprintf(tw, "rotated to\t%s at %s\n", t.SuccessorID, fmtTime(t.RotatedAt))
	}
	if len(t.Meta) > 0 && string(t.Meta) != "{}" {
		fmt.Fprintf(tw, "meta\t%s\n", t.Meta)
	}
}

// effective is the status the server worked out, or (from an older
// server) the one this machine's clock gives.
func effective(t *latchkey.Token) latchkey.Status {
	if t.Effective != "" {
		return t.Effective
	}
	return t.EffectiveStatus(time.Now())
}

func cmdTokenList(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	var (
		f      latchkey.TokenFilter
		status string
		asJSON bool
	)
	fs := newFlags("token list", "token list [flags]", "List tokens, newest first unless --sort says otherwise. Filters combine.", stdout, stderr)
	fs.StringVar(&f.Keyspace, "keyspace", "", "only tokens of this keyspace")
	fs.StringVar(&f.Subject, "subject", "", "only tokens of this subject")
	fs.StringVar(&status, "status", "", "only active, suspended or revoked tokens, or active ones that have expired or been rotated (expired, rotated)")
	fs.StringVar(&f.Tag, "tag", "", "only tokens with this tag")
	fs.StringVar(&f.Prefix, "prefix", "", "only tokens with this prefix")
	fs.StringVar(&f.ParentID, "parent", "", "only tokens derived from this token `ID`")
	fs.BoolVar(&f.RotationDue, "rotation-due", false, "only tokens due for rotation under the server's --rotate-after policy")
	fs.StringVar(&f.Search, "search", "", "only tokens where every word of this `TEXT` begins a word of the name, subject or tags, or the id")
	durationFlag(fs, &f.ExpiresWithin, "expires-within", "only active tokens that expire within this `DURATION` (e.g. 7d)")
	durationFlag(fs, &f.UnusedFor, "unused-for", "only tokens not used for this `DURATION` (e.g. 30d), never-used ones older than it included")
	fs.BoolVar(&f.NeverUsed, "never-used", false, "only tokens never used")
	fs.StringVar(&f.Sort, "sort", "", "order by created (newest first, the default), expires (soonest first) or last_used (most recent first)")
	fs.StringVar(&f.Order, "order", "", "asc or desc, to reverse the --sort's direction")
	fs.BoolVar(&f.Count, "count", false, "also print how many tokens match in all")
	fs.IntVar(&f.Limit, "limit", 50, "page size (1-1000)")
	fs.StringVar(&f.Cursor, "cursor", "", "continue from a previous page's cursor")
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	if _, code := parse(fs, args, 0); code >= 0 {
		return code
	}
	f.Status = latchkey.Status(status)
	c, ok := clientFor("token list", stderr, getenv)
	if !ok {
		return exitUsage
	}
	out, err := c.ListTokens(ctx, f)
	if err != nil {
		return apiExit(stderr, "token list", err)
	}
	if asJSON {
		printJSON(stdout, out)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSUBJECT\tSTATUS\tSCOPES\tEXPIRES\tLAST USED")
	for _, t := range out.Tokens {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, orDash(t.Name), orDash(t.Subject), effective(t),
			orDash(strings.Join(t.Scopes, " ")), fmtTime(t.ExpiresAt), fmtTime(t.LastUsedAt))
	}
	tw.Flush()
	if out.Total != nil {
		fmt.Fprintf(stdout, "\n%d token(s) match\n", *out.Total)
	}
	if out.NextCursor != "" {
		fmt.Fprintf(stdout, "\nmore: latchkey token list %s\n", strings.Join(append(withoutFlag(args, "cursor"), "--cursor", out.NextCursor), " "))
	}
	return exitOK
}

func cmdTokenShow(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	var asJSON bool
	fs := newFlags("token show", "token show ID [flags]", "Show one token's record (never its secret).", stdout, stderr)
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	pos, code := parse(fs, args, 1)
	if code >= 0 {
		return code
	}
	c, ok := clientFor("token show", stderr, getenv)
	if !ok {
		return exitUsage
	}
	t, err := c.GetToken(ctx, pos[0])
	if err != nil {
		return apiExit(stderr, "token show", err)
	}
	showToken(stdout, t, asJSON)
	return exitOK
}

// showToken prints a token's record as a table, or as JSON.
func showToken(stdout io.Writer, t *latchkey.Token, asJSON bool) {
	if asJSON {
		printJSON(stdout, t)
		return
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	printTokenFields(tw, t)
	tw.Flush()
}

const revokeDoc = `
Revoke for good: every later verification answers REVOKED, and every token
derived from a revoked one is revoked with it.

Give a token ID, or exactly one of --subject, --tag, --prefix or --parent
to revoke in bulk (--parent revokes everything derived from that token,
not the token itself). A bulk revocation is all or nothing: if your token
cannot manage one of the matches, none is revoked.

A bulk revocation first says how many tokens it will revoke. On a terminal
it then asks for confirmation; elsewhere it needs --yes. --dry-run only
says. Your own token (and any ancestor whose revocation would revoke it)
is spared unless you pass --include-self, so that revoking "--prefix lk"
with the root token does not lock you out. If you are locked out anyway,
"latchkey admin recover-root" makes a new root token from the data
directory and the server key.

With --wait the command returns only once every live node has evicted the
revoked tokens (or --wait-timeout has passed), and says how many confirmed
and how long it took. It exits 1 when a node did not confirm in time (it
is named); the tokens are revoked either way.`

// waitFlags are --wait and --wait-timeout (revoke, suspend).
type waitFlags struct {
	on      bool
	timeout time.Duration
}

func addWaitFlags(fs *flag.FlagSet) *waitFlags {
	w := &waitFlags{}
	fs.BoolVar(&w.on, "wait", false, "return once every live node has evicted the token (a receipt)")
	fs.DurationVar(&w.timeout, "wait-timeout", 0, "with --wait: the longest to wait (default 5s, at most 30s)")
	return w
}

// check refuses --wait-timeout without --wait.
func (w *waitFlags) check(cmd string, stderr io.Writer) bool {
	if w.timeout != 0 && !w.on {
		fmt.Fprintf(stderr, "latchkey %s: --wait-timeout needs --wait\n", cmd)
		return false
	}
	if w.timeout < 0 || w.timeout > latchkey.MaxReceiptWait {
		fmt.Fprintf(stderr, "latchkey %s: --wait-timeout must be above 0 and at most %s\n", cmd, latchkey.MaxReceiptWait)
		return false
	}
	return true
}

// receiptLine says what a receipt found, and the exit status it means.
func receiptLine(r latchkey.Receipt) (string, int) {
	line := fmt.Sprintf("%d of %d node(s) confirmed in %.1f ms", r.Confirmed, r.Nodes, r.TookMS)
	if r.Confirmed < r.Nodes {
		return line + "; not confirmed: " + strings.Join(r.Missing, ", "), exitRefused
	}
	return line, exitOK
}

// terminal reports whether r is an interactive terminal, where a question
// can be asked and answered (not /dev/null, a pipe or a file). An input
// that knows (it has IsTerminal) says so itself.
func terminal(r io.Reader) bool {
	switch f := r.(type) {
	case interface{ IsTerminal() bool }:
		return f.IsTerminal()
	case interface{ Fd() uintptr }:
		return term.IsTerminal(int(f.Fd()))
	}
	return false
}

// confirm asks question on w and reads a yes from r.
func confirm(r io.Reader, w io.Writer, question string) bool {
	fmt.Fprintf(w, "%s [y/N] ", question)
	line, _ := bufio.NewReader(r).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

func cmdTokenRevoke(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv env) int {
	var (
		reason                   string
		asJSON, yes, dry, myself bool
		bulk                     client.RevocationRequest
	)
	fs := newFlags("token revoke", "token revoke ID | --subject S | --tag T | --prefix P | --parent ID [flags]", revokeDoc, stdout, stderr)
	fs.StringVar(&reason, "reason", "", "why, for the audit log")
	fs.StringVar(&bulk.Subject, "subject", "", "revoke every token of this subject")
	fs.StringVar(&bulk.Tag, "tag", "", "revoke every token with this tag")
	fs.StringVar(&bulk.Prefix, "prefix", "", "revoke every token with this prefix")
	fs.StringVar(&bulk.Parent, "parent", "", "revoke every token derived from this token `ID`")
	fs.BoolVar(&yes, "yes", false, "bulk: do not ask for confirmation")
	fs.BoolVar(&dry, "dry-run", false, "bulk: say how many tokens would be revoked, and revoke none")
	fs.BoolVar(&myself, "include-self", false, "bulk: revoke your own token too if it matches")
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	wait := addWaitFlags(fs)
	pos, code := parse(fs, args, -1)
	if code >= 0 {
		return code
	}
	if !wait.check("token revoke", stderr) {
		return exitUsage
	}
	selectors := 0
	for _, v := range []string{bulk.Subject, bulk.Tag, bulk.Prefix, bulk.Parent} {
		if v != "" {
			selectors++
		}
	}
	if len(pos)+selectors != 1 || len(pos) > 1 {
		fmt.Fprintln(stderr, "latchkey token revoke: give a token ID or exactly one of --subject, --tag, --prefix, --parent")
		return exitUsage
	}
	if selectors == 0 && (yes || dry || myself) {
		fmt.Fprintln(stderr, "latchkey token revoke: --yes, --dry-run and --include-self are for bulk revocations")
		return exitUsage
	}
	c, ok := clientFor("token revoke", stderr, getenv)
	if !ok {
		return exitUsage
	}
	if selectors == 1 {
		return revokeBulk(ctx, c, bulk, reason, myself, dry, yes, asJSON, wait, stdin, stdout, stderr)
	}
	if wait.on {
		t, err := c.RevokeTokenWait(ctx, pos[0], reason, client.Wait{Timeout: wait.timeout})
		if err != nil {
			return apiExit(stderr, "token revoke", err)
		}
		line, code := receiptLine(t.Receipt)
		if asJSON {
			printJSON(stdout, t)
			return code
		}
		fmt.Fprintf(stdout, "revoked %s; %s\n", t.ID, line)
		return code
	}
	t, err := c.RevokeToken(ctx, pos[0], reason)
	if err != nil {
		return apiExit(stderr, "token revoke", err)
	}
	if asJSON {
		printJSON(stdout, t)
		return exitOK
	}
	fmt.Fprintf(stdout, "revoked %s\n", t.ID)
	return exitOK
}

// revokeBulk looks first (a dry run), says what it will do, asks, then
// revokes.
func revokeBulk(ctx context.Context, c *client.Client, bulk client.RevocationRequest, reason string, myself, dry, yes, asJSON bool,
	wait *waitFlags, stdin io.Reader, stdout, stderr io.Writer) int {
	bulk.Reason, bulk.IncludeSelf, bulk.DryRun = reason, myself, true
	plan, err := c.Revoke(ctx, bulk)
	if err != nil {
		return apiExit(stderr, "token revoke", err)
	}
	say := stdout
	if asJSON {
		say = stderr
	}
	for _, id := range plan.Spared {
		fmt.Fprintf(say, "sparing %s: it is your own token, or revoking it would revoke yours (--include-self to revoke it)\n", id)
	}
	if dry || plan.Revoked == 0 {
		if asJSON {
			printJSON(stdout, plan)
		} else {
			fmt.Fprintf(stdout, "would revoke %d token(s)\n", plan.Revoked)
		}
		return exitOK
	}
	if !yes {
		if !terminal(stdin) {
			fmt.Fprintf(stderr, "latchkey token revoke: this would revoke %d token(s); confirm with --yes (or look first with --dry-run)\n", plan.Revoked)
			return exitUsage
		}
		if !confirm(stdin, stderr, fmt.Sprintf("Revoke %d token(s)?", plan.Revoked)) {
			fmt.Fprintln(stderr, "nothing revoked")
			return exitRefused
		}
	}
	bulk.DryRun = false
	var res *client.RevocationResult
	if wait.on {
		res, err = c.RevokeWait(ctx, bulk, client.Wait{Timeout: wait.timeout})
	} else {
		res, err = c.Revoke(ctx, bulk)
	}
	if err != nil {
		return apiExit(stderr, "token revoke", err)
	}
	code, line := exitOK, ""
	if res.Receipt != nil {
		line, code = receiptLine(*res.Receipt)
		line = "; " + line
	}
	if asJSON {
		printJSON(stdout, res)
	} else {
		fmt.Fprintf(stdout, "revoked %d token(s)%s\n", res.Revoked, line)
	}
	return code
}

const verifyDoc = `
Verify a token against the server, as a backend would. Prints the code
(VALID, MALFORMED, NOT_FOUND, REVOKED, EXPIRED, INSUFFICIENT_SCOPE, ...) and
exits 0 only for VALID. Pass "-" as TOKEN to read it from standard input,
which keeps it out of your shell history.`

func cmdVerify(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv env) int {
	var (
		scopes       strs
		ip           string
		method, path string
		keyspace     string
		asJSON       bool
	)
	fs := newFlags("verify", "verify TOKEN [flags]", verifyDoc, stdout, stderr)
	fs.Var(&scopes, "scope", "a `scope` the token must cover (repeatable)")
	fs.StringVar(&ip, "ip", "", "the end client's IP address, checked against the token's networks")
	fs.StringVar(&method, "method", "", "the HTTP method of the request the token came with")
	fs.StringVar(&path, "path", "", "the path of the request the token came with")
	fs.StringVar(&keyspace, "keyspace", "", "the keyspace the token must belong to (default: the default keyspace)")
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	pos, code := parse(fs, args, 1)
	if code >= 0 {
		return code
	}
	tok := pos[0]
	if tok == "-" {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && line == "" {
			fmt.Fprintln(stderr, "latchkey verify: no token on standard input")
			return exitUsage
		}
		tok = strings.TrimSpace(line)
	}
	c, ok := clientFor("verify", stderr, getenv)
	if !ok {
		return exitUsage
	}
	res, err := c.Verify(ctx, client.VerifyRequest{Token: tok, Scopes: scopes, IP: ip, Method: method, Path: path, Keyspace: keyspace})
	if err != nil {
		return apiExit(stderr, "verify", err)
	}
	if asJSON {
		printJSON(stdout, res)
	} else if res.Valid {
		extra := ""
		if res.Remaining != nil {
			extra += fmt.Sprintf(" uses_left=%d", *res.Remaining)
		}
		if r := res.RateLimit; r != nil {
			extra += fmt.Sprintf(" rate=%d/%d", r.Remaining, r.Limit)
		}
		for _, w := range res.Warnings {
			extra += " warning=" + w
		}
		fmt.Fprintf(stdout, "VALID  token=%s subject=%s scopes=%s expires=%s%s\n", res.TokenID, orDash(res.Subject),
			orDash(strings.Join(res.Scopes, ",")), expiresText(res.ExpiresAt), extra)
	} else if r := res.RateLimit; res.Code == latchkey.RateLimited && r != nil {
		fmt.Fprintf(stdout, "%s  retry_after=%ds\n", res.Code, r.RetryAfter)
	} else {
		fmt.Fprintln(stdout, res.Code)
	}
	if !res.Valid {
		return exitRefused
	}
	return exitOK
}

func expiresText(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.Format(time.RFC3339)
}

const tailDoc = `
Show the latest audit records, oldest first: every verification attempt
(valid or not, with its reason and client IP) and every admin change.
With -f, keep printing new records as they are committed, from the
server's live stream (GET /v1/audit/stream); a dropped connection is
resumed where it left off.`

// durationFlag defines a flag that takes a duration as ParseDuration
// reads it ("7d", "12h"), and must be positive.
func durationFlag(fs *flag.FlagSet, dst *time.Duration, name, usage string) {
	fs.Func(name, usage, func(s string) error {
		d, err := latchkey.ParseDuration(s)
		if err != nil || d <= 0 {
			return fmt.Errorf("a positive duration such as 7d or 12h")
		}
		*dst = d
		return nil
	})
}

// withoutFlag returns args without the flag name and its value (in any of
// the forms the flag package reads), each argument quoted for a shell
// where it needs to be: the command line to run again with a new value.
func withoutFlag(args []string, name string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch a {
		case "-" + name, "--" + name:
			i++ // and its value
			continue
		}
		if strings.HasPrefix(a, "-"+name+"=") || strings.HasPrefix(a, "--"+name+"=") {
			continue
		}
		out = append(out, shellQuote(a))
	}
	return out
}

// shellQuote quotes s for a POSIX shell unless it is plain.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '=' || r == '.' || r == '/' || r == ':' || r == ',' || r == '@' ||
			'0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
