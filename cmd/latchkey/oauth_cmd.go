package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

const oauthDoc = `
The OAuth authorization server's clients (see docs/oauth.md).

  oauth clients          every client the server knows: registered (RFC 7591)
                         and metadata-document clients (latchkey:tokens:read)
  oauth revoke CLIENT_ID revoke a client and every token issued to it, its
                         secret included (latchkey:tokens:write)`

func cmdOAuth(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	verb := args[0] // clients or revoke: checked by the command tree
	n := map[string]int{"clients": 0, "revoke": 1}[verb]
	var asJSON bool
	fs := newFlags("oauth "+verb, "oauth "+verb, oauthDoc, stdout, stderr)
	fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	pos, code := parse(fs, args[1:], n)
	if code >= 0 {
		return code
	}
	c, ok := clientFor("oauth "+verb, stderr, getenv)
	if !ok {
		return exitUsage
	}
	if verb == "revoke" {
		res, err := c.RevokeOAuthClient(ctx, pos[0])
		if err != nil {
			return apiExit(stderr, "oauth revoke", err)
		}
		if asJSON {
			printJSON(stdout, res)
			return exitOK
		}
		fmt.Fprintf(stdout, "revoked client %s and %d token(s) issued to it\n", res.Client.ClientID, res.TokensRevoked)
		return exitOK
	}
	list, err := c.ListOAuthClients(ctx)
	if err != nil {
		return apiExit(stderr, "oauth clients", err)
	}
	if asJSON {
		printJSON(stdout, list)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tNAME\tKIND\tAUTH\tREDIRECT URIS\tCREATED\tREVOKED")
	for _, cl := range list.Clients {
		revoked := "-"
		if !cl.RevokedAt.IsZero() {
			revoked = fmtTime(cl.RevokedAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cl.ClientID, orDash(cl.ClientName), cl.Kind,
			cl.TokenEndpointAuthMethod, strings.Join(cl.RedirectURIs, " "), fmtTime(cl.CreatedAt), revoked)
	}
	tw.Flush()
	return exitOK
}
