package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
)

const mcpDoc = `
The MCP gateway's held calls and pinned tools (see docs/ai-agents.md).

  mcp holds              the tool calls waiting for a person (every node's on
                         PostgreSQL), and the last decided (latchkey:audit:read)
  mcp approve ID         let a held call through (latchkey:mcp:approve; not
                         with the token that made the call)
  mcp deny ID            refuse it: the agent gets a JSON-RPC error
  mcp tools              every pinned tool definition, and the changed ones
                         waiting to be accepted (latchkey:audit:read)
  mcp accept SERVER TOOL FINGERPRINT
                         accept a tool's changed definition (latchkey:admin):
                         its calls are allowed again`

func cmdMCP(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) int {
	// The command tree (commands.go) has checked the verb.
	verb := args[0]
	want := map[string]int{"holds": 0, "approve": 1, "deny": 1, "tools": 0, "accept": 3}[verb]
	var asJSON bool
	fs := newFlags("mcp "+verb, "mcp "+verb, mcpDoc, stdout, stderr)
	if want == 0 {
		fs.BoolVar(&asJSON, "json", false, "print the API response as JSON")
	}
	pos, code := parse(fs, args[1:], want)
	if code >= 0 {
		return code
	}
	c, ok := clientFor("mcp "+verb, stderr, getenv)
	if !ok {
		return exitUsage
	}
	switch verb {
	case "approve", "deny":
		h, err := c.DecideHold(ctx, pos[0], verb == "approve")
		if err != nil {
			return apiExit(stderr, "mcp "+verb, err)
		}
		fmt.Fprintf(stdout, "%s %s (%s on %s, token %s)\n", h.State, h.ID, h.Tool, h.Server, h.TokenID)
	case "accept":
		p, err := c.AcceptTool(ctx, pos[0], pos[1], pos[2])
		if err != nil {
			return apiExit(stderr, "mcp accept", err)
		}
		fmt.Fprintf(stdout, "accepted %s on %s: fingerprint %s\n", p.Tool, p.Server, p.Fingerprint)
	case "holds":
		list, err := c.ListHolds(ctx)
		if err != nil {
			return apiExit(stderr, "mcp holds", err)
		}
		if asJSON {
			printJSON(stdout, list)
			return exitOK
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tSERVER\tTOOL\tTOKEN\tSUBJECT\tHELD SINCE\tDEADLINE\tDECIDED BY")
		for _, h := range append(list.Held, list.Decided...) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.ID, h.State, h.Server, h.Tool, h.TokenID, orDash(h.Subject),
				fmtTime(h.Created), fmtTime(h.Deadline), orDash(h.DecidedBy))
		}
		tw.Flush()
	case "tools":
		list, err := c.ListToolPins(ctx)
		if err != nil {
			return apiExit(stderr, "mcp tools", err)
		}
		if asJSON {
			printJSON(stdout, list)
			return exitOK
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVER\tTOOL\tFINGERPRINT\tPINNED\tCHANGED TO")
		for _, p := range list.Tools {
			changed := "-"
			if p.Pending != nil {
				changed = p.Pending.Fingerprint
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Server, p.Tool, p.Fingerprint, fmtTime(p.PinnedAt), changed)
		}
		tw.Flush()
	}
	return exitOK
}
