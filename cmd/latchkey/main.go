// Command latchkey is the latchkey server and its command-line client, in
// one binary. Run "latchkey help" for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/latchkeyhq/latchkey"
)

// Exit statuses.
const (
	exitOK          = 0 // success; for verify, the token is VALID
	exitRefused     = 1 // verify: the token was refused (any code but VALID); a confirmation was declined
	exitUsage       = 2 // bad command line
	exitAPIError    = 3 // the server answered with an error (not found, permission denied, ...)
	exitUnreachable = 4 // the server could not be reached
)

const usage = `latchkey: API tokens, issued, verified, limited, revoked and audited.

Usage:
  latchkey <command> [arguments]

Server:
  serve                 run the server (embedded SQLite in --data-dir)
  gateway               run the gateway: a reverse proxy that checks every request's token
  bench                 measure latchkey on this machine against same-run baselines
  admin recover-root    break glass: a new root token from the data directory and server key

Client (talks to the server at $LATCHKEY_ADDR with $LATCHKEY_TOKEN):
  token create          issue a token; its plaintext is printed once
  token list            list tokens, newest first (--rotation-due, --parent, ...)
  token show ID         show one token
  token update ID       rename, retag, change meta, or narrow scopes
  token rotate ID       issue a successor; the old one works for --grace longer
  token derive ID       mint a narrower child of a token
  token suspend ID      suspend a token and its descendants (reversible)
  token resume ID       lift a suspension
  token revoke ID       revoke for good, with descendants (or in bulk: --subject,
                        --tag, --prefix, --parent; asks first, spares your own token)
  verify TOKEN          verify a token; exit status 0 only if it is VALID
  audit tail            show the latest audit records (-f to follow live)
  audit verify          check the audit log's hash chain; exit 1 if it is broken
  audit export          write audit records as JSON Lines (--since)
  audit summary         attempts today and per second, valid/refused/blocked
  blocks list           sources the detector has blocked
  blocks remove SOURCE  lift a block
  sessions list         open database and MCP sessions on the node (--token ID)
  sessions end ID       end one now (its token is untouched)
  mcp holds             tool calls the MCP gateway holds for a person
  mcp approve|deny ID   decide a held call
  mcp tools             pinned tool definitions, and changed ones
  mcp accept S T FP     accept a tool's changed definition
  oauth clients         the OAuth authorization server's clients
  oauth revoke ID       revoke a client and every token issued to it
  keyspace list|show|create|update|delete
                        keyspaces: one prefix, one policy, their own admin scopes
  role list|set|delete  a keyspace's roles (named scope sets, resolved at verification)
  identity list|set|delete
                        limits shared by every token of a subject
  token request         ask for a token that approvers must agree to
  request list|show|approve|deny|claim
                        access requests: decide them, or collect an approved token

  version               print the version
  help [command]        explain a command

Environment:
  LATCHKEY_ADDR         server address for client commands (default http://127.0.0.1:7480)
  LATCHKEY_TOKEN        admin token for client commands; on a loopback address the
                        client falls back to <data dir>/root-token
  LATCHKEY_DATA_DIR     data directory (default ./latchkey-data)
  LATCHKEY_CA_FILE      PEM file of CA certificates to trust for an https:// LATCHKEY_ADDR

Exit status: 0 success, 1 token refused (verify), 2 usage error,
3 error reported by the server, 4 server unreachable.

Run "latchkey <command> --help" for a command's flags.
`

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// env is how commands read the environment; tests pass their own.
type env func(string) string

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv env) int {
	// Nothing the server stores reaches the terminal raw (issue 12).
	stdout, stderr = &termSafe{w: stdout}, &termSafe{w: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help":
		if len(rest) > 0 {
			return run(ctx, append(rest, "--help"), stdin, stdout, stderr, getenv)
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	case "version", "--version":
		fmt.Fprintln(stdout, "latchkey", version)
		return exitOK
	case "serve":
		return cmdServe(ctx, rest, stderr, getenv)
	case "gateway":
		return cmdGateway(ctx, rest, stderr, getenv)
	case "bench":
		return cmdBench(ctx, rest, stdout, stderr, getenv)
	case "verify":
		return cmdVerify(ctx, rest, stdin, stdout, stderr, getenv)
	case "token":
		return cmdToken(ctx, rest, stdin, stdout, stderr, getenv)
	case "blocks":
		return cmdBlocks(ctx, rest, stdout, stderr, getenv)
	case "sessions":
		return cmdSessions(ctx, rest, stdout, stderr, getenv)
	case "mcp":
		return cmdMCP(ctx, rest, stdout, stderr, getenv)
	case "oauth":
		return cmdOAuth(ctx, rest, stdout, stderr, getenv)
	case "keyspace":
		return cmdKeyspace(ctx, rest, stdout, stderr, getenv)
	case "role":
		return cmdRole(ctx, rest, stdout, stderr, getenv)
	case "identity":
		return cmdIdentity(ctx, rest, stdout, stderr, getenv)
	case "request":
		return cmdRequest(ctx, rest, stdout, stderr, getenv)
	case "admin":
		return cmdAdmin(ctx, rest, stdout, stderr, getenv)
	case "audit":
		return cmdAudit(ctx, rest, stdout, stderr, getenv)
	}
	fmt.Fprintf(stderr, "latchkey: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

// cmdToken dispatches "latchkey token <command>".
func cmdToken(ctx context.Context, rest []string, stdin io.Reader, stdout, stderr io.Writer, getenv env) int {
	const sub = "create, list, show, update, rotate, derive, suspend, resume, revoke or request"
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "latchkey token: expected "+sub)
		return exitUsage
	}
	switch rest[0] {
	case "create":
		return cmdTokenCreate(ctx, rest[1:], stdout, stderr, getenv)
	case "list":
		return cmdTokenList(ctx, rest[1:], stdout, stderr, getenv)
	case "show":
		return cmdTokenShow(ctx, rest[1:], stdout, stderr, getenv)
	case "revoke":
		return cmdTokenRevoke(ctx, rest[1:], stdin, stdout, stderr, getenv)
	case "update":
		return cmdTokenUpdate(ctx, rest[1:], stdout, stderr, getenv)
	case "rotate":
		return cmdTokenRotate(ctx, rest[1:], stdout, stderr, getenv)
	case "derive":
		return cmdTokenDerive(ctx, rest[1:], stdout, stderr, getenv)
	case "suspend", "resume":
		return cmdTokenState(ctx, rest[0], rest[1:], stdout, stderr, getenv)
	case "request":
		return cmdTokenRequest(ctx, rest[1:], stdout, stderr, getenv)
	}
	fmt.Fprintf(stderr, "latchkey token: unknown command %q; expected %s\n", rest[0], sub)
	return exitUsage
}

// cmdAudit dispatches "latchkey audit <command>".
func cmdAudit(ctx context.Context, rest []string, stdout, stderr io.Writer, getenv env) int {
	switch {
	case len(rest) == 0:
	case rest[0] == "tail":
		return cmdAuditTail(ctx, rest[1:], stdout, stderr, getenv)
	case rest[0] == "verify":
		return cmdAuditVerify(ctx, rest[1:], stdout, stderr, getenv)
	case rest[0] == "export":
		return cmdAuditExport(ctx, rest[1:], stdout, stderr, getenv)
	case rest[0] == "summary":
		return cmdAuditSummary(ctx, rest[1:], stdout, stderr, getenv)
	}
	fmt.Fprintln(stderr, "latchkey audit: expected tail, verify, export or summary")
	return exitUsage
}

// strs is a repeatable string flag.
type strs []string

func (s *strs) String() string     { return strings.Join(*s, ",") }
func (s *strs) Set(v string) error { *s = append(*s, v); return nil }

// newFlags returns a FlagSet that prints help to stdout on --help.
func newFlags(name, synopsis, doc string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: latchkey %s\n\n%s\n\nFlags:\n", synopsis, strings.TrimSpace(doc))
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	return fs
}

// parse parses flags and positional arguments in any order ("verify TOKEN
// --scope a" and "verify --scope a TOKEN" alike). It returns the positional
// arguments, or a non-negative exit status when parsing should stop.
func parse(fs *flag.FlagSet, args []string, wantPos int) ([]string, int) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK
			}
			return nil, exitUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if wantPos >= 0 && len(pos) != wantPos {
		fmt.Fprintf(fs.Output(), "latchkey %s: expected %d argument(s), got %d\n", fs.Name(), wantPos, len(pos))
		return nil, exitUsage
	}
	return pos, -1
}

// apiExit reports err and returns the exit status for it.
func apiExit(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "latchkey %s: %s\n", cmd, latchkey.ErrorMessage(err))
	if latchkey.ErrorCode(err) == latchkey.EUnavailable {
		return exitUnreachable
	}
	return exitAPIError
}

// envOr is the environment variable name, or def when it is unset.
func envOr(getenv env, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}
