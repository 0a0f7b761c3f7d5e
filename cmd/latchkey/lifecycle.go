package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/latchkeyhq/latchkey/client"
)

const rotateDoc = `
Rotate a token: issue a successor with the same grants and a new secret,
printed once. The old token keeps working for the --grace period (never
past its own expiry), then answers EXPIRED; tokens derived from it end with
it. Deploy the new secret within the grace period.

The successor gets a fresh lifetime as long as the old one's and shares its
usage budget and rate limit. A revoked, suspended, expired or already
rotated token cannot be rotated.`

func cmdTokenRotate(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	var (
		grace         string
		quiet, asJSON bool
	)
	fs := newFlags("token rotate", "token rotate ID [--grace 24h] [flags]", rotateDoc, stdout, stderr)
	fs.StringVar(&grace, "grace", "0s", "how long the old token keeps working, e.g. 24h")
	fs.BoolVar(&quiet, "quiet", false, "print only the successor's plaintext")
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	pos, code := parse(fs, args, 1)
	if code >= 0 {
		return code
	}
	c, ok := clientFor("token rotate", stderr, getenv)
	if !ok {
		return exitUsage
	}
	out, err := c.RotateToken(ctx, pos[0], grace)
	if err != nil {
		return apiExit(stderr, "token rotate", err)
	}
	if asJSON {
		printJSON(stdout, out)
		return exitOK
	}
	printCreated(stdout, &out.CreatedToken, quiet, false)
	if !quiet {
		fmt.Fprintf(stdout, "\nthe old token %s works until %s\n", out.Predecessor.ID, fmtTime(out.Predecessor.ExpiresAt))
	}
	return exitOK
}

const suspendDoc = `
Suspend a token, and every token derived from it: verification answers
SUSPENDED until "latchkey token resume". Unlike revocation it can be undone.

With --wait the command returns only once every live node has evicted the
token (or --wait-timeout has passed), and says how many confirmed and how
long it took; it exits 1 when a node did not confirm in time (it is
named), the token being suspended either way.`

const resumeDoc = `
Resume a suspended token, with every token derived from it that was
suspended because it was. A token suspended through its parent is resumed
by resuming the parent.`

// cmdTokenState runs suspend or resume.
func cmdTokenState(ctx context.Context, verb string, args []string, stdout, stderr io.Writer, getenv env) int {
	var (
		reason string
		asJSON bool
	)
	doc := suspendDoc
	if verb == "resume" {
		doc = resumeDoc
	}
	fs := newFlags("token "+verb, "token "+verb+" ID [flags]", doc, stdout, stderr)
	wait := &waitFlags{}
	if verb == "suspend" {
		fs.StringVar(&reason, "reason", "", "why, for the audit log")
		wait = addWaitFlags(fs)
	}
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	pos, code := parse(fs, args, 1)
	if code >= 0 {
		return code
	}
	if !wait.check("token "+verb, stderr) {
		return exitUsage
	}
	c, ok := clientFor("token "+verb, stderr, getenv)
	if !ok {
		return exitUsage
	}
	if wait.on {
		t, err := c.SuspendTokenWait(ctx, pos[0], reason, client.Wait{Timeout: wait.timeout})
		if err != nil {
			return apiExit(stderr, "token "+verb, err)
		}
		line, code := receiptLine(t.Receipt)
		if asJSON {
			printJSON(stdout, t)
		} else {
			fmt.Fprintf(stdout, "suspended %s; %s\n", pos[0], line)
		}
		return code
	}
	call := func() (any, error) { return c.SuspendToken(ctx, pos[0], reason) }
	if verb == "resume" {
		call = func() (any, error) { return c.ResumeToken(ctx, pos[0]) }
	}
	t, err := call()
	if err != nil {
		return apiExit(stderr, "token "+verb, err)
	}
	if asJSON {
		printJSON(stdout, t)
		return exitOK
	}
	past := map[string]string{"suspend": "suspended", "resume": "resumed"}[verb]
	fmt.Fprintf(stdout, "%s %s\n", past, pos[0])
	return exitOK
}

const deriveDoc = `
Derive a narrower child of token ID. Every flag is optional: what you leave
out is inherited from the parent, and what you give must be no broader
(scopes covered by the parent's, an earlier expiry, networks inside the
parent's, fewer methods and paths, a slower rate, fewer uses). The child
spends the parent's budget and rate too, and is revoked, suspended and
ended with the parent.

A token may derive from itself: set LATCHKEY_TOKEN to the parent's own
plaintext. Otherwise LATCHKEY_TOKEN needs latchkey:tokens:write and must
cover the parent's scopes.`

func cmdTokenDerive(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	fs := newFlags("token derive", "token derive ID [flags]", deriveDoc, stdout, stderr)
	g := addGrantFlags(fs, false)
	pos, code := parse(fs, args, 1)
	if code >= 0 {
		return code
	}
	req, err := g.request()
	if err != nil {
		fmt.Fprintf(stderr, "latchkey token derive: %v\n", err)
		return exitUsage
	}
	c, ok := clientFor("token derive", stderr, getenv)
	if !ok {
		return exitUsage
	}
	out, err := c.DeriveToken(ctx, pos[0], req)
	if err != nil {
		return apiExit(stderr, "token derive", err)
	}
	printCreated(stdout, out, g.quiet, g.asJSON)
	return exitOK
}

const updateDoc = `
Change a token's name, tags or meta, or narrow its scopes. Only the flags
you give change anything: --tag replaces all tags (--tag "" clears them),
--scope replaces the scopes with a narrower set. Scopes are never widened
in place: issue a new token for that.`

func cmdTokenUpdate(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	var (
		name, meta   string
		tags, scopes strs
		asJSON       bool
	)
	fs := newFlags("token update", "token update ID [flags]", updateDoc, stdout, stderr)
	fs.StringVar(&name, "name", "", "new name")
	fs.StringVar(&meta, "meta", "", "new meta (a JSON object)")
	fs.Var(&tags, "tag", "new `tag` set (repeatable; replaces all tags)")
	fs.Var(&scopes, "scope", "narrower `scope` set (repeatable; replaces the scopes)")
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	pos, code := parse(fs, args, 1)
	if code >= 0 {
		return code
	}
	var req client.UpdateRequest
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "name":
			req.Name = &name
		case "meta":
			req.Meta = json.RawMessage(meta)
		case "tag":
			t := nonEmpty(tags)
			req.Tags = &t
		case "scope":
			s := nonEmpty(scopes)
			req.Scopes = &s
		}
	})
	if req.Meta != nil && !json.Valid(req.Meta) {
		fmt.Fprintln(stderr, "latchkey token update: --meta must be a JSON object")
		return exitUsage
	}
	c, ok := clientFor("token update", stderr, getenv)
	if !ok {
		return exitUsage
	}
	t, err := c.UpdateToken(ctx, pos[0], req)
	if err != nil {
		return apiExit(stderr, "token update", err)
	}
	showToken(stdout, t, asJSON)
	return exitOK
}

func nonEmpty(list []string) []string {
	out := []string{}
	for _, v := range list {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

const blocksDoc = `
Sources the detector has blocked: every verification from them answers
BLOCKED, before any lookup, until the block expires. "blocks list" shows
them; "blocks remove SOURCE" lifts one (an address, or an IPv6 /64 such
as 2001:db8:1:2::/64). Removing needs latchkey:admin.`

func cmdBlocks(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	verb := args[0] // list or remove: checked by the command tree
	var asJSON bool
	syn := "blocks list [flags]"
	want := 0
	if verb == "remove" {
		syn, want = "blocks remove SOURCE", 1
	}
	fs := newFlags("blocks "+verb, syn, blocksDoc, stdout, stderr)
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	pos, code := parse(fs, args[1:], want)
	if code >= 0 {
		return code
	}
	c, ok := clientFor("blocks "+verb, stderr, getenv)
	if !ok {
		return exitUsage
	}
	if verb == "remove" {
		if err := c.RemoveBlock(ctx, pos[0]); err != nil {
			return apiExit(stderr, "blocks remove", err)
		}
		fmt.Fprintf(stdout, "unblocked %s\n", pos[0])
		return exitOK
	}
	list, err := c.ListBlocks(ctx)
	if err != nil {
		return apiExit(stderr, "blocks list", err)
	}
	if asJSON {
		printJSON(stdout, list)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tUNTIL\tRULE\tEVIDENCE")
	for _, b := range list.Blocks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.Source, fmtTime(b.Until), b.Rule, orDash(b.Reason))
	}
	tw.Flush()
	return exitOK
}

const gatewayDoc = `
Run the gateway: a reverse proxy that checks every request's token before
forwarding it to the upstream its route names, and tells the upstream who
is calling (X-Latchkey-Token-Id, -Subject, -Scopes, and the signed
X-Latchkey-Identity JWT). The route file is YAML (see docs/gateway.md);
SIGHUP reloads it, and an invalid file is refused while the old routes stay.

It is "latchkey serve" with the gateway in front: the same data directory,
store, verifier, audit log and detector, and the admin API on --api-listen.
Every flag of serve is accepted too. To run the gateway inside an existing
server instead, start serve with --gateway-config.`

// cmdGateway runs serve with the gateway as the main listener.
func cmdGateway(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	var conf, listen, apiListen string
	fs := newFlags("gateway", "gateway --config FILE [flags]", gatewayDoc, stdout, stderr)
	fs.StringVar(&conf, "config", getenv("LATCHKEY_GATEWAY_CONFIG"), "route `file` (YAML) [LATCHKEY_GATEWAY_CONFIG]")
	fs.StringVar(&listen, "listen", envOr(getenv, "LATCHKEY_GATEWAY_LISTEN", "127.0.0.1:8080"), "address the gateway listens on [LATCHKEY_GATEWAY_LISTEN]")
	fs.StringVar(&apiListen, "api-listen", envOr(getenv, "LATCHKEY_LISTEN", "127.0.0.1:7480"), "address of the admin API [LATCHKEY_LISTEN]")
	// The gateway's own flags are taken here; everything else goes to serve.
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case !strings.HasPrefix(a, "-"):
			rest = append(rest, a)
		case name == "h" || name == "help":
			fs.Usage()
			return exitOK
		case name == "config" || name == "listen" || name == "api-listen":
			pair := []string{a}
			if !hasValue && i+1 < len(args) {
				i++
				pair = append(pair, args[i])
			}
			if _, code := parse(fs, pair, 0); code >= 0 {
				return code
			}
		default:
			rest = append(rest, a)
		}
	}
	if conf == "" {
		usageError(stderr, "latchkey gateway", "--config is required (the route file)")
		return exitUsage
	}
	return cmdServe(ctx, append([]string{"--gateway-config", conf, "--gateway-listen", listen, "--listen", apiListen}, rest...), stdout, stderr, getenv)
}

const sessionsDoc = `
Open sessions: the database connections and MCP (agent) sessions the node
that answers admitted with a token and still holds (each node lists its
own). "sessions list" shows them with their statements (or MCP requests) so
far; "sessions end ID" ends one now (a database client is told an
administrator ended it, an agent's session id answers 404; the end is
audited with your token as the actor). The token is untouched: revoke it to keep it out.
Listing needs latchkey:audit:read, ending latchkey:tokens:write.`

func cmdSessions(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	verb := args[0] // list or end: checked by the command tree
	var asJSON bool
	var tokenID string
	syn, want := "sessions list [flags]", 0
	if verb == "end" {
		syn, want = "sessions end ID", 1
	}
	fs := newFlags("sessions "+verb, syn, sessionsDoc, stdout, stderr)
	if verb == "list" {
		fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
		fs.StringVar(&tokenID, "token", "", "only this token's sessions (its id)")
	}
	pos, code := parse(fs, args[1:], want)
	if code >= 0 {
		return code
	}
	c, ok := clientFor("sessions "+verb, stderr, getenv)
	if !ok {
		return exitUsage
	}
	if verb == "end" {
		if err := c.EndSession(ctx, pos[0]); err != nil {
			return apiExit(stderr, "sessions end", err)
		}
		fmt.Fprintf(stdout, "ended session %s\n", pos[0])
		return exitOK
	}
	list, err := c.ListSessions(ctx, tokenID)
	if err != nil {
		return apiExit(stderr, "sessions list", err)
	}
	if asJSON {
		printJSON(stdout, list)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDOOR\tTOKEN\tSUBJECT\tSOURCE\tRESOURCE\tROLE\tSTARTED\tSTATEMENTS\tNODE")
	for _, s := range list.Sessions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.ID, s.Door, s.TokenID, orDash(s.Subject), orDash(s.ClientIP),
			s.Resource, orDash(s.Role), fmtTime(s.Started), s.Statements, s.Node)
	}
	tw.Flush()
	return exitOK
}
