package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

const keyspaceDoc = `
Keyspaces (docs/tenancy.md): one product's or team's tokens, with one
prefix, one policy and their own admin scopes (latchkey:keyspaces.<name>:…).

  keyspace list                  the keyspaces your token reaches
  keyspace show NAME             one keyspace and its policy
  keyspace create NAME --prefix P [policy flags]   (latchkey:admin)
  keyspace update NAME [policy flags]               (latchkey:admin or the keyspace's)
  keyspace delete NAME           an empty keyspace   (latchkey:admin)

A policy given with --policy FILE (JSON, the API's KeyspacePolicy) replaces
the whole policy; the flags change one field each.`

// cmdKeyspace runs "latchkey keyspace ...".
func cmdKeyspace(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	verbs := map[string]int{"list": 0, "show": 1, "create": 1, "update": 1, "delete": 1}
	verb := args[0] // checked by the command tree
	fs := newFlags("keyspace "+verb, "keyspace "+verb, keyspaceDoc, stdout, stderr)
	var asJSON bool
	var k latchkey.Keyspace
	var policyFile, defTTL, maxLife, rotate, idle, reqTTL, claimTTL string
	var requireExpiry bool
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	if verb == "create" || verb == "update" {
		fs.StringVar(&k.Prefix, "prefix", "", "the keyspace's token prefix, e.g. acme_live (fixed once created)")
		fs.StringVar(&k.Description, "description", "", "what the keyspace is for")
		fs.StringVar(&policyFile, "policy", "", "read the whole policy from this JSON `file` (- for stdin)")
		fs.StringVar(&defTTL, "default-ttl", "", "lifetime of tokens issued without one")
		fs.StringVar(&maxLife, "max-lifetime", "", "longest lifetime a token may have")
		fs.BoolVar(&requireExpiry, "require-expiry", false, "refuse tokens that never expire")
		fs.StringVar(&rotate, "rotate-after", "", "age at which tokens are due for rotation")
		fs.StringVar(&idle, "max-idle-timeout", "", "cap on idle timeouts (tokens get it by default)")
		fs.StringVar(&reqTTL, "request-ttl", "", "how long an access request waits for its decision (default 24h)")
		fs.StringVar(&claimTTL, "claim-ttl", "", "how long an approved request can be claimed (default 1h)")
	}
	pos, code := parse(fs, args[1:], verbs[verb])
	if code >= 0 {
		return code
	}
	c, ok := clientFor("keyspace "+verb, stderr, getenv)
	if !ok {
		return exitUsage
	}
	switch verb {
	case "list":
		out, err := c.ListKeyspaces(ctx)
		if err != nil {
			return apiExit(stderr, "keyspace list", err)
		}
		if asJSON {
			printJSON(stdout, out)
			return exitOK
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPREFIX\tDEFAULT TTL\tMAX LIFETIME\tREQUESTABLE\tDESCRIPTION")
		for _, k := range out.Keyspaces {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d rule(s)\t%s\n", k.Name, orDash(k.Prefix), durOrDash(k.Policy.DefaultTTL),
				durOrDash(k.Policy.MaxLifetime), len(k.Policy.Requests), orDash(k.Description))
		}
		tw.Flush()
		return exitOK
	case "delete":
		if err := c.DeleteKeyspace(ctx, pos[0]); err != nil {
			return apiExit(stderr, "keyspace delete", err)
		}
		fmt.Fprintf(stdout, "deleted keyspace %s\n", pos[0])
		return exitOK
	case "show":
		out, err := c.GetKeyspace(ctx, pos[0])
		if err != nil {
			return apiExit(stderr, "keyspace show", err)
		}
		printKeyspace(stdout, out, asJSON)
		return exitOK
	}
	// create, update: start from the current keyspace when updating.
	name := pos[0]
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cur := latchkey.Keyspace{Name: name}
	if verb == "update" {
		old, err := c.GetKeyspace(ctx, name)
		if err != nil {
			return apiExit(stderr, "keyspace update", err)
		}
		cur = *old
	}
	if set["prefix"] {
		cur.Prefix = k.Prefix
	}
	if set["description"] {
		cur.Description = k.Description
	}
	if policyFile != "" {
		b, err := readFileOrStdin(policyFile)
		if err == nil {
			cur.Policy = latchkey.KeyspacePolicy{}
			err = strictJSON(b, &cur.Policy)
		}
		if err != nil {
			fmt.Fprintf(stderr, "latchkey keyspace %s: --policy: %v\n", verb, err)
			return exitUsage
		}
	}
	for _, d := range []struct {
		flag string
		v    string
		dst  *latchkey.Duration
	}{{"default-ttl", defTTL, &cur.Policy.DefaultTTL}, {"max-lifetime", maxLife, &cur.Policy.MaxLifetime},
		{"rotate-after", rotate, &cur.Policy.RotateAfter}, {"max-idle-timeout", idle, &cur.Policy.MaxIdleTimeout},
		{"request-ttl", reqTTL, &cur.Policy.RequestTTL}, {"claim-ttl", claimTTL, &cur.Policy.ClaimTTL}} {
		if !set[d.flag] {
			continue
		}
		v, err := latchkey.ParseDuration(d.v)
		if err != nil {
			fmt.Fprintf(stderr, "latchkey keyspace %s: --%s: %s\n", verb, d.flag, latchkey.ErrorMessage(err))
			return exitUsage
		}
		*d.dst = latchkey.Duration(v)
	}
	if set["require-expiry"] {
		cur.Policy.RequireExpiry = requireExpiry
	}
	out, err := c.PutKeyspace(ctx, cur)
	if err != nil {
		return apiExit(stderr, "keyspace "+verb, err)
	}
	printKeyspace(stdout, out, asJSON)
	return exitOK
}

func printKeyspace(stdout io.Writer, k *latchkey.Keyspace, asJSON bool) {
	if asJSON {
		printJSON(stdout, k)
		return
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	p := k.Policy
	fmt.Fprintf(tw, "name\t%s\n", k.Name)
	fmt.Fprintf(tw, "prefix\t%s\n", orDash(k.Prefix))
	fmt.Fprintf(tw, "description\t%s\n", orDash(k.Description))
	fmt.Fprintf(tw, "default ttl\t%s\n", durOrDash(p.DefaultTTL))
	fmt.Fprintf(tw, "max lifetime\t%s\n", durOrDash(p.MaxLifetime))
	fmt.Fprintf(tw, "require expiry\t%v\n", p.RequireExpiry)
	fmt.Fprintf(tw, "rotate after\t%s\n", durOrDash(p.RotateAfter))
	fmt.Fprintf(tw, "max idle timeout\t%s\n", durOrDash(p.MaxIdleTimeout))
	for _, r := range p.Requests {
		fmt.Fprintf(tw, "requestable\t%s: %d approval(s), at most %s\n", strings.Join(r.Scopes, " "), r.Approvals, r.MaxTTL)
	}
	fmt.Fprintf(tw, "admin scopes\t%s\n", latchkey.KeyspaceScope(k.Name, "admin")+" (or …:tokens:read, :tokens:write, :audit:read, :verify, :approve)")
	tw.Flush()
}

func durOrDash(d latchkey.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.String()
}

func readFileOrStdin(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	}
	return os.ReadFile(name)
}

func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

const roleDoc = `
Roles (docs/tenancy.md): named scope sets within a keyspace. A token holds
roles (token create --role NAME) and scopes; a role's scopes are resolved at
every verification, so changing a role changes every token holding it, on
every node, within the revocation bound.

  role list [--keyspace K]                 the keyspace's roles
  role set NAME --scope S ... [--keyspace K] [--description D]
                                           create or replace (latchkey:admin or the keyspace's admin)
  role delete NAME [--keyspace K]          tokens holding it lose its scopes`

// cmdRole runs "latchkey role ...".
func cmdRole(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	verbs := map[string]int{"list": 0, "set": 1, "delete": 1}
	verb := args[0] // checked by the command tree
	fs := newFlags("role "+verb, "role "+verb, roleDoc, stdout, stderr)
	var ks, desc string
	var scopes strs
	var asJSON bool
	fs.StringVar(&ks, "keyspace", latchkey.DefaultKeyspace, "the role's keyspace")
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	if verb == "set" {
		fs.Var(&scopes, "scope", "a `scope` the role grants (repeatable)")
		fs.StringVar(&desc, "description", "", "what the role is for")
	}
	pos, code := parse(fs, args[1:], verbs[verb])
	if code >= 0 {
		return code
	}
	c, ok := clientFor("role "+verb, stderr, getenv)
	if !ok {
		return exitUsage
	}
	switch verb {
	case "list":
		out, err := c.ListRoles(ctx, ks)
		if err != nil {
			return apiExit(stderr, "role list", err)
		}
		if asJSON {
			printJSON(stdout, out)
			return exitOK
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROLE\tSCOPES\tVERSION\tUPDATED\tBY")
		for _, r := range out.Roles {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.Name, strings.Join(r.Scopes, " "), r.Version, fmtTime(r.UpdatedAt), r.UpdatedBy)
		}
		tw.Flush()
	case "set":
		if len(scopes) == 0 {
			fmt.Fprintln(stderr, "latchkey role set: give at least one --scope")
			return exitUsage
		}
		out, err := c.PutRole(ctx, latchkey.Role{Keyspace: ks, Name: pos[0], Scopes: scopes, Description: desc})
		if err != nil {
			return apiExit(stderr, "role set", err)
		}
		if asJSON {
			printJSON(stdout, out)
			return exitOK
		}
		fmt.Fprintf(stdout, "role %s/%s (version %d): %s\n", out.Keyspace, out.Name, out.Version, strings.Join(out.Scopes, " "))
	case "delete":
		if err := c.DeleteRole(ctx, ks, pos[0]); err != nil {
			return apiExit(stderr, "role delete", err)
		}
		fmt.Fprintf(stdout, "deleted role %s/%s\n", ks, pos[0])
	}
	return exitOK
}

const identityDoc = `
Identities (docs/tenancy.md): limits shared by every token of one subject in
a keyspace, e.g. a customer's three keys sharing 1,000 requests a minute.
The rate limit is exact across nodes with --redis; the budget always is.

  identity list [--keyspace K]
  identity set SUBJECT [--rate 1000/1m] [--max-uses N] [--keyspace K]
  identity delete SUBJECT [--keyspace K]`

// cmdIdentity runs "latchkey identity ...".
func cmdIdentity(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	verbs := map[string]int{"list": 0, "set": 1, "delete": 1}
	verb := args[0] // checked by the command tree
	fs := newFlags("identity "+verb, "identity "+verb, identityDoc, stdout, stderr)
	var ks, rate string
	var maxUses int64
	var asJSON bool
	fs.StringVar(&ks, "keyspace", latchkey.DefaultKeyspace, "the subject's keyspace")
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	if verb == "set" {
		fs.StringVar(&rate, "rate", "", "shared rate limit as `limit/window`, e.g. 1000/1m")
		fs.Int64Var(&maxUses, "max-uses", 0, "shared budget of successful verifications")
	}
	pos, code := parse(fs, args[1:], verbs[verb])
	if code >= 0 {
		return code
	}
	c, ok := clientFor("identity "+verb, stderr, getenv)
	if !ok {
		return exitUsage
	}
	switch verb {
	case "list":
		out, err := c.ListIdentities(ctx, ks)
		if err != nil {
			return apiExit(stderr, "identity list", err)
		}
		if asJSON {
			printJSON(stdout, out)
			return exitOK
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SUBJECT\tRATE\tBUDGET\tUSED")
		for _, id := range out.Identities {
			r, b := "-", "-"
			if id.RateLimit != nil {
				r = fmt.Sprintf("%d/%s", id.RateLimit.Limit, id.RateLimit.Window)
			}
			if id.MaxUses > 0 {
				b = fmt.Sprint(id.MaxUses)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", id.Subject, r, b, id.Uses)
		}
		tw.Flush()
	case "set":
		id := latchkey.Identity{Keyspace: ks, Subject: pos[0], MaxUses: maxUses}
		if rate != "" {
			rr, err := parseRate(rate)
			if err != nil {
				fmt.Fprintf(stderr, "latchkey identity set: %v\n", err)
				return exitUsage
			}
			w, err := latchkey.ParseDuration(rr.Window)
			if err != nil {
				fmt.Fprintf(stderr, "latchkey identity set: --rate: %s\n", latchkey.ErrorMessage(err))
				return exitUsage
			}
			id.RateLimit = &latchkey.RateLimit{Limit: rr.Limit, Window: latchkey.Duration(w)}
		}
		out, err := c.PutIdentity(ctx, id)
		if err != nil {
			return apiExit(stderr, "identity set", err)
		}
		if asJSON {
			printJSON(stdout, out)
			return exitOK
		}
		fmt.Fprintf(stdout, "identity %s/%s set\n", out.Keyspace, out.Subject)
	case "delete":
		if err := c.DeleteIdentity(ctx, ks, pos[0]); err != nil {
			return apiExit(stderr, "identity delete", err)
		}
		fmt.Fprintf(stdout, "deleted identity %s/%s\n", ks, pos[0])
	}
	return exitOK
}

const tokenRequestDoc = `
Ask for a token that approvers must agree to (docs/tenancy.md). The request
is made with your own token ($LATCHKEY_TOKEN), whose subject is the
requester. It prints the request's id and a claim code, once: when the
request is approved, collect the token with
  latchkey request claim ID --code CODE
The keyspace's policy says which scopes may be requested, how many
approvals they need and how long the token may live (--ttl is capped).`

// cmdTokenRequest runs "latchkey token request".
func cmdTokenRequest(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	fs := newFlags("token request", "token request --scope S --ttl D --reason R [flags]", tokenRequestDoc, stdout, stderr)
	var nr client.NewAccessRequest
	var scopes strs
	var asJSON bool
	fs.Var(&scopes, "scope", "a `scope` wanted (repeatable)")
	fs.StringVar(&nr.TTL, "ttl", "", "how long the token should live, e.g. 1h")
	fs.StringVar(&nr.Reason, "reason", "", "why (approvers read it), e.g. \"incident 4411\"")
	fs.StringVar(&nr.Keyspace, "keyspace", "", "the keyspace (default: your token's)")
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	if _, code := parse(fs, args, 0); code >= 0 {
		return code
	}
	nr.Scopes = scopes
	c, ok := clientFor("token request", stderr, getenv)
	if !ok {
		return exitUsage
	}
	out, err := c.RequestAccess(ctx, nr)
	if err != nil {
		return apiExit(stderr, "token request", err)
	}
	if asJSON {
		printJSON(stdout, out)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "request\t%s\n", out.ID)
	fmt.Fprintf(tw, "claim code\t%s\n", out.ClaimCode)
	fmt.Fprintf(tw, "\t(shown once: you need it to collect the token)\n")
	fmt.Fprintf(tw, "status\t%s, %d approval(s) needed by %s\n", out.Status, out.Needed, fmtTime(out.ExpiresAt))
	fmt.Fprintf(tw, "scopes\t%s for %s\n", strings.Join(out.Scopes, " "), out.TTL)
	tw.Flush()
	return exitOK
}

const requestDoc = `
Access requests (docs/tenancy.md).

  request list [--status pending]     requests you may approve, and your own
  request show ID
  request approve ID [--comment C]    (latchkey:approve in the request's keyspace;
  request deny ID [--comment C]        never your own request)
  request claim ID --code CODE        collect an approved request's token, once`

// cmdRequest runs "latchkey request ...".
func cmdRequest(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	verbs := map[string]int{"list": 0, "show": 1, "approve": 1, "deny": 1, "claim": 1}
	verb := args[0] // checked by the command tree
	fs := newFlags("request "+verb, "request "+verb, requestDoc, stdout, stderr)
	var status, comment, claim string
	var asJSON, quiet bool
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	switch verb {
	case "list":
		fs.StringVar(&status, "status", "", "only pending, approved, denied, claimed or expired requests")
	case "approve", "deny":
		fs.StringVar(&comment, "comment", "", "a note for the record")
	case "claim":
		fs.StringVar(&claim, "code", "", "the claim code token request printed")
		fs.BoolVar(&quiet, "quiet", false, "print only the token's plaintext")
	}
	pos, code := parse(fs, args[1:], verbs[verb])
	if code >= 0 {
		return code
	}
	cenv := getenv
	if verb == "claim" {
		// The claim code is the credential: no token is needed or sent.
		cenv = func(k string) string {
			if k == "LATCHKEY_TOKEN" {
				return "-"
			}
			return getenv(k)
		}
	}
	c, ok := clientFor("request "+verb, stderr, cenv)
	if !ok {
		return exitUsage
	}
	var r *latchkey.AccessRequest
	var err error
	switch verb {
	case "list":
		out, err := c.ListAccessRequests(ctx, status)
		if err != nil {
			return apiExit(stderr, "request list", err)
		}
		if asJSON {
			printJSON(stdout, out)
			return exitOK
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKEYSPACE\tREQUESTER\tSCOPES\tTTL\tSTATUS\tAPPROVALS\tREASON")
		for _, q := range out.Requests {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", q.ID, q.Keyspace, q.Requester, strings.Join(q.Scopes, " "),
				q.TTL, q.Status, len(q.Approvals), q.Needed, q.Reason)
		}
		tw.Flush()
		return exitOK
	case "claim":
		if claim == "" {
			fmt.Fprintln(stderr, "latchkey request claim: --code is required")
			return exitUsage
		}
		c.Token = ""
		out, err := c.ClaimAccess(ctx, pos[0], claim)
		if err != nil {
			return apiExit(stderr, "request claim", err)
		}
		printCreated(stdout, out, quiet, asJSON)
		return exitOK
	case "show":
		r, err = c.GetAccessRequest(ctx, pos[0])
	default:
		r, err = c.DecideAccessRequest(ctx, pos[0], verb == "approve", comment)
	}
	if err != nil {
		return apiExit(stderr, "request "+verb, err)
	}
	if asJSON {
		printJSON(stdout, r)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "request\t%s\n", r.ID)
	fmt.Fprintf(tw, "keyspace\t%s\n", r.Keyspace)
	fmt.Fprintf(tw, "requester\t%s (token %s)\n", r.Requester, r.RequestBy)
	fmt.Fprintf(tw, "scopes\t%s for %s\n", strings.Join(r.Scopes, " "), r.TTL)
	fmt.Fprintf(tw, "reason\t%s\n", r.Reason)
	fmt.Fprintf(tw, "status\t%s\n", r.Status)
	for _, v := range r.Approvals {
		fmt.Fprintf(tw, "approved\t%s by %s (%s) %s\n", fmtTime(v.At), v.Subject, v.By, v.Comment)
	}
	fmt.Fprintf(tw, "approvals\t%d of %d\n", len(r.Approvals), r.Needed)
	if r.Denial != nil {
		fmt.Fprintf(tw, "denied\t%s by %s (%s) %s\n", fmtTime(r.Denial.At), r.Denial.Subject, r.Denial.By, r.Denial.Comment)
	}
	if !r.ClaimBy.IsZero() {
		fmt.Fprintf(tw, "claim by\t%s\n", fmtTime(r.ClaimBy))
	}
	if r.TokenID != "" {
		fmt.Fprintf(tw, "token\t%s\n", r.TokenID)
	}
	tw.Flush()
	return exitOK
}
